"""The raw gate's value-skew stage end to end: records, history, levels, the CLI.

Given a small simulated world whose first six days passed the gate in order, the first
days say why their value checks were skipped; every value-level corruption of day 7 is
rejected naming its column, in the message and the record; a moderate shift passes with
a warning that the record and the CLI show.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fraud_detection.config import VALUE_CORRUPTIONS, SimulateConfig, StatePaths
from fraud_detection.data.ledger import accepted_days, partition_path
from fraud_detection.data.simulator import corrupt, write_simulation
from fraud_detection.validation import cli as validation_cli
from fraud_detection.validation.gate import (
    ValidationOutcome,
    validate_raw_partition,
    validate_raw_partitions,
)
from fraud_detection.validation.settings import ValidationConfig, load_validation_config

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONFIG = SimulateConfig(
    seed=7, start_date=dt.date(2026, 1, 1), days=7, rows_per_day=2_000, cards=500, merchants=100
)
DAYS = [CONFIG.start_date + dt.timedelta(days=i) for i in range(CONFIG.days)]
NEW_DAY = DAYS[6]
COLUMN = {
    "amount_in_cents": "amount",
    "amount_sentinel": "amount",
    "stuck_card": "card_id",
    "zeroed_coordinates": "latitude",
    "flipped_longitude": "longitude",
    "timezone_shift": "event_timestamp",
    "channel_missing": "channel",
    "category_default": "merchant_category",
    "unknown_cards": "card_id",
    "unknown_merchants": "merchant_id",
    "replayed_day": "transaction_id",
    "default_ip_location": "latitude",
}
assert set(COLUMN) == set(VALUE_CORRUPTIONS)


@dataclass(frozen=True)
class World:
    paths: StatePaths
    config: ValidationConfig
    history: list[ValidationOutcome]
    clean: pd.DataFrame
    before: pd.DataFrame


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    paths = StatePaths(root=tmp_path_factory.mktemp("values"))
    write_simulation(CONFIG, paths)
    config = load_validation_config(ROOT / "configs" / "validation.yaml")
    history = validate_raw_partitions(paths, DAYS[:6], config=config)
    clean = pd.read_parquet(partition_path(paths, NEW_DAY))
    before = pd.read_parquet(partition_path(paths, DAYS[5]))
    return World(paths, config, history, clean, before)


def _record(outcome: ValidationOutcome) -> dict[str, object]:
    record: dict[str, object] = json.loads(outcome.record.read_text())
    return record


def test_first_days_skip_the_history_checks_and_say_why(world: World) -> None:
    assert [o.success for o in world.history] == [True] * 6, [o.message() for o in world.history]
    for index, outcome in enumerate(world.history[:5]):
        reason = f"history checks: {index} accepted partition(s) with statistics before"
        assert outcome.values is not None
        assert any(reason in r for r in outcome.values["skipped"]), outcome.values
        assert reason in outcome.message()
        assert reason in json.dumps(_record(outcome)["values"])
    sixth = world.history[5]
    assert sixth.values is not None
    assert sixth.values["skipped"] == []
    assert sixth.values["history"] == [d.isoformat() for d in DAYS[:5]]
    assert "profile" in _record(sixth)


def test_clean_day_is_accepted_after_the_value_checks(world: World) -> None:
    outcome = validate_raw_partition(world.paths, NEW_DAY, config=world.config)

    assert outcome.success, outcome.message()
    assert outcome.values is not None
    assert outcome.values["history"] == [d.isoformat() for d in DAYS[:6]]
    assert not any(f.expectation.startswith("value_") for f in outcome.failures)


@pytest.mark.parametrize("corruption", VALUE_CORRUPTIONS)
def test_each_value_corruption_is_rejected_naming_its_column(world: World, corruption: str) -> None:
    bad = corrupt(world.clean, corruption, np.random.default_rng(3), world.before)

    outcome = validate_raw_partition(world.paths, NEW_DAY, bad, config=world.config)

    assert not outcome.success, outcome.message()
    assert NEW_DAY not in accepted_days(world.paths)
    named = {f.column for f in outcome.failures}
    assert COLUMN[corruption] in named, outcome.message()
    assert outcome.data_docs is not None  # the page renders our own expectations too
    assert outcome.data_docs.is_file()
    record = _record(outcome)
    assert record["success"] is False
    assert COLUMN[corruption] in {f["column"] for f in record["failures"]}  # type: ignore[attr-defined, index]


def test_value_rejection_message_names_statistic_band_and_days(world: World) -> None:
    bad = corrupt(world.clean, "amount_sentinel", np.random.default_rng(3))

    outcome = validate_raw_partition(world.paths, NEW_DAY, bad, config=world.config)

    message = outcome.message()
    assert "amount: share of the most common value at most 0.0" in message
    assert "(reject band from accepted days 2026-01-01..2026-01-06 (6))" in message
    assert "— observed 0.2" in message
    assert "(the value 9999.99)" in message
    kind = "expect_column_most_common_value_share_to_be_between"  # ours, the GX 1.x way
    top = next(f for f in outcome.failures if f.expectation == kind)
    assert top.column == "amount"
    assert top.observed > 0.15


def test_a_moderate_shift_passes_with_a_warning_shown_by_the_cli(world: World) -> None:
    # Given: day 7's amounts 1.5x higher (beyond the warn band, inside the reject band)
    shifted = world.clean.assign(amount=world.clean["amount"] * 1.5)
    file = partition_path(world.paths, NEW_DAY)
    shifted.to_parquet(file, index=False)
    try:
        # When: the CLI validates it
        result = CliRunner().invoke(
            validation_cli.app,
            ["raw", "--date", NEW_DAY.isoformat(), "--state-dir", str(world.paths.root)],
        )
        # Then: accepted, with the warning printed and recorded
        assert result.exit_code == 0, result.output
        assert "accepted" in result.output
        assert "! warning: amount: quantiles within" in result.output
        assert "! warning: amount: mean between" in result.output
        assert "warn band from accepted days" in result.output
        record = json.loads((world.paths.root / "validation/raw/2026-01-07.json").read_text())
        assert record["success"] is True
        assert any(w["column"] == "amount" for w in record["warnings"])
        assert NEW_DAY in accepted_days(world.paths)
    finally:
        world.clean.to_parquet(file, index=False)


def test_amount_bands_run_as_gx_expectations_shown_in_data_docs(world: World) -> None:
    # Given: day 7's amounts 3x higher (beyond the reject band), the schema still valid
    tripled = world.clean.assign(amount=world.clean["amount"] * 3)

    outcome = validate_raw_partition(world.paths, NEW_DAY, tripled, config=world.config)

    assert not outcome.success
    kinds = {f.expectation for f in outcome.failures if f.column == "amount"}
    assert kinds == {
        "expect_column_quantile_values_to_be_within_bands",
        "expect_column_mean_to_be_between",
    }, outcome.message()
    assert "amount: quantiles within 5%" in outcome.message()
    assert "(reject band from accepted days 2026-01-01..2026-01-06 (6))" in outcome.message()
    assert outcome.data_docs is not None
    page = outcome.data_docs.read_text()
    assert "quantile" in page.lower()
    assert "amount" in page


def test_a_warning_reaches_the_ct_run_record(world: World) -> None:
    from fraud_detection.training.ct import summarize_data_gate

    shifted = world.clean.assign(amount=world.clean["amount"] * 1.5)
    outcome = validate_raw_partition(world.paths, NEW_DAY, shifted, config=world.config)

    gate = summarize_data_gate({NEW_DAY: outcome})

    assert gate.accepted == [NEW_DAY]
    assert gate.summary() == "1 accepted, 2026-01-07 warned (amount)"
    assert "REJECTED" not in gate.summary()  # runs.failed_gates() does not count a warning


@pytest.mark.parametrize("scenario", ["clean", "drift"])
def test_a_month_through_the_gate_has_no_rejected_day(
    scenario: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Given: 30 days at the default size, the drift (amounts 1.4x, more online, card
    # testing) from day 10 in the drift scenario
    drift = {"drift": {"enabled": scenario == "drift", "start_day": 10, "kind": "both"}}
    config = SimulateConfig(seed=11, days=30, scenario=drift)
    paths = StatePaths(root=tmp_path_factory.mktemp(scenario))
    write_simulation(config, paths)
    days = [config.start_date + dt.timedelta(days=i) for i in range(config.days)]

    # When: the gate judges them in order, as CT does
    outcomes = validate_raw_partitions(paths, days, config=load_validation_config())

    # Then: all accepted, the value checks ran from day 6 on; the drift at most warns
    assert [o.batch for o in outcomes if not o.success] == [], [
        o.message() for o in outcomes if not o.success
    ]
    assert all(o.values and not o.values["skipped"] for o in outcomes[5:])
    warned = [o.batch for o in outcomes if o.warnings]
    if scenario == "clean":
        assert warned == []


def test_a_vanished_channel_is_named(world: World) -> None:
    bad = corrupt(world.clean, "channel_missing", np.random.default_rng(3))

    outcome = validate_raw_partition(world.paths, NEW_DAY, bad, config=world.config)

    message = outcome.message()
    assert "channel: distance of the value shares from the history's" in message
    assert "(largest change 'contactless' -0." in message
    assert "channel: every value of {'contactless', 'in_store', 'online'} present" in message
    assert "missing ['contactless']" in message
    assert outcome.data_docs is not None
    page = outcome.data_docs.read_text()
    assert "the value shares must be within a total variation distance of" in page


def test_a_level_turned_off_in_the_config_is_not_checked(world: World) -> None:
    from fraud_detection.validation.settings import Tolerance

    values = world.config.raw.values.model_copy(update={"amount": Tolerance(reject=2.0, warn=None)})
    config = world.config.model_copy(
        update={"raw": world.config.raw.model_copy(update={"values": values})}
    )
    shifted = world.clean.assign(amount=world.clean["amount"] * 1.5)

    outcome = validate_raw_partition(world.paths, NEW_DAY, shifted, config=config)

    assert outcome.success, outcome.message()
    assert not [w for w in outcome.warnings if w.column == "amount"], outcome.message()

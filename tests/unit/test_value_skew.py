"""The value-skew stage on simulated days (pure: profiles and bands, no Great Expectations).

Given a week of accepted clean days, every value-level corruption of the next day is
rejected naming the column it damaged, and the clean next day is not; the messages name
the statistic, the observed value, the band and the days it came from.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fraud_detection.config import VALUE_CORRUPTIONS, SimulateConfig
from fraud_detection.data.simulator import build_world, corrupt, simulate_day
from fraud_detection.validation.settings import Tolerance, ValueSkewSettings
from fraud_detection.validation.values import (
    Finding,
    id_hashes,
    partition_profile,
    reference_findings,
    value_findings,
)

pytestmark = pytest.mark.unit

CONFIG = SimulateConfig(
    seed=5, start_date=dt.date(2026, 1, 1), days=8, rows_per_day=2_000, cards=500, merchants=100
)
SETTINGS = ValueSkewSettings()
HISTORY_DAYS = 7

# corruption -> the column a rejection must name
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


def _day(config: SimulateConfig, index: int) -> dt.date:
    return config.start_date + dt.timedelta(days=index)


def check(
    df: pd.DataFrame,
    history: list[tuple[dt.date, dict[str, Any]]],
    cards: pd.DataFrame,
    merchants: pd.DataFrame,
    settings: ValueSkewSettings = SETTINGS,
) -> list[Finding]:
    """What the gate's value stage finds (reference checks, then history checks)."""
    hashes = id_hashes(df["transaction_id"])
    profile = partition_profile(df, cards, far_km=settings.far_from_home_km, hashes=hashes)
    references = {
        "card_id": ("reference/cards.parquet", pd.Index(cards["card_id"])),
        "merchant_id": ("reference/merchants.parquet", pd.Index(merchants["merchant_id"])),
    }
    return [
        *reference_findings(df, references, settings),
        *value_findings(profile, history, settings, hashes),
    ]


@pytest.fixture(scope="module")
def week() -> dict[str, Any]:
    world = build_world(CONFIG)
    days = [simulate_day(world, CONFIG, i)[0] for i in range(CONFIG.days)]
    history = [
        (_day(CONFIG, i), partition_profile(days[i], world.cards)) for i in range(HISTORY_DAYS)
    ]
    return {"world": world, "days": days, "history": history}


def test_clean_day_passes_without_rejection(week: dict[str, Any]) -> None:
    world = week["world"]
    findings = check(week["days"][HISTORY_DAYS], week["history"], world.cards, world.merchants)
    assert [f for f in findings if f.level == "reject"] == []


@pytest.mark.parametrize("corruption", VALUE_CORRUPTIONS)
def test_each_value_corruption_is_rejected_naming_its_column(
    week: dict[str, Any], corruption: str
) -> None:
    world, days = week["world"], week["days"]
    bad = corrupt(days[HISTORY_DAYS], corruption, np.random.default_rng(1), days[HISTORY_DAYS - 1])

    findings = check(bad, week["history"], world.cards, world.merchants)

    rejected = {f.column for f in findings if f.level == "reject"}
    assert COLUMN[corruption] in rejected, [f.expected() for f in findings]


def test_a_message_names_column_statistic_observation_band_and_history(
    week: dict[str, Any],
) -> None:
    world, days = week["world"], week["days"]
    bad = corrupt(days[HISTORY_DAYS], "amount_in_cents", np.random.default_rng(1))

    findings = check(bad, week["history"], world.cards, world.merchants)

    median = next(f for f in findings if f.column == "amount" and f.statistic == "median")
    assert median.level == "reject"
    assert median.low is not None
    assert median.high is not None
    assert not median.low <= median.observed <= median.high
    text = f"{median.expected()} — {median.problem()}"
    assert "median between" in text
    assert "reject band from accepted days 2026-01-01..2026-01-07 (7)" in text
    assert f"observed {median.observed:.4g}" in text


def test_a_replayed_share_is_estimated_from_the_sketch(week: dict[str, Any]) -> None:
    world, days = week["world"], week["days"]
    bad = corrupt(days[HISTORY_DAYS], "replayed_day", np.random.default_rng(1), days[6])

    findings = check(bad, week["history"], world.cards, world.merchants)

    replay = next(f for f in findings if f.check == "replayed_ids")
    assert "delivered on 2026-01-07" in replay.statistic
    assert replay.observed == pytest.approx(0.3, abs=0.1)


def test_small_shifts_warn_and_large_ones_reject(week: dict[str, Any]) -> None:
    world, days = week["world"], week["days"]
    day = days[HISTORY_DAYS]
    warned = check(
        day.assign(amount=day["amount"] * 1.5), week["history"], world.cards, world.merchants
    )
    rejected = check(
        day.assign(amount=day["amount"] * 3), week["history"], world.cards, world.merchants
    )

    assert {f.level for f in warned if f.column == "amount"} == {"warn"}
    assert "reject" in {f.level for f in rejected if f.column == "amount"}


def test_a_level_can_be_turned_off(week: dict[str, Any]) -> None:
    world, days = week["world"], week["days"]
    bad = corrupt(days[HISTORY_DAYS], "channel_missing", np.random.default_rng(1))
    lenient = SETTINGS.model_copy(update={"shares": Tolerance(reject=None, warn=0.05)})

    findings = check(bad, week["history"], world.cards, world.merchants, lenient)

    shares = [f for f in findings if f.check == "shares" and f.column == "channel"]
    assert [f.level for f in shares] == ["warn"]
    # the vanished value is still a rejection of its own
    assert any(f.check == "vanished" and f.level == "reject" for f in findings)


def test_no_history_is_an_error_not_a_pass(week: dict[str, Any]) -> None:
    profile = partition_profile(week["days"][0], week["world"].cards)
    with pytest.raises(ValueError, match="at least one accepted partition"):
        value_findings(profile, [], SETTINGS)


def test_warn_above_reject_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="warn tolerance"):
        Tolerance(reject=0.1, warn=0.2)
    with pytest.raises(ValueError, match="factor must be >= 1"):
        ValueSkewSettings(amount=Tolerance(reject=0.5))


def test_profile_is_json_safe_and_small(week: dict[str, Any]) -> None:
    import json

    profile = partition_profile(week["days"][0], week["world"].cards)
    text = json.dumps(profile)
    assert json.loads(text) == profile
    assert len(text) < 20_000


# ------------------------------------------------------------------ no false alarms

SEEDS = (1, 2, 3, 4, 5)
SCENARIOS: dict[str, dict[str, Any]] = {
    "clean": {},
    "drift": {"drift": {"enabled": True, "start_day": 10, "kind": "both"}},
}


def _replay_gate(config: SimulateConfig) -> tuple[list[str], list[str]]:
    """Every day of ``config`` through the value stage as the gate runs it (history: the
    last 7 accepted days, checks from 5); the rejections and warnings, as text."""
    world = build_world(config)
    accepted: list[tuple[dt.date, dict[str, Any]]] = []
    rejections, warnings = [], []
    for index in range(config.days):
        day = _day(config, index)
        df = simulate_day(world, config, index)[0]
        history = accepted[-7:]
        findings: list[Finding] = []
        if len(history) >= SETTINGS.min_history:
            findings = check(df, history, world.cards, world.merchants)
        for f in findings:
            line = f"{day} {f.column}: {f.expected()} — {f.problem()}"
            (rejections if f.level == "reject" else warnings).append(line)
        if not any(f.level == "reject" for f in findings):
            accepted.append((day, partition_profile(df, world.cards)))
    return rejections, warnings


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("seed", SEEDS)
def test_clean_and_drifting_months_have_no_rejected_day(seed: int, scenario: str) -> None:
    # Given: 30 simulated days at the default size (10,000 rows, 5,000 cards, 500 merchants)
    config = SimulateConfig(seed=seed, days=30, scenario=SCENARIOS[scenario])

    # When: each day meets the value stage with the accepted days before it
    rejections, warnings = _replay_gate(config)

    # Then: nothing is rejected (gradual drift may warn: that is monitoring's job)
    assert rejections == [], "\n".join(rejections)
    if scenario == "clean":
        assert len(warnings) <= 3, "\n".join(warnings)


def test_gx_parameters_fill_every_value_parameter_of_the_suite(week: dict[str, Any]) -> None:
    from fraud_detection.validation.suites import RAW_SUITE, VALUE_STAGE, build_suites
    from fraud_detection.validation.values import gx_parameters

    suite = build_suites()[RAW_SUITE]
    needed = {
        value["$PARAMETER"]
        for e in suite["expectations"]
        if e["meta"].get("stage") == VALUE_STAGE
        for value in e["kwargs"].values()
        if isinstance(value, dict) and "$PARAMETER" in value
    }
    off = SETTINGS.model_copy(update={"amount": Tolerance(reject=2.0, warn=None)})

    for settings in (SETTINGS, off):
        parameters = gx_parameters(week["history"], settings)
        assert set(parameters) == needed
    assert parameters["amount_quantiles_warn"]["value_ranges"][0] == [None, None]
    assert parameters["amount_mean_min_warn"] is None

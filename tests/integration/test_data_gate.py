"""The data gates on simulated data: the bad-input matrix, row volume, records, the CLI.

Given a small simulated world whose first three days were validated (and accepted), every
way a day-4 partition can be broken must be rejected with a message naming the problem
and a Data Docs page on disk, and must stay out of ``accepted_days``; the clean day 4
passes. One process, so Great Expectations is imported once for the whole file.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fraud_detection.config import SCHEMA_CORRUPTIONS, SimulateConfig, StatePaths
from fraud_detection.data.ledger import accepted_days, partition_path, partition_status
from fraud_detection.data.schema import TRANSACTION_COLUMNS
from fraud_detection.data.simulator import build_world, corrupt, simulate_day, write_simulation
from fraud_detection.features.engineering import (
    CARD_FEATURES,
    PRIOR_RATE,
    card_features,
    merchant_features,
    request_features,
)
from fraud_detection.validation.gate import (
    DataValidationError,
    PartitionNotFoundError,
    ValidationOutcome,
    data_docs_index,
    validate_raw_partition,
    validate_training_set,
)
from fraud_detection.validation.settings import ValidationConfig, load_validation_config
from fraud_detection.validation.suites import TRAINING_COLUMNS, TRAINING_VALUE_COLUMNS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONFIG = SimulateConfig(
    seed=7, start_date=dt.date(2026, 1, 1), days=4, rows_per_day=1_500, cards=300, merchants=60
)
DAYS = [CONFIG.start_date + dt.timedelta(days=i) for i in range(CONFIG.days)]
BAD_DAY = DAYS[3]


@dataclass(frozen=True)
class World:
    paths: StatePaths
    config: ValidationConfig
    history: list[ValidationOutcome]  # days 0..2, validated in order
    clean: pd.DataFrame  # day 3 as on disk


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    paths = StatePaths(root=tmp_path_factory.mktemp("gate"))
    write_simulation(CONFIG, paths)
    config = load_validation_config(ROOT / "configs" / "validation.yaml")
    history = [validate_raw_partition(paths, day, config=config) for day in DAYS[:3]]
    clean = pd.read_parquet(partition_path(paths, BAD_DAY))
    return World(paths, config, history, clean)


def _rejected(world: World, outcome: ValidationOutcome) -> str:
    """Assert the rejection is visible everywhere a user looks; return the message."""
    assert not outcome.success
    assert partition_status(world.paths, BAD_DAY) is False
    assert BAD_DAY not in accepted_days(world.paths)
    with pytest.raises(DataValidationError) as err:
        outcome.raise_for_failure()
    error = err.value
    assert error.batch == f"partition {BAD_DAY}"
    assert error.failures
    assert error.data_docs is not None
    assert error.data_docs.is_file()
    assert error.data_docs.suffix == ".html"
    assert str(error).endswith(str(error.data_docs))
    record = json.loads(outcome.record.read_text())
    assert record["success"] is False
    assert record["partition"] == BAD_DAY.isoformat()
    assert record["failed"] == len(record["failures"]) > 0
    assert record["data_docs"] == str(error.data_docs)
    return str(error)


# ------------------------------------------------------------------ clean history


def test_clean_days_are_accepted_and_build_history(world: World) -> None:
    assert [o.success for o in world.history] == [True, True, True], [
        o.message() for o in world.history
    ]
    assert set(DAYS[:3]) <= set(accepted_days(world.paths))
    first, _, third = (o.parameters for o in world.history)
    assert (first["min_rows"], first["max_rows"]) == (1, None)  # no history yet
    assert third["min_rows"] > 1
    assert third["max_rows"] is not None
    assert data_docs_index(world.paths).is_file()


# ------------------------------------------------------------------ the bad-input matrix


def _corruption(name: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda df: corrupt(df, name, np.random.default_rng(11))


def _set(column: str, value: str | float) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def damage(df: pd.DataFrame) -> pd.DataFrame:
        out = df.copy()
        out.loc[out.index[:5], column] = value
        return out

    return damage


# name -> (damage, words the error message must contain)
MATRIX: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], list[str]]] = {
    "nulls": (_corruption("nulls"), ["card_id: no nulls", "amount: no nulls", "dtype int64"]),
    "wrong_types": (_corruption("wrong_types"), ["amount: dtype float64 — observed object"]),
    "negative_amounts": (
        _corruption("negative_amounts"),
        ["amount: values between 0 (exclusive) and 50000", "unexpected, e.g. [-"],
    ),
    "duplicate_ids": (_corruption("duplicate_ids"), ["transaction_id: unique", "duplicated"]),
    "missing_column": (_corruption("missing_column"), ["columns:", "missing"]),
    "renamed_column": (_corruption("renamed_column"), ["missing amount", "unexpected amt"]),
    "future_timestamps": (
        _corruption("future_timestamps"),
        ["event_timestamp: values between 2026-01-04 00:00:00", "unexpected"],
    ),
    "empty_partition": (lambda df: df.iloc[:0], ["row count", "observed 0"]),
    "all_null_column": (
        lambda df: df.assign(latitude=np.nan),
        ["latitude: no nulls", "null of"],
    ),
    "extra_column": (lambda df: df.assign(device_id="d1"), ["unexpected device_id"]),
    "renamed_merchant_id": (
        lambda df: df.rename(columns={"merchant_id": "merchant"}),
        ["missing merchant_id", "unexpected merchant", "merchant_id: not checked"],
    ),
    "card_id_as_float": (
        lambda df: df.astype({"card_id": "float64"}),
        ["card_id: dtype int64 — observed float64"],
    ),
    "card_id_as_string": (
        lambda df: df.astype({"card_id": "string"}),
        ["card_id: dtype int64 — observed string"],
    ),
    "timestamps_in_ns": (
        lambda df: df.astype({"event_timestamp": "datetime64[ns, UTC]"}),
        ["event_timestamp: dtype datetime64[us, UTC] — observed datetime64[ns, UTC]"],
    ),
    "unknown_channel": (_set("channel", "phone"), ["channel: values in {", "'phone'"]),
    "latitude_out_of_range": (_set("latitude", 123.0), ["latitude: values between -90 and 90"]),
    "amount_too_large": (_set("amount", 75_000.0), ["amount: values between", "75000"]),
}
assert set(SCHEMA_CORRUPTIONS) <= set(MATRIX), "every schema corruption is in the matrix"


@pytest.mark.parametrize("case", list(MATRIX))
def test_bad_partition_is_rejected_and_named(world: World, case: str) -> None:
    damage, words = MATRIX[case]
    bad = damage(world.clean)

    outcome = validate_raw_partition(world.paths, BAD_DAY, bad, config=world.config)

    message = _rejected(world, outcome)
    for word in words:
        assert word in message, f"{word!r} not in:\n{message}"
    for column in set(TRANSACTION_COLUMNS) - set(bad.columns):
        assert f"missing {column}" in message or f", {column}" in message


def test_clean_partition_is_accepted(world: World) -> None:
    outcome = validate_raw_partition(world.paths, BAD_DAY, config=world.config)

    assert outcome.success, outcome.message()
    assert outcome.failures == ()
    assert partition_status(world.paths, BAD_DAY) is True
    assert BAD_DAY in accepted_days(world.paths)
    assert outcome.data_docs is not None
    assert outcome.data_docs.is_file()
    outcome.raise_for_failure()


def test_transactions_after_now_are_rejected(world: World) -> None:
    noon = dt.datetime.combine(BAD_DAY, dt.time(12), tzinfo=dt.UTC)

    outcome = validate_raw_partition(world.paths, BAD_DAY, now=noon, config=world.config)

    message = _rejected(world, outcome)
    assert "event_timestamp: values at most 2026-01-04 12:00:00+00:00" in message
    assert len(outcome.failures) == 1


# ------------------------------------------------------------------ row volume


@pytest.mark.parametrize(("share", "accepted"), [(0.1, False), (0.9, True)])
def test_row_volume_against_accepted_history(world: World, share: float, accepted: bool) -> None:
    sample = world.clean.iloc[: int(len(world.clean) * share)]

    outcome = validate_raw_partition(world.paths, BAD_DAY, sample, config=world.config)

    assert outcome.success is accepted, outcome.message()
    if not accepted:
        assert [f.expectation for f in outcome.failures] == ["expect_table_row_count_to_be_between"]
        assert f"observed {len(sample)}" in _rejected(world, outcome)


def test_rejected_partition_does_not_count_as_history(world: World) -> None:
    validate_raw_partition(world.paths, BAD_DAY, world.clean.iloc[:10], config=world.config)
    later = CONFIG.start_date + dt.timedelta(days=30)  # no file needed: only parameters

    outcome = validate_raw_partition(world.paths, later, world.clean.iloc[:0], config=world.config)

    days_used = [o.rows for o in world.history]
    assert outcome.parameters["min_rows"] == int(np.ceil(0.5 * np.median(days_used)))


# ------------------------------------------------------------------ files


def test_missing_partition_is_a_clear_error(world: World) -> None:
    with pytest.raises(PartitionNotFoundError, match=r"no partition for 2026-03-01"):
        validate_raw_partition(world.paths, dt.date(2026, 3, 1), config=world.config)


def test_unreadable_parquet_is_rejected(world: World) -> None:
    day = dt.date(2026, 2, 1)
    file = partition_path(world.paths, day)
    file.parent.mkdir(parents=True)
    file.write_bytes(b"this is not parquet")

    outcome = validate_raw_partition(world.paths, day, config=world.config)

    assert not outcome.success
    assert partition_status(world.paths, day) is False
    with pytest.raises(DataValidationError, match="readable Parquet"):
        outcome.raise_for_failure()


def test_changed_partition_must_be_validated_again(world: World) -> None:
    day = dt.date(2026, 2, 10)
    transactions, _ = simulate_day(build_world(CONFIG), CONFIG, 40)  # 2026-02-10
    file = partition_path(world.paths, day)
    file.parent.mkdir(parents=True)
    transactions.to_parquet(file, index=False)
    assert validate_raw_partition(world.paths, day, config=world.config).success
    assert partition_status(world.paths, day) is True

    corrupt(pd.read_parquet(file), "negative_amounts", np.random.default_rng(0)).to_parquet(
        file, index=False
    )

    assert partition_status(world.paths, day) is None
    assert day not in accepted_days(world.paths)


# ------------------------------------------------------------------ training sets


def _training_frame() -> pd.DataFrame:
    world = build_world(CONFIG)
    pairs = [simulate_day(world, CONFIG, day) for day in range(3)]
    tx = pd.concat([p[0] for p in pairs], ignore_index=True)
    labels = pd.concat([p[1] for p in pairs], ignore_index=True)
    cards = card_features(tx)
    joined = tx.merge(world.cards, on="card_id")
    request = request_features(
        joined.assign(card_amount_mean_7d=cards["card_amount_mean_7d"].to_numpy())
    )
    frame = pd.concat([joined, cards[list(CARD_FEATURES)].reset_index(drop=True), request], axis=1)
    frame["merchant_fraud_rate_30d"] = PRIOR_RATE
    frame.loc[frame.index[:50], list(CARD_FEATURES)] = np.nan  # first transactions: no state
    frame["is_fraud"] = labels["is_fraud"].astype("int64").to_numpy()
    out: pd.DataFrame = frame[list(TRAINING_COLUMNS)]
    return out


@pytest.fixture(scope="module")
def training_frame() -> pd.DataFrame:
    return _training_frame()


def test_good_training_set_passes(world: World, training_frame: pd.DataFrame) -> None:
    outcome = validate_training_set(world.paths, training_frame, "good", config=world.config)

    assert outcome.success, outcome.message()
    record = json.loads(outcome.record.read_text())
    assert record["training_set"] == "good"
    assert record["success"] is True
    assert outcome.record == world.paths.root / "validation" / "training" / "good.json"


def _no_fraud(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(is_fraud=0)


def _nan_request_feature(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.loc[out.index[:7], "amount_to_card_mean_7d"] = np.nan
    return out


def _negative_count(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.loc[out.index[100:103], "card_txn_count_24h"] = -1
    return out


TRAINING_MATRIX: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], list[str]]] = {
    "label_rate_zero": (_no_fraud, ["is_fraud: mean between 0.001 and 0.1", "observed 0"]),
    "nan_request_feature": (_nan_request_feature, ["amount_to_card_mean_7d: no nulls", "7 null"]),
    "negative_count": (_negative_count, ["card_txn_count_24h: values at least 0", "3 unexpected"]),
    "missing_feature": (
        lambda df: df.drop(columns=["is_night"]),
        ["missing is_night", "is_night: not checked"],
    ),
    "too_few_rows": (lambda df: df.iloc[:500], ["row count at least 1000", "observed 500"]),
}


@pytest.mark.parametrize("case", list(TRAINING_MATRIX))
def test_bad_training_set_is_rejected_and_named(
    world: World, training_frame: pd.DataFrame, case: str
) -> None:
    damage, words = TRAINING_MATRIX[case]

    outcome = validate_training_set(world.paths, damage(training_frame), case, config=world.config)

    with pytest.raises(DataValidationError) as err:
        outcome.raise_for_failure()
    message = str(err.value)
    assert message.startswith(f"training set {case!r} rejected")
    for word in words:
        assert word in message, f"{word!r} not in:\n{message}"
    assert err.value.data_docs is not None
    assert err.value.data_docs.is_file()


# ------------------------------------- a training set against the champion's training set


def _more_fraud(df: pd.DataFrame, factor: float, seed: int = 0) -> pd.DataFrame:
    """The same frame with ``factor`` times its label rate (legitimate rows relabelled)."""
    out = df.copy()
    honest = out.index[out["is_fraud"] == 0]
    extra = round((factor - 1) * int(out["is_fraud"].sum()))
    flip = np.random.default_rng(seed).choice(honest, size=extra, replace=False)
    out.loc[flip, "is_fraud"] = 1
    return out


@pytest.fixture(scope="module")
def champion_set(world: World, training_frame: pd.DataFrame) -> str:
    """The training frame validated once as the champion's training set (its profile kept)."""
    outcome = validate_training_set(
        world.paths, training_frame, "champion-set", config=world.config
    )
    assert outcome.success, outcome.message()
    record = json.loads(outcome.record.read_text())
    assert record["profile"]["label_rate"] == pytest.approx(training_frame["is_fraud"].mean())
    assert "amount_log" in record["profile"]["partitions"]
    return "champion-set"


def test_a_training_set_like_the_champions_passes_its_value_checks(
    world: World, training_frame: pd.DataFrame, champion_set: str
) -> None:
    alone = validate_training_set(world.paths, training_frame, "alone", config=world.config)
    compared = validate_training_set(
        world.paths, training_frame, "same", config=world.config, reference=champion_set
    )

    assert compared.success, compared.message()
    assert not compared.warnings
    # the label rate and every model feature's distribution were checked, at two levels
    assert compared.evaluated == alone.evaluated + 2 * (1 + len(TRAINING_VALUE_COLUMNS))
    assert compared.values == {
        "compared_with": f"the champion's training set {champion_set} "
        f"({len(training_frame):,} rows)",
        "skipped": [],
    }
    assert alone.values is not None
    assert alone.values["skipped"] == ["no training set to compare with (no champion yet)"]


@pytest.mark.parametrize(
    ("case", "damage", "column"),
    [
        ("label_rate_x4", lambda df: _more_fraud(df, 4.0), "is_fraud"),
        (
            "amount_log_shifted",
            lambda df: df.assign(amount_log=df["amount_log"] + 2.0),
            "amount_log",
        ),
        (
            "distance_zeroed",
            lambda df: df.assign(distance_from_home_km=0.0),
            "distance_from_home_km",
        ),
        ("channel_collapsed", lambda df: df.assign(channel="online"), "channel"),
    ],
)
def test_a_training_set_unlike_the_champions_is_rejected_naming_the_column(
    world: World,
    training_frame: pd.DataFrame,
    champion_set: str,
    case: str,
    damage: Callable[[pd.DataFrame], pd.DataFrame],
    column: str,
) -> None:
    outcome = validate_training_set(
        world.paths, damage(training_frame), case, config=world.config, reference=champion_set
    )

    assert not outcome.success
    named = [f for f in outcome.failures if f.column == column]
    assert named, outcome.message()
    assert f"the champion's training set {champion_set}" in named[0].line()
    assert {f.column for f in outcome.failures} <= {column, "amount_to_card_mean_7d", "is_online"}


def test_a_label_rate_one_and_a_half_to_three_times_the_champions_is_a_warning(
    world: World, training_frame: pd.DataFrame, champion_set: str
) -> None:
    outcome = validate_training_set(
        world.paths,
        _more_fraud(training_frame, 2.0),
        "label_rate_x2",
        config=world.config,
        reference=champion_set,
    )

    assert outcome.success, outcome.message()
    assert [w.column for w in outcome.warnings] == ["is_fraud"]
    assert "warning: is_fraud: mean between" in outcome.warning_lines()[0]
    assert json.loads(outcome.record.read_text())["warnings"][0]["column"] == "is_fraud"


def test_a_champion_set_without_a_profile_is_skipped_with_the_reason(
    world: World, training_frame: pd.DataFrame
) -> None:
    outcome = validate_training_set(
        world.paths, training_frame, "no-reference", config=world.config, reference="never-seen"
    )

    assert outcome.success
    assert outcome.values is not None
    assert "'never-seen' has no profile" in outcome.values["skipped"][0]
    assert "value checks skipped: the champion's training set 'never-seen'" in "\n".join(
        outcome.warning_lines()
    )


# ------------------------------- no false alarms: a month of healthy change, five seeds

FALSE_ALARM_SEEDS = (1, 2, 3, 4, 5)
FALSE_ALARM_SCENARIOS: dict[str, dict[str, object]] = {
    "clean": {},
    # spending up 1.4x and a new fraud pattern from day 10: the champion's set has neither
    "drift": {"drift": {"enabled": True, "start_day": 10, "kind": "both"}},
}
WINDOW = 28  # configs/train.yaml window_days


def _window_frame(config: SimulateConfig, first: int) -> pd.DataFrame:
    """The training frame of days ``first`` .. ``first + WINDOW - 1`` built as the feature
    store builds it: card windows as of each transaction, the merchant's daily risk
    snapshot (labels known by that day only), the request features, the label."""
    world = build_world(config)
    pairs = [simulate_day(world, config, day) for day in range(first, first + WINDOW)]
    tx = pd.concat([p[0] for p in pairs], ignore_index=True).sort_values("event_timestamp")
    tx = tx.reset_index(drop=True)
    labels = pd.concat([p[1] for p in pairs], ignore_index=True)
    cards = card_features(tx)
    joined = tx.merge(world.cards, on="card_id", how="left")
    request = request_features(
        joined.assign(card_amount_mean_7d=cards["card_amount_mean_7d"].to_numpy())
    )
    days = sorted({t.date() for t in tx["event_timestamp"]})
    with_event = labels.merge(tx[["transaction_id", "merchant_id", "event_timestamp"]])
    merchants = merchant_features(tx, with_event, days)
    snapshot = tx["event_timestamp"].dt.floor("D")
    risk = (
        pd.DataFrame({"merchant_id": tx["merchant_id"], "event_timestamp": snapshot})
        .merge(merchants, on=["merchant_id", "event_timestamp"], how="left")
        .set_index(tx.index)
    )
    frame = pd.concat([joined, cards[list(CARD_FEATURES)].reset_index(drop=True), request], axis=1)
    frame["merchant_fraud_rate_30d"] = risk["merchant_fraud_rate_30d"].to_numpy()
    frame["is_fraud"] = (
        tx[["transaction_id"]].merge(labels, how="left")["is_fraud"].fillna(0).astype("int64")
    ).to_numpy()
    out: pd.DataFrame = frame[list(TRAINING_COLUMNS)]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("scenario", list(FALSE_ALARM_SCENARIOS))
@pytest.mark.parametrize("seed", FALSE_ALARM_SEEDS)
def test_a_training_set_a_month_after_the_champions_is_never_rejected(
    tmp_path: Path, seed: int, scenario: str
) -> None:
    # Given: the champion trained on the first 28 days of a simulated world
    config = SimulateConfig(
        seed=seed, start_date=dt.date(2026, 1, 1), days=2 * WINDOW, rows_per_day=4_000,
        cards=2_000, merchants=200, scenario=FALSE_ALARM_SCENARIOS[scenario],
    )  # fmt: skip
    paths = StatePaths(root=tmp_path)
    gate = load_validation_config(ROOT / "configs" / "validation.yaml")
    champion = validate_training_set(paths, _window_frame(config, 0), "champion", config=gate)
    assert champion.success, champion.message()

    # When: the next training set is the following 28 days (a champion that never moved,
    # the largest gap between the two sets CT can meet), drift included
    later = validate_training_set(
        paths, _window_frame(config, WINDOW), "a-month-later", config=gate, reference="champion"
    )

    # Then: its label rate and every feature were compared, and nothing was rejected
    # (drift may warn: retraining on it is what CT is for)
    assert later.values is not None
    assert later.values["skipped"] == []
    assert later.success, later.message()
    if scenario == "clean":
        assert not later.warnings, "\n".join(later.warning_lines())


# ------------------------------------------------------------------ CLI


def test_cli_validates_all_days_and_fails_closed(tmp_path: Path) -> None:
    from fraud_detection.cli import app

    broken = CONFIG.model_copy(
        update={
            "days": 3,
            "rows_per_day": 400,
            "scenario": CONFIG.scenario.model_copy(
                update={
                    "broken_feed": CONFIG.scenario.broken_feed.model_copy(
                        update={"enabled": True, "day": 2, "corruption": "duplicate_ids"}
                    )
                }
            ),
        }
    )
    paths = StatePaths(root=tmp_path)
    write_simulation(broken, paths)
    runner = CliRunner()

    result = runner.invoke(app, ["validate", "raw", "--all", "--state-dir", str(tmp_path)])

    assert result.exit_code == 1, result.output
    assert "partition 2026-01-01: accepted" in result.output
    assert "partition 2026-01-03: REJECTED" in result.output
    assert "transaction_id: unique values" in result.output
    assert "Data Docs:" in result.output
    assert accepted_days(paths) == DAYS[:2]

    docs = runner.invoke(app, ["validate", "docs", "--state-dir", str(tmp_path)])
    assert docs.exit_code == 0, docs.output
    assert docs.output.strip() == str(data_docs_index(paths))

    check = runner.invoke(app, ["validate", "write-suites", "--check"])
    assert check.exit_code == 0, check.output

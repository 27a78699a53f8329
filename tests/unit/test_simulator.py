"""The transaction simulator: seeded, schema-exact, learnable, drifting and breaking on cue."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from fraud_detection import cli
from fraud_detection.config import (
    CORRUPTIONS,
    SCHEMA_CORRUPTIONS,
    VALUE_CORRUPTIONS,
    SimulateConfig,
    StatePaths,
)
from fraud_detection.data.schema import (
    CARD_COLUMNS,
    CHANNELS,
    LABEL_COLUMNS,
    MERCHANT_CATEGORIES,
    MERCHANT_COLUMNS,
    TRANSACTION_COLUMNS,
)
from fraud_detection.data.simulator import (
    SimulationSummary,
    World,
    build_world,
    corrupt,
    simulate_day,
    write_simulation,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"days": 4, "rows_per_day": 800, "cards": 300, "merchants": 60}
MID = {"days": 8, "rows_per_day": 6_000, "cards": 2_000, "merchants": 300}


def _config(**values: object) -> SimulateConfig:
    return SimulateConfig(**{**SMALL, **values})


def _drift(kind: str, start_day: int = 2, **values: object) -> SimulateConfig:
    scenario = {"drift": {"enabled": True, "start_day": start_day, "kind": kind}}
    return _config(scenario=scenario, **values)


def _broken(corruption: str, day: int = 1) -> SimulateConfig:
    scenario = {"broken_feed": {"enabled": True, "day": day, "corruption": corruption}}
    return _config(scenario=scenario)


def _run(config: SimulateConfig) -> tuple[World, pd.DataFrame, pd.DataFrame]:
    """Every day of ``config`` in memory, with a ``day`` column added."""
    world = build_world(config)
    days = [simulate_day(world, config, day) for day in range(config.days)]
    transactions = pd.concat(
        [tx.assign(day=i) for i, (tx, _) in enumerate(days)], ignore_index=True
    )
    labels = pd.concat([lb for _, lb in days], ignore_index=True)
    return world, transactions, labels


def _dtypes(df: pd.DataFrame) -> dict[str, str]:
    return {str(col): str(dtype) for col, dtype in df.dtypes.items()}


@pytest.fixture(scope="module")
def mid_run() -> tuple[World, pd.DataFrame]:
    """A mid-size run (~48k rows) with its labels joined on."""
    world, transactions, labels = _run(SimulateConfig(**MID))
    joined = transactions.merge(labels[["transaction_id", "is_fraud"]], on="transaction_id")
    assert len(joined) == len(transactions)
    return world, joined


# ------------------------------------------------------------------ determinism


def test_same_seed_same_data_and_another_seed_other_data() -> None:
    config = _config()
    first, second = build_world(config), build_world(config)
    pd.testing.assert_frame_equal(first.cards, second.cards)
    pd.testing.assert_frame_equal(first.merchants, second.merchants)
    for day in (0, 3):
        tx1, lb1 = simulate_day(first, config, day)
        tx2, lb2 = simulate_day(second, config, day)
        pd.testing.assert_frame_equal(tx1, tx2)
        pd.testing.assert_frame_equal(lb1, lb2)

    other_config = _config(seed=config.seed + 1)
    other = build_world(other_config)
    assert not first.cards.equals(other.cards)
    tx_other, _ = simulate_day(other, other_config, 0)
    tx_same, _ = simulate_day(first, config, 0)
    assert not tx_other[["card_id", "amount"]].equals(tx_same[["card_id", "amount"]])


def test_a_day_generated_alone_equals_that_day_in_a_full_run(tmp_path: Path) -> None:
    config = _config()
    paths = StatePaths(root=tmp_path)
    write_simulation(config, paths)
    alone, labels_alone = simulate_day(build_world(config), config, 2)

    date = config.start_date + dt.timedelta(days=2)
    arrival = date + dt.timedelta(days=config.label_delay_days)
    written = pd.read_parquet(paths.raw / f"date={date}" / "transactions.parquet")
    written_labels = pd.read_parquet(paths.labels / f"arrival_date={arrival}" / "labels.parquet")
    pd.testing.assert_frame_equal(written, alone)
    pd.testing.assert_frame_equal(written_labels, labels_alone)


# --------------------------------------------------------------------- contract


def test_columns_and_dtypes_follow_the_schema(tmp_path: Path) -> None:
    config = _config()
    world = build_world(config)
    transactions, labels = simulate_day(world, config, 0)
    assert _dtypes(transactions) == TRANSACTION_COLUMNS
    assert _dtypes(labels) == LABEL_COLUMNS
    assert _dtypes(world.cards) == CARD_COLUMNS
    assert _dtypes(world.merchants) == MERCHANT_COLUMNS  # no hidden risk column

    # ... and the same once written to Parquet and read back.
    paths = StatePaths(root=tmp_path)
    write_simulation(config, paths)
    assert _dtypes(pd.read_parquet(paths.reference / "cards.parquet")) == CARD_COLUMNS
    assert _dtypes(pd.read_parquet(paths.reference / "merchants.parquet")) == MERCHANT_COLUMNS
    for path in paths.raw.glob("date=*/transactions.parquet"):
        assert _dtypes(pd.read_parquet(path)) == TRANSACTION_COLUMNS
    for path in paths.labels.glob("arrival_date=*/labels.parquet"):
        assert _dtypes(pd.read_parquet(path)) == LABEL_COLUMNS


def test_values_are_plausible(mid_run: tuple[World, pd.DataFrame]) -> None:
    world, df = mid_run
    assert df["transaction_id"].is_unique
    assert df["transaction_id"].str.fullmatch(r"T\d{8}-\d{7}").all()
    assert (df["amount"] > 0).all()
    assert set(df["merchant_category"]) <= set(MERCHANT_CATEGORIES)
    assert set(df["channel"]) == set(CHANNELS)
    assert df["card_id"].isin(world.cards["card_id"]).all()
    assert df["merchant_id"].isin(world.merchants["merchant_id"]).all()
    # Each row's category is its merchant's; online-only merchants are paid online.
    merchants = world.merchants.set_index("merchant_id")
    category = merchants["merchant_category"].reindex(df["merchant_id"]).to_numpy()
    assert (category == df["merchant_category"].to_numpy()).all()
    online_only = merchants["online_only"].reindex(df["merchant_id"]).to_numpy()
    assert (df.loc[online_only, "channel"] == "online").all()
    # Weekends are busier than weekdays.
    per_day = df.groupby(df["event_timestamp"].dt.date).size()
    weekend = np.array([d.weekday() >= 5 for d in per_day.index])
    assert per_day[weekend].mean() > 1.05 * per_day[~weekend].mean()


def test_timestamps_fall_inside_their_day() -> None:
    config = _config()
    world = build_world(config)
    for day in range(config.days):
        transactions, _ = simulate_day(world, config, day)
        start = pd.Timestamp(config.start_date + dt.timedelta(days=day), tz="UTC")
        ts = transactions["event_timestamp"]
        assert (ts >= start).all()
        assert (ts < start + pd.Timedelta(days=1)).all()
        assert ts.is_monotonic_increasing


def test_labels_arrive_exactly_label_delay_days_later() -> None:
    config = _config(label_delay_days=5)
    world = build_world(config)
    transactions, labels = simulate_day(world, config, 1)
    assert labels["transaction_id"].tolist() == transactions["transaction_id"].tolist()
    delay = labels["label_timestamp"] - labels["event_timestamp"]
    assert (delay == pd.Timedelta(days=5)).all()
    assert set(labels["is_fraud"].unique()) <= {0, 1}


# ------------------------------------------------------------------------ fraud


def test_fraud_rate_is_realistic(mid_run: tuple[World, pd.DataFrame]) -> None:
    _, df = mid_run
    assert 0.005 <= df["is_fraud"].mean() <= 0.02


def _features(world: World, df: pd.DataFrame, history: np.ndarray) -> pd.DataFrame:
    """What a first model would use: amount vs the card's history, hour, category, channel,
    distance from home and velocity (the card's transactions in the last 10 minutes / hour)."""
    cards = world.cards.set_index("card_id")
    seconds = df["event_timestamp"].astype("int64").to_numpy() / 1e6
    home_lat = np.radians(cards["home_latitude"].reindex(df["card_id"]).to_numpy())
    home_lon = cards["home_longitude"].reindex(df["card_id"]).to_numpy()
    lat = np.radians(df["latitude"].to_numpy())
    dlon = np.radians(df["longitude"].to_numpy() - home_lon)
    hav = np.sin((lat - home_lat) / 2) ** 2 + np.cos(lat) * np.cos(home_lat) * np.sin(dlon / 2) ** 2
    distance_km = 12_742 * np.arcsin(np.sqrt(hav))
    usual = df[history].groupby("card_id")["amount"].median().reindex(df["card_id"]).to_numpy()
    usual = np.where(np.isnan(usual), df.loc[history, "amount"].median(), usual)

    key = df["card_id"].to_numpy() * 1e8 + seconds  # sorts by card, then time
    order = np.argsort(key)
    sorted_key = key[order]
    velocity = {}
    for window in (600, 3600):
        count = np.empty(len(key))
        count[order] = np.arange(len(key)) - np.searchsorted(sorted_key, sorted_key - window)
        velocity[window] = np.log1p(count)
    hour = (seconds % 86_400) / 3600
    numeric = pd.DataFrame(
        {
            "log_ratio": np.log(df["amount"].to_numpy() / usual),
            "log_amount": np.log(df["amount"].to_numpy()),
            "night": (hour < 6).astype(float),
            "log_distance": np.log1p(distance_km),
            "velocity_10min": velocity[600],
            "velocity_1h": velocity[3600],
        }
    )
    categorical = pd.get_dummies(df[["merchant_category", "channel"]].astype(str), dtype=float)
    return pd.concat([numeric, categorical], axis=1)


def test_fraud_is_learnable_but_not_trivial(mid_run: tuple[World, pd.DataFrame]) -> None:
    world, df = mid_run
    train = (df["day"] < 6).to_numpy()
    X, y = _features(world, df, train), df["is_fraud"].to_numpy()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1_000))
    model.fit(X[train], y[train])
    pr_auc = average_precision_score(y[~train], model.predict_proba(X[~train])[:, 1])
    base_rate = y[~train].mean()
    assert pr_auc > max(0.25, 10 * base_rate), (pr_auc, base_rate)
    assert pr_auc < 0.95, "fraud should not be perfectly separable"


def test_fraud_comes_in_fast_bursts_at_night_for_large_amounts(
    mid_run: tuple[World, pd.DataFrame],
) -> None:
    _, df = mid_run
    fraud = df["is_fraud"] == 1
    hour = df["event_timestamp"].dt.hour
    assert (hour[fraud] < 6).mean() > 2 * (hour[~fraud] < 6).mean()
    assert df.loc[fraud, "amount"].median() > 2 * df.loc[~fraud, "amount"].median()
    assert (df.loc[fraud, "channel"] == "online").mean() > (
        df.loc[~fraud, "channel"] == "online"
    ).mean()
    gap = (
        df.sort_values(["card_id", "event_timestamp"]).groupby("card_id")["event_timestamp"].diff()
    )
    quick = gap < pd.Timedelta(minutes=10)
    assert quick[fraud].mean() > 3 * quick[~fraud].mean()


# ------------------------------------------------------------------------ drift


def test_spending_drift_raises_amounts_and_online_share_from_start_day_only() -> None:
    _, plain, _ = _run(_config())
    _, drifted, _ = _run(_drift("spending", start_day=2))
    before, after = drifted["day"] < 2, drifted["day"] >= 2
    pd.testing.assert_frame_equal(drifted[before], plain[plain["day"] < 2])
    ratio = drifted.loc[after, "amount"].median() / plain.loc[plain["day"] >= 2, "amount"].median()
    assert 1.25 < ratio < 1.6
    online = (drifted.loc[after, "channel"] == "online").mean()
    assert online > (plain.loc[plain["day"] >= 2, "channel"] == "online").mean() + 0.05


def test_fraud_pattern_drift_switches_to_card_testing_from_start_day_only() -> None:
    size = {"days": 6, "rows_per_day": 6_000}
    _, plain, plain_labels = _run(_config(**size))
    _, drifted, labels = _run(_drift("fraud_pattern", start_day=2, **size))
    before, after = drifted["day"] < 2, drifted["day"] >= 2
    pd.testing.assert_frame_equal(drifted[before], plain[plain["day"] < 2])
    pd.testing.assert_frame_equal(
        labels[before.to_numpy()], plain_labels[(plain["day"] < 2).to_numpy()]
    )

    def fraud_profile(tx: pd.DataFrame, lb: pd.DataFrame, mask: pd.Series) -> tuple[float, float]:
        fraud = tx[mask.to_numpy() & (lb["is_fraud"] == 1).to_numpy()]
        return fraud["amount"].median(), fraud["event_timestamp"].dt.hour.between(8, 20).mean()

    amount_before, daytime_before = fraud_profile(plain, plain_labels, plain["day"] >= 2)
    amount_after, daytime_after = fraud_profile(drifted, labels, after)
    assert amount_after < amount_before / 5  # small test charges
    assert daytime_after > daytime_before + 0.1
    # Legitimate spending is unchanged by a fraud-pattern drift.
    legit = plain.loc[(plain["day"] >= 2).to_numpy() & (plain_labels["is_fraud"] == 0).to_numpy()]
    legit_after = drifted.loc[after.to_numpy() & (labels["is_fraud"] == 0).to_numpy()]
    assert legit_after["amount"].median() == pytest.approx(legit["amount"].median(), rel=0.1)


# ------------------------------------------------------------------ broken feed


@pytest.mark.parametrize("corruption", SCHEMA_CORRUPTIONS)
def test_each_corruption_does_what_its_name_says(corruption: str) -> None:
    config = _config()
    clean, _ = simulate_day(build_world(config), config, 1)
    broken = corrupt(clean, corruption, np.random.default_rng(0))
    start = pd.Timestamp(config.start_date + dt.timedelta(days=1), tz="UTC")
    if corruption == "nulls":
        assert broken["amount"].isna().any()
        assert broken["card_id"].isna().any()
    elif corruption == "wrong_types":
        assert broken["amount"].map(type).eq(str).all()
        assert broken["amount"].astype(float).tolist() == pytest.approx(clean["amount"].tolist())
    elif corruption == "negative_amounts":
        assert (broken["amount"] < 0).any()
    elif corruption == "duplicate_ids":
        assert broken["transaction_id"].duplicated().any()
    elif corruption == "missing_column":
        missing = set(clean.columns) - set(broken.columns)
        assert len(missing) == 1
        assert missing <= {"amount", "merchant_category"}
    elif corruption == "renamed_column":
        assert "amount" not in broken.columns
        assert "amt" in broken.columns
    elif corruption == "future_timestamps":
        assert (broken["event_timestamp"] >= start + pd.Timedelta(days=1)).any()
    else:  # pragma: no cover - a new corruption needs a case here
        pytest.fail(f"no check for {corruption}")
    assert len(clean.columns) == len(TRANSACTION_COLUMNS)  # the input is left alone
    assert _dtypes(clean) == TRANSACTION_COLUMNS


def test_corruptions_are_schema_and_value_ones() -> None:
    assert set(CORRUPTIONS) == set(SCHEMA_CORRUPTIONS) | set(VALUE_CORRUPTIONS)
    assert len(VALUE_CORRUPTIONS) >= 10


# value-level corruption -> (column it damages, how the damage shows)
_VALUE_DAMAGE = {
    "amount_in_cents": ("amount", lambda c, b: np.allclose(b["amount"], c["amount"] * 100)),
    "amount_sentinel": ("amount", lambda c, b: (b["amount"] == 9999.99).mean() > 0.1),
    "stuck_card": ("card_id", lambda c, b: b["card_id"].value_counts().iloc[0] > 0.2 * len(b)),
    "zeroed_coordinates": ("latitude", lambda c, b: (b["latitude"] == 0).mean() > 0.1),
    "flipped_longitude": ("longitude", lambda c, b: (b["longitude"] > 0).all()),
    "timezone_shift": (
        "event_timestamp",
        lambda c, b: b["event_timestamp"].dt.hour.mean() != c["event_timestamp"].dt.hour.mean(),
    ),
    "channel_missing": ("channel", lambda c, b: "contactless" not in set(b["channel"])),
    "category_default": (
        "merchant_category",
        lambda c, b: (b["merchant_category"] == "grocery").mean() > 0.4,
    ),
    "unknown_cards": ("card_id", lambda c, b: b["card_id"].max() > 10_000_000),
    "unknown_merchants": ("merchant_id", lambda c, b: b["merchant_id"].max() > 10_000_000),
    "replayed_day": ("transaction_id", lambda c, b: b["transaction_id"].str[:9].nunique() == 2),
    "default_ip_location": ("latitude", lambda c, b: (b["latitude"] == 37.751).mean() > 0.1),
}


@pytest.mark.parametrize("corruption", VALUE_CORRUPTIONS)
def test_value_corruptions_keep_the_schema_and_change_the_values(corruption: str) -> None:
    config = _config()
    world = build_world(config)
    before, _ = simulate_day(world, config, 0)
    clean, _ = simulate_day(world, config, 1)
    start = pd.Timestamp(config.start_date + dt.timedelta(days=1), tz="UTC")

    broken = corrupt(clean, corruption, np.random.default_rng(0), previous=before)

    column, shows = _VALUE_DAMAGE[corruption]
    assert shows(clean, broken), corruption
    assert not broken[column].equals(clean[column])
    assert _dtypes(broken) == TRANSACTION_COLUMNS  # the contract still holds
    assert not broken.isna().any().any()
    assert broken["transaction_id"].is_unique
    assert broken["event_timestamp"].between(start, start + pd.Timedelta(days=1)).all()
    assert _dtypes(clean) == TRANSACTION_COLUMNS  # the input is left alone


def test_replayed_day_is_simulated_from_the_day_before() -> None:
    config = _broken("replayed_day", day=2)
    world = build_world(config)
    before, _ = simulate_day(world, _config(), 1)

    broken, _ = simulate_day(world, config, 2)

    assert broken["transaction_id"].isin(before["transaction_id"]).mean() > 0.2
    with pytest.raises(ValueError, match="day must be 1 or later"):
        _broken("replayed_day", day=0)


def test_unknown_corruption_is_refused() -> None:
    config = _config()
    clean, _ = simulate_day(build_world(config), config, 0)
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(clean, "gremlins", np.random.default_rng(0))


def test_broken_feed_damages_only_its_day_and_never_the_labels() -> None:
    plain = _config()
    broken = _broken("renamed_column", day=1)
    world = build_world(plain)
    for day in range(plain.days):
        _, lb_plain = simulate_day(world, plain, day)
        tx_broken, lb_broken = simulate_day(world, broken, day)
        pd.testing.assert_frame_equal(lb_broken, lb_plain)
        assert ("amt" in tx_broken.columns) == (day == 1)


# ---------------------------------------------------------------------- writing


def test_write_simulation_writes_partitions_and_clears_a_longer_run(tmp_path: Path) -> None:
    paths = StatePaths(root=tmp_path)
    keep = tmp_path / "data" / "notes.txt"  # not the simulator's: must survive
    keep.parent.mkdir(parents=True)
    keep.write_text("mine")
    write_simulation(_config(days=5), paths)
    assert len(list(paths.raw.glob("date=*"))) == 5

    lines: list[str] = []
    config = _config(days=2, label_delay_days=3)
    summary = write_simulation(config, paths, progress=lines.append)

    assert isinstance(summary, SimulationSummary)
    assert summary.days == 2
    assert sorted(p.name for p in paths.raw.iterdir()) == ["date=2026-01-01", "date=2026-01-02"]
    assert sorted(p.name for p in paths.labels.iterdir()) == [
        "arrival_date=2026-01-04",
        "arrival_date=2026-01-05",
    ]
    assert {p.name for p in paths.reference.iterdir()} == {"cards.parquet", "merchants.parquet"}
    assert keep.read_text() == "mine"
    assert all(path.is_file() for path in summary.files)
    assert len(summary.files) == 2 + 2 * 2

    rows = sum(len(pd.read_parquet(p)) for p in paths.raw.glob("date=*/transactions.parquet"))
    fraud = sum(
        int(pd.read_parquet(p)["is_fraud"].sum())
        for p in paths.labels.glob("arrival_date=*/labels.parquet")
    )
    assert summary.rows == rows
    assert summary.fraud_rate == pytest.approx(fraud / rows)
    assert len(lines) == 2
    assert lines[0].startswith("day 1/2 2026-01-01: ")
    assert lines[0].endswith(" fraud")

    # Labels of a day sit under the day they arrive on, delay days later.
    labels = pd.read_parquet(paths.labels / "arrival_date=2026-01-04" / "labels.parquet")
    assert (labels["event_timestamp"].dt.date == dt.date(2026, 1, 1)).all()
    assert (labels["label_timestamp"].dt.date == dt.date(2026, 1, 4)).all()


# -------------------------------------------------------------------------- CLI


def test_cli_simulate_writes_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRAUD_PROJECT_DIR", str(ROOT))
    args = ["simulate", "--days", "2", "--rows-per-day", "500", "--cards", "200"]
    args += ["--merchants", "50", "--state-dir", str(tmp_path)]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert "day 2/2" in result.output
    assert str(tmp_path / "data" / "raw") in result.output
    assert str(tmp_path / "data" / "labels") in result.output
    assert len(list((tmp_path / "data" / "raw").glob("date=*/transactions.parquet"))) == 2


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["--days", "-1"], "days"),
        (["--scenario", "nope"], "nope"),
        (["--scenario", "drift", "--drift-day", "99", "--days", "3"], "start_day"),
    ],
    ids=["negative-days", "unknown-scenario", "drift-day-outside-run"],
)
def test_cli_rejects_nonsense_with_one_line_and_exit_2(
    args: list[str],
    mentions: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FRAUD_PROJECT_DIR", str(ROOT))
    monkeypatch.setattr(sys, "argv", ["fraud", "simulate", "--state-dir", str(tmp_path), *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ")
    assert "\n" not in err
    assert mentions in err
    assert not (tmp_path / "data").exists()


def test_cli_simulate_marks_the_broken_day_by_its_printed_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given --broken-day 2, a day counted from 0
    monkeypatch.setenv("FRAUD_PROJECT_DIR", str(ROOT))
    args = ["simulate", "--days", "4", "--rows-per-day", "300", "--cards", "100"]
    args += ["--merchants", "30", "--state-dir", str(tmp_path), "--scenario", "broken_feed"]
    args += ["--broken-day", "2", "--corruption", "duplicate_ids"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    # Then the third day, printed "day 3/4", is the one marked, with the flag that made it
    marked = [line for line in result.output.splitlines() if "broken feed" in line]
    assert len(marked) == 1
    assert marked[0].startswith("day 3/4 2026-01-03: ")
    assert marked[0].endswith("<- broken feed (duplicate_ids): --broken-day 2")
    # And the help says how days are counted
    helped = CliRunner().invoke(cli.app, ["simulate", "--help"], terminal_width=200)
    assert "counted from 0" in " ".join(helped.output.split())

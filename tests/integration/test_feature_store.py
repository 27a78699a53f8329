"""Feast: point-in-time training sets, TTL, label delay, materialization, online/offline skew."""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fraud_detection.config import StatePaths, load_simulate_config
from fraud_detection.data.schema import CARD_COLUMNS, LABEL_COLUMNS, TRANSACTION_COLUMNS
from fraud_detection.data.simulator import write_simulation
from fraud_detection.features import engineering as fe
from fraud_detection.features import store

pytestmark = pytest.mark.integration

D0 = dt.date(2026, 3, 2)
UTC = "UTC"


def _ts(day: dt.date, hour: float) -> pd.Timestamp:
    return pd.Timestamp(day).tz_localize(UTC) + pd.Timedelta(hours=hour)


def _txn(tid: str, card: int, merchant: int, when: pd.Timestamp, amount: float) -> dict[str, Any]:
    return {
        "transaction_id": tid,
        "event_timestamp": when,
        "card_id": card,
        "merchant_id": merchant,
        "merchant_category": "electronics",
        "amount": amount,
        "channel": "online",
        "latitude": 40.7,
        "longitude": -74.0,
    }


def _write_world(
    paths: StatePaths, txns: list[dict[str, Any]], labels: list[dict[str, Any]]
) -> list[dt.date]:
    """Hand-made raw partitions and label files, in the simulator's layout and dtypes."""
    frame = pd.DataFrame(txns).astype(TRANSACTION_COLUMNS)
    days = sorted({ts.date() for ts in frame["event_timestamp"]})
    first, last = days[0], days[-1]
    every_day = [first + dt.timedelta(days=k) for k in range((last - first).days + 1)]
    for day in every_day:
        part = frame[frame["event_timestamp"].dt.date == day]
        folder = paths.raw / f"date={day.isoformat()}"
        folder.mkdir(parents=True)
        part.to_parquet(folder / "transactions.parquet", index=False)
    label_frame = pd.DataFrame(labels, columns=list(LABEL_COLUMNS)).astype(LABEL_COLUMNS)
    for arrival, part in label_frame.groupby(label_frame["label_timestamp"].dt.date):
        folder = paths.labels / f"arrival_date={arrival.isoformat()}"
        folder.mkdir(parents=True)
        part.to_parquet(folder / "labels.parquet", index=False)
    cards = pd.DataFrame(
        {
            "card_id": sorted(frame["card_id"].unique()),
            "home_latitude": 40.7,
            "home_longitude": -74.0,
            "card_type": "credit",
        }
    ).astype(CARD_COLUMNS)
    paths.reference.mkdir(parents=True)
    cards.to_parquet(paths.reference / "cards.parquet", index=False)
    return every_day


@pytest.fixture
def accept_all(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about Feast, not the data gate: every partition on disk counts."""

    def accepted(paths: StatePaths) -> set[dt.date]:
        return {dt.date.fromisoformat(p.name[5:]) for p in paths.raw.glob("date=*")}

    monkeypatch.setattr(store, "_accepted", accepted)


def _build(paths: StatePaths, days: list[dt.date]) -> None:
    store.build_profile(paths)
    for day in days:
        store.build_day(paths, day)


def _entities(rows: list[tuple[int, int, pd.Timestamp]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "card_id": [r[0] for r in rows],
            "merchant_id": [r[1] for r in rows],
            "event_timestamp": pd.Series([r[2] for r in rows]).astype("datetime64[us, UTC]"),
            "transaction_timestamp": pd.Series([r[2] for r in rows]).astype("datetime64[us, UTC]"),
            "amount": 20.0,
            "channel": "online",
            "latitude": 40.7,
            "longitude": -74.0,
            "row": range(len(rows)),
        }
    )


def _join(paths: StatePaths, rows: list[tuple[int, int, pd.Timestamp]]) -> pd.DataFrame:
    out = store.historical_features(store.open_store(paths), _entities(rows))
    return out.sort_values("row").reset_index(drop=True)


def test_a_later_feature_value_is_never_used(tmp_path: Path, accept_all: None) -> None:
    # Given a card that spends 10 at 10:00 and 1000 at 12:00
    paths = StatePaths(root=tmp_path)
    days = _write_world(
        paths,
        [_txn("a", 1, 7, _ts(D0, 10), 10.0), _txn("b", 1, 7, _ts(D0, 12), 1000.0)],
        [],
    )
    _build(paths, days)
    # When the two transactions' training rows are joined at their own times
    joined = _join(paths, [(1, 7, _ts(D0, 10)), (1, 7, _ts(D0, 12))])
    # Then each sees only what came before it: never its own 1000, nor anything later
    assert joined.loc[0, "card_txn_count_24h"] == 0
    assert np.isnan(joined.loc[0, "card_amount_max_7d"])
    assert joined.loc[1, "card_txn_count_24h"] == 1
    assert joined.loc[1, "card_amount_sum_24h"] == 10.0
    assert joined.loc[1, "card_amount_max_7d"] == 10.0


def test_card_features_decay_out_of_their_window(tmp_path: Path, accept_all: None) -> None:
    # Given cards 1 and 3 spending 30 on D0, and each again 6 and 8 days later
    paths = StatePaths(root=tmp_path)
    days = _write_world(
        paths,
        [
            _txn("a", 1, 7, _ts(D0, 10), 30.0),
            _txn("b", 3, 7, _ts(D0, 10), 30.0),
            _txn("c", 1, 7, _ts(D0 + dt.timedelta(days=6), 10), 5.0),
            _txn("d", 3, 7, _ts(D0 + dt.timedelta(days=8), 10), 5.0),
        ],
        [],
    )
    _build(paths, days)
    # When the later transactions' training rows are joined at their own times
    joined = _join(
        paths,
        [(1, 7, _ts(D0 + dt.timedelta(days=6), 10)), (3, 7, _ts(D0 + dt.timedelta(days=8), 10))],
    )
    # Then the spend of D0 is in the 7-day window 6 days later, and gone 8 days later
    assert joined.loc[0, "card_amount_mean_7d"] == 30.0
    assert joined.loc[0, "card_txn_count_7d"] == 1
    assert joined.loc[1, "card_txn_count_7d"] == 0
    assert pd.isna(joined.loc[1, "card_amount_mean_7d"])


def test_merchant_risk_uses_only_labels_known_at_the_time(tmp_path: Path, accept_all: None) -> None:
    # Given a fraud at merchant 5 on D0 whose chargeback arrives 3 days later
    paths = StatePaths(root=tmp_path)
    fraud_at = _ts(D0, 9)
    arrives = fraud_at + pd.Timedelta(days=3)
    txns = [_txn("f", 1, 5, fraud_at, 400.0)]
    txns += [_txn(f"t{k}", 2, 9, _ts(D0 + dt.timedelta(days=k), 8), 12.0) for k in range(1, 7)]
    labels = [
        {
            "transaction_id": "f",
            "card_id": 1,
            "merchant_id": 5,
            "event_timestamp": fraud_at,
            "label_timestamp": arrives,
            "is_fraud": 1,
        }
    ]
    days = _write_world(paths, txns, labels)
    _build(paths, days)
    # When a transaction at merchant 5 is joined the day after the fraud, then after the
    # label arrived
    before, after = _join(
        paths,
        [(3, 5, _ts(D0 + dt.timedelta(days=1), 12)), (3, 5, _ts(D0 + dt.timedelta(days=4), 12))],
    )["merchant_fraud_rate_30d"]
    # Then the fraud is invisible until its label arrives (only the prior), then raises the rate
    assert before == pytest.approx(fe.PRIOR_RATE)
    assert after > fe.PRIOR_RATE * 2


def test_training_set_holds_only_labels_known_at_as_of(tmp_path: Path, accept_all: None) -> None:
    paths = StatePaths(root=tmp_path)
    txns = [_txn(f"t{k}", 1, 5, _ts(D0 + dt.timedelta(days=k), 10), 10.0) for k in range(6)]
    labels = [
        {
            "transaction_id": t["transaction_id"],
            "card_id": 1,
            "merchant_id": 5,
            "event_timestamp": t["event_timestamp"],
            "label_timestamp": t["event_timestamp"] + pd.Timedelta(days=2),
            "is_fraud": 0,
        }
        for t in txns
    ]
    days = _write_world(paths, txns, labels)
    _build(paths, days)
    as_of = _ts(D0 + dt.timedelta(days=5), 0)
    frame = store.training_set(paths, as_of)
    # Labels of D0..D2 arrived by D0+5 00:00 (two days' delay); later ones had not
    assert sorted(frame["transaction_id"]) == ["t0", "t1", "t2"]
    # The event time in the training set is the transaction's own time
    assert frame["event_timestamp"].iloc[0] == _ts(D0, 10)


# ----------------------------------------------------------- simulated data, online


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> StatePaths:
    root = tmp_path_factory.mktemp("fs_state")
    cfg = load_simulate_config(
        overrides={
            "days": 6,
            "rows_per_day": 1500,
            "cards": 300,
            "merchants": 60,
            "label_delay_days": 2,
        }
    )
    write_simulation(cfg, StatePaths(root=root))
    return StatePaths(root=root)


def _online_dump(paths: StatePaths) -> dict[str, list[tuple[Any, ...]]]:
    con = sqlite3.connect(store.FeaturePaths(paths).feast / "online_store.db")
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {
            t: sorted(con.execute(f'SELECT entity_key, feature_name, value, event_ts FROM "{t}"'))
            for t in tables
        }
    finally:
        con.close()


def _tables_digest(paths: StatePaths) -> dict[str, str]:
    root = store.FeaturePaths(paths).tables
    return {
        str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(root.rglob("*.parquet"))
    }


def test_materialize_twice_changes_nothing_and_online_equals_offline(
    simulated: StatePaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = simulated
    days = sorted(dt.date.fromisoformat(p.name[5:]) for p in paths.raw.glob("date=*"))
    monkeypatch.setattr(store, "_accepted", lambda _p: set(days))
    _build(paths, days)

    # Materialize, then again: the online store is byte-for-byte the same
    _, end = store.materialize(paths)
    first = _online_dump(paths)
    store.materialize(paths)
    assert _online_dump(paths) == first
    assert sum(len(rows) for rows in first.values()) > 0

    # Online, each card's features at `end` are the definition's, from its raw history
    online = store.open_online(paths)
    raw = store.read_transactions(paths, days)
    cards = raw["card_id"].drop_duplicates().head(25).to_numpy()
    at_us = int(end.value // 1_000)
    micros = pd.DatetimeIndex(raw["event_timestamp"]).as_unit("us").asi8
    expected = fe.card_window_arrays(
        raw["card_id"].to_numpy(),
        micros,
        raw["amount"].to_numpy(),
        raw["merchant_id"].to_numpy(),
        cards,
        np.full(len(cards), at_us),
        new_merchant_lookback_us=int(store.NEW_MERCHANT_LOOKBACK / pd.Timedelta(1, "us")),
    )
    for i, card in enumerate(cards):
        got = online.read(int(card), 0, at_us).values
        for name in fe.CARD_FEATURES:
            assert got[name] == pytest.approx(expected[name][i], rel=1e-9, nan_ok=True), name
    assert (expected["card_txn_count_7d"] > 0).all()


def test_rebuilding_a_day_is_idempotent(
    simulated: StatePaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = simulated
    days = sorted(dt.date.fromisoformat(p.name[5:]) for p in paths.raw.glob("date=*"))
    monkeypatch.setattr(store, "_accepted", lambda _p: set(days))
    _build(paths, days)
    before = _tables_digest(paths)
    store.build_day(paths, days[3])
    assert _tables_digest(paths) == before


def test_build_refuses_a_partition_the_gate_did_not_accept(
    simulated: StatePaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    days = sorted(dt.date.fromisoformat(p.name[5:]) for p in simulated.raw.glob("date=*"))
    monkeypatch.setattr(store, "_accepted", lambda _p: set(days[:-1]))
    with pytest.raises(
        store.FeatureStoreError, match=f"partition {days[-1]} has not been accepted"
    ):
        store.build_day(simulated, days[-1])

"""Feature definitions: windows match a brute-force count, labels never leak, defaults hold."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from fraud_detection.config import SimulateConfig
from fraud_detection.data.simulator import build_world, simulate_day
from fraud_detection.features.engineering import (
    CARD_FEATURES,
    CATEGORICAL_FEATURES,
    FEATURE_DTYPES,
    MERCHANT_FEATURES,
    MODEL_FEATURES,
    PRIOR_RATE,
    PRIOR_WEIGHT,
    PROFILE_FEATURES,
    REQUEST_FEATURE_DTYPES,
    REQUEST_FEATURES,
    card_features,
    card_profile,
    card_window_arrays,
    merchant_features,
    request_features,
)

pytestmark = pytest.mark.unit

UTC = "UTC"
START = pd.Timestamp("2026-01-01", tz=UTC)
WINDOWS = {"1h": pd.Timedelta(hours=1), "24h": pd.Timedelta(hours=24), "7d": pd.Timedelta(days=7)}


def _at(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz=UTC).as_unit("us")


def _transactions(rows: list[tuple[int, str, int, float]]) -> pd.DataFrame:
    """(card_id, time, merchant_id, amount) rows as a transactions frame."""
    card, when, merchant, amount = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "card_id": np.array(card, dtype=np.int64),
            "event_timestamp": pd.DatetimeIndex([_at(w) for w in when]).as_unit("us"),
            "merchant_id": np.array(merchant, dtype=np.int64),
            "amount": np.array(amount, dtype=np.float64),
        }
    )


@pytest.fixture(scope="module")
def random_transactions() -> pd.DataFrame:
    """~200 transactions of 3 cards at 8 merchants over 10 days, unsorted.

    Times fall on a 10-minute grid, so exact 1 h / 24 h / 7 d gaps and ties at one
    instant both occur.
    """
    rng = np.random.default_rng(7)
    n = 200
    slots = rng.integers(0, 10 * 24 * 6, n)
    return pd.DataFrame(
        {
            "card_id": rng.integers(1, 4, n).astype(np.int64),
            "event_timestamp": pd.DatetimeIndex(
                START + pd.to_timedelta(slots * 10, unit="min")
            ).as_unit("us"),
            "merchant_id": rng.integers(1, 9, n).astype(np.int64),
            "amount": rng.lognormal(3.0, 1.0, n).round(2),
        },
        index=pd.Index(rng.permutation(np.arange(1000, 1000 + n)), name="row"),
    )


def _brute_force_card(tx: pd.DataFrame) -> pd.DataFrame:
    """The card features of every row, straight from the definition: the card's other
    transactions strictly before the row's time, inside each window."""
    first_visit = tx.groupby(["card_id", "merchant_id"])["event_timestamp"].min()
    rows = []
    for _, row in tx.iterrows():
        t = row["event_timestamp"]
        own = tx[tx["card_id"] == row["card_id"]]
        expected: dict[str, float] = {}
        for name, width in WINDOWS.items():
            window = own[(own["event_timestamp"] > t - width) & (own["event_timestamp"] < t)]
            expected[f"card_txn_count_{name}"] = len(window)
            expected[f"card_amount_sum_{name}"] = window["amount"].sum()
            if name == "7d":
                expected["card_amount_mean_7d"] = window["amount"].mean()
                expected["card_amount_max_7d"] = window["amount"].max()
        firsts = first_visit.loc[row["card_id"]]
        expected["card_new_merchants_24h"] = int(
            ((firsts > t - WINDOWS["24h"]) & (firsts < t)).sum()
        )
        rows.append(expected)
    return pd.DataFrame(rows, index=tx.index)[list(CARD_FEATURES)]


# ------------------------------------------------------------------ card features


def test_card_windows_equal_a_brute_force_count(random_transactions: pd.DataFrame) -> None:
    tx = random_transactions
    micros = [pd.DatetimeIndex(s).asi8 for _, s in tx.groupby("card_id")["event_timestamp"]]
    gaps = set().union(*(set((m[:, None] - m[None, :]).ravel().tolist()) for m in micros))
    hour_us = 3_600_000_000
    assert {hour_us, 24 * hour_us, 7 * 24 * hour_us} <= gaps, "exact window-length gaps"
    assert tx.duplicated(["card_id", "event_timestamp"]).any(), "ties at one instant"

    features = card_features(tx)

    pd.testing.assert_index_equal(features.index, tx.index)
    pd.testing.assert_series_equal(features["card_id"], tx["card_id"])
    pd.testing.assert_series_equal(features["event_timestamp"], tx["event_timestamp"])
    pd.testing.assert_frame_equal(
        features[list(CARD_FEATURES)], _brute_force_card(tx), check_dtype=False, rtol=1e-12
    )
    assert (features["created_timestamp"] == features["event_timestamp"]).all()
    assert {col: str(features[col].dtype) for col in CARD_FEATURES} == {
        col: FEATURE_DTYPES[col] for col in CARD_FEATURES
    }
    assert str(features["event_timestamp"].dtype) == "datetime64[us, UTC]"


def test_a_transaction_exactly_one_window_earlier_is_outside_it() -> None:
    tx = _transactions(
        [
            (1, "2026-01-01 10:00", 1, 10.0),
            (1, "2026-01-01 11:00", 2, 20.0),  # exactly 1 h after the first
            (1, "2026-01-02 10:00", 3, 40.0),  # exactly 24 h after the first
            (1, "2026-01-08 10:00", 4, 80.0),  # exactly 7 d after the first
        ]
    )

    features = card_features(tx)

    # Each row sees only the card's earlier transactions: the first sees none at all.
    assert features["card_txn_count_1h"].tolist() == [0, 0, 0, 0]
    assert features["card_amount_sum_1h"].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert features["card_txn_count_24h"].tolist() == [0, 1, 1, 0]
    assert features["card_txn_count_7d"].tolist() == [0, 1, 2, 2]
    assert features["card_amount_sum_7d"].tolist() == [0.0, 10.0, 30.0, 60.0]
    assert features["card_amount_max_7d"].tolist()[1:] == [10.0, 20.0, 40.0]
    assert np.isnan(features["card_amount_max_7d"].iloc[0])
    assert np.isnan(features["card_amount_mean_7d"].iloc[0])


def test_features_decay_to_the_transaction_time() -> None:
    # A burst, then a quiet hour: the next transaction sees the burst in 24 h, not in 1 h.
    tx = _transactions(
        [
            (1, "2026-01-01 10:00", 1, 10.0),
            (1, "2026-01-01 10:05", 1, 10.0),
            (1, "2026-01-01 10:10", 2, 10.0),
            (1, "2026-01-01 10:40", 3, 5.0),
            (1, "2026-01-01 11:30", 3, 7.0),
        ]
    )

    features = card_features(tx)

    assert features["card_txn_count_1h"].tolist() == [0, 1, 2, 3, 1]
    assert features["card_txn_count_24h"].tolist() == [0, 1, 2, 3, 4]
    assert features["card_amount_sum_1h"].iloc[-1] == 5.0


def test_since_gives_the_rows_of_the_full_computation(random_transactions: pd.DataFrame) -> None:
    since = START + pd.Timedelta(days=8, hours=3)
    full = card_features(random_transactions)

    incremental = card_features(random_transactions, since=since)

    expected = full[full["event_timestamp"] >= since]
    assert 0 < len(incremental) < len(full)
    pd.testing.assert_frame_equal(incremental, expected)

    # ... also when the history given starts only 7 days before ``since``.
    recent = random_transactions[random_transactions["event_timestamp"] >= since - WINDOWS["7d"]]
    windows = [c for c in CARD_FEATURES if c != "card_new_merchants_24h"]
    pd.testing.assert_frame_equal(card_features(recent, since=since)[windows], expected[windows])


def test_transactions_at_the_same_instant_do_not_see_each_other_in_any_order() -> None:
    tx = _transactions(
        [
            (5, "2026-01-01 09:00", 1, 10.0),
            (5, "2026-01-01 12:00", 2, 30.0),
            (5, "2026-01-01 12:00", 3, 5.0),
            (6, "2026-01-01 12:00", 2, 99.0),
        ]
    )

    features = card_features(tx)
    shuffled = card_features(tx.iloc[[3, 2, 0, 1]])

    tied = features.loc[[1, 2], list(CARD_FEATURES)]
    assert tied.iloc[0].equals(tied.iloc[1])
    assert tied.iloc[0]["card_txn_count_24h"] == 1
    assert tied.iloc[0]["card_amount_sum_24h"] == 10.0
    assert tied.iloc[0]["card_new_merchants_24h"] == 1
    pd.testing.assert_frame_equal(shuffled.sort_index(), features)


def test_new_merchants_count_only_first_visits() -> None:
    tx = _transactions(
        [
            (1, "2026-01-01 08:00", 10, 5.0),  # first visit to 10
            (1, "2026-01-01 09:00", 11, 5.0),  # first visit to 11
            (1, "2026-01-01 10:00", 10, 5.0),  # back at 10
            (1, "2026-01-01 11:00", 12, 5.0),  # first visit to 12
            (1, "2026-01-02 10:30", 10, 5.0),  # back at 10; only the first at 12 is < 24 h old
            (1, "2026-01-02 10:45", 13, 5.0),  # first visit to 13
            (2, "2026-01-02 10:45", 13, 5.0),  # another card's first visit to 13
            (1, "2026-01-05 12:00", 11, 5.0),  # back at 11 after 4 days
            (1, "2026-01-05 13:00", 99, 5.0),  # sees the visit to 11 an hour earlier
        ]
    )

    assert card_features(tx)["card_new_merchants_24h"].tolist() == [0, 1, 2, 2, 1, 1, 0, 0, 0]

    # With a 2-day lookback, coming back to 11 after 4 days counts as new.
    recent_only = card_features(tx, new_merchant_lookback=pd.Timedelta(days=2))
    assert recent_only["card_new_merchants_24h"].tolist() == [0, 1, 2, 2, 1, 1, 0, 0, 1]


def test_one_card_online_equals_the_offline_rows(random_transactions: pd.DataFrame) -> None:
    # Serving calls the same function on one card's events and one query time.
    tx = random_transactions.sort_values("event_timestamp", kind="stable")
    offline = card_features(tx)
    card = tx[tx["card_id"] == 2]
    micros = pd.DatetimeIndex(card["event_timestamp"]).asi8
    for i in range(0, len(card), 7):
        got = card_window_arrays(
            card["card_id"].to_numpy(),
            micros,
            card["amount"].to_numpy(),
            card["merchant_id"].to_numpy(),
            np.array([2]),
            micros[i : i + 1],
        )
        row = offline.loc[card.index[i]]
        for name in CARD_FEATURES:
            assert got[name][0] == pytest.approx(row[name], rel=1e-12, nan_ok=True), name


def test_an_unknown_card_gets_the_empty_window_defaults() -> None:
    none = np.array([], dtype=np.int64)
    got = card_window_arrays(
        none, none, np.array([]), none, np.array([7]), np.array([1_000_000], dtype=np.int64)
    )
    assert got["card_txn_count_7d"][0] == 0
    assert got["card_amount_sum_24h"][0] == 0.0
    assert np.isnan(got["card_amount_mean_7d"][0])
    assert np.isnan(got["card_amount_max_7d"][0])


def test_naive_timestamps_are_refused() -> None:
    tx = _transactions([(1, "2026-01-01 10:00", 1, 1.0)])
    tx["event_timestamp"] = tx["event_timestamp"].dt.tz_localize(None)

    with pytest.raises(TypeError, match="timezone-aware"):
        card_features(tx)


def test_simulated_days_give_complete_features() -> None:
    config = SimulateConfig(days=3, rows_per_day=600, cards=200, merchants=40)
    world = build_world(config)
    days = [simulate_day(world, config, day) for day in range(config.days)]
    tx = pd.concat([t for t, _ in days], ignore_index=True)
    labels = pd.concat([lb for _, lb in days], ignore_index=True)

    cards = card_features(tx)
    merchants = merchant_features(tx, labels, [config.start_date + dt.timedelta(days=3)])

    assert len(cards) == len(tx)
    # Only the mean and max of an empty window are missing (a card's first transaction).
    empty = cards["card_txn_count_7d"] == 0
    assert empty.any()
    assert cards.loc[empty, ["card_amount_mean_7d", "card_amount_max_7d"]].isna().all().all()
    assert not cards.loc[~empty].isna().any().any()
    assert not cards.drop(columns=["card_amount_mean_7d", "card_amount_max_7d"]).isna().any().any()
    assert (cards["card_txn_count_7d"] >= cards["card_txn_count_24h"]).all()
    seen = cards[~empty]
    assert (seen["card_amount_max_7d"] <= seen["card_amount_sum_7d"] + 1e-9).all()
    assert set(merchants["merchant_id"]) == set(tx["merchant_id"])
    assert not merchants.isna().any().any()


# ------------------------------------------------------------------ merchant risk


def _labels(rows: list[tuple[int, str, str, int]]) -> pd.DataFrame:
    """(merchant_id, event time, label time, is_fraud) rows as a labels frame."""
    merchant, event, arrival, fraud = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "merchant_id": np.array(merchant, dtype=np.int64),
            "event_timestamp": pd.DatetimeIndex([_at(t) for t in event]).as_unit("us"),
            "label_timestamp": pd.DatetimeIndex([_at(t) for t in arrival]).as_unit("us"),
            "is_fraud": np.array(fraud, dtype=np.int8),
        }
    )


def _row(features: pd.DataFrame, merchant: int, day: str) -> pd.Series:
    hit = features[
        (features["merchant_id"] == merchant) & (features["event_timestamp"] == _at(day))
    ]
    assert len(hit) == 1
    return hit.iloc[0]


def test_a_fraud_label_counts_only_once_it_has_arrived() -> None:
    tx = _transactions([(1, "2026-01-01 12:00", 7, 50.0)])
    labels = _labels([(7, "2026-01-01 12:00", "2026-01-09 12:00", 1)])
    days = pd.date_range("2026-01-09", "2026-02-01", tz=UTC)

    features = merchant_features(tx, labels, days)

    before = _row(features, 7, "2026-01-09")  # the label arrives later that day
    assert (before["merchant_labeled_30d"], before["merchant_fraud_30d"]) == (0, 0)
    assert before["merchant_fraud_rate_30d"] == pytest.approx(PRIOR_RATE)
    after = _row(features, 7, "2026-01-10")
    assert (after["merchant_labeled_30d"], after["merchant_fraud_30d"]) == (1, 1)
    assert after["merchant_fraud_rate_30d"] == pytest.approx(
        (1 + PRIOR_RATE * PRIOR_WEIGHT) / (1 + PRIOR_WEIGHT)
    )
    assert _row(features, 7, "2026-01-31")["merchant_fraud_30d"] == 1  # 29.5 days old
    assert _row(features, 7, "2026-02-01")["merchant_fraud_30d"] == 0  # 30.5 days old


def test_a_label_arriving_exactly_at_the_snapshot_is_known() -> None:
    tx = _transactions([(1, "2026-01-01 00:00", 7, 50.0)])
    labels = _labels([(7, "2026-01-01 00:00", "2026-01-08 00:00", 1)])

    features = merchant_features(tx, labels, [dt.date(2026, 1, 7), dt.date(2026, 1, 8)])

    assert features["merchant_fraud_30d"].tolist() == [0, 1]


def test_transaction_counts_cover_the_seven_days_before_the_snapshot() -> None:
    tx = _transactions(
        [
            (1, "2026-01-01 00:00", 3, 1.0),  # exactly at the 7-day boundary of Jan 8
            (1, "2026-01-05 12:00", 3, 1.0),
            (1, "2026-01-08 00:00", 3, 1.0),  # at the snapshot itself: not before it
        ]
    )
    no_labels = _labels([(3, "2026-01-01 00:00", "2026-03-01 00:00", 0)]).iloc[:0]
    days = [dt.date(2026, 1, 1), dt.date(2026, 1, 8), dt.date(2026, 1, 9)]

    features = merchant_features(tx, no_labels, days)

    assert features["merchant_txn_count_7d"].tolist() == [0, 2, 2]


def test_a_merchant_without_labels_gets_the_prior() -> None:
    tx = _transactions([(1, "2026-01-03 10:00", 1, 5.0), (2, "2026-01-03 11:00", 2, 5.0)])
    labels = _labels(
        [
            (1, "2026-01-03 10:00", "2026-01-04 10:00", 0),
            (2, "2026-01-03 11:00", "2026-01-04 11:00", 1),
        ]
    )

    features = merchant_features(tx, labels, [dt.date(2026, 1, 10)], merchant_ids=[1, 2, 99])

    assert features["merchant_id"].tolist() == [1, 2, 99]
    quiet = _row(features, 99, "2026-01-10")
    assert (quiet["merchant_txn_count_7d"], quiet["merchant_labeled_30d"]) == (0, 0)
    assert quiet["merchant_fraud_rate_30d"] == pytest.approx(PRIOR_RATE)
    rates = features.set_index("merchant_id")["merchant_fraud_rate_30d"]
    assert rates[1] < rates[99] < rates[2]  # smoothing keeps the order of the evidence
    assert {col: str(features[col].dtype) for col in MERCHANT_FEATURES} == {
        col: FEATURE_DTYPES[col] for col in MERCHANT_FEATURES
    }
    assert str(features["event_timestamp"].dtype) == "datetime64[us, UTC]"


def test_merchant_counts_equal_a_brute_force_count() -> None:
    rng = np.random.default_rng(3)
    n = 300
    event = START + pd.to_timedelta(rng.integers(0, 40 * 24 * 60, n), unit="min")
    delay = pd.to_timedelta(rng.integers(0, 15 * 24 * 60, n), unit="min")
    tx = pd.DataFrame(
        {
            "merchant_id": rng.integers(1, 6, n).astype(np.int64),
            "event_timestamp": pd.DatetimeIndex(event).as_unit("us"),
        }
    )
    labels = tx.assign(
        label_timestamp=pd.DatetimeIndex(event + delay).as_unit("us"),
        is_fraud=(rng.random(n) < 0.3).astype(np.int8),
    )
    days = pd.date_range("2026-01-05", "2026-02-15", freq="3D", tz=UTC)

    features = merchant_features(tx, labels, days).set_index(["event_timestamp", "merchant_id"])

    for day in days:
        for merchant in range(1, 6):
            own = labels[labels["merchant_id"] == merchant]
            recent = own[(own["event_timestamp"] >= day - pd.Timedelta(days=30))]
            known = recent[(recent["event_timestamp"] < day) & (recent["label_timestamp"] <= day)]
            week = own[(own["event_timestamp"] >= day - pd.Timedelta(days=7))]
            got = features.loc[(day, merchant)]
            assert got["merchant_txn_count_7d"] == (week["event_timestamp"] < day).sum()
            assert got["merchant_labeled_30d"] == len(known)
            assert got["merchant_fraud_30d"] == known["is_fraud"].sum()


def test_snapshots_must_be_midnights() -> None:
    tx = _transactions([(1, "2026-01-01 10:00", 1, 1.0)])
    labels = _labels([(1, "2026-01-01 10:00", "2026-01-02 10:00", 0)])

    with pytest.raises(ValueError, match="midnight"):
        merchant_features(tx, labels, pd.DatetimeIndex([_at("2026-01-05 06:00")]))


# ------------------------------------------------------------------ profile and request


def test_card_profile_is_stamped_as_of() -> None:
    cards = pd.DataFrame(
        {
            "card_id": np.array([1, 2], dtype=np.int64),
            "home_latitude": [40.7, 34.0],
            "home_longitude": [-74.0, -118.2],
            "card_type": pd.array(["debit", "credit"], dtype="string"),
        }
    )

    profile = card_profile(cards, pd.Timestamp("2020-01-01", tz=UTC))

    assert list(profile.columns) == [
        "card_id",
        *PROFILE_FEATURES,
        "event_timestamp",
        "created_timestamp",
    ]
    assert (profile["event_timestamp"] == _at("2020-01-01")).all()
    assert str(profile["event_timestamp"].dtype) == "datetime64[us, UTC]"


def _request(**overrides: object) -> pd.DataFrame:
    values: dict[str, object] = {
        "amount": [100.0],
        "event_timestamp": [_at("2026-01-01 12:00")],
        "channel": ["in_store"],
        "latitude": [40.71],
        "longitude": [-74.01],
        "card_amount_mean_7d": [50.0],
        "home_latitude": [40.71],
        "home_longitude": [-74.01],
    }
    values.update(overrides)
    return pd.DataFrame(values)


def test_request_features_by_hand() -> None:
    known_card = _request(channel=["online"], latitude=[34.05], longitude=[-118.24])  # in LA
    unknown_card = _request(
        amount=[20.0],
        card_amount_mean_7d=[np.nan],
        home_latitude=[np.nan],
        home_longitude=[np.nan],
    )
    df = pd.concat([known_card, unknown_card], ignore_index=True)
    df.index = pd.Index(["a", "b"])
    # Times given in New York: 22:30 there is 03:30 UTC (night), 07:00 is 12:00 UTC.
    df["event_timestamp"] = pd.DatetimeIndex(
        ["2025-12-31 22:30", "2026-01-01 07:00"], tz="America/New_York"
    )

    features = request_features(df)

    assert list(features.columns) == list(REQUEST_FEATURES)
    pd.testing.assert_index_equal(features.index, df.index)
    assert features.loc["a", "amount_log"] == pytest.approx(np.log(101.0))
    assert features.loc["a", "amount_to_card_mean_7d"] == pytest.approx(2.0)
    assert features.loc["a", "hour_of_day"] == 3
    assert features.loc["a", "is_night"] == 1
    assert features.loc["a", "is_online"] == 1
    assert features.loc["a", "distance_from_home_km"] == pytest.approx(3936.0, rel=0.01)
    assert features.loc["b"].to_dict() == {
        "amount_log": pytest.approx(np.log(21.0)),
        "amount_to_card_mean_7d": 1.0,
        "hour_of_day": 12,
        "is_night": 0,
        "distance_from_home_km": -1.0,
        "is_online": 0,
    }
    assert not features.isna().any().any()
    assert {col: str(dtype) for col, dtype in features.dtypes.items()} == REQUEST_FEATURE_DTYPES


def test_a_zero_card_mean_gives_a_neutral_ratio_for_a_single_row() -> None:
    features = request_features(_request(card_amount_mean_7d=[0.0]))

    assert features["amount_to_card_mean_7d"].tolist() == [1.0]
    assert features["distance_from_home_km"].tolist() == [pytest.approx(0.0)]
    assert not features.isna().any().any()


def test_model_features_are_numeric_and_all_produced() -> None:
    produced = set(CARD_FEATURES) | set(MERCHANT_FEATURES) | set(REQUEST_FEATURES)

    assert set(MODEL_FEATURES) <= produced
    assert len(set(MODEL_FEATURES)) == len(MODEL_FEATURES)
    assert all(FEATURE_DTYPES[name] in ("int64", "float64") for name in MODEL_FEATURES)
    assert not set(CATEGORICAL_FEATURES) & set(MODEL_FEATURES)

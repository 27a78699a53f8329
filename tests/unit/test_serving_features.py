"""Serving computes request-time features with the training code: same values, row by row."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from fraud_detection.features.engineering import (
    CARD_FEATURES,
    MODEL_FEATURES,
    REQUEST_FEATURES,
    request_features,
)
from fraud_detection.features.online import CardState, OnlineRow
from fraud_detection.serving.schemas import Transaction
from fraud_detection.serving.service import model_inputs

pytestmark = pytest.mark.unit


def _random_requests(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-01-01", tz="UTC").value // 1_000
    micros = start + rng.integers(0, 30 * 86_400 * 1_000_000, n)
    frame = pd.DataFrame(
        {
            "amount": np.round(rng.lognormal(3.5, 1.2, n), 2) + 0.01,
            "event_timestamp": pd.to_datetime(micros, unit="us", utc=True),
            "channel": rng.choice(["in_store", "online", "contactless"], n),
            "latitude": rng.uniform(-60, 60, n),
            "longitude": rng.uniform(-170, 170, n),
            "card_amount_mean_7d": rng.lognormal(3.5, 1.0, n),
            "home_latitude": rng.uniform(-60, 60, n),
            "home_longitude": rng.uniform(-170, 170, n),
        }
    )
    # Unknown cards and first transactions: no mean, no home; a zero mean too
    frame.loc[::5, "card_amount_mean_7d"] = np.nan
    frame.loc[::7, ["home_latitude", "home_longitude"]] = np.nan
    frame.loc[3::11, "card_amount_mean_7d"] = 0.0
    return frame


def _transaction(row: pd.Series) -> Transaction:
    return Transaction(
        card_id=1,
        merchant_id=2,
        amount=row["amount"],
        timestamp=row["event_timestamp"].to_pydatetime(),
        channel=row["channel"],
        merchant_category="grocery",
        latitude=row["latitude"],
        longitude=row["longitude"],
    )


LOOKED_UP = (*CARD_FEATURES, "merchant_fraud_rate_30d", "home_latitude", "home_longitude")


def _lookup(row: pd.Series, rng: np.random.Generator) -> OnlineRow:
    values = dict(zip(LOOKED_UP, rng.uniform(0, 10, len(LOOKED_UP)).tolist(), strict=True))
    for name in ("card_amount_mean_7d", "home_latitude", "home_longitude"):
        values[name] = row[name]
    return OnlineRow(values, CardState.empty(), False, False, feature_age_s=1.0)


@pytest.mark.parametrize("batch", [False, True], ids=["one-by-one", "batch"])
def test_serving_path_equals_request_features(batch: bool) -> None:
    # Given random transactions with looked-up card features (some missing)
    frame = _random_requests(500, seed=11)
    expected = request_features(frame)
    rng = np.random.default_rng(5)
    transactions = [_transaction(row) for _, row in frame.iterrows()]
    lookups = [_lookup(row, rng) for _, row in frame.iterrows()]

    # When serving builds the model inputs (one request at a time, or as a batch)
    if batch:
        rows = model_inputs(transactions, lookups)
    else:
        rows = [model_inputs((t,), (lk,))[0] for t, lk in zip(transactions, lookups, strict=True)]
    served = pd.DataFrame(rows, columns=list(MODEL_FEATURES))

    # Then the request-time features are the training code's, value for value
    for name in REQUEST_FEATURES:
        np.testing.assert_allclose(
            served[name].to_numpy(dtype=float),
            expected[name].to_numpy(dtype=float),
            rtol=1e-12,
            atol=0,
            err_msg=name,
        )
    # And the looked-up features are passed through in MODEL_FEATURES order
    np.testing.assert_array_equal(
        served[list(CARD_FEATURES)].to_numpy(),
        np.array([[lk.values[n] for n in CARD_FEATURES] for lk in lookups]),
    )


def test_request_features_before_1970_and_across_midnight() -> None:
    # The array core takes microseconds; hours must be right on both sides of the epoch
    stamps = pd.to_datetime(
        ["1969-12-31T23:30:00Z", "1970-01-01T00:30:00Z", "2026-03-01T05:59:59.999999Z"],
        utc=True,
        format="ISO8601",
    )
    frame = _random_requests(3, seed=1).assign(event_timestamp=stamps)
    features = request_features(frame)
    assert features["hour_of_day"].tolist() == [23, 0, 5]
    assert features["is_night"].tolist() == [0, 1, 1]


def test_unknown_card_defaults() -> None:
    # An unknown card: no 7-day mean (ratio 1.0), no home (distance -1)
    txn = Transaction(
        card_id=1,
        merchant_id=2,
        amount=80.0,
        timestamp=dt.datetime(2026, 1, 5, 3, tzinfo=dt.UTC),
        channel="online",
        merchant_category="travel",
        latitude=10.0,
        longitude=20.0,
    )
    missing = OnlineRow(dict.fromkeys(LOOKED_UP, np.nan), CardState.empty(), True, True, None)
    (row,) = model_inputs((txn,), (missing,))
    values = dict(zip(MODEL_FEATURES, row, strict=True))
    assert values["amount_to_card_mean_7d"] == 1.0
    assert values["distance_from_home_km"] == -1.0
    assert values["is_online"] == 1
    assert values["is_night"] == 1
    assert all(np.isnan(values[name]) for name in CARD_FEATURES)

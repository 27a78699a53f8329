"""The request contract: what /predict accepts, and the bodies built from raw rows."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import pytest
from pydantic import ValidationError

from fraud_detection.data.schema import TRANSACTION_COLUMNS
from fraud_detection.serving.schemas import MAX_AMOUNT, Transaction, requests_from_raw

pytestmark = pytest.mark.unit

GOOD: dict[str, Any] = {
    "transaction_id": "T1",
    "card_id": 42,
    "merchant_id": 7,
    "amount": 59.9,
    "timestamp": "2026-01-08T14:03:00+01:00",
    "channel": "online",
    "merchant_category": "electronics",
    "latitude": 40.71,
    "longitude": -74.01,
}


def test_a_valid_transaction_is_normalised_to_utc() -> None:
    txn = Transaction.model_validate(GOOD)
    assert txn.timestamp == dt.datetime(2026, 1, 8, 13, 3, tzinfo=dt.UTC)
    assert txn.timestamp.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount", 0),
        ("amount", -5),
        ("amount", MAX_AMOUNT * 2),
        ("timestamp", "2026-01-08T14:03:00"),  # no time zone
        ("timestamp", "yesterday"),
        ("channel", "telepathy"),
        ("latitude", 91),
        ("longitude", -181),
        ("card_id", "forty-two"),
        ("card_id", -1),
        ("merchant_category", ""),
    ],
)
def test_an_invalid_field_is_named(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        Transaction.model_validate({**GOOD, field: value})
    assert [e["loc"] for e in caught.value.errors()] == [(field,)]


def test_missing_and_unknown_fields_are_named() -> None:
    body = {k: v for k, v in GOOD.items() if k != "amount"} | {"amout": 5}
    with pytest.raises(ValidationError) as caught:
        Transaction.model_validate(body)
    assert {e["loc"] for e in caught.value.errors()} == {("amount",), ("amout",)}


def test_requests_from_raw_rows_are_valid_requests() -> None:
    raw = pd.DataFrame(
        {
            "transaction_id": pd.array(["T1", None], dtype="string"),
            "event_timestamp": pd.to_datetime(
                ["2026-01-02T03:04:05.123456Z", "2026-01-02T23:59:59Z"], utc=True, format="ISO8601"
            ),
            "card_id": [1, 2],
            "merchant_id": [3, 4],
            "merchant_category": pd.array(["grocery", "travel"], dtype="string"),
            "amount": [12.5, 99.0],
            "channel": pd.array(["in_store", "online"], dtype="string"),
            "latitude": [1.0, 2.0],
            "longitude": [3.0, 4.0],
        }
    ).astype(TRANSACTION_COLUMNS)
    bodies = requests_from_raw(raw)
    txns = [Transaction.model_validate(b) for b in bodies]
    assert [t.transaction_id for t in txns] == ["T1", None]
    assert txns[0].timestamp == raw["event_timestamp"].iloc[0].to_pydatetime()
    assert bodies[1]["card_id"] == 2
    assert isinstance(bodies[1]["card_id"], int)

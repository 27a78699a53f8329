"""The prediction API's request and response bodies (the contract clients code against).

A :class:`Transaction` is one card transaction as the simulator writes it
(``fraud_detection.data.schema.TRANSACTION_COLUMNS``), with ``timestamp`` for the raw
``event_timestamp``. Validation happens here, once, at the edge: a request that passes
is finite and in range, so the scoring path can skip its own checks. A malformed body is
answered 422 with the offending field named by FastAPI.

:func:`requests_from_raw` turns raw transaction rows into request bodies, for load tests,
benchmarks and the demo.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from fraud_detection.data.schema import MERCHANT_CATEGORIES

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "MAX_AMOUNT",
    "BatchPrediction",
    "BatchRequest",
    "Channel",
    "Prediction",
    "Transaction",
    "requests_from_raw",
]

# The raw-data gate's bound (validation/suites.py): above this, a feed error, not a purchase.
MAX_AMOUNT = 50_000.0
Channel = Literal["in_store", "online", "contactless"]  # data.schema.CHANNELS
MAX_ID = 2**63 - 1  # int64, the entity key type of the feature store


class Transaction(BaseModel):
    """A card transaction to score (one request body of ``POST /predict``)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "transaction_id": "T20260108-0000042",
                    "card_id": 42,
                    "merchant_id": 7,
                    "amount": 59.9,
                    "timestamp": "2026-01-08T14:03:00Z",
                    "channel": "online",
                    "merchant_category": "electronics",
                    "latitude": 40.71,
                    "longitude": -74.01,
                }
            ]
        },
    )

    transaction_id: Annotated[str | None, Field(max_length=128)] = None
    # Strict numbers: true, "5" or 5.0 is not an id, and "5" is not an amount.
    card_id: Annotated[
        int, Field(ge=0, le=MAX_ID, strict=True, description="The card (feature-store key).")
    ]
    merchant_id: Annotated[
        int, Field(ge=0, le=MAX_ID, strict=True, description="The merchant (feature-store key).")
    ]
    amount: Annotated[
        float,
        Field(
            gt=0,
            le=MAX_AMOUNT,
            strict=True,
            allow_inf_nan=False,
            description="In the card's currency.",
        ),
    ]
    timestamp: Annotated[
        AwareDatetime, Field(description="When it happened; needs a time zone (Z or +hh:mm).")
    ]
    channel: Channel
    merchant_category: Annotated[
        str,
        Field(
            min_length=1,
            max_length=64,
            description="One of " + ", ".join(MERCHANT_CATEGORIES) + "; another value is "
            "scored as an unknown category (the model's missing-value branch).",
        ),
    ]
    latitude: Annotated[float, Field(ge=-90, le=90, strict=True, allow_inf_nan=False)]
    longitude: Annotated[float, Field(ge=-180, le=180, strict=True, allow_inf_nan=False)]

    @field_validator("timestamp")
    @classmethod
    def _to_utc(cls, value: dt.datetime) -> dt.datetime:
        try:  # 0001-01-01T00:00+01:00 is a valid datetime whose UTC time is not
            return value.astimezone(dt.UTC)
        except OverflowError:
            raise ValueError("is outside the range of dates in UTC") from None

    @field_validator("transaction_id", "merchant_category")
    @classmethod
    def _unicode(cls, value: str | None) -> str | None:
        # JSON allows a lone surrogate escape ("\ud800"), which is no character at all.
        if value is not None:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("must be valid Unicode text (a lone surrogate)") from None
        return value


class Prediction(BaseModel):
    """The response of ``POST /predict``."""

    model_config = ConfigDict(frozen=True)

    request_id: str = Field(description="Unique per scored transaction; the log's key.")
    transaction_id: str | None = None
    score: float = Field(description="P(fraud) from the champion, in [0, 1].")
    decision: bool = Field(description="True when score >= threshold: flag the transaction.")
    threshold: float
    model_version: str = Field(description="The registered model version that scored it.")
    feature_age_seconds: float | None = Field(
        description="Transaction time minus the event time of the oldest online feature row "
        "used (card behaviour, merchant risk); null when neither was found. Negative when "
        "replaying transactions older than the online store."
    )
    unknown_card: bool = Field(
        description="No features of this card in the online store: scored with missing card "
        "features, as a card's first transaction."
    )
    unknown_merchant: bool = Field(
        description="No features of this merchant: scored with a missing merchant risk."
    )


class BatchRequest(BaseModel):
    """The body of ``POST /predict/batch``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transactions: list[Transaction] = Field(min_length=1)


class BatchPrediction(BaseModel):
    """The response of ``POST /predict/batch``: one prediction per transaction, in order."""

    model_config = ConfigDict(frozen=True)

    model_version: str
    predictions: list[Prediction]


_REQUEST_FIELDS = (
    "transaction_id",
    "card_id",
    "merchant_id",
    "amount",
    "channel",
    "merchant_category",
    "latitude",
    "longitude",
)


def requests_from_raw(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready ``/predict`` bodies from raw transaction rows (``TRANSACTION_COLUMNS``).

    ``event_timestamp`` becomes ``timestamp`` (ISO 8601, UTC); numbers become Python
    ints and floats; a missing ``transaction_id`` becomes ``None``.
    """
    import pandas as pd

    missing = [c for c in (*_REQUEST_FIELDS, "event_timestamp") if c not in frame.columns]
    if missing:
        raise ValueError(f"raw transactions lack column(s) {', '.join(missing)}")
    stamps = pd.to_datetime(frame["event_timestamp"], utc=True)
    iso = stamps.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").tolist()
    columns: dict[str, list[Any]] = {
        "transaction_id": [
            None if pd.isna(v) else str(v) for v in frame["transaction_id"].astype(object)
        ],
        "card_id": frame["card_id"].astype("int64").tolist(),
        "merchant_id": frame["merchant_id"].astype("int64").tolist(),
        "amount": frame["amount"].astype("float64").tolist(),
        "channel": frame["channel"].astype(str).tolist(),
        "merchant_category": frame["merchant_category"].astype(str).tolist(),
        "latitude": frame["latitude"].astype("float64").tolist(),
        "longitude": frame["longitude"].astype("float64").tolist(),
    }
    return [
        {
            "transaction_id": columns["transaction_id"][i],
            "card_id": columns["card_id"][i],
            "merchant_id": columns["merchant_id"][i],
            "amount": columns["amount"][i],
            "timestamp": iso[i],
            "channel": columns["channel"][i],
            "merchant_category": columns["merchant_category"][i],
            "latitude": columns["latitude"][i],
            "longitude": columns["longitude"][i],
        }
        for i in range(len(frame))
    ]

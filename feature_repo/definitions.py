"""Feast definitions of the fraud model: entities, feature views, request features, service.

The feature values themselves are computed by ``fraud_detection.features.engineering``
(the same functions serve training and the prediction API) and written as Parquet
feature tables under ``<state>/features/`` by ``fraud features build``.
``$FRAUD_FEATURE_TABLES`` points the sources at another folder (tests, benchmarks).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource
from feast.data_format import ParquetFormat
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Array, Float64, Int64, String, UnixTimestamp
from feast.value_type import ValueType

TABLES = Path(
    os.environ.get(
        "FRAUD_FEATURE_TABLES", Path(__file__).resolve().parent.parent / "state" / "features"
    )
)

card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.INT64)
merchant = Entity(name="merchant", join_keys=["merchant_id"], value_type=ValueType.INT64)


def _source(table: str) -> FileSource:
    # A folder of daily Parquet files (one per day), read as one table by DuckDB.
    return FileSource(
        name=f"{table}_source",
        path=str(TABLES / table / "*.parquet"),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        created_timestamp_column="created_timestamp",
    )


# A card's velocity and spend over trailing windows, exactly as of each transaction (its
# own time, decayed; the transaction itself and others at the same instant excluded).
# Offline: one row per transaction, stamped with its time, joined point-in-time by Feast.
# Online: computed when the request arrives from the card's state (`card_recent`), by
# the same function (tag `online_state`), so it is never materialized itself.
card_behaviour = FeatureView(
    name="card_behaviour",
    entities=[card],
    ttl=timedelta(days=7),
    schema=[
        Field(name="card_txn_count_1h", dtype=Int64),
        Field(name="card_txn_count_24h", dtype=Int64),
        Field(name="card_txn_count_7d", dtype=Int64),
        Field(name="card_amount_sum_1h", dtype=Float64),
        Field(name="card_amount_sum_24h", dtype=Float64),
        Field(name="card_amount_sum_7d", dtype=Float64),
        Field(name="card_amount_mean_7d", dtype=Float64),
        Field(name="card_amount_max_7d", dtype=Float64),
        Field(name="card_new_merchants_24h", dtype=Int64),
    ],
    source=_source("card_behaviour"),
    online=False,
    tags={"online_state": "card_recent"},
)

# A card's state for request-time features: its transactions of the last 8 days as
# arrays. The prediction API appends every transaction it scores; a batch snapshot (one
# row per card at each day's end) is merged in by `fraud features materialize`.
card_recent = FeatureView(
    name="card_recent",
    entities=[card],
    ttl=timedelta(days=8),
    schema=[
        Field(name="recent_timestamps_us", dtype=Array(Int64)),
        Field(name="recent_amounts", dtype=Array(Float64)),
        Field(name="recent_merchants", dtype=Array(Int64)),
        Field(name="recent_keys", dtype=Array(Int64)),
    ],
    source=_source("card_recent"),
    online=True,
)

# Daily snapshot of a merchant's volume and smoothed fraud rate, built only from labels
# (chargebacks) that had arrived by the snapshot: the label delay cannot leak.
merchant_risk = FeatureView(
    name="merchant_risk",
    entities=[merchant],
    ttl=timedelta(days=2),
    schema=[
        Field(name="merchant_txn_count_7d", dtype=Int64),
        Field(name="merchant_labeled_30d", dtype=Int64),
        Field(name="merchant_fraud_30d", dtype=Int64),
        Field(name="merchant_fraud_rate_30d", dtype=Float64),
    ],
    source=_source("merchant_risk"),
    online=True,
)

# Static card attributes (home location, card type); no expiry.
card_profile = FeatureView(
    name="card_profile",
    entities=[card],
    ttl=timedelta(0),
    schema=[
        Field(name="home_latitude", dtype=Float64),
        Field(name="home_longitude", dtype=Float64),
        Field(name="card_type", dtype=String),
    ],
    source=_source("card_profile"),
    online=True,
)

# What arrives with the transaction itself.
transaction = RequestSource(
    name="transaction",
    schema=[
        Field(name="amount", dtype=Float64),
        Field(name="transaction_timestamp", dtype=UnixTimestamp),
        Field(name="channel", dtype=String),
        Field(name="latitude", dtype=Float64),
        Field(name="longitude", dtype=Float64),
    ],
)


@on_demand_feature_view(
    sources=[card_behaviour, card_profile, transaction],
    schema=[
        Field(name="amount_log", dtype=Float64),
        Field(name="amount_to_card_mean_7d", dtype=Float64),
        Field(name="hour_of_day", dtype=Int64),
        Field(name="is_night", dtype=Int64),
        Field(name="distance_from_home_km", dtype=Float64),
        Field(name="is_online", dtype=Int64),
    ],
    mode="pandas",
)
def transaction_features(inputs: pd.DataFrame) -> pd.DataFrame:
    """Request-time features: the same function the prediction API calls."""
    # Feast runs this function from its source text, so it imports what it uses.
    import pandas as pd

    from fraud_detection.features.engineering import request_features

    stamps = pd.to_datetime(inputs["transaction_timestamp"], utc=True)
    return request_features(inputs.assign(event_timestamp=stamps))


# The features the model is trained and served on. A model version records this name;
# a change of features is a new service (fraud_model_v2), not an edit of this one.
fraud_model_v1 = FeatureService(
    name="fraud_model_v1",
    features=[
        card_behaviour,
        merchant_risk[["merchant_fraud_rate_30d"]],
        transaction_features,
    ],
)

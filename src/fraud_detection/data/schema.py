"""The contract of the raw data: what every transaction partition and label file holds.

The simulator writes it, the data gate checks it, the feature code reads it.
"""

from __future__ import annotations

# One row per card transaction, one Parquet file per day:
#   <state>/data/raw/date=YYYY-MM-DD/transactions.parquet
TRANSACTION_COLUMNS: dict[str, str] = {
    "transaction_id": "string",  # unique, e.g. "T20260101-0000042"
    "event_timestamp": "datetime64[us, UTC]",  # inside the partition's day
    "card_id": "int64",
    "merchant_id": "int64",
    "merchant_category": "string",  # one of MERCHANT_CATEGORIES
    "amount": "float64",  # > 0, in the card's currency
    "channel": "string",  # one of CHANNELS
    "latitude": "float64",  # where the transaction happened (merchant or IP location)
    "longitude": "float64",
}

# Delayed labels (chargebacks), one file per arrival day:
#   <state>/data/labels/arrival_date=YYYY-MM-DD/labels.parquet
LABEL_COLUMNS: dict[str, str] = {
    "transaction_id": "string",
    "card_id": "int64",
    "merchant_id": "int64",
    "event_timestamp": "datetime64[us, UTC]",  # when the transaction happened
    "label_timestamp": "datetime64[us, UTC]",  # when the label became known
    "is_fraud": "int8",  # 1 = fraud
}

# Dimension tables, written once: <state>/data/reference/{cards,merchants}.parquet
CARD_COLUMNS: dict[str, str] = {
    "card_id": "int64",
    "home_latitude": "float64",
    "home_longitude": "float64",
    "card_type": "string",  # one of CARD_TYPES
}
MERCHANT_COLUMNS: dict[str, str] = {
    "merchant_id": "int64",
    "merchant_category": "string",
    "latitude": "float64",
    "longitude": "float64",
    "online_only": "bool",
}

MERCHANT_CATEGORIES: tuple[str, ...] = (
    "grocery",
    "restaurant",
    "fuel",
    "pharmacy",
    "clothing",
    "electronics",
    "travel",
    "entertainment",
    "online_retail",
    "digital_goods",
    "jewelry",
    "gambling",
)
CHANNELS: tuple[str, ...] = ("in_store", "online", "contactless")
CARD_TYPES: tuple[str, ...] = ("debit", "credit", "prepaid")

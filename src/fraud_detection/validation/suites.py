"""The expectation suites of the data gates, built in code as plain GX 1.x suite JSON.

Two suites:

* ``raw_transactions``: the contract of one daily partition (:mod:`..data.schema`):
  exactly the schema's columns with their exact dtypes, no nulls, plausible values,
  unique ids, timestamps inside the partition's day and not in the future, and a row
  count in line with recent accepted days; then the value-skew expectations (``meta.stage``
  ``values``): the amount's quantiles and the means of amount and coordinates within
  bands learnt from the accepted history (:func:`.values.gx_parameters`), ``critical``
  for the reject band and ``warning`` for the warn band.
* ``training_set``: a joined training frame: the model's columns present, a label rate
  in bounds, request features always present and in range, windowed features either
  null or non-negative, and enough rows.

Whatever depends on the batch is a suite parameter (``{"$PARAMETER": name}``), filled
in at run time by :func:`raw_parameters` / :func:`training_parameters`; the suite's
``meta.parameters`` says what each one means.

The suites are plain dictionaries (no Great Expectations import, no I/O): ``fraud
validate write-suites`` writes them to ``suites/<name>.json``, the files the gate runs,
and a unit test checks the files equal this code and that GX loads them unchanged.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fraud_detection.data.schema import CHANNELS, MERCHANT_CATEGORIES, TRANSACTION_COLUMNS
from fraud_detection.features.engineering import (
    CARD_FEATURES,
    CATEGORICAL_FEATURES,
    MODEL_FEATURES,
    REQUEST_FEATURES,
)
from fraud_detection.validation.settings import RawGateSettings, TrainingGateSettings

__all__ = [
    "MAX_AMOUNT",
    "RAW_SUITE",
    "SUITES_DIR",
    "TRAINING_COLUMNS",
    "TRAINING_SUITE",
    "build_suites",
    "load_suite",
    "raw_parameters",
    "raw_transactions_suite",
    "suite_json",
    "training_parameters",
    "training_set_suite",
]

RAW_SUITE = "raw_transactions"
TRAINING_SUITE = "training_set"
# Where the versioned suite files live (package data).
SUITES_DIR = Path(__file__).resolve().parent / "suites"

MAX_AMOUNT = 50_000.0  # a single card transaction above this is a feed error, not a purchase
MAX_DISTANCE_KM = 20_100.0  # half the Earth's circumference, rounded up

TRAINING_COLUMNS: tuple[str, ...] = (
    *MODEL_FEATURES,
    *CATEGORICAL_FEATURES,
    "is_fraud",
    "card_id",
    "merchant_id",
    "event_timestamp",
    "transaction_id",
)


def _param(name: str) -> dict[str, str]:
    return {"$PARAMETER": name}


def _expect(kind: str, **kwargs: Any) -> dict[str, Any]:
    """One expectation as GX 1.x serializes it (``kind`` without the ``expect_`` prefix)."""
    return {"type": f"expect_{kind}", "kwargs": kwargs, "meta": {}, "severity": "critical"}


VALUE_STAGE = "values"  # meta.stage of the expectations whose bands come from the history


def _value_expect(kind: str, level: str, **kwargs: Any) -> dict[str, Any]:
    """A value-skew expectation: ``critical`` at the reject level, ``warning`` at the warn
    level (the gate lets a partition through on a warning). Its bounds are parameters
    learnt from the accepted history; with too little history the gate leaves it out."""
    expectation = _expect(kind, **kwargs)
    expectation["severity"] = "critical" if level == "reject" else "warning"
    expectation["meta"] = {"stage": VALUE_STAGE, "level": level}
    return expectation


def _value_expectations() -> list[dict[str, Any]]:
    out = []
    for level in ("reject", "warn"):
        out.append(
            _value_expect(
                "column_quantile_values_to_be_within_bands",  # validation/expectations.py
                level,
                column="amount",
                quantile_ranges=_param(f"amount_quantiles_{level}"),
            )
        )
        out.extend(
            _value_expect(
                "column_mean_to_be_between",
                level,
                column=column,
                min_value=_param(f"{column}_mean_min_{level}"),
                max_value=_param(f"{column}_mean_max_{level}"),
            )
            for column in ("amount", "latitude", "longitude")
        )
        out.extend(
            _value_expect(  # validation/expectations.py: a sentinel or a stuck value
                "column_most_common_value_share_to_be_between",
                level,
                column=column,
                max_value=_param(f"{column}_top_share_max_{level}"),
            )
            for column in _TOP_SHARE_COLUMNS
        )
        out.extend(
            _value_expect(  # coordinates at (0, 0): a failed geocoder
                "column_values_to_not_be_in_set",
                level,
                column=column,
                value_set=[0.0],
                mostly=_param(f"{column}_nonzero_min_{level}"),
            )
            for column in ("latitude", "longitude")
        )
        out.extend(
            _value_expect(  # validation/expectations.py: a category or channel collapsed
                "column_value_shares_to_be_close_to",
                level,
                column=column,
                reference=_param(f"{column}_shares"),
                max_distance=_param(f"{column}_shares_max_{level}"),
            )
            for column in _CATEGORICAL
        )
        out.append(
            _value_expect(  # validation/expectations.py: times in the wrong time zone
                "column_hour_shares_to_be_close_to",
                level,
                column="event_timestamp",
                reference=_param("hour_shares"),
                max_distance=_param(f"hour_shares_max_{level}"),
            )
        )
    for column in _CATEGORICAL:
        out.append(  # a value every history day had, now absent
            _value_expect(
                "column_distinct_values_to_contain_set",
                "reject",
                column=column,
                value_set=_param(f"{column}_present"),
            )
        )
        out.append(  # a value no history day had
            _value_expect(
                "column_distinct_values_to_be_in_set",
                "warn",
                column=column,
                value_set=_param(f"{column}_seen"),
            )
        )
    return out


_CATEGORICAL = ("merchant_category", "channel")
_TOP_SHARE_COLUMNS = ("amount", "latitude", "longitude", "card_id", "merchant_id")


def _value_parameters() -> dict[str, str]:
    out = {}
    for level, what in (("reject", "rejects"), ("warn", "warns")):
        out[f"amount_quantiles_{level}"] = (
            f"value stage: the amount's 5/25/50/75/95 % quantile bands outside which the gate "
            f"{what}, learnt from recent accepted partitions (configs/validation.yaml "
            "raw.values.amount)"
        )
        for column, setting in (
            ("amount", "amount"),
            ("latitude", "coordinates"),
            ("longitude", "coordinates"),
        ):
            for side in ("min", "max"):
                out[f"{column}_mean_{side}_{level}"] = (
                    f"value stage: the {side} of the {column} mean's band outside which the "
                    f"gate {what} (raw.values.{setting})"
                )
        for column in _TOP_SHARE_COLUMNS:
            out[f"{column}_top_share_max_{level}"] = (
                f"value stage: the largest share of {column}'s most common value before the "
                f"gate {what}: the history's largest + raw.values.top_share"
            )
        for column in ("latitude", "longitude"):
            out[f"{column}_nonzero_min_{level}"] = (
                f"value stage: the smallest share of non-zero {column} values before the gate "
                f"{what}: 1 - (the history's largest share of zeros + raw.values.zero_share)"
            )
        for column in (*_CATEGORICAL, "hour"):
            out[f"{column}_shares_max_{level}"] = (
                f"value stage: the largest total variation distance of the {column} shares "
                f"from the history's before the gate {what}: the largest distance of a "
                "history day + raw.values.shares"
            )
    for column in (*_CATEGORICAL, "hour"):
        out[f"{column}_shares"] = f"value stage: the mean {column} shares of the history"
    for column in _CATEGORICAL:
        out[f"{column}_present"] = (
            f"value stage: the {column} values every history day had at least "
            "raw.values.vanished_min_share of (absent: rejected)"
        )
        out[f"{column}_seen"] = (
            f"value stage: the {column} values seen in the history (another: a warning)"
        )
    return out


# The training-set gate's value stage: these columns' distributions against the champion's
# training set (KL divergence), and the label rate.
TRAINING_VALUE_COLUMNS: tuple[str, ...] = (*MODEL_FEATURES, *_CATEGORICAL)


def _training_value_expectations() -> list[dict[str, Any]]:
    out = []
    for level in ("reject", "warn"):
        out.append(
            _value_expect(
                "column_mean_to_be_between",
                level,
                column="is_fraud",
                min_value=_param(f"label_rate_vs_champion_min_{level}"),
                max_value=_param(f"label_rate_vs_champion_max_{level}"),
            )
        )
        out.extend(
            _value_expect(
                "column_kl_divergence_to_be_below_reference",  # validation/expectations.py
                level,
                column=column,
                partition_object=_param(f"{column}_partition"),
                threshold=_param(f"kl_max_{level}"),
                tail_weight_holdout=0.01,  # values beyond the champion's range
                internal_weight_holdout=_param(f"{column}_internal_holdout"),
            )
            for column in TRAINING_VALUE_COLUMNS
        )
    return out


def _training_value_parameters() -> dict[str, str]:
    out = {}
    for level, what in (("reject", "rejects"), ("warn", "warns")):
        for side in ("min", "max"):
            out[f"label_rate_vs_champion_{side}_{level}"] = (
                f"value stage: the {side} of the label rate's band outside which the gate "
                f"{what}: the champion's training set's rate divided / multiplied by "
                "training.values.label_rate"
            )
        out[f"kl_max_{level}"] = (
            f"value stage: the largest KL divergence of a column from the champion's "
            f"training set before the gate {what} (training.values.kl_divergence)"
        )
    for column in TRAINING_VALUE_COLUMNS:
        out[f"{column}_partition"] = (
            f"value stage: {column} in the champion's training set (GX partition object: "
            "quantile bins, or values, and their weights)"
        )
        out[f"{column}_internal_holdout"] = (
            f"value stage: the weight given to {column}'s empty bins (0 for values)"
        )
    return out


def _suite(
    name: str, notes: str, parameters: dict[str, str], expectations: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "name": name,
        "notes": notes,
        "meta": {"parameters": parameters},
        "expectations": expectations,
    }


def raw_transactions_suite() -> dict[str, Any]:
    """The contract of one daily transaction partition."""
    columns = list(TRANSACTION_COLUMNS)
    return _suite(
        RAW_SUITE,
        "One daily partition, data/raw/date=YYYY-MM-DD/transactions.parquet, against "
        "fraud_detection.data.schema.TRANSACTION_COLUMNS.",
        {
            "min_rows": "fewest rows: min_volume_ratio x the median row count of recent "
            "accepted partitions (1 without history)",
            "max_rows": "most rows: max_volume_ratio x that median (none without history)",
            "day_start": "the partition's first instant, 00:00 UTC (ISO 8601)",
            "day_end": "the partition's last instant, 23:59:59.999999 UTC",
            "now": "when the validation runs: no transaction can be later",
            **_value_parameters(),
        },
        [
            # exactly these columns (exact_match defaults to true; GX drops the default)
            _expect("table_columns_to_match_set", column_set=columns),
            *(
                _expect("column_type_to_be", column=column, type_=dtype)
                for column, dtype in TRANSACTION_COLUMNS.items()
            ),
            _expect(
                "table_row_count_to_be_between",
                min_value=_param("min_rows"),
                max_value=_param("max_rows"),
            ),
            *(_expect("column_values_to_not_be_null", column=column) for column in columns),
            _expect("column_values_to_be_unique", column="transaction_id"),
            _expect(
                "column_values_to_be_between",
                column="event_timestamp",
                min_value=_param("day_start"),
                max_value=_param("day_end"),
            ),
            _expect(
                "column_values_to_be_between", column="event_timestamp", max_value=_param("now")
            ),
            _expect(
                "column_values_to_be_between",
                column="amount",
                min_value=0.0,
                max_value=MAX_AMOUNT,
                strict_min=True,
            ),
            _expect(
                "column_values_to_be_between", column="latitude", min_value=-90.0, max_value=90.0
            ),
            _expect(
                "column_values_to_be_between", column="longitude", min_value=-180.0, max_value=180.0
            ),
            _expect(
                "column_values_to_be_in_set",
                column="merchant_category",
                value_set=list(MERCHANT_CATEGORIES),
            ),
            _expect("column_values_to_be_in_set", column="channel", value_set=list(CHANNELS)),
            # the value-skew stage's checks that GX has expectations for (the others are
            # in validation/values.py), run with at least raw.values.min_history days
            *_value_expectations(),
        ],
    )


# Request features: computed for every row, so never null; their plausible ranges.
_REQUEST_RANGES: dict[str, dict[str, float]] = {
    "amount_log": {"min_value": 0.0},
    "amount_to_card_mean_7d": {"min_value": 0.0},
    "hour_of_day": {"min_value": 0.0, "max_value": 23.0},
    "distance_from_home_km": {"min_value": -1.0, "max_value": MAX_DISTANCE_KM},
}
_REQUEST_FLAGS = ("is_night", "is_online")


def training_set_suite() -> dict[str, Any]:
    """The contract of a training frame (features joined point-in-time, plus labels)."""
    if set(_REQUEST_RANGES) | set(_REQUEST_FLAGS) != set(REQUEST_FEATURES):
        raise RuntimeError("request features without a range or flag rule")
    windowed = (*CARD_FEATURES, "merchant_fraud_rate_30d")
    if set(MODEL_FEATURES) != set(windowed) | set(REQUEST_FEATURES):
        raise RuntimeError("model features the training-set suite does not know")
    return _suite(
        TRAINING_SUITE,
        "A training frame: model features, categorical columns, the label and the keys. "
        "Card window features are null for a card's first transaction or after the "
        "feature TTL, so only their range is checked.",
        {
            "min_rows": "fewest rows a model may be trained on",
            "label_rate_min": "lowest plausible mean of is_fraud",
            "label_rate_max": "highest plausible mean of is_fraud",
            **_training_value_parameters(),
        },
        [
            _expect(
                "table_columns_to_match_set", column_set=list(TRAINING_COLUMNS), exact_match=False
            ),
            _expect("table_row_count_to_be_between", min_value=_param("min_rows")),
            _expect("column_values_to_not_be_null", column="is_fraud"),
            _expect("column_values_to_be_in_set", column="is_fraud", value_set=[0, 1]),
            _expect(
                "column_mean_to_be_between",
                column="is_fraud",
                min_value=_param("label_rate_min"),
                max_value=_param("label_rate_max"),
            ),
            *(
                _expect("column_values_to_not_be_null", column=column)
                for column in (*REQUEST_FEATURES, "transaction_id", "event_timestamp")
            ),
            *(
                _expect("column_values_to_be_between", column=column, **bounds)
                for column, bounds in _REQUEST_RANGES.items()
            ),
            *(
                _expect("column_values_to_be_in_set", column=column, value_set=[0, 1])
                for column in _REQUEST_FLAGS
            ),
            *(
                _expect("column_values_to_be_between", column=column, min_value=0.0)
                for column in CARD_FEATURES
            ),
            _expect(
                "column_values_to_be_between",
                column="merchant_fraud_rate_30d",
                min_value=0.0,
                max_value=1.0,
            ),
            _expect(
                "column_values_to_be_in_set",
                column="merchant_category",
                value_set=list(MERCHANT_CATEGORIES),
            ),
            _expect("column_values_to_be_in_set", column="channel", value_set=list(CHANNELS)),
            _expect("column_values_to_be_unique", column="transaction_id"),
            # against the champion's training set (gate: left out without one)
            *_training_value_expectations(),
        ],
    )


def build_suites() -> dict[str, dict[str, Any]]:
    """Every suite, by name."""
    return {suite["name"]: suite for suite in (raw_transactions_suite(), training_set_suite())}


def suite_json(suite: dict[str, Any]) -> str:
    """The stable text of a suite file: sorted keys, two-space indent, final newline."""
    return json.dumps(suite, indent=2, sort_keys=True) + "\n"


def load_suite(name: str, directory: Path = SUITES_DIR) -> dict[str, Any]:
    """The versioned suite ``name`` as committed (what the gate runs)."""
    suite: dict[str, Any] = json.loads((directory / f"{name}.json").read_text())
    return suite


# ------------------------------------------------------------------ parameters


def _iso(stamp: dt.datetime) -> str:
    """A UTC instant as ISO 8601 with an explicit offset (GX rejects naive bounds)."""
    return stamp.astimezone(dt.UTC).isoformat(timespec="microseconds")


def raw_parameters(
    day: dt.date,
    *,
    now: dt.datetime,
    history_rows: Sequence[int],
    settings: RawGateSettings,
) -> dict[str, Any]:
    """The ``raw_transactions`` parameters for partition ``day``.

    ``history_rows`` are the row counts of the accepted partitions before ``day`` (any
    order; only the last ``settings.history_partitions`` given are used, so pass them
    oldest first). ``now`` must be timezone-aware.
    """
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware, got {now}")
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    end = start + dt.timedelta(days=1) - dt.timedelta(microseconds=1)
    recent = list(history_rows)[-settings.history_partitions :]
    if recent:
        median = statistics.median(recent)
        min_rows = max(1, math.ceil(settings.min_volume_ratio * median))
        max_rows: int | None = math.floor(settings.max_volume_ratio * median)
    else:
        min_rows, max_rows = 1, None
    return {
        "min_rows": min_rows,
        "max_rows": max_rows,
        "day_start": _iso(start),
        "day_end": _iso(end),
        "now": _iso(now),
    }


def training_parameters(settings: TrainingGateSettings) -> dict[str, Any]:
    """The ``training_set`` parameters."""
    return {
        "min_rows": settings.min_rows,
        "label_rate_min": settings.label_rate_min,
        "label_rate_max": settings.label_rate_max,
    }

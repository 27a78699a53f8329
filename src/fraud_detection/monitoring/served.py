"""What was served: the API's prediction log and the batch scores, read as one table.

Both follow one schema (``PREDICTION_COLUMNS`` then the model's input columns), one
folder per UTC day of the transaction::

    <state>/serving/predictions/date=YYYY-MM-DD/part-*.parquet   the API (source="api")
    <state>/scores/date=YYYY-MM-DD/scores.parquet                 batch (source="batch")
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from fraud_detection.config import StatePaths
from fraud_detection.features.engineering import CATEGORICAL_FEATURES
from fraud_detection.serving.predlog import INPUT_COLUMNS  # the model's inputs, logged

__all__ = [
    "INPUT_COLUMNS",
    "PREDICTION_COLUMNS",
    "conform",
    "one_per_transaction",
    "prediction_days",
    "read_predictions",
    "rows_dated_from",
]

# The prediction-log columns before the model's inputs, with their pandas dtypes.
PREDICTION_COLUMNS: dict[str, str] = {
    "request_id": "string",
    "logged_at": "datetime64[us, UTC]",
    "event_timestamp": "datetime64[us, UTC]",
    "transaction_id": "string",
    "card_id": "int64",
    "merchant_id": "int64",
    "model_version": "string",
    "score": "float64",
    "decision": "bool",
    "threshold": "float64",
    "unknown_card": "bool",
    "unknown_merchant": "bool",
    "feature_age_s": "float64",
    "latency_ms": "float64",
    "source": "string",
}
_DAY_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


def _folders(paths: StatePaths) -> dict[str, Path]:
    return {
        "api": paths.root / "serving" / "predictions",
        "batch": paths.root / "scores",
    }


def _day_files(paths: StatePaths) -> dict[dt.date, list[Path]]:
    files: dict[dt.date, list[Path]] = {}
    for source, folder in _folders(paths).items():
        if not folder.is_dir():
            continue
        pattern = "part-*.parquet" if source == "api" else "scores.parquet"
        for child in folder.iterdir():
            match = _DAY_DIR.match(child.name)
            if match and child.is_dir():
                found = sorted(child.glob(pattern))
                if found:
                    files.setdefault(dt.date.fromisoformat(match.group(1)), []).extend(found)
    return dict(sorted(files.items()))


def prediction_days(paths: StatePaths) -> list[dt.date]:
    """The days with served predictions (API log or batch scores), oldest first."""
    return list(_day_files(paths))


def _dtype(column: str) -> str:
    if column in PREDICTION_COLUMNS:
        return PREDICTION_COLUMNS[column]
    return "string" if column in CATEGORICAL_FEATURES else "float64"


def _cast(values: pd.Series, dtype: str) -> pd.Series:
    if dtype.startswith("datetime"):
        return pd.to_datetime(values, utc=True).dt.as_unit("us")
    if dtype == "bool":
        return values.astype("boolean").fillna(False).astype("bool")
    if dtype == "int64" and values.isna().any():
        return pd.to_numeric(values).astype("Int64")  # a broken file: keep the gaps visible
    target = pd.api.types.pandas_dtype(dtype)
    if dtype in ("int64", "float64"):
        return pd.to_numeric(values).astype(target)
    return values.astype(target)


def conform(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """``frame`` in the prediction-log schema: known columns cast, absent ones missing.

    ``columns`` (default: the whole schema) are the columns wanted, in that order. Model
    inputs become float64 (numeric) and string (categorical), so that part files written
    with nullable or integer dtypes concatenate cleanly.
    """
    wanted = list(columns) if columns else [*PREDICTION_COLUMNS, *INPUT_COLUMNS]
    out = {}
    for column in wanted:
        dtype = _dtype(column)
        if column in frame:
            values = frame[column]
        else:
            values = pd.Series(pd.NA, index=frame.index, dtype="object")
            if dtype.startswith("datetime"):
                values = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[us, UTC]")
        out[column] = _cast(values, dtype)
    return pd.DataFrame(out, index=frame.index)


def read_predictions(
    paths: StatePaths,
    days: int | Iterable[dt.date] | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The API's prediction log and the batch scores, in event-time order.

    ``days``: ``None`` for every day, an ``int`` N for the last N days that have any
    predictions, or the dates wanted. ``columns`` limits what is read (default: the
    prediction columns and the model's inputs). An empty frame in the schema when
    nothing matches.
    """
    import pyarrow.parquet as pq

    by_day = _day_files(paths)
    if isinstance(days, int):
        wanted = list(by_day)[-days:] if days > 0 else []
    elif days is None:
        wanted = list(by_day)
    else:
        chosen = set(days)
        wanted = [d for d in by_day if d in chosen]
    names = list(columns) if columns else [*PREDICTION_COLUMNS, *INPUT_COLUMNS]
    if "event_timestamp" not in names:
        names.append("event_timestamp")
    frames = []
    for day in wanted:
        for file in by_day[day]:
            present = set(pq.read_schema(file).names)
            part = pd.read_parquet(file, columns=[c for c in names if c in present])
            frames.append(conform(part, names))
    if not frames:
        return conform(pd.DataFrame(), names)
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values("event_timestamp", kind="stable").reset_index(drop=True)


def rows_dated_from(paths: StatePaths, day: dt.date) -> int:
    """How many served rows (API log and batch scores) are dated ``day`` or later: the
    row counts of those days' files (their Parquet footers; no data is read)."""
    import pyarrow.parquet as pq

    return sum(
        pq.read_metadata(file).num_rows
        for folder_day, files in _day_files(paths).items()
        if folder_day >= day
        for file in files
    )


def one_per_transaction(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per transaction id: the API's answer over a batch score of the same
    transaction, else the latest logged. Rows without a transaction id are all kept."""
    if frame.empty:
        return frame
    has_id = frame["transaction_id"].notna()
    ranked = frame[has_id].assign(
        _api=(frame.loc[has_id, "source"] == "api").astype(int),
    )
    ranked = ranked.sort_values(["_api", "logged_at"], kind="stable")
    kept = ranked.drop_duplicates("transaction_id", keep="last").drop(columns="_api")
    out = pd.concat([kept, frame[~has_id]], ignore_index=False)
    return out.sort_values("event_timestamp", kind="stable").reset_index(drop=True)

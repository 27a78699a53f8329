"""A failed expectation in words: :class:`Failure`, and how a Great Expectations result
becomes one (:func:`describe`): what the expectation asks, what was observed, a sample of
the offending values; JSON-safe, for the gate's records and its one-line messages."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

READABLE = "readable_parquet"  # our own check, before GX: the file opens as Parquet
SUBJECTS = {"expect_table_columns_to_match_set": "columns", READABLE: "file"}
# our own expectations (validation/expectations.py)
QUANTILE_BANDS = "expect_column_quantile_values_to_be_within_bands"
TOP_SHARE = "expect_column_most_common_value_share_to_be_between"
KL_BELOW_REFERENCE = "expect_column_kl_divergence_to_be_below_reference"
VALUE_SHARES = "expect_column_value_shares_to_be_close_to"
HOUR_SHARES = "expect_column_hour_shares_to_be_close_to"
SAMPLE_KEPT = 20  # offending values kept in records (GX returns up to 20)


@dataclass(frozen=True)
class Failure:
    """One failed expectation, in words and in figures."""

    expectation: str  # GX type, e.g. "expect_column_values_to_be_between"
    column: str | None
    expected: str  # what the expectation asks, e.g. "values between 0 (exclusive) and 50000"
    problem: str  # what was observed, e.g. "312 unexpected"
    observed: Any = None  # JSON-safe observed value, when the expectation has one
    unexpected_count: int | None = None
    sample: tuple[Any, ...] = ()  # some offending values (JSON-safe)

    @property
    def subject(self) -> str:
        """What the failure is about: the column, else the column set, file or table."""
        return self.column or SUBJECTS.get(self.expectation, "table")

    def line(self, sample_size: int = 3) -> str:
        """``amount: values between 0 (exclusive) and 50000 — 312 unexpected, e.g. [-17.2]``."""
        text = f"{self.subject}: {self.expected} — {self.problem}"
        if self.sample and sample_size:
            text += f", e.g. {show(list(self.sample[:sample_size]))}"
        return text

    def to_record(self) -> dict[str, Any]:
        return {
            "expectation": self.expectation,
            "column": self.column,
            "expected": self.expected,
            "problem": self.problem,
            "observed": self.observed,
            "unexpected_count": self.unexpected_count,
            "sample": list(self.sample),
        }


COLUMN_MISSING = "column missing"


def jsonable(value: Any) -> Any:
    """A JSON-safe version of a value GX reports (timestamps as ISO text, NaN as null)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, pd.Timestamp | dt.datetime | dt.date):
        return value.isoformat()
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def show(value: Any) -> str:
    """Short text of a bound or a sample: ``50000`` not ``50000.0``, no ISO zeros."""
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}" if abs(value) < 1e15 else repr(value)
    if isinstance(value, str):
        if re.match(r"^\d{4}-\d{2}-\d{2}T", value):
            return value.replace("T", " ").replace(".000000", "")
        return repr(value)
    return str(value)


def _between(kwargs: Mapping[str, Any], what: str) -> str:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    low_s = show(low) + (" (exclusive)" if kwargs.get("strict_min") else "")
    high_s = show(high) + (" (exclusive)" if kwargs.get("strict_max") else "")
    if low is not None and high is not None:
        return f"{what} between {low_s} and {high_s}"
    if low is not None:
        return f"{what} at least {low_s}"
    if high is not None:
        return f"{what} at most {high_s}"
    return f"{what} unbounded"


def _value_set(values: list[Any]) -> str:
    shown = ", ".join(show(v) for v in values[:6])
    return "{" + shown + (", …}" if len(values) > 6 else "}")


def asked(kind: str, kwargs: Mapping[str, Any]) -> str:
    """What an expectation asks, in a few words."""
    if kind == "expect_table_columns_to_match_set":
        exact = kwargs.get("exact_match", True) is not False
        return "exactly the contract's columns" if exact else "at least the required columns"
    if kind == "expect_column_type_to_be":
        return f"dtype {kwargs.get('type_')}"
    if kind == "expect_table_row_count_to_be_between":
        return _between(kwargs, "row count")
    if kind == "expect_column_values_to_not_be_null":
        return "no nulls"
    if kind == "expect_column_values_to_be_unique":
        return "unique values"
    if kind == "expect_column_values_to_be_between":
        return _between(kwargs, "values")
    if kind == "expect_column_values_to_be_in_set":
        return f"values in {_value_set(list(kwargs.get('value_set') or []))}"
    if kind == "expect_column_mean_to_be_between":
        return _between(kwargs, "mean")
    if kind == TOP_SHARE:
        return f"share of the most common value at most {show(kwargs.get('max_value'))}"
    if kind == "expect_column_values_to_not_be_in_set":
        values = _value_set(list(kwargs.get("value_set") or []))
        mostly = kwargs.get("mostly")
        if isinstance(mostly, int | float) and mostly < 1:
            return f"share of values in {values} at most {1 - mostly:.4g}"
        return f"no values in {values}"
    if kind == KL_BELOW_REFERENCE:
        return f"KL divergence from the distribution at most {show(kwargs.get('threshold'))}"
    if kind in (VALUE_SHARES, HOUR_SHARES):
        what = "hour-of-day shares" if kind == HOUR_SHARES else "value shares"
        limit = show(kwargs.get("max_distance"))
        return f"distance of the {what} from the history's (total variation) at most {limit}"
    if kind == "expect_column_distinct_values_to_contain_set":
        return f"every value of {_value_set(list(kwargs.get('value_set') or []))} present"
    if kind == "expect_column_distinct_values_to_be_in_set":
        return f"only values in {_value_set(list(kwargs.get('value_set') or []))}"
    if kind == QUANTILE_BANDS:
        ranges = kwargs.get("quantile_ranges") or {}
        bands = [
            f"{_quantile_name(q)} {_band_end(lo)}..{_band_end(hi)}"
            for q, (lo, hi) in zip(
                ranges.get("quantiles", []), ranges.get("value_ranges", []), strict=False
            )
        ]
        return "quantiles within " + ", ".join(bands)
    return kind.removeprefix("expect_").replace("_", " ")


def _band_end(value: float | None) -> str:
    return "∞" if value is None else f"{value:.4g}"


def _quantile_name(q: float) -> str:
    return "median" if q == 0.5 else f"{q:.0%}"


def exception_message(info: Any) -> str | None:
    """GX reports a raised metric either flat or keyed by metric configuration."""
    if not info:
        return None
    if isinstance(info, Mapping) and "raised_exception" in info:
        return str(info.get("exception_message")) if info.get("raised_exception") else None
    if isinstance(info, Mapping):
        messages = [
            str(v.get("exception_message"))
            for v in info.values()
            if isinstance(v, Mapping) and v.get("exception_message")
        ]
        return "; ".join(dict.fromkeys(messages)) or None
    return None


def describe(
    kind: str,
    kwargs: Mapping[str, Any],
    result: Mapping[str, Any],
    error: str | None,
    columns: set[str],
) -> Failure:
    """A :class:`Failure` from one failed GX expectation result."""
    column = kwargs.get("column")
    expected = asked(kind, kwargs)
    observed = jsonable(result.get("observed_value"))
    count = result.get("unexpected_count")
    count = int(count) if count is not None else None
    sample: tuple[Any, ...] = ()
    if column is not None and column not in columns:
        problem = COLUMN_MISSING
    elif error is not None:
        problem = f"could not be evaluated: {error}"
    elif kind == "expect_table_columns_to_match_set":
        mismatched = (result.get("details") or {}).get("mismatched") or {}
        parts = [
            f"{label} {', '.join(map(str, mismatched[key]))}"
            for key, label in (("missing", "missing"), ("unexpected", "unexpected"))
            if mismatched.get(key)
        ]
        problem = "; ".join(parts) or f"observed {observed}"
    elif kind in (VALUE_SHARES, HOUR_SHARES) and isinstance(observed, float):
        change = (result.get("details") or {}).get("largest_change") or {}
        moved = f"{change.get('value')!r} {float(change.get('change') or 0.0):+.3f}"
        problem = f"observed {observed:.4g} (largest change {moved})"
    elif kind == "expect_column_distinct_values_to_contain_set":
        problem = f"missing {show(jsonable(result.get('partial_missing_list') or []))}"
    elif kind == "expect_column_distinct_values_to_be_in_set" and count is not None:
        problem = f"new {show(jsonable(result.get('partial_unexpected_list') or []))}"
    elif kind == TOP_SHARE and isinstance(observed, float):
        value = (result.get("details") or {}).get("most_common_value")
        problem = f"observed {observed:.4g} (the value {show(jsonable(value))})"
    elif count is not None and kind == "expect_column_values_to_not_be_in_set":
        percent = result.get("unexpected_percent")
        share = f" ({float(percent):.3g} %)" if percent is not None else ""
        problem = f"{count} unexpected{share}"
        sample = tuple(jsonable(result.get("partial_unexpected_list") or []))
    elif count is not None:
        total = result.get("element_count")
        if kind == "expect_column_values_to_not_be_null":
            problem = f"{count} null" + (f" of {total}" if total is not None else "")
        else:
            word = "duplicated" if kind == "expect_column_values_to_be_unique" else "unexpected"
            problem = f"{count} {word}"
            sample = tuple(jsonable(result.get("partial_unexpected_list") or []))
    elif kind == QUANTILE_BANDS and isinstance(observed, dict):
        pairs = zip(observed.get("quantiles", []), observed.get("values", []), strict=False)
        problem = "observed " + ", ".join(f"{_quantile_name(q)} {v:.4g}" for q, v in pairs)
    elif isinstance(observed, float):
        problem = f"observed {observed:.4g}"
    elif kind == "expect_column_type_to_be":
        problem = f"observed {observed}"
    else:
        problem = f"observed {show(observed)}"
    return Failure(
        expectation=kind,
        column=column,
        expected=expected,
        problem=problem,
        observed=observed,
        unexpected_count=count,
        sample=sample[:SAMPLE_KEPT],
    )

"""The raw gate's value-skew stage: a partition's statistics against the accepted history.

The schema checks (:mod:`.suites`) stop data of the wrong shape; this stage stops data of
the right shape whose *values* changed: amounts in cents, a sentinel or a stuck value, a
category or channel that collapsed, times in the wrong time zone, coordinates zeroed or
mirrored, cards and merchants missing from the reference tables, a day delivered again.

* :func:`partition_profile` summarises one partition in a few hundred numbers (amount
  quantiles, means, share of zeros and of the most common value, category and hour-of-day
  shares, the share of transactions far from the card's home, and a sample of its
  transaction-id hashes). The gate keeps it in the partition's record, so the history is
  read from the records, never from the partitions.
* :func:`value_findings` learns each statistic's band from the profiles of the last
  accepted partitions and returns what falls outside, as rejections or warnings.
* :func:`training_profile` and :func:`training_gx_parameters` do the same for the
  training-set gate, against the champion's training set: its label rate, and each model
  feature's histogram (quantile bins, or its values when it has few) for GX's
  ``expect_column_kl_divergence_to_be_less_than``.

Pure functions over pandas / numpy: no I/O, no Great Expectations.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from fraud_detection.validation.settings import (
    Tolerance,
    TrainingValueSettings,
    ValueSkewSettings,
)

__all__ = [
    "PROFILE_VERSION",
    "Finding",
    "gx_parameters",
    "history_source",
    "id_hashes",
    "numeric_bands",
    "partition_profile",
    "reference_findings",
    "training_gx_parameters",
    "training_profile",
    "value_findings",
]

PROFILE_VERSION = 1
QUANTILES: dict[str, float] = {"q05": 0.05, "q25": 0.25, "q50": 0.5, "q75": 0.75, "q95": 0.95}
NUMERIC = ("amount", "latitude", "longitude")
IDS = ("card_id", "merchant_id")  # only their most common value's share is meaningful
CATEGORICAL = ("merchant_category", "channel")
SKETCH_SIZE = 1024  # id hashes kept per partition: a replay of >= 0.5 % of a day is seen
_HOUR_US = 3_600 * 1_000_000

Level = Literal["reject", "warn"]
LEVELS: tuple[Level, ...] = ("reject", "warn")  # the stricter first
Bands = dict[Level, tuple[float | None, float | None]]


@dataclass(frozen=True)
class Finding:
    """One statistic outside its band."""

    check: str  # e.g. "quantile", "top_share", "shares", "reference", "replayed_ids"
    column: str
    statistic: str  # e.g. "median", "share of the most common value (9999)"
    observed: float
    low: float | None
    high: float | None
    level: Level
    source: str  # where the band came from: "accepted days 2026-01-01..2026-01-07 (7)"

    def expected(self) -> str:
        """``median between 14.2 and 56.8 (reject band, accepted days ...)``."""
        if self.low is not None and self.high is not None:
            band = f"between {_num(self.low)} and {_num(self.high)}"
        elif self.high is not None:
            band = f"at most {_num(self.high)}"
        else:
            band = f"at least {_num(self.low)}"
        return f"{self.statistic} {band} ({self.level} band from {self.source})"

    def problem(self) -> str:
        return f"observed {_num(self.observed)}"


def _num(value: float | None) -> str:
    if value is None:
        return "none"
    return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.6g}"


# ------------------------------------------------------------------ the profile


def id_hashes(ids: pd.Series) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """64-bit hashes of transaction ids, sorted (stable across runs and machines)."""
    hashed = pd.util.hash_array(ids.to_numpy(dtype=object), categorize=False)
    return np.sort(hashed)


def value_shares(values: pd.Series) -> dict[str, float]:
    """Each value's share of the rows, by value."""
    counts = values.value_counts(normalize=True).sort_index()
    return {str(k): float(v) for k, v in counts.items()}


def hour_shares(timestamps: pd.Series) -> dict[str, float]:
    """Each UTC hour of the day's share of the rows, ``"00"`` .. ``"23"``."""
    if not len(timestamps):
        return {}
    micros = timestamps.dt.as_unit("us").array.asi8  # UTC microseconds
    hours = np.bincount((micros // _HOUR_US) % 24, minlength=24) / len(timestamps)
    return {f"{h:02d}": float(s) for h, s in enumerate(hours)}


def _haversine_km(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> Any:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi, dlmb = p2 - p1, np.radians(lon2 - lon1)
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return 12_742.0 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _top(values: pd.Series) -> tuple[float, Any]:
    """Share of the most common value, and that value."""
    counts = values.value_counts(sort=False)
    if counts.empty:
        return 0.0, None
    top = counts.idxmax()
    value = top.item() if isinstance(top, np.generic) else top
    return float(counts.max() / len(values)), value


def partition_profile(
    df: pd.DataFrame,
    cards: pd.DataFrame | None = None,
    *,
    far_km: float = 500.0,
    hashes: np.ndarray[Any, np.dtype[np.uint64]] | None = None,
) -> dict[str, Any]:
    """The statistics of one schema-valid partition that the value checks compare.

    ``cards`` is the reference table (``card_id``, ``home_latitude``, ``home_longitude``);
    without it the far-from-home share is left out. ``hashes`` are :func:`id_hashes` of
    its ids, if already computed. JSON-safe.
    """
    n = len(df)
    profile: dict[str, Any] = {"version": PROFILE_VERSION, "rows": n, "numeric": {}}
    if n == 0:
        return profile
    for column in NUMERIC:
        values = df[column].to_numpy(dtype=np.float64)
        share, value = _top(df[column])
        profile["numeric"][column] = {
            "mean": float(values.mean()),
            "zero_share": float(np.count_nonzero(values == 0.0) / n),
            "top_share": share,
            "top_value": value,
        }
    # quantiles of the amount only: coordinates cluster in cities, so a coordinate's
    # quantile jumps from one city to the next on a normal day (their mean moves smoothly)
    quantiles = np.quantile(df["amount"].to_numpy(dtype=np.float64), list(QUANTILES.values()))
    profile["numeric"]["amount"].update(
        {name: float(q) for name, q in zip(QUANTILES, quantiles, strict=True)}
    )
    for column in IDS:
        share, value = _top(df[column])
        profile["numeric"][column] = {"top_share": share, "top_value": value}
    profile["shares"] = {column: value_shares(df[column]) for column in CATEGORICAL}
    profile["shares"]["hour_of_day"] = hour_shares(df["event_timestamp"])
    if cards is not None and len(cards):
        at = pd.Index(cards["card_id"]).get_indexer(df["card_id"])
        known = at >= 0
        if known.any():
            home = cards.iloc[at[known]]
            km = _haversine_km(
                home["home_latitude"].to_numpy(),
                home["home_longitude"].to_numpy(),
                df["latitude"].to_numpy()[known],
                df["longitude"].to_numpy()[known],
            )
            profile["far_from_home_share"] = float(np.count_nonzero(km > far_km) / n)
    hashed = id_hashes(df["transaction_id"]) if hashes is None else hashes
    profile["id_sketch"] = hashed[:SKETCH_SIZE].tobytes().hex()
    return profile


def _sketch(profile: Mapping[str, Any]) -> np.ndarray[Any, np.dtype[np.uint64]]:
    return np.frombuffer(bytes.fromhex(str(profile.get("id_sketch") or "")), dtype=np.uint64)


# ------------------------------------------------------------------ the checks


def history_source(days: Sequence[dt.date]) -> str:
    """``accepted days 2026-01-01..2026-01-07 (7)``: where a band was learnt."""
    if not days:
        return "no history"
    span = f"{days[0]}..{days[-1]}" if len(days) > 1 else str(days[0])
    return f"accepted days {span} ({len(days)})"


def tvd(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Total variation distance: half the L1 distance between two share vectors."""
    keys = set(a) | set(b)
    return 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in keys)


def largest_change(now: Mapping[str, float], reference: Mapping[str, float]) -> tuple[str, float]:
    """The value whose share moved most, and by how much (signed)."""
    keys = sorted(set(now) | set(reference))
    if not keys:
        return "", 0.0
    largest = max(keys, key=lambda k: abs(now.get(k, 0.0) - reference.get(k, 0.0)))
    return largest, now.get(largest, 0.0) - reference.get(largest, 0.0)


def reference_shares(past: Sequence[Mapping[str, float]]) -> tuple[dict[str, float], float]:
    """The history's mean shares, and the largest distance of a history day from them."""
    values = sorted({k for p in past for k in p})
    mean = {k: float(np.mean([p.get(k, 0.0) for p in past])) for k in values}
    return mean, max(tvd(p, mean) for p in past)


class _Checker:
    def __init__(
        self,
        profile: Mapping[str, Any],
        history: Sequence[tuple[dt.date, Mapping[str, Any]]],
        settings: ValueSkewSettings,
    ) -> None:
        self.profile, self.history, self.settings = profile, history, settings
        self.source = history_source([day for day, _ in history])
        self.findings: list[Finding] = []

    def _band(
        self,
        check: str,
        column: str,
        statistic: str,
        observed: float,
        bands: Bands,
    ) -> None:
        """Record the first level (reject before warn) whose band ``observed`` leaves."""
        for level in LEVELS:
            if level not in bands:
                continue
            low, high = bands[level]
            if (low is not None and observed < low) or (high is not None and observed > high):
                self.findings.append(
                    Finding(check, column, statistic, observed, low, high, level, self.source)
                )
                return

    def _levels(self, tolerance: Tolerance) -> dict[Level, float]:
        return _levels(tolerance)

    def numeric(self, in_gx: bool) -> None:
        bands = numeric_bands(self.history, self.settings)
        for column in NUMERIC:
            now = self.profile["numeric"][column]
            if in_gx:  # the raw suite's value expectations check these (gx_parameters)
                continue
            for stat, label in STATISTICS.items():
                if stat in bands[column]:
                    check = "quantile" if stat != "mean" else "mean"
                    self._band(check, column, label, float(now[stat]), bands[column][stat])
            self._share_above(column, "zero_share", "share of zeros", self.settings.zero_share)
        for column in () if in_gx else (*NUMERIC, *IDS):
            value = self.profile["numeric"][column].get("top_value")
            label = f"share of the most common value ({_show(value)})"
            self._share_above(column, "top_share", label, self.settings.top_share)

    def _share_above(self, column: str, stat: str, label: str, tolerance: Tolerance) -> None:
        now = self.profile["numeric"][column][stat]
        hi = max(p["numeric"][column][stat] for _, p in self.history)
        bands: dict[Level, tuple[float | None, float | None]] = {
            k: (None, hi + t) for k, t in self._levels(tolerance).items()
        }
        self._band(stat, column, label, now, bands)

    def shares(self) -> None:
        for key in (*CATEGORICAL, "hour_of_day"):
            column = "event_timestamp" if key == "hour_of_day" else key
            what = "hour-of-day shares" if key == "hour_of_day" else "value shares"
            past = [p["shares"][key] for _, p in self.history]
            values = sorted({k for p in past for k in p})
            mean, spread = reference_shares(past)
            now = self.profile["shares"][key]
            bands: dict[Level, tuple[float | None, float | None]] = {
                k: (None, spread + t) for k, t in self._levels(self.settings.shares).items()
            }
            largest, change = largest_change(now, mean)
            label = (
                f"distance of the {what} from the history's (total variation; "
                f"largest change {largest!r} {change:+.3f})"
            )
            self._band("shares", column, label, tvd(now, mean), bands)
            if key == "hour_of_day":
                continue
            floor = self.settings.vanished_min_share
            for value in values:
                if now.get(value, 0.0) == 0.0 and min(p.get(value, 0.0) for p in past) >= floor:
                    low = min(p[value] for p in past)
                    self.findings.append(
                        Finding(
                            "vanished",
                            column,
                            f"share of {value!r} (vanished)",
                            0.0,
                            low,
                            None,
                            "reject",
                            self.source,
                        )
                    )
            for value in sorted(set(now) - set(values)):
                self.findings.append(
                    Finding(
                        "new_value",
                        column,
                        f"share of {value!r} (never seen in the history)",
                        now[value],
                        None,
                        0.0,
                        "warn",
                        self.source,
                    )
                )

    def far_from_home(self) -> None:
        now = self.profile.get("far_from_home_share")
        past = [p.get("far_from_home_share") for _, p in self.history]
        if now is None or any(v is None for v in past):
            return
        hi = max(float(v) for v in past if v is not None)
        km = self.settings.far_from_home_km
        bands: dict[Level, tuple[float | None, float | None]] = {
            k: (None, hi + t) for k, t in self._levels(self.settings.far_from_home).items()
        }
        label = f"share of transactions over {km:g} km from the card's home (latitude, longitude)"
        self._band("far_from_home", "latitude", label, float(now), bands)

    def replayed(self, hashes: np.ndarray[Any, np.dtype[np.uint64]]) -> None:
        """Ids of this partition already in an accepted one: each history day's sketch is a
        uniform sample of its id hashes, so the share found estimates the share replayed."""
        tolerance = self._levels(self.settings.replayed_ids)
        for day, past in self.history:
            sketch = _sketch(past)
            if not len(sketch) or not len(hashes):
                continue
            at = np.searchsorted(hashes, sketch)
            hits = np.count_nonzero(hashes[np.minimum(at, len(hashes) - 1)] == sketch)
            if not hits:
                continue
            share = hits / len(sketch) * int(past["rows"]) / max(len(hashes), 1)
            source = f"ids of accepted day {day} (a sample of {len(sketch)})"
            for level in LEVELS:
                if level in tolerance and share > tolerance[level]:
                    self.findings.append(
                        Finding(
                            "replayed_ids",
                            "transaction_id",
                            f"share of rows whose id was delivered on {day}",
                            min(share, 1.0),
                            None,
                            tolerance[level],
                            level,
                            source,
                        )
                    )
                    break


def _levels(tolerance: Tolerance) -> dict[Level, float]:
    return {
        level: t
        for level, t in zip(LEVELS, (tolerance.reject, tolerance.warn), strict=True)
        if t is not None
    }


STATISTICS = {"q05": "5 % quantile", "q25": "25 % quantile", "q50": "median"}
STATISTICS |= {"q75": "75 % quantile", "q95": "95 % quantile", "mean": "mean"}


def numeric_bands(
    history: Sequence[tuple[dt.date, Mapping[str, Any]]], settings: ValueSkewSettings
) -> dict[str, dict[str, Bands]]:
    """``column -> statistic -> level -> (low, high)``: each quantile and mean band.

    The amount is a scale, so its band is the history's min..max divided / multiplied by
    a factor; a coordinate is a position, so its band is min..max -/+ degrees.
    """
    out: dict[str, dict[str, Bands]] = {}
    for column in NUMERIC:
        past = [p["numeric"][column] for _, p in history]
        out[column] = {}
        for stat in STATISTICS:
            if not all(stat in p for p in past):  # coordinates: the mean only
                continue
            lo, hi = min(p[stat] for p in past), max(p[stat] for p in past)
            if column == "amount":
                factors = _levels(settings.amount)
                out[column][stat] = {k: (lo / f, hi * f) for k, f in factors.items()}
            else:
                degrees = _levels(settings.coordinates)
                out[column][stat] = {k: (lo - d, hi + d) for k, d in degrees.items()}
    return out


def gx_parameters(
    history: Sequence[tuple[dt.date, Mapping[str, Any]]], settings: ValueSkewSettings
) -> dict[str, Any]:
    """The raw suite's value-stage parameters (:func:`.suites.raw_transactions_suite`), per
    level: the amount's quantile bands, the means' bands, the largest share of each
    column's most common value, the smallest share of non-zero coordinates. A level
    turned off gets an unbounded band."""
    bands = numeric_bands(history, settings)
    quantiles = [QUANTILES[q] for q in QUANTILES]
    parameters: dict[str, Any] = {}
    for level in LEVELS:
        amount = bands["amount"]
        ranges = [list(amount[q].get(level, (None, None))) for q in QUANTILES]
        parameters[f"amount_quantiles_{level}"] = {
            "quantiles": quantiles,
            "value_ranges": ranges,
        }
        for column in NUMERIC:
            low, high = bands[column]["mean"].get(level, (None, None))
            parameters[f"{column}_mean_min_{level}"] = low
            parameters[f"{column}_mean_max_{level}"] = high
        top = _levels(settings.top_share).get(level)
        for column in (*NUMERIC, *IDS):
            most = max(p["numeric"][column]["top_share"] for _, p in history)
            parameters[f"{column}_top_share_max_{level}"] = None if top is None else most + top
        zero = _levels(settings.zero_share).get(level)
        for column in ("latitude", "longitude"):
            most = max(p["numeric"][column]["zero_share"] for _, p in history)
            nonzero = 0.0 if zero is None else max(0.0, 1.0 - (most + zero))
            parameters[f"{column}_nonzero_min_{level}"] = nonzero
    for key in (*CATEGORICAL, "hour_of_day"):
        name = "hour" if key == "hour_of_day" else key
        past = [p["shares"][key] for _, p in history]
        mean, spread = reference_shares(past)
        parameters[f"{name}_shares"] = mean
        for level in LEVELS:
            tolerance = _levels(settings.shares).get(level)
            parameters[f"{name}_shares_max_{level}"] = (
                None if tolerance is None else spread + tolerance
            )
        if key in CATEGORICAL:
            floor = settings.vanished_min_share
            parameters[f"{key}_present"] = [
                v for v in mean if min(p.get(v, 0.0) for p in past) >= floor
            ]
            parameters[f"{key}_seen"] = list(mean)
    return parameters


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def value_findings(
    profile: Mapping[str, Any],
    history: Sequence[tuple[dt.date, Mapping[str, Any]]],
    settings: ValueSkewSettings,
    hashes: np.ndarray[Any, np.dtype[np.uint64]] | None = None,
    *,
    in_gx: bool = False,
) -> list[Finding]:
    """The history-based checks of ``profile`` against the profiles of ``history``
    (``(day, profile)`` of accepted partitions, oldest first; give at least one).

    ``hashes`` (:func:`id_hashes` of the partition) enable the replayed-ids check.
    ``in_gx``: the quantiles, means, zero and most-common-value shares, category and hour
    shares, vanished and new values are left to the raw suite's expectations
    (:func:`gx_parameters`), as the gate does: what remains needs a second table (far
    from home) or the history's id samples (replayed ids). Rejections first, then warnings.
    """
    if not history:
        raise ValueError("value_findings needs at least one accepted partition")
    if not profile.get("rows"):
        return []
    checker = _Checker(profile, history, settings)
    checker.numeric(in_gx)
    if not in_gx:  # the raw suite's value expectations check these (gx_parameters)
        checker.shares()
    checker.far_from_home()
    if hashes is not None:
        checker.replayed(hashes)
    return sorted(checker.findings, key=lambda f: f.level != "reject")


def reference_findings(
    df: pd.DataFrame,
    references: Mapping[str, tuple[str, pd.Index]],
    settings: ValueSkewSettings,
) -> list[Finding]:
    """Referential integrity: the share of rows whose ``column`` is not in a reference
    table. ``references`` maps a column to ``(table name, known ids)``."""
    findings = []
    tolerance = settings.reference
    n = len(df)
    for column, (table, known) in references.items():
        if not n:
            continue
        unknown = int(np.count_nonzero(~df[column].isin(known)))
        share = unknown / n
        limits: dict[Level, float | None] = {"reject": tolerance.reject, "warn": tolerance.warn}
        for level, limit in limits.items():
            if limit is not None and share > limit and not math.isclose(share, 0.0):
                findings.append(
                    Finding(
                        "reference",
                        column,
                        f"share of ids not in {table} ({unknown:,} rows)",
                        share,
                        None,
                        limit,
                        level,
                        f"the reference table {table} ({len(known):,} ids)",
                    )
                )
                break
    return findings


# ------------------------------------------------------------ the training-set gate

TRAINING_PROFILE_VERSION = 1
TAIL_HOLDOUT = 0.01  # expected weight beyond the champion's range (KL stays finite)
INTERNAL_HOLDOUT = 0.01  # expected weight of the champion's empty bins


def _partition(values: pd.Series, settings: TrainingValueSettings) -> dict[str, Any] | None:
    """The champion's distribution of one column as a GX partition object: its values and
    their shares when it has few, else quantile bins and their shares; None when empty."""
    present = values.dropna()
    if present.empty:
        return None
    counts = present.value_counts(normalize=True, sort=False)
    if len(counts) <= settings.max_values or not pd.api.types.is_numeric_dtype(present):
        counts = counts.sort_index()
        keys = [k.item() if hasattr(k, "item") else k for k in counts.index]
        return {"values": keys, "weights": (counts / counts.sum()).tolist()}
    numbers = present.to_numpy(dtype=np.float64)
    edges = np.unique(np.quantile(numbers, np.linspace(0.0, 1.0, settings.bins + 1)))
    hist, _ = np.histogram(numbers, bins=edges)
    return {"bins": edges.tolist(), "weights": (hist / hist.sum()).tolist()}


def training_profile(
    frame: pd.DataFrame, columns: Sequence[str], settings: TrainingValueSettings
) -> dict[str, Any]:
    """What the training-set gate keeps of a training set, to compare the next ones with:
    its rows, label rate and each of ``columns``' distribution (GX partition objects)."""
    partitions = {}
    for column in columns:
        if column in frame.columns:
            partition = _partition(frame[column], settings)
            if partition is not None:
                partitions[column] = partition
    rate = float(frame["is_fraud"].mean()) if "is_fraud" in frame and len(frame) else None
    return {
        "version": TRAINING_PROFILE_VERSION,
        "rows": len(frame),
        "label_rate": rate,
        "partitions": partitions,
    }


def training_gx_parameters(
    reference: Mapping[str, Any], settings: TrainingValueSettings
) -> dict[str, Any]:
    """The training suite's value-stage parameters from the champion's training-set
    ``profile``: the label rate's band per level (a factor either way), each column's
    partition object, its holdouts, and the KL thresholds per level (None: level off)."""
    parameters: dict[str, Any] = {}
    rate = reference.get("label_rate")
    for level, factor in _levels(settings.label_rate).items():
        low = None if rate is None else rate / factor
        high = None if rate is None else min(1.0, rate * factor)
        parameters[f"label_rate_vs_champion_min_{level}"] = low
        parameters[f"label_rate_vs_champion_max_{level}"] = high
    for level in LEVELS:
        parameters.setdefault(f"label_rate_vs_champion_min_{level}", None)
        parameters.setdefault(f"label_rate_vs_champion_max_{level}", None)
        kl = _levels(settings.kl_divergence).get(level)
        parameters[f"kl_max_{level}"] = 1e9 if kl is None else kl
    for column, partition in reference.get("partitions", {}).items():
        parameters[f"{column}_partition"] = partition
        parameters[f"{column}_internal_holdout"] = INTERNAL_HOLDOUT if "bins" in partition else 0.0
    return parameters

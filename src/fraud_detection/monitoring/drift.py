"""Data drift and prediction drift: the distribution served now against a reference.

Pure: two DataFrames (or two score arrays) and :class:`DriftSettings` in, a
:class:`DriftResult` out; no files, no MLflow. The statistics are scipy's:

* **numeric** columns: the population stability index (PSI) over bins cut at the
  reference's quantiles (missing values are a bin of their own), computed with
  ``scipy.special.rel_entr`` as ``sum(rel_entr(a, e) + rel_entr(e, a))``, which is the
  textbook ``sum((a - e) * ln(a / e))``; and the two-sample Kolmogorov-Smirnov test
  ``scipy.stats.ks_2samp`` (statistic D, its p-value);
* **categorical** columns: PSI over the categories (missing is a category) and the
  chi-square test of homogeneity ``scipy.stats.chi2_contingency`` on the 2 x k table of
  counts, whose effect size is Cramer's V.

A feature **drifts** when its PSI reaches ``psi_alert``, or when its test is significant
(p-value below ``p_value``) *and* its effect size (KS D or Cramer's V) reaches the
configured minimum: with 100k rows a test alone calls every negligible difference
significant. The **data set** drifts when at least ``share`` of the features drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import special, stats

from fraud_detection.monitoring.settings import DriftSettings

__all__ = [
    "DriftResult",
    "FeatureDrift",
    "categorical_drift",
    "dataset_drift",
    "numeric_drift",
    "prediction_drift",
    "psi",
    "quantile_edges",
]

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
Level = Literal["ok", "warn", "alert"]
MISSING = "(missing)"


# ------------------------------------------------------------------ statistics


def psi(expected: Any, actual: Any, epsilon: float = 1e-4) -> float:
    """Population stability index of two distributions over the same bins.

    ``expected`` and ``actual`` are counts or shares per bin (each normalized to sum to
    one). A bin empty on one side gets ``epsilon`` instead of 0, so PSI stays finite.
    ``PSI = sum((a - e) * ln(a / e)) = sum(rel_entr(a, e) + rel_entr(e, a))``, the
    symmetric Kullback-Leibler divergence.
    """
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.ndim != 1 or len(e) == 0:
        raise ValueError(f"psi needs two 1-D arrays of the same length, got {e.shape}, {a.shape}")
    if e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("psi needs at least one count on each side")
    e = np.clip(e / e.sum(), epsilon, None)
    a = np.clip(a / a.sum(), epsilon, None)
    return float(np.sum(special.rel_entr(a, e) + special.rel_entr(e, a)))


def quantile_edges(reference: FloatArray, bins: int) -> FloatArray:
    """Inner bin edges at the reference's quantiles (distinct values only).

    A feature with few distinct values (a flag, an hour) gets fewer bins: one per value
    at most, since equal quantiles collapse.
    """
    finite = reference[np.isfinite(reference)]
    if len(finite) == 0:
        return np.empty(0, dtype=np.float64)
    # inverted_cdf: edges are observed values, so a flag or an hour gets no edge between
    # two of its values (where no row can fall).
    inner = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1], method="inverted_cdf")
    edges: FloatArray = np.unique(inner)
    return edges


def _binned(values: FloatArray, edges: FloatArray) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Counts per bin ``(-inf, e0], (e0, e1], ..., (e_last, inf)`` plus a missing bin."""
    finite = np.isfinite(values)
    which = np.searchsorted(edges, values[finite], side="left")
    counts = np.bincount(which, minlength=len(edges) + 1)
    return np.append(counts, int((~finite).sum())).astype(np.int64)


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class FeatureDrift:
    """One column's drift: PSI, the test, and the verdict.

    ``statistic`` is the KS D (numeric) or Cramer's V (categorical), both in [0, 1];
    ``level`` is ``alert`` when drifted, ``warn`` when PSI reached ``psi_warn``.
    """

    feature: str
    kind: Literal["numeric", "categorical"]
    test: Literal["ks", "chi2"]
    psi: float
    statistic: float
    p_value: float
    reference_rows: int
    current_rows: int
    reference_missing: float
    current_missing: float
    drifted: bool
    level: Level
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DriftResult:
    """Every feature's drift, sorted by PSI (largest first), and the data-set verdict."""

    features: tuple[FeatureDrift, ...]
    share: float
    share_threshold: float
    detected: bool
    reference_rows: int
    current_rows: int
    skipped: str | None = None  # why no verdict was reached (too few rows), if so
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def drifted(self) -> list[str]:
        """Names of the drifted features, most drifted first."""
        return [f.feature for f in self.features if f.drifted]

    def feature(self, name: str) -> FeatureDrift | None:
        return next((f for f in self.features if f.feature == name), None)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["features"] = [f.to_dict() for f in self.features]
        out["drifted"] = self.drifted
        return out


def _verdict(
    name: str,
    value: float,
    statistic: float,
    p_value: float,
    effect_min: float,
    cfg: DriftSettings,
) -> tuple[bool, Level, str]:
    by_psi = value >= cfg.psi_alert
    by_test = p_value < cfg.p_value and statistic >= effect_min
    reasons = []
    if by_psi:
        reasons.append(f"PSI {value:.3f} >= {cfg.psi_alert:g}")
    if by_test:
        reasons.append(f"p {p_value:.2g} < {cfg.p_value:g} and effect {statistic:.3f}")
    drifted = by_psi or by_test
    level: Level = "alert" if drifted else ("warn" if value >= cfg.psi_warn else "ok")
    return drifted, level, "; ".join(reasons)


def _sample(values: np.ndarray[Any, Any], limit: int, seed: int) -> np.ndarray[Any, Any]:
    if len(values) <= limit:
        return values
    picked = np.random.default_rng(seed).choice(len(values), size=limit, replace=False)
    return values[np.sort(picked)]


def numeric_drift(
    name: str, reference: Any, current: Any, cfg: DriftSettings, seed: int = 0
) -> FeatureDrift:
    """PSI on reference-quantile bins and the KS test of one numeric column."""
    ref = _sample(
        pd.to_numeric(pd.Series(reference), errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        ),
        cfg.max_rows,
        seed,
    )
    cur = _sample(
        pd.to_numeric(pd.Series(current), errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        ),
        cfg.max_rows,
        seed + 1,
    )
    edges = quantile_edges(ref, cfg.bins)
    value = psi(_binned(ref, edges), _binned(cur, edges), cfg.epsilon)
    ref_ok, cur_ok = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if len(ref_ok) and len(cur_ok):
        test = stats.ks_2samp(ref_ok, cur_ok)
        statistic, p_value = float(test.statistic), float(test.pvalue)
    else:  # all missing on one side: PSI (the missing bin) says it all
        statistic, p_value = 0.0, 1.0
    drifted, level, reason = _verdict(name, value, statistic, p_value, cfg.ks_statistic_min, cfg)
    return FeatureDrift(
        feature=name,
        kind="numeric",
        test="ks",
        psi=value,
        statistic=statistic,
        p_value=p_value,
        reference_rows=len(ref),
        current_rows=len(cur),
        reference_missing=float(np.mean(~np.isfinite(ref))) if len(ref) else 0.0,
        current_missing=float(np.mean(~np.isfinite(cur))) if len(cur) else 0.0,
        drifted=drifted,
        level=level,
        reason=reason,
    )


def _labels(values: Any) -> np.ndarray[Any, Any]:
    series = pd.Series(values).astype("string").fillna(MISSING)
    return series.to_numpy(dtype=object)


def categorical_drift(
    name: str, reference: Any, current: Any, cfg: DriftSettings, seed: int = 0
) -> FeatureDrift:
    """PSI over categories and the chi-square test of homogeneity of one column."""
    ref = _sample(_labels(reference), cfg.max_rows, seed)
    cur = _sample(_labels(current), cfg.max_rows, seed + 1)
    categories = sorted(set(ref) | set(cur))
    ref_counts = pd.Series(ref).value_counts().reindex(categories, fill_value=0).to_numpy()
    cur_counts = pd.Series(cur).value_counts().reindex(categories, fill_value=0).to_numpy()
    value = psi(ref_counts, cur_counts, cfg.epsilon)
    if len(categories) > 1:
        table = np.vstack([ref_counts, cur_counts])
        chi2, p_value, _, _ = stats.chi2_contingency(table, correction=False)
        # Cramer's V of a 2 x k table: sqrt(chi2 / n), since min(rows, columns) - 1 = 1.
        statistic = float(np.sqrt(chi2 / table.sum()))
        p_value = float(p_value)
    else:
        statistic, p_value = 0.0, 1.0
    drifted, level, reason = _verdict(name, value, statistic, p_value, cfg.cramers_v_min, cfg)
    return FeatureDrift(
        feature=name,
        kind="categorical",
        test="chi2",
        psi=value,
        statistic=statistic,
        p_value=p_value,
        reference_rows=len(ref),
        current_rows=len(cur),
        reference_missing=float(np.mean(ref == MISSING)) if len(ref) else 0.0,
        current_missing=float(np.mean(cur == MISSING)) if len(cur) else 0.0,
        drifted=drifted,
        level=level,
        reason=reason,
    )


def dataset_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    cfg: DriftSettings,
    min_rows: int = 1,
) -> DriftResult:
    """Drift of each column of ``numeric`` and ``categorical``, and the data-set verdict.

    With fewer than ``min_rows`` rows on either side nothing is measured and the result
    says so in ``skipped`` (``detected`` is False). Columns absent from either frame are
    left out and named in ``notes``.
    """
    n_ref, n_cur = len(reference), len(current)
    columns = [*numeric, *categorical]
    absent = [c for c in columns if c not in reference.columns or c not in current.columns]
    notes = (f"not compared (absent): {', '.join(absent)}",) if absent else ()
    if n_ref < min_rows or n_cur < min_rows:
        return DriftResult(
            (),
            0.0,
            cfg.share,
            False,
            n_ref,
            n_cur,
            skipped=f"not enough rows (reference {n_ref:,}, current {n_cur:,} < min {min_rows:,})"
            if n_cur < min_rows
            else f"not enough rows (reference {n_ref:,} < min {min_rows:,}, current {n_cur:,})",
            notes=notes,
        )
    results = []
    for seed, name in enumerate(columns):
        if name in absent:
            continue
        measure = numeric_drift if name in numeric else categorical_drift
        results.append(measure(name, reference[name], current[name], cfg, seed=2 * seed))
    results.sort(key=lambda f: (-f.drifted, -f.psi, f.feature))
    share = sum(f.drifted for f in results) / len(results) if results else 0.0
    return DriftResult(
        tuple(results),
        share,
        cfg.share,
        share >= cfg.share and bool(results),
        n_ref,
        n_cur,
        notes=notes,
    )


def prediction_drift(reference: Any, current: Any, cfg: DriftSettings) -> FeatureDrift:
    """Drift of the model's score distribution: the numeric rule on ``score``."""
    return numeric_drift("score", reference, current, cfg, seed=10_000)

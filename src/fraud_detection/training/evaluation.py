"""Evaluation of a model on a holdout: overall metrics, calibration, slices, plots.

Pure: a fitted pipeline and a DataFrame in, an :class:`Evaluation` (JSON-friendly via
:meth:`Evaluation.to_dict`) or a matplotlib Figure out. Logging them is the caller's job.

Fraud is about 1 % of transactions, so the headline metric is PR-AUC (average
precision, whose random baseline is the fraud rate), not accuracy or ROC-AUC.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    precision_recall_curve,
    roc_auc_score,
)
from sklearn.pipeline import Pipeline

from fraud_detection.training.model import TrainingError, fraud_labels, input_columns
from fraud_detection.training.settings import SliceSettings, ThresholdSettings

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "AMOUNT_BANDS",
    "CALIBRATION_BINS",
    "SLICE_COLUMNS",
    "CalibrationBin",
    "Evaluation",
    "SliceMetrics",
    "amount_band",
    "choose_threshold",
    "evaluate",
    "permutation_importances",
    "plot_calibration",
    "plot_feature_importance",
    "plot_pr_curves",
    "scores",
]

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

# Amount bands (lower bound inclusive). The names are valid MLflow metric-key parts.
AMOUNT_BANDS: tuple[tuple[str, float], ...] = (
    ("under_20", 0.0),
    ("20_to_100", 20.0),
    ("100_to_500", 100.0),
    ("500_and_over", 500.0),
)
SLICE_COLUMNS: tuple[str, ...] = ("merchant_category", "amount_band", "channel")
CALIBRATION_BINS = 10


def amount_band(amount: pd.Series) -> pd.Series:
    """The :data:`AMOUNT_BANDS` name of each amount (``<NA>`` for a missing amount)."""
    names = [name for name, _ in AMOUNT_BANDS]
    edges = [lower for _, lower in AMOUNT_BANDS]
    values = pd.to_numeric(amount, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    # A negative amount is invalid data, but counting it in the lowest band beats a crash.
    position = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(names) - 1)
    band = pd.Series(np.asarray(names, dtype=object)[position], index=amount.index)
    return band.where(~np.isnan(values)).astype("string").rename("amount_band")


# ------------------------------------------------------------------------ scoring


def _unreadable(frame: pd.DataFrame, columns: Sequence[str]) -> str | None:
    """The first numeric input column holding a value that is not a number, described."""
    for column in columns:
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values):
            continue
        parsed = pd.to_numeric(values.astype("object"), errors="coerce")
        bad = parsed.isna() & values.notna()
        if bad.any():
            return f"column {column} holds a non-numeric value {values[bad].iloc[0]!r}"
    return None


def scores(model: Pipeline, frame: pd.DataFrame) -> FloatArray:
    """P(fraud) for each row of ``frame`` (``predict_proba[:, 1]``), never NaN.

    Raises :class:`TrainingError` naming the column when an input column is missing or
    unreadable, or when a score comes out NaN (naming the columns missing in those rows).
    """
    columns = input_columns(model)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise TrainingError(f"cannot score: the data lacks column(s) {', '.join(missing)}")
    inputs = frame[columns]
    try:
        out = np.asarray(model.predict_proba(inputs)[:, 1], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        problem = (
            _unreadable(inputs, input_columns(model, "numeric")) or f"{type(exc).__name__}: {exc}"
        )
        raise TrainingError(f"cannot score: {problem}") from exc
    nan = np.isnan(out)
    if nan.any():
        culprits = [c for c in columns if inputs.loc[nan, c].isna().any()] or ["(none missing)"]
        raise TrainingError(
            f"{int(nan.sum())} of {len(out)} scores are NaN; missing inputs in those rows: "
            f"{', '.join(culprits)}"
        )
    return out


def choose_threshold(labels: Any, score: Any, cfg: ThresholdSettings) -> float:
    """The operating threshold: ``cfg.value``, or with ``cfg.target_precision`` the lowest
    score threshold whose precision reaches the target (the most recall at it).

    Choose it on data the model was not fit on; the precision then reported on that same
    data is optimistic. Falls back to ``cfg.value`` when no threshold reaches the target.
    """
    if cfg.target_precision is None:
        return cfg.value
    precision, _, thresholds = precision_recall_curve(np.asarray(labels), np.asarray(score))
    reached = np.flatnonzero(precision[:-1] >= cfg.target_precision)
    return float(thresholds[reached[0]]) if len(reached) else cfg.value


# --------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class CalibrationBin:
    """Predictions in ``[lower, upper)`` (the last bin includes 1): how many, mean score,
    observed fraud rate (``None`` for an empty bin)."""

    lower: float
    upper: float
    count: int
    mean_predicted: float | None
    observed_rate: float | None


@dataclass(frozen=True)
class SliceMetrics:
    """One slice of the holdout, e.g. ``merchant_category == "electronics"``.

    ``supported`` when it has at least ``min_rows`` rows, ``min_positives`` frauds and one
    legitimate row; its ``pr_auc``/``roc_auc`` are ``None`` otherwise (too noisy to
    compare, or undefined for a single class).
    """

    column: str
    value: str
    n: int
    positives: int
    supported: bool
    pr_auc: float | None
    roc_auc: float | None

    @property
    def key(self) -> str:
        return f"{self.column}={self.value}"


@dataclass(frozen=True)
class Evaluation:
    """A model's metrics on one holdout.

    ``holdout_digest`` fingerprints the holdout's rows (transaction ids and labels, in any
    order): two evaluations can be compared only when it and ``n`` agree.
    """

    n: int
    positives: int
    base_rate: float
    holdout_digest: str
    pr_auc: float
    roc_auc: float
    brier: float
    threshold: float
    alerts: int
    precision: float
    recall: float
    f1: float
    calibration: tuple[CalibrationBin, ...]
    slices: tuple[SliceMetrics, ...]

    @property
    def holdout_rows(self) -> int:
        return self.n

    def slice(self, column: str, value: str) -> SliceMetrics | None:
        """The slice ``column == value``, or ``None`` when the holdout has no such rows."""
        return next((s for s in self.slices if s.column == column and s.value == value), None)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: numbers, strings, ``None``, lists and dicts."""
        out = asdict(self)
        out["calibration"] = [asdict(b) for b in self.calibration]
        out["slices"] = [asdict(s) for s in self.slices]
        out["holdout_rows"] = self.n
        return out

    def metrics(self) -> dict[str, float]:
        """Flat scalar metrics for a tracking server, supported slices as
        ``slice.<column>.<value>.pr_auc``."""
        out = {
            name: float(getattr(self, name))
            for name in (
                "pr_auc",
                "roc_auc",
                "brier",
                "precision",
                "recall",
                "f1",
                "alerts",
                "threshold",
                "n",
                "positives",
                "base_rate",
            )
        }
        for s in self.slices:
            if s.supported and s.pr_auc is not None:
                out[f"slice.{s.column}.{s.value}.pr_auc"] = s.pr_auc
        return out


def _digest(holdout: pd.DataFrame, labels: np.ndarray[Any, Any]) -> str:
    ids = holdout["transaction_id"] if "transaction_id" in holdout else holdout.index.to_series()
    rows = pd.util.hash_pandas_object(
        pd.DataFrame({"id": ids.astype("string").to_numpy(), "label": labels}), index=False
    )
    return hashlib.sha256(np.sort(rows.to_numpy()).tobytes()).hexdigest()[:16]


def _calibration(y: np.ndarray[Any, Any], p: FloatArray) -> tuple[CalibrationBin, ...]:
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, CALIBRATION_BINS - 1)
    bins = []
    for k in range(CALIBRATION_BINS):
        inside = which == k
        count = int(inside.sum())
        bins.append(
            CalibrationBin(
                lower=float(edges[k]),
                upper=float(edges[k + 1]),
                count=count,
                mean_predicted=float(p[inside].mean()) if count else None,
                observed_rate=float(y[inside].mean()) if count else None,
            )
        )
    return tuple(bins)


def _slices(
    holdout: pd.DataFrame, y: np.ndarray[Any, Any], p: FloatArray, cfg: SliceSettings
) -> tuple[SliceMetrics, ...]:
    keys = {
        "merchant_category": holdout["merchant_category"],
        "amount_band": amount_band(holdout["amount"]),
        "channel": holdout["channel"],
    }
    out = []
    for column, key in keys.items():
        values = key.astype("string").fillna("(missing)").to_numpy(dtype=object)
        for value in sorted(set(values)):
            inside = values == value
            n, positives = int(inside.sum()), int(y[inside].sum())
            supported = n >= cfg.min_rows and positives >= cfg.min_positives and positives < n
            ys, ps = y[inside], p[inside]
            out.append(
                SliceMetrics(
                    column=column,
                    value=str(value),
                    n=n,
                    positives=positives,
                    supported=supported,
                    pr_auc=float(average_precision_score(ys, ps)) if supported else None,
                    roc_auc=float(roc_auc_score(ys, ps)) if supported else None,
                )
            )
    return tuple(out)


def evaluate(
    model: Pipeline, holdout: pd.DataFrame, threshold: float, slices_cfg: SliceSettings
) -> Evaluation:
    """Score ``holdout`` with ``model`` and measure it (see :class:`Evaluation`).

    To compare a challenger with the champion, evaluate both on the same holdout: the
    challenger's, i.e. the champion is re-scored on the newest days.
    """
    missing = [c for c in ("merchant_category", "amount", "channel") if c not in holdout]
    if missing:
        raise TrainingError(f"the holdout lacks column(s) {', '.join(missing)}")
    y = fraud_labels(holdout, "the holdout").to_numpy()
    positives = int(y.sum())
    if positives == 0 or positives == len(y):
        raise TrainingError(
            f"the holdout ({len(y):,} rows, {positives} frauds) has a single class: "
            "PR-AUC and ROC-AUC are undefined"
        )
    p = scores(model, holdout)
    alert = p >= threshold
    alerts, caught = int(alert.sum()), int(y[alert].sum())
    precision = caught / alerts if alerts else 0.0
    recall = caught / positives
    f1 = 2 * precision * recall / (precision + recall) if caught else 0.0
    return Evaluation(
        n=len(y),
        positives=positives,
        base_rate=positives / len(y),
        holdout_digest=_digest(holdout, y),
        pr_auc=float(average_precision_score(y, p)),
        roc_auc=float(roc_auc_score(y, p)),
        brier=float(brier_score_loss(y, p)),
        threshold=float(threshold),
        alerts=alerts,
        precision=precision,
        recall=recall,
        f1=f1,
        calibration=_calibration(y, p),
        slices=_slices(holdout, y, p, slices_cfg),
    )


# -------------------------------------------------------------------------- plots
# Figures are built with matplotlib's object API (no pyplot): no global backend or
# figure registry is touched, so this works headless and inside a notebook alike.


def plot_pr_curves(
    labels: Any, scores_by_model: Mapping[str, Any], threshold: float | None = None
) -> Figure:
    """Precision-recall curves of one or more models on the same rows, with the random
    baseline and each model's operating point at ``threshold``."""
    from matplotlib.figure import Figure

    y = np.asarray(labels)
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    for name, score in scores_by_model.items():
        s = np.asarray(score, dtype=np.float64)
        precision, recall, _ = precision_recall_curve(y, s)
        (line,) = ax.plot(
            recall, precision, label=f"{name} (PR-AUC {average_precision_score(y, s):.3f})"
        )
        if threshold is not None and (alert := s >= threshold).any():
            ax.scatter(
                [y[alert].sum() / y.sum()], [y[alert].mean()], color=line.get_color(), zorder=3
            )
    ax.axhline(y.mean(), color="grey", linestyle=":", label=f"random ({y.mean():.3f})")
    title = "precision-recall on the holdout"
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    if threshold is not None:
        ax.text(0.02, 0.03, f"dots: threshold {threshold:g}", transform=ax.transAxes)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    return fig


def plot_calibration(evaluation: Evaluation) -> Figure:
    """Reliability diagram: observed fraud rate against mean score per bin, with counts."""
    from matplotlib.figure import Figure

    points = [
        (b.mean_predicted, b.observed_rate, b.count)
        for b in evaluation.calibration
        if b.mean_predicted is not None and b.observed_rate is not None
    ]
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    ax.plot(
        [x for x, _, _ in points],
        [y for _, y, _ in points],
        marker="o",
        label=f"model (Brier {evaluation.brier:.4f})",
    )
    for x, y, count in points:
        ax.annotate(f"{count:,}", (x, y), fontsize=7)
    ax.set(
        xlabel="mean predicted P(fraud)",
        ylabel="observed fraud rate",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title="calibration (numbers: rows per bin)",
    )
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    return fig


def permutation_importances(
    model: Pipeline,
    holdout: pd.DataFrame,
    max_rows: int = 5_000,
    n_repeats: int = 3,
    seed: int = 0,
) -> pd.Series:
    """Mean drop in PR-AUC when each input column is shuffled, largest first.

    Gradient boosting has no ``feature_importances_``; permutation importance measures
    what the model actually uses. To keep it fast on a large holdout, at most
    ``max_rows`` rows are used: every fraud (up to half of them) plus random legitimate
    rows. That raises the fraud rate, hence PR-AUC, of the sample: read the ranking and
    relative sizes, not the absolute drops.
    """
    from sklearn.inspection import permutation_importance
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(seed)
    y = fraud_labels(holdout, "the holdout").to_numpy()
    if len(y) > max_rows:
        pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        pos = rng.choice(pos, min(len(pos), max_rows // 2), replace=False)
        neg = rng.choice(neg, max_rows - len(pos), replace=False)
        rows = np.sort(np.concatenate([pos, neg]))
    else:
        rows = np.arange(len(y))
    columns = input_columns(model)
    # Many small predictions: with several OpenMP threads each tree's prediction waits on
    # a barrier, which on a busy machine made this 10x slower than with one thread.
    with threadpool_limits(limits=1, user_api="openmp"):
        result = permutation_importance(
            model,
            holdout[columns].iloc[rows],
            y[rows],
            scoring="average_precision",
            n_repeats=n_repeats,
            random_state=seed,
        )
    importances = pd.Series(result.importances_mean, index=columns, name="pr_auc_drop")
    return importances.sort_values(ascending=False)


def plot_feature_importance(importances: pd.Series, top: int = 20) -> Figure:
    """Horizontal bars of :func:`permutation_importances`, most important on top."""
    from matplotlib.figure import Figure

    shown = importances.head(top).iloc[::-1]
    fig = Figure(figsize=(5.5, 0.3 * len(shown) + 1.2))
    ax = fig.subplots()
    ax.barh(list(shown.index), shown.to_numpy())
    ax.set(xlabel="drop in PR-AUC when shuffled", title="permutation importance (holdout sample)")
    fig.tight_layout()
    return fig

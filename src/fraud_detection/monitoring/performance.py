"""Model performance on served traffic, once the delayed labels have arrived.

Pure: scored transactions, labels and :class:`PerformanceSettings` in, a
:class:`PerformanceResult` out. Chargebacks arrive days after a transaction, so only the
labels whose ``label_timestamp`` is at or before *now* count: a transaction without one
is unlabelled, not legitimate. Per day: PR-AUC (``average_precision_score``), precision
and recall at the served decision, and the label coverage (labelled / scored).

The verdict pools the most recent days whose coverage reached ``min_label_coverage``
(``recent_days`` of them). With at least ``min_positives`` labelled frauds there, the
model is **degraded** when the pooled PR-AUC is below the champion's own holdout PR-AUC
minus ``tolerance``, or below ``floor``; with fewer there is no verdict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from fraud_detection.monitoring.settings import PerformanceSettings

__all__ = ["DayPerformance", "PerformanceResult", "assess", "daily", "with_arrived_labels"]


def with_arrived_labels(
    predictions: pd.DataFrame, labels: pd.DataFrame, now: pd.Timestamp
) -> pd.DataFrame:
    """``predictions`` with ``is_fraud`` (nullable Int64): the label if it had arrived by
    ``now`` (``label_timestamp <= now``), else missing. One row per prediction."""
    known = labels.loc[labels["label_timestamp"] <= now, ["transaction_id", "is_fraud"]]
    known = known.drop_duplicates("transaction_id", keep="last")
    out = predictions.drop(columns=["is_fraud"], errors="ignore").merge(
        known.astype({"transaction_id": "string"}),
        on="transaction_id",
        how="left",
        validate="many_to_one",
    )
    out["is_fraud"] = out["is_fraud"].astype("Int64")
    return out


@dataclass(frozen=True)
class DayPerformance:
    """One day of served traffic: how much of it is labelled and how well it was scored.

    ``alerts`` counts every scored row's decision; ``precision`` and ``recall`` are over
    the labelled rows (None without a labelled alert or fraud); ``pr_auc`` is None with a
    single class among the labelled rows.
    """

    day: str
    scored: int
    labelled: int
    coverage: float
    positives: int
    alerts: int
    pr_auc: float | None
    precision: float | None
    recall: float | None


def _measure(y: np.ndarray[Any, Any], score: np.ndarray[Any, Any], alert: Any) -> dict[str, Any]:
    positives = int(y.sum())
    alert = np.asarray(alert, dtype=bool)
    alerts, caught = int(alert.sum()), int(y[alert].sum())
    return {
        "positives": positives,
        "alerts": alerts,
        "pr_auc": float(average_precision_score(y, score)) if 0 < positives < len(y) else None,
        "precision": caught / alerts if alerts else None,
        "recall": caught / positives if positives else None,
    }


def daily(joined: pd.DataFrame) -> list[DayPerformance]:
    """Per UTC day of ``event_timestamp``: scored, labelled, coverage and the metrics.

    ``joined`` is :func:`with_arrived_labels`'s output (``score``, ``decision``,
    ``is_fraud``, ``event_timestamp``).
    """
    out = []
    day = joined["event_timestamp"].dt.tz_convert("UTC").dt.strftime("%Y-%m-%d")
    for name, rows in joined.groupby(day, sort=True):
        known = rows[rows["is_fraud"].notna()]
        y = known["is_fraud"].to_numpy(dtype=np.int64)
        metrics = _measure(y, known["score"].to_numpy(dtype=np.float64), known["decision"])
        metrics["alerts"] = int(rows["decision"].sum())  # of every scored row, labelled or not
        out.append(
            DayPerformance(
                day=str(name),
                scored=len(rows),
                labelled=len(known),
                coverage=len(known) / len(rows),
                **metrics,
            )
        )
    return out


@dataclass(frozen=True)
class PerformanceResult:
    """The days measured and the verdict on the most recent labelled ones."""

    days: tuple[DayPerformance, ...]
    recent_days: tuple[str, ...]
    labelled: int
    positives: int
    pr_auc: float | None
    precision: float | None
    recall: float | None
    reference_pr_auc: float | None  # the champion's holdout PR-AUC
    limit: float | None  # degraded below this: max(reference - tolerance, floor)
    degraded: bool
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["days"] = [asdict(d) for d in self.days]
        return out


def assess(
    joined: pd.DataFrame, reference_pr_auc: float | None, cfg: PerformanceSettings
) -> PerformanceResult:
    """The performance verdict (see the module docstring) on :func:`with_arrived_labels`."""
    days = daily(joined) if len(joined) else []
    complete = [d.day for d in days if d.coverage >= cfg.min_label_coverage]
    recent = tuple(complete[-cfg.recent_days :])
    day = joined["event_timestamp"].dt.tz_convert("UTC").dt.strftime("%Y-%m-%d")
    pooled = joined[day.isin(recent) & joined["is_fraud"].notna()] if len(joined) else joined
    y = pooled["is_fraud"].to_numpy(dtype=np.int64) if len(pooled) else np.zeros(0, np.int64)
    metrics = _measure(
        y,
        pooled["score"].to_numpy(dtype=np.float64) if len(pooled) else np.zeros(0),
        pooled["decision"].to_numpy(dtype=bool) if len(pooled) else np.zeros(0, bool),
    )
    limit = (
        cfg.floor if reference_pr_auc is None else max(reference_pr_auc - cfg.tolerance, cfg.floor)
    )
    pr_auc = metrics["pr_auc"]
    degraded = False
    if not recent:
        verdict = (
            f"no verdict: no served day has {cfg.min_label_coverage:.0%} of its labels yet "
            "(chargebacks arrive days later)"
        )
    elif metrics["positives"] < cfg.min_positives or pr_auc is None:
        verdict = (
            f"no verdict: {metrics['positives']} labelled fraud(s) in {', '.join(recent)}, "
            f"need {cfg.min_positives}"
        )
    else:
        degraded = pr_auc < limit
        against = (
            f"champion's holdout {reference_pr_auc:.3f} - {cfg.tolerance:g}"
            if reference_pr_auc is not None and limit > cfg.floor
            else f"floor {cfg.floor:g}"
        )
        verdict = (
            f"PR-AUC {pr_auc:.3f} on {', '.join(recent)} ({metrics['positives']} frauds) "
            f"{'<' if degraded else '>='} {limit:.3f} ({against})"
        )
    return PerformanceResult(
        days=tuple(days),
        recent_days=recent,
        labelled=len(pooled),
        positives=metrics["positives"],
        pr_auc=pr_auc,
        precision=metrics["precision"],
        recall=metrics["recall"],
        reference_pr_auc=reference_pr_auc,
        limit=limit,
        degraded=degraded,
        verdict=verdict,
    )

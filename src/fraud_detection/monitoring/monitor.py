"""The steps of a monitoring run, each one function with its I/O at the edges.

The Prefect flow (``flows.monitoring_flow``) and ``fraud monitor run --no-flow`` call
these, in this order::

    reference (the champion's training data) → current traffic (served predictions)
      → data drift + prediction drift → performance on arrived labels
      → signals (to CT) → HTML report → MLflow run

The statistics are pure (``drift``, ``performance``); this module reads the champion
from MLflow, its training set from the state folder, the prediction log and batch scores
(``served``) and the labels, and writes the report, the run and the signals.

The clock: *now* is the midnight after the newest accepted partition, the same simulated
"now" as continuous training (``training.ct.as_of``); labels count once they have arrived
by then. Current traffic is the ``window_days`` days ending at the data's clock, the
midnight after the newest partition on disk (landed, judged or not: its traffic was
served before the gate saw it), never the newest days the prediction log happens to
hold: rows dated later (a client's clock, a year-9999 request) are left out and counted.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fraud_detection.config import Profile, StatePaths, load_profile, state_paths
from fraud_detection.errors import FraudError
from fraud_detection.features.engineering import CATEGORICAL_FEATURES, MODEL_FEATURES
from fraud_detection.monitoring import drift as drift_stats
from fraud_detection.monitoring import performance as perf_stats
from fraud_detection.monitoring import signals
from fraud_detection.monitoring.settings import MonitoringConfig, load_monitoring_config

if TYPE_CHECKING:
    from fraud_detection.monitoring.drift import DriftResult, FeatureDrift
    from fraud_detection.monitoring.performance import PerformanceResult

Progress = Callable[[str], None]


class MonitoringError(FraudError):
    """Monitoring cannot run: no champion, its training set gone, nothing served."""


@dataclass(frozen=True)
class MonitorContext:
    profile: Profile
    paths: StatePaths
    cfg: MonitoringConfig

    @property
    def reports(self) -> Path:
        return self.paths.reports / "monitoring"


def context(state_dir: str | Path | None = None) -> MonitorContext:
    """The active profile and ``configs/monitoring.yaml``; ``state_dir`` overrides the
    profile's state folder."""
    profile = load_profile()
    if state_dir is not None:
        profile = profile.model_copy(update={"state_dir": Path(state_dir).resolve()})
    return MonitorContext(profile, state_paths(profile), load_monitoring_config())


def clock(ctx: MonitorContext) -> pd.Timestamp:
    """The simulated now: the midnight after the newest accepted partition."""
    from fraud_detection.training.ct import as_of

    return as_of(ctx.paths)


# ------------------------------------------------------------------ reference


@dataclass(frozen=True)
class Reference:
    """What the champion was trained and validated on, and how it scored its holdout."""

    model_name: str
    version: str
    run_id: str
    threshold: float
    pr_auc: float | None  # on its holdout, from its run's metrics
    kind: str  # "holdout" or "training_set"
    training_set: Path
    frame: pd.DataFrame  # the reference rows (model inputs)
    window: tuple[str, str]
    holdout_scores: np.ndarray[Any, np.dtype[np.float64]]

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rows": len(self.frame),
            "window": list(self.window),
            "training_set": str(self.training_set),
            "holdout_rows": len(self.holdout_scores),
            "pr_auc": self.pr_auc,
        }


def _training_set_file(ctx: MonitorContext, name: str | None, run_id: str) -> Path:
    if not name:
        raise MonitoringError(
            f"the champion's run {run_id} has no training_set tag: it was not trained by "
            "the pipeline; run `fraud ct run` to get a champion with lineage"
        )
    return ctx.paths.root / "training" / name


def load_reference(ctx: MonitorContext, progress: Progress | None = None) -> Reference:
    """The champion (MLflow alias), its training set (the run's ``training_set`` tag,
    under ``<state>/training/``; rebuilt from the feature store if it was deleted) and
    its holdout scores."""
    from mlflow import MlflowClient

    from fraud_detection.serving.batch import BatchScoringError, load_champion
    from fraud_detection.training.evaluation import scores
    from fraud_detection.training.model import split_holdout

    say = progress or (lambda _m: None)
    try:
        champion = load_champion(ctx.profile)
    except BatchScoringError as exc:
        raise MonitoringError(str(exc)) from None
    run = MlflowClient().get_run(champion.run_id)
    path = _training_set_file(ctx, run.data.tags.get("training_set"), champion.run_id)
    if not path.exists():
        from fraud_detection.training import ct

        as_of = pd.Timestamp(path.stem.removeprefix("training_set_")).tz_localize("UTC")
        say(f"the champion's training set {path.name} is gone: rebuilding it (Feast)…")
        ct.build_training_set(ct.context(ctx.paths.root), as_of)
    frame = pd.read_parquet(path)
    holdout_days = int(run.data.params.get("holdout_days", 3))
    _, holdout = split_holdout(frame, holdout_days)
    rows = holdout if ctx.cfg.reference == "holdout" else frame
    stamps = rows["event_timestamp"]
    return Reference(
        model_name=champion.name,
        version=champion.version,
        run_id=champion.run_id,
        threshold=champion.threshold,
        pr_auc=run.data.metrics.get("pr_auc"),
        kind=ctx.cfg.reference,
        training_set=path,
        frame=rows[[*MODEL_FEATURES, *CATEGORICAL_FEATURES]].reset_index(drop=True),
        window=(f"{stamps.min():%Y-%m-%d}", f"{stamps.max():%Y-%m-%d}"),
        holdout_scores=scores(champion.model, holdout),
    )


# ------------------------------------------------------------------ measurements


def window_end(ctx: MonitorContext) -> pd.Timestamp:
    """The end of the current-traffic window: the midnight after the newest raw partition
    on disk (the data's today), or :func:`clock` when that is later."""
    from fraud_detection.data.ledger import raw_partition_days

    now = clock(ctx)
    landed = raw_partition_days(ctx.paths)
    if not landed:
        return now
    return max(now, pd.Timestamp(landed[-1] + dt.timedelta(days=1)).tz_localize("UTC"))


def traffic_days(end: pd.Timestamp, days: int) -> list[dt.date]:
    """The ``days`` calendar days before ``end`` (a midnight), oldest first (pure)."""
    last = (end - pd.Timedelta(microseconds=1)).date()
    return [last - dt.timedelta(days=n) for n in range(days - 1, -1, -1)]


def future_rows(ctx: MonitorContext, end: pd.Timestamp) -> int:
    """Served rows dated at or after ``end``: left out of the window, and said so."""
    from fraud_detection.monitoring.served import rows_dated_from

    return rows_dated_from(ctx.paths, end.date())


def future_rows_warning(ignored: int, end: pd.Timestamp | str) -> str:
    """The one line that says rows were left out of the window (pure)."""
    when = pd.Timestamp(end)
    return (
        f"warning: ignored {ignored:,} served row(s) dated on or after {when:%Y-%m-%d %H:%M} "
        "UTC, the end of the monitoring window (the day after the newest data partition): "
        "future-dated requests are not current traffic"
    )


def current_traffic(ctx: MonitorContext, days: int | None = None) -> pd.DataFrame:
    """Served predictions of the ``days`` (default ``window_days``) days before
    :func:`window_end`, one row per transaction (the API's answer over a batch score of
    the same one). Rows dated after the window's end are never read."""
    from fraud_detection.monitoring.served import one_per_transaction, read_predictions

    end = window_end(ctx)
    frame = read_predictions(ctx.paths, days=traffic_days(end, days or ctx.cfg.window_days))
    frame = frame[frame["event_timestamp"] < end].reset_index(drop=True)
    return one_per_transaction(frame)


def require_traffic(ctx: MonitorContext, current: pd.DataFrame) -> pd.DataFrame:
    """``current``, or a :class:`MonitoringError` saying how to get some when empty."""
    if current.empty:
        raise MonitoringError(
            f"no served predictions under {ctx.paths.root}/serving/predictions or "
            f"{ctx.paths.root}/scores: score a day first (`fraud score --latest`) or "
            "serve some traffic"
        )
    return current


@dataclass(frozen=True)
class DriftFindings:
    data: DriftResult
    prediction: FeatureDrift | None
    prediction_note: str = ""


def measure_drift(
    ctx: MonitorContext, reference: Reference, current: pd.DataFrame
) -> DriftFindings:
    """Data drift of every model input, and prediction drift of the champion's scores
    (rows it scored itself) against its holdout scores."""
    data = drift_stats.dataset_drift(
        reference.frame,
        current,
        MODEL_FEATURES,
        CATEGORICAL_FEATURES,
        ctx.cfg.drift,
        min_rows=ctx.cfg.min_rows,
    )
    mine = current.loc[current["model_version"] == reference.version, "score"]
    if len(mine) < ctx.cfg.min_rows or len(reference.holdout_scores) < ctx.cfg.min_rows:
        note = (
            f"prediction drift not measured: {len(mine):,} current rows scored by "
            f"v{reference.version}, {len(reference.holdout_scores):,} holdout rows "
            f"(need {ctx.cfg.min_rows:,} each)"
        )
        return DriftFindings(data, None, note)
    prediction = drift_stats.prediction_drift(reference.holdout_scores, mine, ctx.cfg.drift)
    return DriftFindings(data, prediction)


def measure_performance(
    ctx: MonitorContext, reference: Reference, now: pd.Timestamp
) -> PerformanceResult:
    """PR-AUC per day of the champion's served traffic over ``lookback_days``, with the
    labels arrived by ``now``, and the degradation verdict."""
    from fraud_detection.features.store import read_labels
    from fraud_detection.monitoring.served import one_per_transaction, read_predictions

    columns = [
        "transaction_id",
        "event_timestamp",
        "logged_at",
        "source",
        "model_version",
        "score",
        "decision",
    ]
    end = window_end(ctx)
    lookback = traffic_days(end, ctx.cfg.performance.lookback_days)
    served = read_predictions(ctx.paths, days=lookback, columns=columns)
    served = served[served["event_timestamp"] < end]
    served = one_per_transaction(served)
    served = served[served["model_version"] == reference.version]
    joined = perf_stats.with_arrived_labels(served, read_labels(ctx.paths, now), now)
    return perf_stats.assess(joined, reference.pr_auc, ctx.cfg.performance)


# ------------------------------------------------------------------ signals


def proposed_signals(
    findings: DriftFindings,
    performance: PerformanceResult,
    version: str,
    report: Path | None = None,
) -> list[signals.Signal]:
    """The signals the measurements call for (pure): ``drift`` when the data set or the
    score distribution drifted, ``performance`` when PR-AUC degraded."""
    out = []
    data, prediction = findings.data, findings.prediction
    extra: dict[str, Any] = {"champion_version": version}
    if report is not None:
        extra["report"] = str(report)
    if data.detected or (prediction is not None and prediction.drifted):
        parts = []
        if data.detected:
            names = data.drifted
            parts.append(
                f"data drift: {len(names)} of {len(data.features)} features drifted "
                f"({', '.join(names)})"
            )
        if prediction is not None and prediction.drifted:
            parts.append(
                f"prediction drift: score PSI {prediction.psi:.3f}, KS {prediction.statistic:.3f}"
            )
        metric, value, threshold = (
            ("drift_share", data.share, data.share_threshold)
            if data.detected
            else ("prediction_psi", prediction.psi if prediction else 0.0, 0.0)
        )
        out.append(
            signals.Signal(
                kind="drift",
                detail="; ".join(parts) + f" (champion v{version})",
                metric=metric,
                value=float(value),
                threshold=float(threshold),
                extra={**extra, "features": data.drifted},
            )
        )
    if performance.degraded and performance.pr_auc is not None:
        out.append(
            signals.Signal(
                kind="performance",
                detail=f"{performance.verdict} (champion v{version})",
                metric="pr_auc",
                value=float(performance.pr_auc),
                threshold=float(performance.limit or 0.0),
                extra={**extra, "days": list(performance.recent_days)},
            )
        )
    return out


@dataclass(frozen=True)
class SignalOutcome:
    kind: str
    detail: str
    status: str  # "emitted", or why not
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "detail": self.detail, "status": self.status, "path": self.path}


def emit_signals(
    ctx: MonitorContext,
    proposed: Sequence[signals.Signal],
    now: dt.datetime | None = None,
) -> list[SignalOutcome]:
    """Write the proposed signals, except a kind already pending (CT has not acted on it
    yet) or written less than ``cooldown_minutes`` ago."""
    now = now or dt.datetime.now(dt.UTC)
    cooldown = dt.timedelta(minutes=ctx.cfg.signals.cooldown_minutes)
    waiting = signals.pending(ctx.paths)
    earlier = waiting + signals.consumed(ctx.paths)
    out = []
    for signal in proposed:
        if not ctx.cfg.signals.enabled:
            out.append(SignalOutcome(signal.kind, signal.detail, "not emitted: signals disabled"))
            continue
        same = [s for s in waiting if s.kind == signal.kind]
        if same:
            # CT has not answered it: announce it again (its event may have fallen in a
            # trigger's quiet window, or been sent while no server answered).
            again = "; its event sent again" if signals.announce(same[0]) else ""
            status = f"not emitted: a {signal.kind} signal is already pending ({same[0].id}){again}"
            out.append(SignalOutcome(signal.kind, signal.detail, status))
            continue
        recent = [
            s
            for s in earlier
            if s.kind == signal.kind and now - dt.datetime.fromisoformat(s.at) < cooldown
        ]
        if recent:
            status = (
                f"not emitted: cooldown ({ctx.cfg.signals.cooldown_minutes:g} min) since "
                f"signal {recent[-1].id} at {recent[-1].at}"
            )
            out.append(SignalOutcome(signal.kind, signal.detail, status))
            continue
        path = signals.emit(ctx.paths, signal)
        out.append(SignalOutcome(signal.kind, signal.detail, "emitted", str(path)))
    return out


# ------------------------------------------------------------------ report, MLflow


def report_folder(ctx: MonitorContext, started: dt.datetime) -> Path:
    """A fresh ``reports/monitoring/<YYYYMMDDTHHMMSSZ>`` (suffixed if taken)."""
    base = ctx.reports / started.strftime("%Y%m%dT%H%M%SZ")
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


def summary(
    ctx: MonitorContext,
    reference: Reference,
    current: pd.DataFrame,
    findings: DriftFindings,
    performance: PerformanceResult,
    outcomes: Sequence[SignalOutcome],
    now: pd.Timestamp,
    generated: dt.datetime,
    end: pd.Timestamp | None = None,
    ignored: int = 0,
) -> dict[str, Any]:
    """Everything the report shows, as plain JSON types (``summary.json``)."""
    end = now if end is None else end
    days = (
        sorted(current["event_timestamp"].dt.strftime("%Y-%m-%d").unique()) if len(current) else []
    )
    sources = current["source"].value_counts().to_dict() if len(current) else {}
    threshold = reference.threshold
    ref_alerts = (
        float(np.mean(reference.holdout_scores >= threshold))
        if len(reference.holdout_scores)
        else 0.0
    )
    return {
        "generated_at": generated.isoformat(timespec="seconds"),
        "now": now.isoformat(),
        "model": reference.model_name,
        "champion_version": reference.version,
        "champion_run_id": reference.run_id,
        "threshold": threshold,
        "window_days": ctx.cfg.window_days,
        "current": {
            "days": days,
            "rows": len(current),
            "sources": sources,
            "window_end": end.isoformat(),
            "ignored_future_rows": ignored,
        },
        "reference": reference.describe(),
        "thresholds": ctx.cfg.drift.model_dump(),
        "drift": findings.data.to_dict(),
        "prediction": findings.prediction.to_dict() if findings.prediction else None,
        "prediction_note": findings.prediction_note,
        "alert_rate": {
            "reference": ref_alerts,
            "current": float(current["decision"].mean()) if len(current) else 0.0,
        },
        "performance": performance.to_dict(),
        "signals": [o.to_dict() for o in outcomes],
    }


def figures(
    ctx: MonitorContext,
    reference: Reference,
    current: pd.DataFrame,
    findings: DriftFindings,
    performance: PerformanceResult,
) -> dict[str, Any]:
    """The report's plots as base64 PNGs."""
    from fraud_detection.monitoring import report

    top = report.top_features(findings.data, ctx.cfg.report_top_features)
    mine = current.loc[current["model_version"] == reference.version, "score"]
    return {
        "features": [
            report.to_png(
                report.feature_histogram(f, reference.frame[f.feature], current[f.feature])
            )
            for f in top
        ],
        "scores": report.to_png(
            report.score_histogram(
                reference.holdout_scores, mine, reference.threshold, findings.prediction
            )
        ),
        "performance": report.to_png(report.performance_plot(performance))
        if performance.days
        else None,
    }


def metrics(findings: DriftFindings, performance: PerformanceResult) -> dict[str, float]:
    """The run's MLflow metrics: PSI per feature, share drifted, prediction PSI, PR-AUC."""
    out: dict[str, float] = {f"psi.{f.feature}": f.psi for f in findings.data.features}
    out["drift_share"] = findings.data.share
    out["drifted_features"] = float(len(findings.data.drifted))
    if findings.prediction is not None:
        out["prediction_psi"] = findings.prediction.psi
        out["prediction_ks"] = findings.prediction.statistic
    if performance.pr_auc is not None:
        out["pr_auc"] = performance.pr_auc
    out["labelled_positives"] = float(performance.positives)
    if performance.days:
        out["label_coverage"] = performance.days[-1].coverage
    return out


def log_run(
    ctx: MonitorContext, folder: Path, record: dict[str, Any], values: dict[str, float]
) -> str:
    """The report folder as an MLflow run of the monitoring experiment."""
    from fraud_detection.registry import tracking

    tracking.setup_mlflow(ctx.profile)
    kinds = [s["kind"] for s in record["signals"] if s["status"] == "emitted"]
    return tracking.log_report_run(
        experiment=ctx.cfg.experiment,
        artifact_root=ctx.profile.mlflow_artifact_root,
        run_name=f"monitoring-{record['now'][:10]}",
        params={
            "window_days": ctx.cfg.window_days,
            "reference": ctx.cfg.reference,
            "champion_version": record["champion_version"],
            "drift": ctx.cfg.drift.model_dump(),
            "performance": ctx.cfg.performance.model_dump(),
        },
        metrics=values,
        tags={
            "champion_version": str(record["champion_version"]),
            "signals": ",".join(kinds) or "none",
            "data_drift": str(record["drift"]["detected"]).lower(),
            "report": str(folder / "index.html"),
        },
        artifacts_dir=folder,
    )


# ------------------------------------------------------------------ the whole run


@dataclass
class MonitoringResult:
    """What a monitoring run found and where it left the evidence."""

    report: Path
    run_id: str | None
    drift_detected: bool
    drifted: list[str]
    prediction_drift: bool
    degraded: bool
    performance: str
    signals: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    # Why drift was not judged (too few rows), else None: then "none" would be a lie.
    drift_skipped: str | None = None
    window_end: str = ""
    ignored_future_rows: int = 0  # served rows dated after window_end, left out

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["report"] = str(self.report)
        return out


def finish(
    ctx: MonitorContext,
    reference: Reference,
    current: pd.DataFrame,
    findings: DriftFindings,
    performance: PerformanceResult,
    now: pd.Timestamp,
    started: float,
    log_to_mlflow: bool = True,
) -> MonitoringResult:
    """Signals, report and MLflow run from the measurements (the flow's last steps)."""
    generated = dt.datetime.now(dt.UTC)
    folder = report_folder(ctx, generated)
    outcomes = emit_signals(
        ctx, proposed_signals(findings, performance, reference.version, folder / "index.html")
    )
    end = window_end(ctx)
    ignored = future_rows(ctx, end)
    record = summary(
        ctx, reference, current, findings, performance, outcomes, now, generated, end, ignored
    )
    from fraud_detection.monitoring.report import write_report

    page = write_report(folder, record, figures(ctx, reference, current, findings, performance))
    run_id = log_run(ctx, folder, record, metrics(findings, performance)) if log_to_mlflow else None
    return MonitoringResult(
        report=page,
        run_id=run_id,
        drift_detected=findings.data.detected,
        drifted=findings.data.drifted,
        prediction_drift=bool(findings.prediction and findings.prediction.drifted),
        degraded=performance.degraded,
        performance=performance.verdict,
        signals=[o.to_dict() for o in outcomes],
        seconds=time.perf_counter() - started,
        drift_skipped=findings.data.skipped,
        window_end=end.isoformat(),
        ignored_future_rows=ignored,
    )


def run(state_dir: str | Path | None = None, progress: Progress | None = None) -> MonitoringResult:
    """One monitoring run without the orchestrator (the flow runs the same steps)."""
    say = progress or (lambda _m: None)
    started = time.perf_counter()
    ctx = context(state_dir)
    say("loading the champion and its reference data…")
    reference = load_reference(ctx, say)
    now = clock(ctx)
    current = require_traffic(ctx, current_traffic(ctx))
    say(
        f"comparing {len(current):,} served rows with {len(reference.frame):,} reference rows "
        f"(champion v{reference.version})…"
    )
    findings = measure_drift(ctx, reference, current)
    performance = measure_performance(ctx, reference, now)
    return finish(ctx, reference, current, findings, performance, now, started)

"""Level 1: continuous training (CT) as Prefect flows.

The flows live in the package, so the wheel and the serving image run ``fraud ct run``,
``fraud score`` and ``fraud monitor run``; ``pipelines/level1_continuous_training/flows.py``
is the deployments' entry file, which puts the checkout's own ``src/`` first and re-exports
them.

The flow reads like the pipeline's diagram; every task is a thin call into
``fraud_detection.training.ct`` (the same functions the CLI and DVC stages call):

    ingest → data gate → update features → training set (Feast) → training-set gate
      → train → evaluate (challenger and champion, same holdout) → register (challenger)
      → model gate → promote (champion) → materialize online features → notify serving

Triggers (Google's five): on demand (``fraud ct run``, the Prefect UI), on a schedule
(the ``ct-nightly`` deployment's cron), and from Prefect events through the ``triggers:``
of prefect.yaml: on new data (``fraud.data.partition-landed``, which ``fraud simulate``
emits; :func:`new_data_sensor` polls as the fallback for feeds that emit nothing), on
performance degradation and on drift (``fraud.monitoring.performance`` / ``.drift``, which
monitoring emits with each signal it writes). A run started by a signal retrains on the
latest window even when no partition arrived, and marks the signals it answered consumed
when it ends (:func:`signal_trigger` does the same from the signal files, without a server).

Every flow run records the commit it runs (:func:`record_code_version`): a
``commit:<sha>`` tag on the run and a log line, and in the CT run record. A deployed run
runs in a clone of the deployed commit (prefect.yaml's pull step), so that is the
released code; a run started from a working copy records ``<sha>-dirty`` when it has
uncommitted changes.

Serving in batch and monitoring, thin tasks over ``fraud_detection.serving.batch`` and
``fraud_detection.monitoring.monitor`` (``fraud score``, ``fraud monitor run``):

    batch_scoring_flow:  score one day (or several, on Dask) with the champion
                         → <state>/scores/date=.../
    monitoring_flow:     reference (champion's data) → served traffic → drift
      → performance on arrived labels → signals → HTML report → MLflow run
"""

from __future__ import annotations

import datetime as dt
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, get_client, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.runtime import flow_run

import fraud_detection
from fraud_detection.config import project_dir
from fraud_detection.errors import FraudError, ServiceUnavailableError
from fraud_detection.registry import lineage, runs
from fraud_detection.release import challenger as release
from fraud_detection.training import ct
from fraud_detection.validation.gate import DataValidationError

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from fraud_detection.monitoring.monitor import (
        DriftFindings,
        MonitorContext,
        MonitoringResult,
        Reference,
    )
    from fraud_detection.monitoring.performance import PerformanceResult
    from fraud_detection.training.gate import GateDecision
    from fraud_detection.validation.gate import ValidationOutcome

CODE_VERSION_TAG = "commit:"

# ---------------------------------------------------------------- code version


def record_code_version() -> str:
    """The commit this flow run's code comes from, tagged on the run and logged.

    ``git rev-parse HEAD`` of the checkout the run starts in (a deployed run: the clone
    of the deployed commit); ``<sha>-dirty`` with uncommitted changes; ``unknown``, with
    the reason logged, outside a git checkout. The ``fraud_detection`` package comes from
    the checkout's own ``src/`` (put first on the path at import); when it comes from elsewhere
    at another commit, a warning says so.
    """
    log = get_run_logger()
    checkout = project_dir()
    commit = lineage.git_commit(checkout)
    if commit == lineage.UNKNOWN_COMMIT:
        log.warning(
            "code version unknown: %s is not a git checkout with a commit (or git is missing)",
            checkout,
        )
    else:
        log.info("code version: commit %s (checkout %s)", commit, checkout)
    package = Path(fraud_detection.__file__).resolve().parent
    if not package.is_relative_to(checkout.resolve()):
        source = lineage.git_commit(package)
        if source not in (lineage.UNKNOWN_COMMIT, commit):
            log.warning(
                "the fraud_detection package comes from %s at commit %s, not %s: install the "
                "worker's environment from the released commit",
                package,
                source,
                commit,
            )
        else:
            log.info("fraud_detection package from the worker's environment: %s", package)
    else:
        log.info("fraud_detection package from the checkout: %s", package)
    if flow_run.id:
        tag = CODE_VERSION_TAG + commit
        try:
            with get_client(sync_client=True) as client:
                client.update_flow_run(flow_run.id, tags=sorted({*flow_run.tags, tag}))
        except Exception as exc:  # the tag is evidence, not a reason to fail the run
            log.warning("could not tag the flow run with %s: %s", tag, exc)
    return commit


# ------------------------------------------------------------------------ tasks


def _transient(_task: Any, _run: Any, state: Any) -> bool:
    """Whether a failed task is worth its retries: a store or service that did not answer,
    an OS or library error may pass on a second try; a user-fixable error (a bad config, a
    missing input: :class:`~fraud_detection.errors.FraudError`) would fail again, so the
    run fails at once with it."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception:
            return True
    if isinstance(exc, ServiceUnavailableError):
        return True
    return not isinstance(exc, FraudError)


@task(cache_policy=NO_CACHE)
def ingest(ctx: ct.CTContext) -> list[dt.date]:
    """New raw partitions: on disk, not yet judged by the data gate."""
    return ct.pending_partitions(ctx.paths)


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=_transient, cache_policy=NO_CACHE)
def validate_partition(ctx: ct.CTContext, day: dt.date) -> ValidationOutcome:
    return ct.validate_partition(ctx.paths, day)


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=_transient, cache_policy=NO_CACHE)
def update_features(ctx: ct.CTContext, days: list[dt.date]) -> int:
    return ct.update_features(ctx.paths, days)


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=_transient, cache_policy=NO_CACHE)
def build_training_set(ctx: ct.CTContext, when: pd.Timestamp) -> Path:
    return ct.build_training_set(ctx, when)


@task(cache_policy=NO_CACHE)
def validate_training_set(ctx: ct.CTContext, path: Path) -> ct.TrainingSet:
    return ct.validate_training_set(ctx, path)


def _train_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    # Same training data, same config, same training code, same variant: same model. Skip
    # refitting. The code hash keeps a result cached before a change to the model code
    # (kept 30 days) from being returned after it, even by a forced retrain.
    training: ct.TrainingSet = parameters["training"]
    settings = lineage.config_hash(parameters["ctx"].train)
    return f"train-{training.digest}-{settings}-{ct.code_hash()}-{parameters['variant']}"


@task(cache_key_fn=_train_key, persist_result=True, cache_expiration=timedelta(days=30))
def train(ctx: ct.CTContext, training: ct.TrainingSet, variant: ct.Variant) -> Pipeline:
    return ct.fit(ctx, training, variant)


@task(cache_policy=NO_CACHE)
def evaluate(ctx: ct.CTContext, model: Any, training: ct.TrainingSet) -> ct.Evaluations:
    return ct.evaluate(ctx, model, training)


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=_transient, cache_policy=NO_CACHE)
def register(
    ctx: ct.CTContext,
    model: Any,
    training: ct.TrainingSet,
    evals: ct.Evaluations,
    trigger: str,
    variant: ct.Variant,
    validation_ids: list[str],
) -> ct.Registered:
    plots = ct.figures(model, training, ctx, evals)
    return ct.log_and_register(
        ctx,
        model,
        training,
        evals,
        plots,
        trigger=trigger,
        variant=variant,
        validation_ids=validation_ids,
    )


@task(cache_policy=NO_CACHE)
def model_gate(
    ctx: ct.CTContext,
    model: Any,
    evals: ct.Evaluations,
    registered: ct.Registered,
    training: ct.TrainingSet,
) -> GateDecision:
    return ct.model_gate(ctx, model, evals, registered, training)


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=_transient, cache_policy=NO_CACHE)
def promote(
    ctx: ct.CTContext, registered: ct.Registered, evals: ct.Evaluations, decision: GateDecision
) -> tuple[bool, str | None, str]:
    return ct.promote(ctx, registered, evals, decision)


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=_transient, cache_policy=NO_CACHE)
def materialize(ctx: ct.CTContext) -> str:
    return ct.materialize(ctx)


@task(cache_policy=NO_CACHE)
def notify_serving(ctx: ct.CTContext, champion: str | None, promoted: bool) -> str:
    return str(ct.notify_serving(ctx, champion, promoted))


# ------------------------------------------------------------------------ flows


@flow(name="continuous-training", log_prints=True)
def ct_flow(
    trigger: str = "on_demand",
    state_dir: str | None = None,
    variant: ct.Variant = "normal",
    force: bool = False,
    signal_id: str | None = None,
) -> dict[str, Any]:
    """One CT run. Returns its record (also appended to ``<state>/ct/runs.jsonl``).

    ``variant`` trains a deliberately degraded challenger (``shuffled_labels``,
    ``drop_key_features``) to show the model gate rejecting it, on the data as it is
    (never skipped as "nothing new"); ``force`` retrains a normal model even when nothing
    new arrived since the last training. ``trigger`` ``drift`` or
    ``performance`` retrains too (on the latest window) and answers the pending signals:
    they are marked consumed with the run's outcome when it ends, failed or not;
    ``signal_id`` (set by the deployment trigger from its event) names the signal that
    started the run: already answered by an earlier run, this one has nothing to do.
    """
    from fraud_detection.monitoring import signals

    log = get_run_logger()
    started = time.perf_counter()
    commit = record_code_version()
    ctx = ct.context(state_dir)
    now = dt.datetime.now(dt.UTC).isoformat()
    record = runs.RunRecord(trigger=trigger, started_at=now, variant=variant, code_version=commit)
    answered: list[signals.Signal] = []
    if trigger in signals.KINDS:
        answered, done = signals.answering(ctx.paths, signal_id)
        if done is not None:
            record.outcome = record.model_gate = f"skipped: {done}"
            log.info("%s: nothing to do", done)
            runs.append_record(ctx.paths, record.finish(started))
            return record.__dict__
        force = True  # a signal says the model is off: retrain even without new data
        log.info(
            "%s trigger: retraining on the latest window; answers signal(s) %s",
            trigger,
            ", ".join(s.id for s in answered) or "none recorded in this state folder",
        )
    try:
        _run(ctx, record, trigger, variant, force, log)
    except DataValidationError as exc:
        record.outcome = "failed"
        record.training_gate = "REJECTED"
        record.reasons = [str(exc).splitlines()[0]]
        runs.append_record(ctx.paths, record.finish(started))
        raise
    except Exception as exc:
        record.outcome = "failed"
        record.reasons = [f"{type(exc).__name__}: {exc}".splitlines()[0]]
        runs.append_record(ctx.paths, record.finish(started))
        raise
    finally:
        # The run ended with a recorded outcome, failed or not; a run cancelled or killed
        # records none and leaves its signals pending for the next one.
        for signal in answered if record.outcome else []:
            signals.consume(ctx.paths, signal, record.outcome)
    runs.append_record(ctx.paths, record.finish(started))
    log.info("CT run %s in %.1f s: %s", record.outcome, record.seconds, record.model_gate)
    return record.__dict__


def _run(
    ctx: ct.CTContext,
    record: runs.RunRecord,
    trigger: str,
    variant: ct.Variant,
    force: bool,
    log: Any,
) -> None:
    # 1. Data: new partitions through the data gate (a rejected day is never used).
    pending = ingest(ctx)
    outcomes = {day: validate_partition(ctx, day) for day in pending}
    gate = ct.summarize_data_gate(outcomes)
    record.data_gate = gate.summary()
    for day, why in gate.rejected.items():
        log.warning(
            "partition %s rejected by the data gate: %s (Data Docs: %s)",
            day,
            why,
            gate.data_docs.get(day, "-"),
        )
    when = ct.as_of(ctx.paths)
    record.as_of = when.isoformat()
    from fraud_detection.registry import tracking

    tracking.setup_mlflow(ctx.profile)
    for line in ct.recover(ctx):  # what a killed run left: its run, its promotion
        log.warning(line)
    current = tracking.champion(ctx.model_name)
    record.champion_version = None if current is None else str(current.version)
    if not force and ct.nothing_new(ctx.paths, record.as_of, variant):
        record.outcome = record.model_gate = "skipped: nothing new"
        log.info("no new data since the last training (as of %s): skipped", when)
        return

    # 2. Features and the training set, through the training-set gate.
    update_features(ctx, gate.accepted)
    path = build_training_set(ctx, when)
    training = validate_training_set(ctx, path)
    record.training_gate = f"accepted ({training.rows:,} rows)"
    record.training_rows = training.rows

    # 3. Train, evaluate against the champion on the same holdout, register.
    model = train(ctx, training, variant)
    evals = evaluate(ctx, model, training)
    record.pr_auc = evals.challenger.pr_auc
    record.champion_pr_auc = evals.champion.pr_auc if evals.champion else None
    ids = [training.validation_id]
    registered = register(ctx, model, training, evals, trigger, variant, ids)
    record.challenger_version = registered.version

    # 4. The model gate, then the compare-and-set promotion.
    decision = model_gate(ctx, model, evals, registered, training)
    promoted, champion, reason = (False, record.champion_version, decision.summary)
    staged = decision.promote and release.staged()  # `fraud model release` delivers it
    if decision.promote and not staged:
        promoted, champion, reason = promote(ctx, registered, evals, decision)
    record.champion_version = champion
    record.outcome = "promoted" if promoted else "challenger" if staged else "kept champion"
    record.model_gate = (
        f"promoted v{registered.version}"
        if promoted
        else f"challenger v{registered.version} (awaiting release)"
        if staged
        else f"rejected v{registered.version}"
    )
    record.reasons = (
        [] if promoted or staged else ([reason] if decision.promote else decision.reasons)
    )
    for line in record.reasons:
        log.info("not promoted: %s", line)

    # 5. Deliver: online features up to date, serving told about the champion.
    materialize(ctx)
    notify_serving(ctx, champion, promoted)


@flow(name="new-data-sensor", log_prints=True)
def new_data_sensor(state_dir: str | None = None) -> dict[str, Any] | None:
    """Start CT when a new raw partition has landed: the polling fallback (deployed every
    5 minutes) for a feed that emits no ``fraud.data.partition-landed`` event."""
    record_code_version()
    ctx = ct.context(state_dir)
    pending = ct.pending_partitions(ctx.paths)
    if not pending:
        print("no new partition: nothing to do")
        return None
    print(f"{len(pending)} new partition(s) landed ({pending[0]} .. {pending[-1]}): starting CT")
    return ct_flow(trigger="new_data", state_dir=state_dir)


@flow(name="signal-trigger", log_prints=True)
def signal_trigger(state_dir: str | None = None) -> dict[str, Any] | None:
    """Start CT on the pending signal files (``fraud ct signals``): what the
    ``ct-on-signal`` deployment's event triggers do, for a state folder without a server."""
    record_code_version()
    from fraud_detection.monitoring import signals

    ctx = ct.context(state_dir)
    pending = signals.pending(ctx.paths)
    if not pending:
        print("no performance or drift signal: nothing to do")
        return None
    first = pending[0]
    print(f"{len(pending)} signal(s); first: {first.kind} — {first.detail}")
    # The CT run answers every pending signal and marks each consumed when it ends.
    return ct_flow(trigger=first.kind, state_dir=state_dir, signal_id=first.id)


# ------------------------------------------------- batch scoring and monitoring


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=_transient, cache_policy=NO_CACHE)
def score_day(day: dt.date | None, state_dir: str | None) -> dict[str, Any]:
    from fraud_detection.serving import batch
    from fraud_detection.training.ct import context

    result = batch.score_day(day, profile=context(state_dir).profile, progress=print)
    return result.to_dict()


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=_transient, cache_policy=NO_CACHE)
def score_days(last_days: int | None, state_dir: str | None) -> dict[str, Any]:
    """Several days: on a Dask cluster inside this step (``scaleout.partition_map``)."""
    from fraud_detection.config import state_paths
    from fraud_detection.serving import batch
    from fraud_detection.training.ct import context

    profile = context(state_dir).profile
    days = batch.recent_days(state_paths(profile), last_days)
    return batch.score_days(days, profile=profile, progress=print).to_dict()


@flow(name="batch-scoring", log_prints=True)
def batch_scoring_flow(
    day: str | None = None,
    state_dir: str | None = None,
    last_days: int | None = None,
    all_days: bool = False,
) -> dict[str, Any]:
    """Score one day's transactions (YYYY-MM-DD; default the newest accepted partition)
    with the champion; the scores land in ``<state>/scores/date=YYYY-MM-DD/``.
    ``last_days``: the newest N accepted days instead, ``all_days``: every accepted day
    (several days run on the profile's Dask cluster)."""
    record_code_version()
    if last_days is not None or all_days:
        return score_days(last_days, state_dir)
    when = dt.date.fromisoformat(day) if day else None
    return score_day(when, state_dir)


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=_transient, cache_policy=NO_CACHE)
def load_reference(ctx: MonitorContext) -> Reference:
    from fraud_detection.monitoring import monitor

    return monitor.load_reference(ctx, progress=print)


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=_transient, cache_policy=NO_CACHE)
def served_traffic(ctx: MonitorContext) -> pd.DataFrame:
    from fraud_detection.monitoring import monitor

    return monitor.current_traffic(ctx)


@task(cache_policy=NO_CACHE)
def measure_drift(
    ctx: MonitorContext, reference: Reference, current: pd.DataFrame
) -> DriftFindings:
    from fraud_detection.monitoring import monitor

    return monitor.measure_drift(ctx, reference, current)


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=_transient, cache_policy=NO_CACHE)
def measure_performance(
    ctx: MonitorContext, reference: Reference, now: pd.Timestamp
) -> PerformanceResult:
    from fraud_detection.monitoring import monitor

    return monitor.measure_performance(ctx, reference, now)


@task(cache_policy=NO_CACHE)
def report_and_signal(
    ctx: MonitorContext,
    reference: Reference,
    current: pd.DataFrame,
    findings: DriftFindings,
    performance: PerformanceResult,
    now: pd.Timestamp,
    started: float,
) -> MonitoringResult:
    from fraud_detection.monitoring import monitor

    return monitor.finish(ctx, reference, current, findings, performance, now, started)


@flow(name="monitoring", log_prints=True)
def monitoring_flow(state_dir: str | None = None) -> dict[str, Any]:
    """Drift of served traffic against the champion's data, its performance on the labels
    arrived so far, an HTML report (logged to MLflow) and the signals CT reacts to."""
    record_code_version()
    from fraud_detection.monitoring import monitor

    started = time.perf_counter()
    ctx = monitor.context(state_dir)
    reference = load_reference(ctx)
    current = monitor.require_traffic(ctx, served_traffic(ctx))
    now = monitor.clock(ctx)
    findings = measure_drift(ctx, reference, current)
    performance = measure_performance(ctx, reference, now)
    result = report_and_signal(ctx, reference, current, findings, performance, now, started)
    for line in result.signals:
        print(f"signal {line['kind']}: {line['status']} — {line['detail']}")
    print(f"monitoring report: {result.report}")
    return result.to_dict()

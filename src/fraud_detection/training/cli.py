"""``fraud ct ...`` (the level-1 pipeline and its triggers) and ``fraud train`` (experiments)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="Level 1: continuous training (Prefect flow), its triggers and run history.",
    no_args_is_help=True,
)

StateDir = Annotated[
    Path | None, typer.Option(help="Use this state folder instead of the profile's.")
]


def prefect_environment(state: Path) -> None:
    """Keep Prefect's local database, results and logs inside the state folder.

    Without ``PREFECT_API_URL`` a flow runs against a temporary local server (about 15-25 s
    to start); with it (``make deploy`` sets it), against that server. The profile's
    ``prefect.api_url`` (the production profile's server) sets it when it is not set.
    """
    from fraud_detection import stack
    from fraud_detection.config import load_profile

    profile = load_profile()
    if api_url := profile.prefect.api_url:
        os.environ.setdefault("PREFECT_API_URL", api_url)
    stack.preflight(profile)  # a server the profile needs is down: one line, now
    os.environ.setdefault("PREFECT_HOME", str(state / "prefect"))
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(state / "prefect" / "storage"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # Offline: no usage telemetry from the temporary server.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    (state / "prefect").mkdir(parents=True, exist_ok=True)


class _WithoutTraceback(logging.Formatter):
    """Formats a record as ``inner`` does, but without its traceback (console only)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


class _WithoutRunFailures(logging.Filter):
    """Drops a flow or task run's failure from the console: the exception logged with it
    and the "Finished in state Failed" line. The ``fraud`` command prints the error
    itself, in one line; the records still reach the Prefect server (its UI)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(("prefect.flow_runs", "prefect.task_runs")):
            return True
        failure = record.exc_info is not None or (
            record.levelno >= logging.ERROR and record.getMessage().startswith("Finished in")
        )
        return not failure


def _console_without_tracebacks() -> None:
    """Prefect's console handler prints no run failure (the CLI prints it in one line)
    and no traceback; the full traceback still goes to the Prefect server's log (its
    UI) and to the error file. ``FRAUD_DEBUG=1`` leaves the console as Prefect sets it."""
    from prefect.logging.handlers import PrefectConsoleHandler

    if os.environ.get("FRAUD_DEBUG", "") not in ("", "0"):
        return
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", ""):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, PrefectConsoleHandler) and not isinstance(
                handler.formatter, _WithoutTraceback
            ):
                handler.setFormatter(_WithoutTraceback(handler.formatter or logging.Formatter()))
                handler.addFilter(_WithoutRunFailures())


@contextlib.contextmanager
def flow_failure(what: str, state: Path) -> Iterator[None]:
    """A flow that fails on anything but a :class:`FraudError` (which already says what
    to do) becomes one line naming the error (a :class:`PipelineError`, or a
    :class:`ServiceUnavailableError` for a store that did not answer), with its traceback
    kept in a file."""
    from fraud_detection.errors import (
        EXIT_UNAVAILABLE,
        FraudError,
        PipelineError,
        ServiceUnavailableError,
        describe,
    )

    try:
        yield
    except FraudError:
        raise
    except Exception as exc:
        import datetime as dt
        import traceback

        folder = state / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        file = folder / f"error-{stamp}.txt"
        file.write_text("".join(traceback.format_exception(exc)))
        first = (str(exc).strip().splitlines() or [""])[0]
        if len(first) > 300:
            first = first[:297] + "..."
        # A database or server that did not answer is exit code 5; anything else, 6.
        kind = ServiceUnavailableError if describe(exc)[0] == EXIT_UNAVAILABLE else PipelineError
        raise kind(f"{what} failed: {type(exc).__name__}: {first} (traceback: {file})") from exc


def load_flows() -> Any:
    """The level-1 flows module, imported on first use (Prefect's import takes seconds)."""
    from fraud_detection.orchestration import flows

    _console_without_tracebacks()
    return flows


def _state(state_dir: Path | None) -> Path:
    from fraud_detection.config import load_profile

    return state_dir.resolve() if state_dir else load_profile().state_dir


def _print_record(record: dict[str, Any]) -> None:
    typer.echo(f"CT run ({record['trigger']}): {record['outcome']} in {record['seconds']} s")
    typer.echo(f"  data gate:      {record['data_gate'] or '-'}")
    typer.echo(f"  training gate:  {record['training_gate'] or '-'}")
    typer.echo(f"  model gate:     {record['model_gate'] or '-'}")
    for reason in record["reasons"]:
        typer.echo(f"    - {reason}")
    champion = record["champion_version"]
    typer.echo(f"  champion:       {'v' + champion if champion else 'none'}")
    if record["pr_auc"] is not None:
        typer.echo(f"  challenger PR-AUC on the holdout: {record['pr_auc']:.3f}")


@app.command()
def run(
    trigger: Annotated[
        str, typer.Option(help="Why this run: on_demand, schedule, ...")
    ] = "on_demand",
    variant: Annotated[
        str,
        typer.Option(
            help="normal, or a degraded challenger: shuffled_labels, drop_key_features "
            "(an experiment: trained even when nothing new arrived)."
        ),
    ] = "normal",
    force: Annotated[
        bool, typer.Option(help="Retrain a normal model even if nothing new arrived.")
    ] = False,
    fail_on_gate: Annotated[
        bool,
        typer.Option(help="Exit 1 if a gate rejected a partition or the challenger (CI)."),
    ] = False,
    state_dir: StateDir = None,
) -> None:
    """Run the continuous-training flow once (the on-demand trigger)."""
    from fraud_detection.errors import FraudError
    from fraud_detection.training.ct import TRIGGERS, VARIANTS

    if trigger not in TRIGGERS:
        raise FraudError(f"unknown trigger {trigger!r}: choose from {', '.join(TRIGGERS)}")
    if variant not in VARIANTS:
        raise FraudError(f"unknown variant {variant!r}: choose from {', '.join(VARIANTS)}")
    state = _state(state_dir)
    prefect_environment(state)
    typer.echo("starting the continuous-training flow (Prefect)…")
    flows = load_flows()
    with flow_failure("CT run", state):
        record = flows.ct_flow(trigger=trigger, state_dir=str(state), variant=variant, force=force)
    _print_record(record)
    typer.echo(f"  runs: {state / 'ct' / 'runs.jsonl'}   (fraud ct history)")
    if fail_on_gate:
        from fraud_detection.training.ct import RunRecord, failed_gates

        failed = failed_gates(RunRecord(**record))
        for line in failed:
            typer.echo(f"gate failed: {line}", err=True)
        if failed:
            raise typer.Exit(1)


@app.command()
def sensor(state_dir: StateDir = None) -> None:
    """New-data trigger: run CT if a raw partition landed that the data gate has not seen."""
    from fraud_detection.config import StatePaths
    from fraud_detection.training.ct import pending_partitions

    state = _state(state_dir)
    pending = pending_partitions(StatePaths(root=state))
    if not pending:
        typer.echo("no new partition: nothing to do")
        return
    prefect_environment(state)
    typer.echo(f"{len(pending)} new partition(s): {', '.join(map(str, pending))}: starting CT")
    flows = load_flows()
    with flow_failure("CT run", state):
        record = flows.new_data_sensor(state_dir=str(state))
    _print_record(record)


@app.command()
def signals(state_dir: StateDir = None) -> None:
    """Performance and drift triggers: run CT for pending monitoring signals."""
    from fraud_detection.config import StatePaths
    from fraud_detection.monitoring.signals import pending

    state = _state(state_dir)
    waiting = pending(StatePaths(root=state))
    if not waiting:
        typer.echo("no pending performance or drift signal: nothing to do")
        return
    prefect_environment(state)
    for signal in waiting:
        typer.echo(f"signal {signal.kind}: {signal.detail}")
    flows = load_flows()
    with flow_failure("CT run", state):
        record = flows.signal_trigger(state_dir=str(state))
    _print_record(record)


@app.command()
def signal(
    kind: Annotated[str, typer.Option(help="performance or drift.")],
    detail: Annotated[str, typer.Option(help="What was observed.")] = "raised by hand",
    metric: Annotated[str, typer.Option(help="The measured metric.")] = "manual",
    value: Annotated[float, typer.Option(help="Its value.")] = 1.0,
    threshold: Annotated[float, typer.Option(help="The threshold it crossed.")] = 0.0,
    state_dir: StateDir = None,
) -> None:
    """Write a monitoring signal by hand (monitoring writes them automatically)."""
    from fraud_detection.config import StatePaths
    from fraud_detection.monitoring.signals import Signal, emit

    path = emit(
        StatePaths(root=_state(state_dir)),
        Signal(kind=kind, detail=detail, metric=metric, value=value, threshold=threshold),  # type: ignore[arg-type]
    )
    typer.echo(f"signal written: {path}  (`fraud ct signals` starts CT for it)")


@app.command()
def history(
    markdown: Annotated[bool, typer.Option(help="As a Markdown table (CI job summary).")] = False,
    last: Annotated[int, typer.Option(help="Show the last N runs.")] = 20,
    state_dir: StateDir = None,
) -> None:
    """The CT runs so far: trigger, data gate, model gate, champion, PR-AUC."""
    from fraud_detection.config import StatePaths
    from fraud_detection.training.ct import read_records, records_table

    records = read_records(StatePaths(root=_state(state_dir)))
    if not records:
        typer.echo("no CT run yet: `fraud ct run`")
        return
    typer.echo(records_table(records[-last:], markdown=markdown))


def train_command(
    training_set: Annotated[
        Path | None,
        typer.Option(help="A training set Parquet (default: build one as of the latest data)."),
    ] = None,
    metrics_file: Annotated[
        Path | None, typer.Option(help="Also write the holdout metrics here (JSON, for DVC).")
    ] = None,
    plots_dir: Annotated[
        Path | None, typer.Option(help="Also write PR and calibration curves here (CSV, for DVC).")
    ] = None,
    state_dir: StateDir = None,
) -> None:
    """Experiment: the CT training code without the orchestrator, logged to MLflow."""
    import pandas as pd

    from fraud_detection.registry import tracking
    from fraud_detection.training import ct
    from fraud_detection.training.model import input_columns, split_holdout

    started = time.perf_counter()
    ctx = ct.context(state_dir)
    if training_set is None:
        when = ct.as_of(ctx.paths)
        typer.echo(f"building a training set as of {when:%Y-%m-%d} (Feast)…")
        ct.update_features(ctx.paths, [])
        training_set = ct.build_training_set(ctx, when)
    training = ct.validate_training_set(ctx, training_set)
    typer.echo(
        f"training on {training.rows:,} rows ({training.window[0]} .. {training.window[1]})…"
    )
    model = ct.fit(ctx, training)
    tracking.setup_mlflow(ctx.profile)
    for line in ct.recover(ctx):  # what a killed run left: its run, its promotion
        typer.echo(line)
    evals = ct.evaluate(ctx, model, training)
    _, holdout = split_holdout(pd.read_parquet(training.path), ctx.train.holdout_days)
    logged = tracking.log_training_run(
        model=model,
        params={"model": ctx.train.model.model_dump(), "holdout_days": ctx.train.holdout_days},
        metrics=evals.challenger.metrics(),
        slice_metrics={},
        figures=ct.figures(model, training, ctx, evals),
        artifacts={"evaluation": evals.challenger.to_dict()},
        input_example=holdout[input_columns(model)].head(5),
        tags={
            "kind": "experiment",
            "training_set": training.path.name,
            ct.CODE_HASH_TAG: ct.code_hash(),
        },
        run_name=f"experiment-{training.path.stem}",
    )
    e = evals.challenger
    if metrics_file is not None:
        metrics_file.parent.mkdir(parents=True, exist_ok=True)
        metrics_file.write_text(json.dumps(e.metrics(), indent=2, sort_keys=True) + "\n")
    if plots_dir is not None:
        write_curves(model, training, ctx, plots_dir)
    typer.echo(
        f"PR-AUC {e.pr_auc:.3f}  ROC-AUC {e.roc_auc:.3f}  precision {e.precision:.2f}  "
        f"recall {e.recall:.2f} at threshold {e.threshold:.2f}  "
        f"({time.perf_counter() - started:.0f} s)"
    )
    if evals.champion is not None:
        typer.echo(
            f"champion v{evals.champion_version} on the same holdout: "
            f"PR-AUC {evals.champion.pr_auc:.3f}"
        )
    typer.echo(
        f"  MLflow run {logged.run_id} in experiment {ctx.profile.mlflow.experiment!r} "
        f"(`make mlflow-ui`); nothing registered"
    )


def write_curves(model: Any, training: Any, ctx: Any, folder: Path) -> None:
    """PR curve and calibration table of the holdout as CSV files (DVC plots)."""
    import pandas as pd
    from sklearn.metrics import precision_recall_curve

    from fraud_detection.training.evaluation import scores
    from fraud_detection.training.model import split_holdout

    _, holdout = split_holdout(pd.read_parquet(training.path), ctx.train.holdout_days)
    p = scores(model, holdout)
    precision, recall, _ = precision_recall_curve(holdout["is_fraud"].to_numpy(), p)
    folder.mkdir(parents=True, exist_ok=True)
    curve = pd.DataFrame({"recall": recall, "precision": precision})
    # A few hundred points are enough to draw; keep the file small.
    step = max(1, len(curve) // 500)
    curve.iloc[::step].to_csv(folder / "pr_curve.csv", index=False)
    bins = pd.DataFrame({"predicted": p, "observed": holdout["is_fraud"].to_numpy()})
    bins["bin"] = (bins["predicted"] * 10).clip(upper=9).astype(int)
    table = bins.groupby("bin")[["predicted", "observed"]].mean().reset_index()
    table.to_csv(folder / "calibration.csv", index=False)

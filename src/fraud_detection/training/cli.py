"""``fraud ct ...`` (the level-1 pipeline and its triggers) and ``fraud train`` (experiments)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fraud_detection.orchestration.local import flow_failure, load_flows, prefect_environment

app = typer.Typer(
    help="Level 1: continuous training (Prefect flow), its triggers and run history.",
    no_args_is_help=True,
)

StateDir = Annotated[
    Path | None, typer.Option(help="Use this state folder instead of the profile's.")
]


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
        from fraud_detection.registry.runs import RunRecord, failed_gates

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
    from fraud_detection.registry.runs import read_records, records_table

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

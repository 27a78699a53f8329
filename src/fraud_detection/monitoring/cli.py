"""``fraud score`` (batch scoring) and ``fraud monitor ...`` (drift, performance, report).

Like ``fraud ct run``, both run their Prefect flow by default (a temporary local server
without ``PREFECT_API_URL``, 15-25 s to start); ``--no-flow`` calls the same functions
directly, without the orchestrator.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="Monitoring: drift and performance of what is served, HTML report, signals to CT.",
    no_args_is_help=True,
)

StateDir = Annotated[
    Path | None, typer.Option(help="Use this state folder instead of the profile's.")
]
NoFlow = Annotated[
    bool,
    typer.Option("--no-flow", help="Call the steps directly instead of running the Prefect flow."),
]


def _state(state_dir: Path | None) -> Path:
    from fraud_detection.config import load_profile

    return state_dir.resolve() if state_dir else load_profile().state_dir


def _print_score(result: dict[str, Any]) -> None:
    typer.echo(
        f"scored {result['rows']:,} transactions of {result['day']} with "
        f"v{result['model_version']} (threshold {result['threshold']:g}): "
        f"{result['alerts']:,} alerts, {result['seconds']} s "
        f"({result['rows_per_minute']:,} rows/min)"
    )
    typer.echo(f"  scores: {result['path']}")
    steps = ", ".join(f"{k} {v} s" for k, v in result["timings"].items())
    typer.echo(f"  steps:  {steps}")


def _print_scores(result: dict[str, Any]) -> None:
    days = result["days"]
    for day in days:
        typer.echo(
            f"  {day['day']}: {day['rows']:,} transactions, {day['alerts']:,} alerts, "
            f"{day['seconds']} s -> {day['path']}"
        )
    typer.echo(
        f"scored {result['rows']:,} transactions of {len(days)} day(s) "
        f"({days[0]['day']} .. {days[-1]['day']}) with v{days[0]['model_version']} "
        f"{result['where']}: {result['alerts']:,} alerts, {result['seconds']} s end to end "
        f"({result['rows_per_minute']:,} rows/min)"
    )
    steps = ", ".join(f"{k} {v} s" for k, v in result["timings"].items())
    typer.echo(f"  steps:  {steps}")


def score_command(
    date: Annotated[
        str | None, typer.Option("--date", help="The day to score, YYYY-MM-DD.")
    ] = None,
    latest: Annotated[
        bool, typer.Option("--latest", help="Score the newest accepted partition.")
    ] = False,
    days: Annotated[
        int | None,
        typer.Option(
            "--days",
            help="Score the newest N accepted partitions (on a Dask cluster from "
            "min_partitions days on, see the profile's dask settings).",
        ),
    ] = None,
    all_days: Annotated[
        bool, typer.Option("--all", help="Score every accepted partition (like --days).")
    ] = False,
    no_flow: NoFlow = False,
    state_dir: StateDir = None,
) -> None:
    """Batch scoring: score one day's (or several days') transactions with the champion
    (Prefect flow)."""
    from fraud_detection.errors import FraudError

    if [date is not None, latest, days is not None, all_days].count(True) != 1:
        raise FraudError("give one of --date YYYY-MM-DD, --latest, --days N or --all (exactly one)")
    if days is not None and days < 1:
        raise FraudError(f"--days must be at least 1, got {days}")
    day = None
    if date is not None:
        try:
            day = dt.date.fromisoformat(date)
        except ValueError:
            raise FraudError(f"--date {date!r} is not a date: use YYYY-MM-DD") from None
    state = _state(state_dir)
    several = days is not None or all_days
    if no_flow:
        from fraud_detection.config import state_paths
        from fraud_detection.serving import batch
        from fraud_detection.training.ct import context

        profile = context(state).profile
        if several:
            chosen = batch.recent_days(state_paths(profile), days)
            result = batch.score_days(chosen, profile=profile, progress=typer.echo).to_dict()
        else:
            result = batch.score_day(day, profile=profile, progress=typer.echo).to_dict()
    else:
        from fraud_detection.orchestration.local import load_flows, prefect_environment

        prefect_environment(state)
        typer.echo("starting the batch-scoring flow (Prefect)…")
        result = load_flows().batch_scoring_flow(
            day=None if day is None else day.isoformat(),
            state_dir=str(state),
            last_days=days,
            all_days=all_days,
        )
    if several:
        _print_scores(result)
    else:
        _print_score(result)


def _drift_word(detected: bool, skipped: str | None) -> str:
    """DETECTED, none, or why it was not judged (too few rows is not "none")."""
    if skipped:
        return f"NOT JUDGED: {skipped}"
    return "DETECTED" if detected else "none"


def _print_monitoring(result: dict[str, Any]) -> None:
    from fraud_detection.monitoring.monitor import future_rows_warning

    drifted = result["drifted"]
    if ignored := result.get("ignored_future_rows"):
        typer.echo(future_rows_warning(ignored, result["window_end"]))
    typer.echo(
        f"monitoring done in {result['seconds']:.1f} s: data drift "
        f"{_drift_word(result['drift_detected'], result.get('drift_skipped'))}"
        + (f" ({len(drifted)} feature(s) drifted: {', '.join(drifted)})" if drifted else "")
    )
    typer.echo(f"  prediction drift: {'DETECTED' if result['prediction_drift'] else 'none'}")
    typer.echo(
        f"  performance: {'DEGRADED' if result['degraded'] else 'ok'}: {result['performance']}"
    )
    if not result["signals"]:
        typer.echo("  signals: none")
    for line in result["signals"]:
        typer.echo(f"  signal {line['kind']}: {line['status']}")
    typer.echo(f"  report: {result['report']}")
    if result["run_id"]:
        typer.echo(
            f"  MLflow run {result['run_id']} in experiment 'fraud-monitoring' (`make mlflow-ui`)"
        )
    if any(line["status"] == "emitted" for line in result["signals"]):
        typer.echo("  `fraud ct signals` starts continuous training for the pending signals")


@app.command()
def run(no_flow: NoFlow = False, state_dir: StateDir = None) -> None:
    """Measure drift and performance of served traffic, write the report, emit signals."""
    state = _state(state_dir)
    if no_flow:
        from fraud_detection.monitoring.monitor import run as run_monitoring

        result = run_monitoring(state, progress=typer.echo).to_dict()
    else:
        from fraud_detection.orchestration.local import load_flows, prefect_environment

        prefect_environment(state)
        typer.echo("starting the monitoring flow (Prefect)…")
        result = load_flows().monitoring_flow(state_dir=str(state))
    _print_monitoring(result)


@app.command()
def report(state_dir: StateDir = None) -> None:
    """Where the latest monitoring report is, and what it found."""
    from fraud_detection.monitoring.report import latest

    reports = _state(state_dir) / "reports" / "monitoring"
    summary = latest(reports)
    if summary is None:
        typer.echo(f"no monitoring report yet under {reports}: run `fraud monitor run`")
        raise typer.Exit(1)
    drift = summary["drift"]
    typer.echo(
        f"latest report ({summary['generated_at']}, champion v{summary['champion_version']}, "
        f"traffic {', '.join(summary['current']['days'])}):"
    )
    typer.echo(
        f"  data drift: {_drift_word(drift['detected'], drift.get('skipped'))}"
        + (f" ({', '.join(drift['drifted'])})" if drift["drifted"] else "")
    )
    typer.echo(f"  performance: {summary['performance']['verdict']}")
    for line in summary["signals"]:
        typer.echo(f"  signal {line['kind']}: {line['status']}")
    typer.echo(f"  open: {reports / 'latest.html'}")

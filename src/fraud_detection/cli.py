"""The ``fraud`` command: how people, the pipelines and DVC stages call each step.

Heavy libraries (pandas, scikit-learn, MLflow, Feast, Great Expectations, Prefect) are
imported inside the commands that use them, so ``fraud --help`` stays instant.

Every error ends the same way, in :func:`main`: one line on stderr saying what was wrong
and what to do, and an exit code by kind (the table in ``errors.py``). Before a command
runs, unknown ``FRAUD_*`` variables are refused and every ``--state-dir`` is checked.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fraud_detection.errors import EXIT_INTERRUPTED, EXIT_UNEXPECTED, FraudError, describe
from fraud_detection.features import cli as features_cli
from fraud_detection.labs import cli as labs_cli
from fraud_detection.monitoring import cli as monitoring_cli
from fraud_detection.operations import cli as operations_cli
from fraud_detection.release import cli as release_cli
from fraud_detection.release import quality_cli as release_quality_cli
from fraud_detection.serving import cli as serving_cli
from fraud_detection.training import cli as training_cli
from fraud_detection.validation import cli as validation_cli

app = typer.Typer(
    name="fraud",
    help="Card-fraud MLOps template: simulate data, run each pipeline step, serve, monitor.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.add_typer(features_cli.app, name="features")
app.add_typer(training_cli.app, name="ct")
app.command("train")(training_cli.train_command)
app.add_typer(validation_cli.app, name="validate")
app.command("score")(monitoring_cli.score_command)
app.add_typer(monitoring_cli.app, name="monitor")
app.add_typer(release_cli.app, name="model")
app.command("serve")(serving_cli.serve_command)
app.command("loadtest")(release_quality_cli.loadtest_command)
app.command("delivery-check")(release_quality_cli.delivery_check_command)
app.command("audit")(operations_cli.audit_command)
app.command("health-report")(operations_cli.health_report_command)
app.add_typer(labs_cli.app, name="lab")

SCENARIOS = ("drift", "broken_feed")


@app.callback()
def _before_any_command() -> None:
    # Runs before a subcommand (not for --help): a misspelt FRAUD_* variable would
    # otherwise be ignored silently by every command that does not load its file.
    from fraud_detection.config import Profile, Secrets, SimulateConfig, check_environment
    from fraud_detection.monitoring.settings import MonitoringConfig
    from fraud_detection.serving.settings import ServingConfig
    from fraud_detection.training.settings import TrainConfig
    from fraud_detection.validation.settings import ValidationConfig

    check_environment(
        [
            Profile,
            Secrets,
            SimulateConfig,
            TrainConfig,
            ValidationConfig,
            ServingConfig,
            MonitoringConfig,
        ]
    )


def _echo(message: str) -> None:
    typer.echo(message)


def _set(target: dict[str, Any], dotted: str, value: Any) -> None:
    """Put ``value`` at ``a.b.c`` in nested dicts, skipping flags that were not given."""
    if value is None:
        return
    *parents, leaf = dotted.split(".")
    for key in parents:
        target = target.setdefault(key, {})
    target[leaf] = value


@app.command()
def simulate(
    days: Annotated[int | None, typer.Option(help="Number of daily partitions.")] = None,
    rows_per_day: Annotated[int | None, typer.Option(help="Mean transactions per day.")] = None,
    cards: Annotated[int | None, typer.Option(help="Number of cards.")] = None,
    merchants: Annotated[int | None, typer.Option(help="Number of merchants.")] = None,
    start_date: Annotated[str | None, typer.Option(help="First day, YYYY-MM-DD.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed; same seed, same data.")] = None,
    label_delay_days: Annotated[
        int | None, typer.Option(help="Days until a transaction's label arrives.")
    ] = None,
    scenario: Annotated[
        list[str] | None,
        typer.Option(help="Enable a scenario: drift or broken_feed (repeatable)."),
    ] = None,
    drift_day: Annotated[
        int | None,
        typer.Option(
            help="Day the drift starts, counted from 0 (simulate prints days from 1: "
            "--drift-day 15 is 'day 16/...')."
        ),
    ] = None,
    drift_kind: Annotated[str | None, typer.Option(help="fraud_pattern, spending or both.")] = None,
    broken_day: Annotated[
        int | None,
        typer.Option(
            help="Day of the corrupted partition, counted from 0 (simulate prints days from "
            "1: --broken-day 12 is 'day 13/...', marked 'broken feed')."
        ),
    ] = None,
    corruption: Annotated[
        str | None,
        typer.Option(
            help="Schema-level: nulls, wrong_types, negative_amounts, duplicate_ids, "
            "missing_column, renamed_column, future_timestamps. Value-level (schema intact): "
            "amount_in_cents, amount_sentinel, stuck_card, zeroed_coordinates, "
            "flipped_longitude, timezone_shift, channel_missing, category_default, "
            "unknown_cards, unknown_merchants, replayed_day, default_ip_location."
        ),
    ] = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="Write here instead of the profile's state folder.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Config file (default configs/simulate.yaml).")
    ] = None,
) -> None:
    """Simulate card transactions: daily Parquet partitions plus delayed labels."""
    from fraud_detection.config import load_profile, load_simulate_config, state_paths

    overrides: dict[str, Any] = {}
    for key, value in {
        "days": days,
        "rows_per_day": rows_per_day,
        "cards": cards,
        "merchants": merchants,
        "start_date": start_date,
        "seed": seed,
        "label_delay_days": label_delay_days,
        "scenario.drift.start_day": drift_day,
        "scenario.drift.kind": drift_kind,
        "scenario.broken_feed.day": broken_day,
        "scenario.broken_feed.corruption": corruption,
    }.items():
        _set(overrides, key, value)
    for name in scenario or []:
        if name not in SCENARIOS:
            raise FraudError(f"unknown scenario {name!r}: choose from {', '.join(SCENARIOS)}")
        _set(overrides, f"scenario.{name}.enabled", True)
    cfg = load_simulate_config(config, overrides)

    from fraud_detection.config import StatePaths
    from fraud_detection.data.simulator import write_simulation

    paths = StatePaths(root=state_dir.resolve()) if state_dir else state_paths(load_profile())
    started = time.perf_counter()
    summary = write_simulation(cfg, paths, progress=_echo)
    elapsed = time.perf_counter() - started
    _echo(
        f"simulated {summary.rows:,} transactions over {summary.days} days "
        f"(fraud rate {summary.fraud_rate:.2%}) in {elapsed:.1f} s"
    )
    _echo(f"  transactions: {paths.raw}/date=*/transactions.parquet")
    _echo(f"  labels:       {paths.labels}/arrival_date=*/labels.parquet")
    _echo(f"  cards, merchants: {paths.reference}")
    _announce_partitions(paths)


def _announce_partitions(paths: Any) -> None:
    """Data arrival as a Prefect event (the ct-on-new-data deployment's trigger): only the
    partitions the data gate has not judged are new. A side effect after the files are
    written: it changes none of them (so it is no DVC dependency of the simulate stage)."""
    from fraud_detection import events

    if events.enabled():
        from fraud_detection.training.ct import pending_partitions

        sent = events.partitions_landed(pending_partitions(paths), source="fraud simulate")
        _echo(f"  announced {sent} new partition(s): {events.PARTITION_LANDED} events")


@app.command()
def level0(
    state_dir: Annotated[
        Path | None, typer.Option(help="Read data from here instead of the profile's state.")
    ] = None,
    output_dir: Annotated[
        Path | None, typer.Option(help="Where the model and metrics go (default state/level0).")
    ] = None,
) -> None:
    """Level 0: execute the manual notebook top to bottom; hand over a model and metrics."""
    import json

    from fraud_detection.config import load_profile, project_dir
    from fraud_detection.notebooks import run_notebook

    state = state_dir.resolve() if state_dir else load_profile().state_dir
    out = output_dir.resolve() if output_dir else state / "level0"
    notebook = project_dir() / "pipelines" / "level0_manual" / "fraud_model.ipynb"
    _echo(f"running {notebook.relative_to(project_dir())} (non-interactive)")
    started = time.perf_counter()
    executed = run_notebook(
        notebook, out, parameters={"STATE_DIR": str(state), "OUTPUT_DIR": str(out)}
    )
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    _echo(f"level 0 done in {time.perf_counter() - started:.0f} s")
    _echo(f"  model:     {out / 'model.joblib'}")
    _echo(f"  metrics:   {metrics_path}")
    _echo(f"  notebook:  {executed}")
    _echo(f"  PR-AUC on the last days: {metrics['pr_auc']:.3f}")


@app.command()
def info(
    path: Annotated[
        bool, typer.Option("--path", help="Print only the state folder (for scripts, make).")
    ] = False,
) -> None:
    """Show the active profile and where its state lives."""
    from fraud_detection.config import load_profile, state_paths

    profile = load_profile()
    if path:
        _echo(str(profile.state_dir))
        return
    paths = state_paths(profile)
    _echo(f"profile:        {profile.name}")
    _echo(f"state folder:   {profile.state_dir}")
    _echo(f"raw data:       {paths.raw}")
    _echo(f"labels:         {paths.labels}")
    _echo(f"MLflow:         {profile.mlflow_tracking_uri}")


@app.command()
def clean() -> None:
    """Delete the active profile's state folder (data, models, runs, reports)."""
    from fraud_detection.config import load_profile, removable_state_dir

    state = removable_state_dir(load_profile().state_dir)
    if not state.exists():
        _echo(f"nothing to clean: {state} does not exist")
        return
    import shutil

    shutil.rmtree(state)
    _echo(f"deleted the state folder {state}; the next command recreates what it needs")


@app.command("mlflow-ui")
def mlflow_ui(
    port: Annotated[
        int, typer.Option(help="Port of the UI (make mlflow-ui MLFLOW_PORT=...).")
    ] = 5000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
) -> None:
    """The MLflow UI on the profile's tracking store (its state folder's SQLite file)."""
    import subprocess

    from fraud_detection.config import load_profile
    from fraud_detection.doctor import port_free

    profile = load_profile()
    uri = profile.mlflow_tracking_uri
    if uri.startswith(("http://", "https://")):
        _echo(f"profile {profile.name!r} tracks to a server, which has its own UI: {uri}")
        return
    if not port_free(port, host):
        raise FraudError(
            f"port {port} on {host} is in use (an MLflow UI already running?): open "
            f"http://{host}:{port}, or pick another port: make mlflow-ui MLFLOW_PORT={port + 1}"
        )
    from fraud_detection.registry import tracking

    tracking.setup_mlflow(profile)  # creates the store; re-roots a copied state folder
    _echo(f"MLflow UI on http://{host}:{port} for {uri}; Ctrl+C stops it")
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow), "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    try:
        subprocess.run(command, check=True)  # noqa: S603  (mlflow beside this Python, no shell)
    except subprocess.CalledProcessError as exc:
        raise FraudError(f"mlflow ui ended with exit code {exc.returncode}") from None


stack_app = typer.Typer(
    help="The production stack as local processes (make prod-up / prod-down): PostgreSQL "
    "databases, the MLflow and Prefect servers, a Dask cluster.",
    no_args_is_help=True,
)
app.add_typer(stack_app, name="stack")


@stack_app.command("up")
def stack_up() -> None:
    """Create the databases, run the migrations, start every server, wait for health."""
    from fraud_detection import stack
    from fraud_detection.config import load_profile

    profile = load_profile()
    if not stack.servers(profile):
        raise FraudError(
            f"profile {profile.name!r} runs everything embedded: no server to start "
            "(use FRAUD_PROFILE=production)"
        )
    _echo(f"production stack for profile {profile.name!r} (state {profile.state_dir})")
    started = time.perf_counter()
    stack.up(profile, progress=lambda m: _echo(f"  {m}"))
    _echo(f"stack up in {time.perf_counter() - started:.0f} s:")
    for line in stack.describe(profile):
        _echo(f"  {line}")
    _echo("stop it with: make prod-down")


@stack_app.command("down")
def stack_down() -> None:
    """Stop the servers `fraud stack up` started."""
    from fraud_detection import stack
    from fraud_detection.config import load_profile

    stack.down(load_profile(), progress=lambda m: _echo(f"  {m}"))


@stack_app.command("status")
def stack_status() -> None:
    """Each server of the stack: running, answering but started elsewhere, or stopped."""
    from fraud_detection import stack
    from fraud_detection.config import load_profile

    profile = load_profile()
    reports = stack.status(profile)
    if not reports:
        _echo(f"profile {profile.name!r} has no servers (everything embedded)")
    for report in reports:
        _echo(f"  {report.name:<15} {report.state}")


def _check_state_dir(ctx: Any, param: Any, value: Path | None) -> Path | None:
    from fraud_detection.config import check_state_dir

    return None if value is None else check_state_dir(value)


def _with_state_dirs_checked(command: Any) -> Any:
    """``command`` with every ``--state-dir`` option of every subcommand checked when it
    is parsed (a file, or a folder that cannot be written, is one line before any work),
    including the options of commands added later."""
    for sub in getattr(command, "commands", {}).values():
        _with_state_dirs_checked(sub)
    for param in command.params:
        if param.name == "state_dir" and param.callback is None:
            param.callback = _check_state_dir
    return command


def _usage_error(exc: Exception) -> bool:
    """A click/typer usage error (bad option value, unknown command): it knows its exit
    code and message (typer >= 0.29 vendors click, so its classes are not click's)."""
    return isinstance(getattr(exc, "exit_code", None), int) and callable(
        getattr(exc, "format_message", None)
    )


def main() -> None:
    """Entry point: any error becomes one line on stderr (two for an unexpected one) and
    the exit code of its kind (``errors.py``); ``FRAUD_DEBUG=1`` adds the traceback."""
    debug = os.environ.get("FRAUD_DEBUG", "") not in ("", "0")
    try:
        # Not standalone: usage errors come here too, to be one line like the others.
        code = _with_state_dirs_checked(typer.main.get_command(app))(standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort):  # Ctrl-C (typer returns 130 for it) or EOF
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        if _usage_error(exc) and not isinstance(exc, FraudError):
            if type(exc).__name__ == "NoArgsIsHelpError":  # `fraud ct`: the group's help
                exc.show()  # type: ignore[attr-defined]
                sys.exit(exc.exit_code)  # type: ignore[attr-defined]
            ctx = getattr(exc, "ctx", None)
            see = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            typer.echo(f"error: {exc.format_message()}{see}", err=True)  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        code, message = describe(exc)
        if debug:
            import traceback

            traceback.print_exception(exc)
        typer.echo(f"error: {message}", err=True)
        if code == EXIT_UNEXPECTED and not debug:
            typer.echo("  run it again with FRAUD_DEBUG=1 for the traceback", err=True)
        sys.exit(code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()

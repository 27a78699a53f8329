"""``fraud validate ...``: run the data gates by hand, regenerate the suites, find Data Docs.

A rejected batch prints its failures and the Data Docs page and exits with code 1 (the
gate fails closed); user errors (no such partition, bad config) exit with code 2 through
:func:`fraud_detection.cli.main`. Great Expectations is imported only by the commands
that validate.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fraud_detection.errors import FraudError

if TYPE_CHECKING:
    from fraud_detection.config import StatePaths
    from fraud_detection.validation.gate import ValidationOutcome

app = typer.Typer(
    help="Data gates: validate raw partitions and training sets (Great Expectations).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

StateDir = Annotated[
    Path | None, typer.Option(help="Use this state folder instead of the profile's.")
]


def _paths(state_dir: Path | None) -> StatePaths:
    from fraud_detection.config import StatePaths, state_paths

    return StatePaths(root=state_dir.resolve()) if state_dir else state_paths()


def _report(outcome: ValidationOutcome) -> None:
    verdict = "accepted" if outcome.success else "REJECTED"
    typer.echo(f"{outcome.batch}: {verdict} ({outcome.rows:,} rows, {outcome.verdict()})")
    for line in outcome.failure_lines():
        typer.echo(f"  - {line}")
    for line in outcome.warning_lines():  # the value-skew stage's warnings and skips
        typer.echo(f"  ! {line}")
    if outcome.data_docs:
        typer.echo(f"  Data Docs: {outcome.data_docs}")
    typer.echo(f"  record:    {outcome.record}")


@app.command()
def raw(
    date: Annotated[
        str | None, typer.Option("--date", help="The partition's day, YYYY-MM-DD.")
    ] = None,
    all_days: Annotated[
        bool,
        typer.Option("--all", help="Every partition on disk, oldest first (volume history)."),
    ] = False,
    new: Annotated[
        bool, typer.Option("--new", help="Only partitions the gate has not judged yet.")
    ] = False,
    state_dir: StateDir = None,
) -> None:
    """Validate raw transaction partitions; exit 1 if any is rejected."""
    if [date is not None, all_days, new].count(True) != 1:
        raise FraudError("give one of --date YYYY-MM-DD, --all or --new")
    from fraud_detection.data.ledger import partition_status, raw_partition_days
    from fraud_detection.validation.settings import load_validation_config

    paths = _paths(state_dir)
    config = load_validation_config()
    if all_days or new:
        days = raw_partition_days(paths)
        if not days:
            raise FraudError(f"no partitions under {paths.raw}: run `fraud simulate` first")
        if new:
            days = [d for d in days if partition_status(paths, d) is None]
            if not days:
                typer.echo("no new partition: every partition on disk has been judged")
                return
    else:
        try:
            days = [dt.date.fromisoformat(str(date))]
        except ValueError as exc:
            raise FraudError(f"--date {date!r} is not a date (YYYY-MM-DD)") from exc

    from fraud_detection.config import load_profile
    from fraud_detection.scaleout import partition_map
    from fraud_detection.validation.gate import data_docs_index, validate_raw_partitions

    started = time.perf_counter()
    with partition_map(load_profile().dask, len(days), progress=typer.echo) as run:
        typer.echo(f"validating {len(days)} partition(s) under {paths.raw} {run.where}")
        outcomes = validate_raw_partitions(paths, days, run=run, config=config)
    rejected = []
    for day, outcome in zip(sorted(days), outcomes, strict=True):
        _report(outcome)
        if not outcome.success:
            rejected.append(day.isoformat())
    typer.echo(
        f"{len(days) - len(rejected)} accepted, {len(rejected)} rejected "
        f"in {time.perf_counter() - started:.1f} s; Data Docs index: {data_docs_index(paths)}"
    )
    if rejected:
        typer.echo(f"rejected: {', '.join(rejected)}", err=True)
        raise typer.Exit(1)


@app.command("training-set")
def training_set(
    path: Annotated[Path, typer.Argument(help="A training frame as Parquet.")],
    name: Annotated[
        str | None, typer.Option(help="Name of the record (default: the file's stem).")
    ] = None,
    against: Annotated[
        str | None,
        typer.Option(
            help="Compare its label rate and feature distributions with this recorded "
            "training set (a record name, e.g. the champion's training_set_2026-01-13)."
        ),
    ] = None,
    state_dir: StateDir = None,
) -> None:
    """Validate a training frame; exit 1 if it is rejected."""
    import pandas as pd

    from fraud_detection.validation.gate import validate_training_set

    if not path.is_file():
        raise FraudError(f"{path}: no such file")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:
        raise FraudError(f"{path}: not readable as Parquet ({type(exc).__name__})") from exc
    outcome = validate_training_set(
        _paths(state_dir),
        df,
        name or path.stem,
        source=path,
        reference=against,
        skipped="no --against training set given",
    )
    _report(outcome)
    if not outcome.success:
        raise typer.Exit(1)


@app.command("write-suites")
def write_suites(
    check: Annotated[
        bool, typer.Option(help="Only check the files are up to date; exit 1 if not.")
    ] = False,
) -> None:
    """Regenerate the versioned suite JSON files from validation/suites.py."""
    from fraud_detection.validation.suites import SUITES_DIR, build_suites, suite_json

    stale = []
    for name, suite in build_suites().items():
        path = SUITES_DIR / f"{name}.json"
        text = suite_json(suite)
        current = path.read_text() if path.exists() else None
        if current == text:
            typer.echo(f"unchanged {path} ({len(suite['expectations'])} expectations)")
            continue
        stale.append(path)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            typer.echo(f"wrote     {path} ({len(suite['expectations'])} expectations)")
    if check and stale:
        typer.echo(f"out of date: {', '.join(map(str, stale))}", err=True)
        raise typer.Exit(1)


@app.command()
def docs(state_dir: StateDir = None) -> None:
    """Print the path of the Data Docs index page."""
    from fraud_detection.validation.gate import data_docs_index

    index = data_docs_index(_paths(state_dir))
    if not index.is_file():
        raise FraudError(f"no Data Docs yet at {index}: run `fraud validate raw --all` first")
    typer.echo(index)

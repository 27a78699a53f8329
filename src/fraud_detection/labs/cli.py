"""``fraud lab list|start|check|solve N``: the workshop's labs (``make lab-start LAB=N``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="Workshop labs: build a lab's starting state, check its outcome, apply its solution.",
    no_args_is_help=True,
)

Number = Annotated[int, typer.Argument(help="The lab's number (fraud lab list).")]
LabsDir = Annotated[
    Path | None,
    typer.Option(help="Where the labs' state folders go (default: state/labs in the project)."),
]


def _workspace(number: int, labs_dir: Path | None) -> tuple[Any, Any]:
    from fraud_detection.config import load_profile, project_dir
    from fraud_detection.errors import FraudError
    from fraud_detection.labs.catalog import LABS
    from fraud_detection.labs.workspace import Workspace

    if number not in LABS:
        raise FraudError(f"there is no lab {number}: labs are {min(LABS)} to {max(LABS)}")
    # The lab's commands read the project's configs: a broken one (or a broken state
    # setting) stops here, in one line, before anything is emptied or built.
    load_profile()
    folder = labs_dir or project_dir() / "state" / "labs"
    return LABS[number], Workspace(number, folder.resolve(), progress=typer.echo)


@app.command("list")
def list_command() -> None:
    """Every lab: its number, the agenda block it belongs to, its title."""
    from fraud_detection.labs.catalog import LABS

    for lab in LABS.values():
        typer.echo(f"  {lab.number}  {lab.block:<38} {lab.title}")


@app.command()
def start(number: Number, labs_dir: LabsDir = None) -> None:
    """Build the lab's starting state from nothing, in its own folder (state/labs/lab-N)."""
    lab, ws = _workspace(number, labs_dir)
    started = time.perf_counter()
    typer.echo(f"lab {number}: {lab.title}: building its state in {ws.shown(ws.root)}")
    ws.reset()
    lab.start(ws)
    env = ws.write_env()
    typer.echo(f"lab {number} ready in {time.perf_counter() - started:.0f} s: {ws.shown(ws.root)}")
    typer.echo(f"  your task:  {lab.task}")
    typer.echo(f"  work in it: source {ws.shown(env)}   (its state folder, its world)")
    typer.echo(f"  the page:   docs/workshop/lab-{number}.md")
    typer.echo(f"  done?       make lab-check LAB={number}    stuck? make lab-solve LAB={number}")


def _check(lab: Any, ws: Any) -> bool:
    done, line = lab.check(ws)
    typer.echo(f"lab {lab.number} {'done' if done else 'not done'}: {line}")
    return bool(done)


@app.command()
def check(number: Number, labs_dir: LabsDir = None) -> None:
    """Exit 0 when the lab's outcome is there, else exit 1 with one hint line."""
    lab, ws = _workspace(number, labs_dir)
    if not ws.started():
        typer.echo(f"lab {number} not done: it is not started: make lab-start LAB={number}")
        raise typer.Exit(1)
    ws.require()
    if not _check(lab, ws):
        raise typer.Exit(1)


@app.command()
def solve(number: Number, labs_dir: LabsDir = None) -> None:
    """Apply the lab's reference solution in its folder, then check it."""
    lab, ws = _workspace(number, labs_dir)
    ws.require()
    started = time.perf_counter()
    typer.echo(f"lab {number}: applying the reference solution in {ws.shown(ws.root)}")
    lab.solve(ws)
    typer.echo(f"solved in {time.perf_counter() - started:.0f} s")
    if not _check(lab, ws):
        raise typer.Exit(1)

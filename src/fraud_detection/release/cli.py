"""``fraud model``: release commands on the registered model (release, rollback)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Release the model: the challenger to champion once delivered (release), the "
    "champion back (rollback).",
    no_args_is_help=True,
)

StateDir = Annotated[
    Path | None, typer.Option(help="Use this state folder instead of the profile's.")
]


@app.command("rollback")
def rollback_command(
    reason: Annotated[str, typer.Option(help="Why: kept on the version and in the ledger.")],
    to: Annotated[
        str | None,
        typer.Option(help="The version to serve (default: the previous champion)."),
    ] = None,
    state_dir: StateDir = None,
) -> None:
    """Move the champion alias back (default: to the previous champion), audited.

    The version is tagged rolled_back_from, rollback_reason, rolled_back_by (user@host)
    and rolled_back_at; <state>/ct/runs.jsonl gets a record of kind rollback; the service
    reloads at once (<state>/serving/champion.json). A version that does not exist or
    lacks lineage is refused.
    """
    from fraud_detection.release.rollback import rollback
    from fraud_detection.training import ct

    if to is not None and not to.isdigit():
        raise typer.BadParameter(f"{to!r} is not a version number", param_hint="--to")
    done = rollback(ct.context(state_dir), reason, to)
    typer.echo(
        f"{done.model}: champion is version {done.to_version} again "
        f"(was {'none' if done.from_version is None else 'version ' + done.from_version}); "
        f"by {done.by}: {done.reason}"
    )


@app.command("release")
def release_command(state_dir: StateDir = None) -> None:
    """Delivery checks on the challenger in a service of its own; champion if they pass.

    The challenger must have passed the model gate. Its service takes no live traffic and
    logs no predictions; the budgets are configs/serving.yaml delivery:. Exits 1 when a
    check fails: the version stays challenger, tagged release.blocked.
    """
    from fraud_detection.release.challenger import release_challenger
    from fraud_detection.serving.delivery import format_report
    from fraud_detection.training import ct

    done = release_challenger(
        ct.context(state_dir), progress=lambda message: typer.echo(f"... {message}")
    )
    for line in format_report(done.report):
        typer.echo(line)
    if not done.promoted:
        typer.echo(
            f"not released: version {done.version} stays challenger: {done.reason}", err=True
        )
        raise typer.Exit(1)
    typer.echo(f"released: version {done.version} is the champion ({done.reason})")

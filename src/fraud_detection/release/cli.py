"""``fraud model``: release commands on the registered model (release, rollback)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Release the model: deliver the challenger and put it in shadow (release), judge "
    "its shadow window (shadow-check), approve it (approve), the champion back (rollback).",
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
    """Delivery checks on the challenger in a service of its own; then shadow, or champion.

    The challenger must have passed the model gate. Its service takes no live traffic and
    logs no predictions; the budgets are configs/serving.yaml delivery:. Passed, with
    serving.release.staged and shadow.enabled: the live service scores every request with
    it beside the champion (release.stage=shadow) until `fraud model shadow-check`
    decides; otherwise it becomes champion at once. Exits 1 when a check fails: the
    version stays challenger, tagged release.blocked.
    """
    from fraud_detection.release.challenger import release_challenger
    from fraud_detection.release.delivery import format_report
    from fraud_detection.training import ct

    done = release_challenger(
        ct.context(state_dir), progress=lambda message: typer.echo(f"... {message}")
    )
    for line in format_report(done.report):
        typer.echo(line)
    if done.shadow:
        typer.echo(
            f"in shadow: version {done.version} is scored beside champion version "
            f"{done.champion} on every request (tagged release.stage=shadow); "
            "`fraud model shadow-check` promotes it once its window agrees"
        )
        return
    if not done.promoted:
        typer.echo(
            f"not released: version {done.version} stays challenger: {done.reason}", err=True
        )
        raise typer.Exit(1)
    typer.echo(f"released: version {done.version} is the champion ({done.reason})")


@app.command("shadow-check")
def shadow_check_command(state_dir: StateDir = None) -> None:
    """Judge the challenger's shadow window (prediction log rows scored by both since it
    began) and act: promote it (profile serving.release_approval auto), mark it awaiting
    approval (manual), block it, or leave it in shadow while the window is not full.

    The rules are configs/serving.yaml release.shadow:. Exits 1 when it is blocked (the
    reasons in one line: agreement, error rate, p99); 0 otherwise. Each decision is tagged
    on the version and recorded in <state>/ct/runs.jsonl.
    """
    from fraud_detection.release.promotion import shadow_check
    from fraud_detection.training import ct

    ctx = ct.context(state_dir)
    done = shadow_check(ctx)
    verdict = done.verdict
    if verdict is not None:
        agreement = "n/a" if verdict.agreement is None else f"{verdict.agreement:.3f}"
        typer.echo(
            f"shadow window of version {done.version} beside champion version "
            f"{done.champion}: {verdict.requests:,} requests, agreement {agreement}"
        )
    if done.outcome == "blocked":
        typer.echo(f"blocked: {done.message}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{done.outcome}: {done.message}")
    typer.echo(f"  ledger: {ctx.paths.root / 'ct' / 'runs.jsonl'}")


@app.command("approve")
def approve_command(
    version: Annotated[str, typer.Option(help="The challenger awaiting approval.")],
    reason: Annotated[str, typer.Option(help="Why it may serve: kept on the version.")],
    state_dir: StateDir = None,
) -> None:
    """Promote a challenger that passed its shadow window and awaits approval (profile
    serving.release_approval: manual), audited: tagged release.approved_by (user@host),
    release.approved_at, release.approval_reason; recorded in <state>/ct/runs.jsonl."""
    from fraud_detection.release.promotion import approve
    from fraud_detection.training import ct

    if not version.isdigit():
        raise typer.BadParameter(f"{version!r} is not a version number", param_hint="--version")
    done = approve(ct.context(state_dir), version, reason)
    if done.outcome != "promoted":
        typer.echo(f"not promoted: {done.message}", err=True)
        raise typer.Exit(1)
    typer.echo(f"promoted: {done.message}")

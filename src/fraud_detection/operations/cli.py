"""``fraud audit`` and ``fraud health-report``: the release evidence, for people and CI."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fraud_detection.errors import FraudError

if TYPE_CHECKING:
    from fraud_detection.config import Profile

StateDir = Annotated[
    Path | None, typer.Option(help="Use this state folder instead of the profile's.")
]


def _profile(state_dir: Path | None) -> Profile:
    from fraud_detection.config import load_profile

    profile = load_profile()
    if state_dir is not None:
        profile = profile.model_copy(update={"state_dir": state_dir.resolve()})
    return profile


def _evidence(profile: Profile) -> dict[str, Any]:
    from fraud_detection.operations import evidence

    state = profile.state_dir
    versions, why = evidence.registry_versions(profile)
    return {
        "ledger": evidence.ledger(state),
        "raw_records": evidence.gate_records(state, "raw"),
        "training_records": evidence.gate_records(state, "training"),
        "versions": versions,
        "notes": [why] if why else [],
    }


def audit_command(
    since: Annotated[
        str | None, typer.Option(help="Only events on or after this day (YYYY-MM-DD, UTC).")
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="Only one kind: promotion, rollback, gate or deployment.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="As JSON, for machines.")] = False,
    state_dir: StateDir = None,
) -> None:
    """Every promotion, rollback, gate decision and deployment: who, when, why, from which
    run and commit; newest first. Read from the registry, the CT ledger and gate records."""
    from fraud_detection.operations import audit

    if kind is not None and kind not in audit.KINDS:
        raise FraudError(f"--kind {kind!r}: choose from {', '.join(audit.KINDS)}")
    try:
        day = None if since is None else dt.date.fromisoformat(since)
    except ValueError:
        raise FraudError(f"--since {since!r}: give a day as YYYY-MM-DD") from None
    found = _evidence(_profile(state_dir))
    notes = found.pop("notes")
    events = audit.select(audit.build(**found), since=day, kind=kind)
    if as_json:
        payload = {
            "summary": audit.summary(events),
            "events": [e.to_dict() for e in events],
            "notes": notes,
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    if events:
        typer.echo(audit.table(events))
    typer.echo(audit.summary(events))
    for note in notes:
        typer.echo(f"note: {note}")


def health_report_command(
    ci_results: Annotated[
        Path | None,
        typer.Option(
            help="The last CI results: GitHub's `GET /repos/OWNER/REPO/actions/runs` answer "
            "saved as JSON."
        ),
    ] = None,
    days: Annotated[int, typer.Option(help="Serving figures over the last N days.")] = 7,
    output: Annotated[
        Path | None, typer.Option(help="The HTML page (default <state>/reports/health.html).")
    ] = None,
    state_dir: StateDir = None,
) -> None:
    """Pipeline health: CT success rate, last good CT, gate rejections by reason, champion
    age, serving latency and errors, last CI results. HTML page, Markdown beside it, and
    the Markdown appended to $GITHUB_STEP_SUMMARY when it is set."""
    from fraud_detection.operations import evidence, health

    profile = _profile(state_dir)
    found = _evidence(profile)
    ci, why = evidence.ci_results(ci_results)
    report = health.measure(
        **{k: v for k, v in found.items() if k != "notes"},
        predictions=evidence.prediction_log(profile.state_dir),
        ci=ci,
        window_days=days,
        notes=[*found["notes"], *([why] if why else [])],
    )
    page = output.resolve() if output else profile.state_dir / "reports" / "health.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(health.html_page(report))
    text = health.markdown(report)
    md = page.with_suffix(".md")
    md.write_text(text)
    (page.with_suffix(".json")).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    for label, value in health.headline(report):
        typer.echo(f"  {label + ':':<42} {value}")
    typer.echo(f"health report: {page}")
    typer.echo(f"  Markdown: {md}; figures: {page.with_suffix('.json')}")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with Path(summary).open("a") as handle:
            handle.write(text)
        typer.echo(f"  appended to the job summary ({summary})")

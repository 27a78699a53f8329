"""The audit log and the health report on a served world: a real registry (v1 promoted
by ``tracking.promote``), a partition the data gate rejected, a CT run record; and
``make health-report`` as the weekly workflow runs it."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fraud_detection.config import StatePaths
from fraud_detection.registry import runs
from tests.worlds import START, WORLD, served_world

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BROKEN = START + dt.timedelta(days=WORLD["days"] - 1)  # the last day: duplicated ids
COMMIT = "c" * 40


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> StatePaths:
    started = dt.datetime.now(dt.UTC)
    paths = served_world(
        tmp_path_factory.mktemp("audit"),
        scenario={
            "broken_feed": {
                "enabled": True,
                "day": WORLD["days"] - 1,
                "corruption": "duplicate_ids",
            }
        },
    )
    # The CT run that did it, as the flow records it (trigger, times, commit).
    runs.append_record(
        paths,
        runs.RunRecord(
            trigger="schedule",
            started_at=started.isoformat(),
            data_gate=f"7 accepted, {BROKEN} REJECTED (transaction_id)",
            model_gate="promoted v1",
            challenger_version="1",
            champion_version="1",
            outcome="promoted",
            seconds=round((dt.datetime.now(dt.UTC) - started).total_seconds() + 1, 1),
            code_version=COMMIT,
        ),
    )
    return paths


def _cli(*args: str) -> Any:
    from fraud_detection.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_audit_shows_the_promotion_and_the_rejection_with_who_when_why_and_run(
    world: StatePaths,
) -> None:
    from fraud_detection.config import load_profile
    from fraud_detection.registry import tracking

    champion = tracking.champion(load_profile().mlflow.model_name)
    assert champion is not None
    out = _cli("audit", "--json", "--state-dir", str(world.root))
    assert out.exit_code == 0, out.output
    events = json.loads(out.output)["events"]
    assert [e["at"] for e in events] == sorted((e["at"] for e in events), reverse=True)

    (promotion,) = [e for e in events if e["kind"] == "promotion"]
    assert promotion["what"] == "v1 became champion (was none)"
    assert promotion["run"] == champion.run_id  # the MLflow run it came from
    assert promotion["at"] == champion.tags["promoted_at"]
    assert f"on {socket.gethostname()}" in promotion["who"]  # promoted_by: this process
    assert "CT run (schedule, " in promotion["who"]
    assert promotion["commit"] == COMMIT[:12]
    # the world promotes without the gate's tags: the CT run's record says why
    assert promotion["why"] == "model gate: promoted v1"

    (rejected,) = [e for e in events if e["what"] == f"partition {BROKEN} rejected"]
    assert "transaction_id" in rejected["why"]
    assert "CT run (schedule, " in rejected["who"]
    # Newest first: the promotion came after the data gate judged the partition
    assert events.index(promotion) < events.index(rejected)

    table = _cli("audit", "--state-dir", str(world.root))
    assert f"partition {BROKEN} rejected" in table.output
    assert champion.run_id[:8] in table.output
    assert "1 promotion, 0 rollbacks" in table.output


def test_make_health_report_writes_the_page_and_appends_the_job_summary(
    world: StatePaths, tmp_path: Path
) -> None:
    summary = tmp_path / "step_summary.md"
    env = {k: v for k, v in os.environ.items() if k not in ("GITHUB_TOKEN", "GITHUB_REPOSITORY")}
    env["GITHUB_STEP_SUMMARY"] = str(summary)
    out = subprocess.run(
        ["make", "--no-print-directory", "health-report", f"CT_STATE_DIR={world.root}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    page = world.root / "reports" / "health.html"
    assert f"health report: {page}" in out.stdout
    figures = json.loads(page.with_suffix(".json").read_text())
    assert figures["champion_version"] == "1"
    assert figures["champion_age_days"] is not None
    assert figures["champion_age_days"] < 1
    assert figures["ct_success_rate"] == 1.0
    assert ["data", "transaction_id: expect_column_values_to_be_unique", 1] in figures["rejections"]
    html = page.read_text()
    assert "v1, " in html
    assert "100.0%" in html
    assert "### Pipeline health" in summary.read_text()
    # then the audit log, in the job's log
    assert "1 promotion" in out.stdout

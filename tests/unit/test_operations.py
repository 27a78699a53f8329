"""The audit log and the health report, from evidence written by the test (no registry):
the CT ledger, gate records and a prediction log written with the service's own writer."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from fraud_detection.config import StatePaths
from fraud_detection.errors import FraudError
from fraud_detection.operations import audit, health
from fraud_detection.registry import runs
from fraud_detection.serving import predlog

pytestmark = pytest.mark.unit

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


def _at(hours_ago: float) -> str:
    return (NOW - dt.timedelta(hours=hours_ago)).isoformat()


def _ledger(paths: StatePaths) -> None:
    """Three CT runs: promoted v1 (commit A), challenger v2 rejected (commit B), failed."""
    records = [
        runs.RunRecord(
            trigger="on_demand",
            started_at=_at(50),
            data_gate="8 accepted",
            training_gate="accepted (9,000 rows)",
            model_gate="promoted v1",
            challenger_version="1",
            champion_version="1",
            outcome="promoted",
            seconds=60.0,
            code_version=COMMIT_A,
        ),
        runs.RunRecord(
            trigger="schedule",
            started_at=_at(26),
            data_gate="2026-01-09 REJECTED (amount)",
            training_gate="accepted (9,500 rows)",
            model_gate="rejected v2",
            challenger_version="2",
            champion_version="1",
            outcome="kept champion",
            reasons=["pr_auc 0.412 is 0.101 below the champion's 0.513 (tolerance 0.010)"],
            seconds=60.0,
            code_version=COMMIT_B,
        ),
        runs.RunRecord(
            trigger="schedule",
            started_at=_at(2),
            outcome="failed",
            reasons=["OSError: disk full"],
            seconds=5.0,
            code_version=COMMIT_B,
        ),
    ]
    for run in records:
        runs.append_record(paths, run)


def _gate_record(paths: StatePaths, day: str, *, ok: bool, validated_at: str) -> None:
    folder = paths.root / "validation" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    failures = (
        []
        if ok
        else [
            {
                "expectation": "expect_column_values_to_be_between",
                "column": "amount",
                "expected": "values between 0 (exclusive) and 50000",
                "problem": "312 unexpected",
            }
        ]
    )
    record = {
        "partition": day,
        "batch": f"partition {day}",
        "suite": "raw_transactions",
        "success": ok,
        "evaluated": 30,
        "failures": failures,
        "validated_at": validated_at,
    }
    (folder / f"{day}.json").write_text(json.dumps(record))


def _predictions(paths: StatePaths, latencies: list[float]) -> None:
    stamp = int(NOW.timestamp() * 1e6) - 3_600_000_000  # an hour ago
    index = {name: i for i, name in enumerate(predlog.LOG_COLUMNS)}
    records = []
    for n, latency in enumerate(latencies):
        row: list[Any] = [None] * len(predlog.LOG_COLUMNS)
        row[index["request_id"]] = f"r{n}"
        row[index["logged_at"]] = stamp + n
        row[index["event_timestamp"]] = stamp + n
        row[index["latency_ms"]] = latency
        row[index["source"]] = "api"
        row[index["status"]] = 200
        records.append(tuple(row))
    predlog.write_part(records, paths.root / "serving" / "predictions")


def _errors(paths: StatePaths, statuses: list[int]) -> None:
    """Requests answered ``statuses`` in the service's error log (an hour ago)."""
    stamp = int(NOW.timestamp() * 1e6) - 3_600_000_000
    records = [
        (f"e{n}", stamp, stamp, None, 1, "/predict", status, "store down", "1", 900.0)
        for n, status in enumerate(statuses)
    ]
    predlog.write_part(records, paths.root / "serving" / "errors", predlog.error_schema())


@pytest.fixture
def state(tmp_path: Path) -> StatePaths:
    paths = StatePaths(root=tmp_path / "state")
    _ledger(paths)
    _gate_record(paths, "2026-01-08", ok=True, validated_at=_at(50 - 0.01))  # in run 1
    _gate_record(paths, "2026-01-09", ok=False, validated_at=_at(26 - 0.01))  # in run 2
    return paths


def _cli(*args: str) -> Any:
    from fraud_detection.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_audit_lists_gate_decisions_promotions_and_deployments_newest_first(
    state: StatePaths,
) -> None:
    # When the audit log is read as JSON (no registry in this state folder)
    out = _cli("audit", "--json", "--state-dir", str(state.root))
    assert out.exit_code == 0, out.output
    payload = json.loads(out.output)
    events = payload["events"]
    stamps = [e["at"] for e in events]
    # Then it is newest first
    assert stamps == sorted(stamps, reverse=True)
    # And the rejected partition says why, which CT run judged it and at which commit
    (rejected,) = [e for e in events if e["what"] == "partition 2026-01-09 rejected"]
    assert rejected["kind"] == "gate"
    assert rejected["gate"] == "data"
    assert "amount: values between 0 (exclusive) and 50000 — 312 unexpected" in rejected["why"]
    assert "CT run (schedule, " in rejected["who"]
    assert rejected["commit"] == COMMIT_B[:12]
    # And the rejected challenger carries the gate's reason
    (model,) = [e for e in events if e["what"] == "challenger v2 rejected"]
    assert "below the champion" in model["why"]
    # And the promotion, read from the ledger since no registry exists here
    (promotion,) = [e for e in events if e["kind"] == "promotion"]
    assert promotion["what"] == "v1 became champion"
    assert "CT run (on_demand, " in promotion["who"]
    assert promotion["commit"] == COMMIT_A[:12]
    # And each new commit CT ran is a deployment taking effect
    deployed = [e["commit"] for e in events if e["kind"] == "deployment"]
    assert deployed == [COMMIT_B[:12], COMMIT_A[:12]]
    assert payload["summary"].startswith(f"{len(events)} events: 1 promotion, 0 rollbacks")
    assert "no registry in this state folder yet" in payload["notes"]


def test_audit_table_filters_by_kind_and_day(state: StatePaths) -> None:
    out = _cli("audit", "--kind", "gate", "--state-dir", str(state.root))
    assert out.exit_code == 0, out.output
    assert "partition 2026-01-09 rejected" in out.output
    assert "became champion" not in out.output
    assert re.search(
        r"^4 events: 0 promotions, 0 rollbacks, 4 gate decisions \(2 rejected\)",
        out.output,
        re.MULTILINE,
    ), out.output
    tomorrow = (NOW + dt.timedelta(days=1)).date().isoformat()
    out = _cli("audit", "--since", tomorrow, "--state-dir", str(state.root))
    assert "0 events" in out.output
    with pytest.raises(FraudError, match="choose from promotion, rollback, gate, deployment"):
        _cli("audit", "--kind", "promotions", "--state-dir", str(state.root))


def test_audit_reads_rollbacks_from_the_ledger_and_the_registry_tags() -> None:
    # Given a rollback to v1 recorded by `fraud model rollback` (its ledger line and the
    # tags of both versions), and a rollback to v3 known from the tags alone
    ledger = [
        {
            "kind": "rollback",
            "model": "fraud-detector",
            "to_version": "1",
            "from_version": "2",
            "reason": "p99 latency doubled",
            "by": "ana@ops-1",
            "at": _at(1),
            "code_version": COMMIT_A,
            "champion_version": "1",
            "outcome": "rolled back",
        },
    ]
    versions = [
        {
            "version": "1",
            "run_id": "r1",
            "tags": {
                "promoted_at": _at(30),
                "superseded_by": "2",
                "rolled_back_from": "2",
                "rolled_back_at": _at(1),
            },
        },
        {
            "version": "2",
            "run_id": "r2",
            "tags": {"promoted_at": _at(20), "superseded_by": "1", "rolled_back_to": "1"},
        },
        {
            "version": "3",
            "run_id": "r3",
            "tags": {
                "rolled_back_from": "4",
                "rollback_reason": "bad slice",
                "rolled_back_by": "bo@ops-2",
                "rolled_back_at": _at(0.5),
            },
        },
    ]
    events = audit.build(ledger=ledger, versions=versions)
    rollbacks = [e for e in events if e.kind == "rollback"]
    assert [e.what for e in rollbacks] == [
        "v3 champion again (rolled back from v4)",
        "v1 champion again (rolled back from v2)",
    ]
    assert rollbacks[1].who == "ana@ops-1"
    assert rollbacks[1].why == "p99 latency doubled"
    assert rollbacks[1].run == "r1"
    assert rollbacks[1].commit == COMMIT_A[:12]
    assert rollbacks[0].who == "bo@ops-2"
    assert rollbacks[0].why == "bad slice"
    # The promotions keep what they replaced: v2 replaced v1, not the other way round
    promotions = {e.what for e in events if e.kind == "promotion"}
    assert promotions == {"v2 became champion (was v1)", "v1 became champion (was none)"}
    # And the champion's age counts from the rollback that made it champion again
    versions[0]["aliases"] = ["champion"]
    figures = health.measure(ledger=ledger, versions=versions, now=NOW)
    assert figures.champion_age_days == pytest.approx(1 / 24, abs=0.05)
    assert figures.ct_runs == 0  # a rollback is not a CT run


def test_a_staged_challenger_awaiting_release_is_approved_not_rejected() -> None:
    # Given a CT run that left an approved version the challenger (a staged release),
    # one in shadow and one whose shadow verdict blocked it
    ledger = [
        {
            "trigger": "schedule",
            "started_at": _at(3 - k),
            "model_gate": f"challenger v{v} (awaiting release)",
            "challenger_version": v,
            "champion_version": "1",
            "outcome": "challenger",
            "reasons": [],
            "seconds": 10.0,
        }
        for k, v in enumerate(("2", "3", "4"))
    ]
    versions = [
        {"version": "2", "tags": {"gate.promote": "true", "gate.reasons": "better pr_auc"}},
        {"version": "3", "tags": {"gate.promote": "true", "release.stage": "shadow"}},
        {
            "version": "4",
            "tags": {
                "gate.promote": "true",
                "release.stage": "blocked",
                "release.blocked": "agreement 0.020 below min_agreement 0.99",
            },
        },
    ]
    events = audit.build(ledger=ledger, versions=versions)
    gates = {e.what: e for e in events if e.gate == "model"}
    # Then none reads "rejected": each says where its release is
    assert set(gates) == {
        "challenger v2 approved (awaiting delivery: fraud model release)",
        "challenger v3 approved (in shadow beside the champion)",
        "challenger v4 approved (release blocked: agreement 0.020 below min_agreement 0.99)",
    }
    assert {e.outcome for e in gates.values()} == {"accepted"}
    assert gates["challenger v2 approved (awaiting delivery: fraud model release)"].why == (
        "better pr_auc"
    )


def test_health_report_figures_match_the_records(
    state: StatePaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    latencies = [float(x) for x in np.random.default_rng(3).gamma(2.0, 4.0, size=500)]
    _predictions(state, latencies)
    _errors(state, [503] * 5)
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    ci = tmp_path / "runs.json"
    ci.write_text(
        json.dumps(
            {
                "workflow_runs": [
                    {
                        "name": "ci",
                        "conclusion": "success",
                        "updated_at": "2026-01-02T00:00:00Z",
                        "head_sha": COMMIT_B,
                    },
                    {"name": "ci", "conclusion": "failure", "updated_at": "2026-01-01T00:00:00Z"},
                    {"name": "ct", "conclusion": "failure", "updated_at": "2026-01-02T03:00:00Z"},
                ]
            }
        )
    )

    out = _cli("health-report", "--state-dir", str(state.root), "--ci-results", str(ci))
    assert out.exit_code == 0, out.output

    figures = json.loads((state.root / "reports" / "health.json").read_text())
    # 3 CT runs, 2 finished (the failed one did not), 1 with every gate passed
    assert (figures["ct_runs"], figures["ct_finished"], figures["ct_good"]) == (3, 2, 1)
    assert figures["ct_success_rate"] == pytest.approx(2 / 3)
    # (the records are dated from NOW, set when this module was imported; the command
    # reads the wall clock: in a long test session, minutes or more later)
    since_import_h = (dt.datetime.now(dt.UTC) - NOW).total_seconds() / 3600
    assert figures["hours_since_last_good"] == pytest.approx(50 + since_import_h, abs=0.2)
    assert ["data", "amount: expect_column_values_to_be_between", 1] in figures["rejections"]
    assert ["model", "pr_auc N is N below the champion's N (tolerance N)", 1] in figures[
        "rejections"
    ]
    p99 = round(float(np.percentile(latencies, 99)), 2)
    # 500 answered and 5 answered 503 (the error log); latency of the answered ones
    assert figures["serving_requests"] == 505
    assert figures["latency_p99_ms"] == p99
    assert figures["latency_p50_ms"] == round(float(np.percentile(latencies, 50)), 2)
    assert figures["error_rate"] == pytest.approx(5 / 505)
    assert [(r["workflow"], r["conclusion"]) for r in figures["ci"]] == [
        ("ci", "success"),
        ("ct", "failure"),
    ]

    page = (state.root / "reports" / "health.html").read_text()
    assert "66.7%" in page
    assert f"{p99:g} ms" in page
    assert "amount: expect_column_values_to_be_between" in page
    assert "<script" not in page
    assert "http" not in page.split("</style>")[0]
    assert f"health report: {state.root / 'reports' / 'health.html'}" in out.output

    text = summary.read_text()
    assert text.startswith("earlier step\n")  # appended, not overwritten
    assert "| CT success rate | 66.7% (2 of 3 runs finished) |" in text
    assert f"| serving latency p99 | {p99:g} ms |" in text


def test_health_report_of_an_empty_state_says_what_is_missing(tmp_path: Path) -> None:
    figures = health.measure(ledger=[])
    assert figures.ct_success_rate is None
    assert figures.champion_version is None
    assert "no CT run in the ledger yet" in figures.notes
    page = health.html_page(figures)
    assert "never" in page
    assert "n/a" in page

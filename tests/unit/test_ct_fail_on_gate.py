"""``fraud ct run --fail-on-gate``: in CI a gate that says no turns the job red.

The flow itself is replaced by a stub returning a run record, so these tests check the
decision and what the user sees (exit code, the named gate) without starting Prefect; the
real flow is run by tests/e2e/test_ci_targets.py through ``make ct-ci``.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from fraud_detection.cli import app
from fraud_detection.registry.runs import RunRecord, failed_gates
from fraud_detection.training import cli as training_cli

pytestmark = pytest.mark.unit


def _record(**fields: Any) -> RunRecord:
    return RunRecord(trigger="schedule", started_at="2026-01-08T03:00:00+00:00", **fields)


PROMOTED = _record(data_gate="1 accepted", model_gate="promoted v2", outcome="promoted")
SKIPPED = _record(
    data_gate="no new partition", model_gate="skipped: nothing new", outcome="skipped: nothing new"
)
BAD_DAY = _record(
    data_gate="1 accepted, 2026-01-07 REJECTED (transaction_id: duplicates)",
    model_gate="promoted v3",
    outcome="promoted",
)
WORSE = _record(
    data_gate="1 accepted",
    model_gate="rejected v4",
    outcome="kept champion",
    reasons=["pr_auc 0.021 is below the floor 0.200"],
)


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (PROMOTED, []),
        (SKIPPED, []),
        (BAD_DAY, ["data gate: 1 accepted, 2026-01-07 REJECTED (transaction_id: duplicates)"]),
        (WORSE, ["model gate: rejected v4"]),
        (
            _record(training_gate="REJECTED", outcome="failed", reasons=["fraud_rate: too low"]),
            ["training-set gate: fraud_rate: too low"],
        ),
    ],
    ids=["promoted", "skipped", "rejected-partition", "rejected-challenger", "rejected-set"],
)
def test_failed_gates_names_each_gate_that_said_no(record: RunRecord, expected: list[str]) -> None:
    assert failed_gates(record) == expected


@pytest.fixture
def stub_flow(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[RunRecord]:
    """``fraud ct run`` with the flow replaced: it returns the next queued record."""
    queue: list[RunRecord] = []

    def ct_flow(**_: Any) -> dict[str, Any]:
        return asdict(queue.pop(0))

    monkeypatch.setattr(training_cli, "load_flows", lambda: SimpleNamespace(ct_flow=ct_flow))
    monkeypatch.setattr(training_cli, "prefect_environment", lambda state: None)
    return queue


def _run(tmp_path: Path, *flags: str) -> Any:
    return CliRunner().invoke(app, ["ct", "run", "--state-dir", str(tmp_path), *flags])


def test_a_rejected_challenger_exits_1_only_with_fail_on_gate(
    stub_flow: list[RunRecord], tmp_path: Path
) -> None:
    stub_flow += [WORSE, WORSE]
    plain = _run(tmp_path)
    assert plain.exit_code == 0, plain.output
    strict = _run(tmp_path, "--fail-on-gate")
    assert strict.exit_code == 1
    assert "gate failed: model gate: rejected v4" in strict.output
    assert "champion:" in strict.output  # the run's report is printed before failing


def test_a_promotion_or_a_skip_passes_with_fail_on_gate(
    stub_flow: list[RunRecord], tmp_path: Path
) -> None:
    stub_flow += [PROMOTED, SKIPPED]
    for _ in range(2):
        result = _run(tmp_path, "--fail-on-gate")
        assert result.exit_code == 0, result.output
        assert "gate failed" not in result.output

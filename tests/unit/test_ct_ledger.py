"""The CT run ledger (``<state>/ct/runs.jsonl``) survives a run killed while appending:
the torn line is skipped and reported, the next records are read, no command dies."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fraud_detection.config import StatePaths
from fraud_detection.registry import runs

pytestmark = pytest.mark.unit


def _record(n: int) -> runs.RunRecord:
    return runs.RunRecord(
        trigger="on_demand",
        started_at=f"2026-01-0{n}T00:00:00+00:00",
        as_of=f"2026-01-0{n}",
        data_gate="1 accepted",
        model_gate=f"promoted v{n}",
        champion_version=str(n),
        outcome="promoted",
    )


def test_a_torn_last_line_is_skipped_reported_and_followed_by_whole_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paths = StatePaths(root=tmp_path)
    ledger = runs.append_record(paths, _record(1))
    runs.append_record(paths, _record(2))
    # Given a run killed halfway through appending its record
    whole = ledger.read_bytes()
    with ledger.open("ab") as handle:
        handle.write(b'{"trigger": "new_data", "started_at": "2026-01-03T00:0')
    assert ledger.read_bytes().startswith(whole)

    # Then the ledger reads as the two whole records, and says what it skipped
    with caplog.at_level(logging.WARNING):
        assert [r.champion_version for r in runs.read_records(paths)] == ["1", "2"]
    assert "line 3 is not a complete run record" in caplog.text

    # And the next run's record lands on a line of its own, readable
    runs.append_record(paths, _record(4))
    assert [r.champion_version for r in runs.read_records(paths)] == ["1", "2", "4"]
    assert ledger.read_text().count("\n") == 4


def test_fraud_ct_history_shows_the_whole_records_of_a_torn_ledger(tmp_path: Path) -> None:
    from fraud_detection.cli import app

    paths = StatePaths(root=tmp_path)
    ledger = runs.append_record(paths, _record(1))
    with ledger.open("a") as handle:
        handle.write('{"trigger": "sched')  # torn
    runs.append_record(paths, _record(2))

    result = CliRunner().invoke(app, ["ct", "history", "--state-dir", str(tmp_path)])

    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "promoted v1" in result.output
    assert "promoted v2" in result.output

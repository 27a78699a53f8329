"""The run ledger: one JSON line per CT run (and per rollback), ``<state>/ct/runs.jsonl``.

The CT flow, ``fraud model release`` / ``promote`` / ``rollback`` append to it; ``fraud ct
history``, the demo's table, the ``ct.yml`` job summary, the audit log and the health
report read it. Appending is one ``write`` on an ``O_APPEND`` descriptor, so concurrent
runs never interleave lines; a line torn by a crash is skipped and reported on reading.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fraud_detection.config import StatePaths

__all__ = [
    "RunRecord",
    "append_record",
    "failed_gates",
    "last_trained_as_of",
    "ledger_file",
    "ledger_lock",
    "read_all",
    "read_records",
    "records_table",
]

log = logging.getLogger(__name__)


@dataclass
class RunRecord:
    """One CT run as a row of the demo table and of the CI job summary."""

    trigger: str
    started_at: str
    variant: str = "normal"
    as_of: str | None = None
    data_gate: str = ""
    training_gate: str = ""
    model_gate: str = ""
    challenger_version: str | None = None
    champion_version: str | None = None
    pr_auc: float | None = None
    champion_pr_auc: float | None = None
    training_rows: int | None = None
    outcome: str = ""  # promoted | kept champion | skipped | failed
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    code_version: str | None = None  # the commit the run ran (flows.record_code_version)

    def finish(self, started: float) -> RunRecord:
        self.seconds = round(time.perf_counter() - started, 1)
        return self


def append_record(paths: StatePaths, record: RunRecord | Mapping[str, Any]) -> Path:
    """Append one run's record as one JSON line, in a single ``write`` on an ``O_APPEND``
    descriptor (concurrent runs never interleave their lines). After a torn last line (a
    process killed while appending), the record starts on a line of its own. A mapping is
    a record of another kind (its ``kind``: ``rollback``, written by ``fraud model``)."""
    path = ledger_file(paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dict(record) if isinstance(record, Mapping) else asdict(record)
    line = (json.dumps(data) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        os.write(fd, line)
    finally:
        os.close(fd)
    return path


def ledger_file(paths: StatePaths) -> Path:
    return paths.root / "ct" / "runs.jsonl"


def _whole_lines(paths: StatePaths) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) of each whole line; a line that is not one (torn by a crash
    while it was appended, or edited by hand) is skipped and reported, never fatal."""
    path = ledger_file(paths)
    if not path.exists():
        return
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            data = None
        if isinstance(data, dict):
            yield number, data
        else:
            log.warning(
                "%s line %d is not a complete run record (a run killed while writing it?): skipped",
                path,
                number,
            )


def read_all(paths: StatePaths) -> list[dict[str, Any]]:
    """Every whole record of the ledger, in order, of any ``kind`` (CT runs, rollbacks)."""
    return [data for _, data in _whole_lines(paths)]


def read_records(paths: StatePaths) -> list[RunRecord]:
    """Every CT run's record, in order; a record of another ``kind`` (a rollback) is not a
    CT run and is left out, one whose fields are not a run's is skipped and reported."""
    records = []
    for number, data in _whole_lines(paths):
        if data.get("kind", "ct_run") != "ct_run":
            continue
        try:
            records.append(RunRecord(**data))
        except TypeError as exc:
            log.warning(
                "%s line %d is not a complete run record (%s): skipped",
                ledger_file(paths),
                number,
                exc,
            )
    return records


@contextlib.contextmanager
def ledger_lock(paths: StatePaths) -> Iterator[None]:
    """Processes sharing the state folder check and append the ledger one at a time."""
    lock = paths.root / "ct" / "ledger.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # released when the process dies, too
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def last_trained_as_of(paths: StatePaths) -> str | None:
    """The ``as_of`` of the last normal run that got as far as training.

    Deliberately degraded challengers (experiments) do not count: the pipeline must still
    train a real model on the data they saw.
    """
    trained = [
        r.as_of
        for r in read_records(paths)
        if r.challenger_version is not None and r.variant == "normal"
    ]
    return trained[-1] if trained else None


def failed_gates(record: RunRecord) -> list[str]:
    """The gates that said no in this run, one line each (empty: every gate passed).

    A rejected raw partition, a rejected training set and a rejected challenger all count:
    CI (``fraud ct run --fail-on-gate``) turns them into a red job. A run skipped because
    nothing new arrived is not a failure.
    """
    failed = []
    if "REJECTED" in record.data_gate:
        failed.append(f"data gate: {record.data_gate}")
    if record.training_gate.startswith("REJECTED"):
        failed.append(f"training-set gate: {'; '.join(record.reasons) or 'rejected'}")
    if record.model_gate.startswith("rejected"):
        failed.append(f"model gate: {record.model_gate}")
    return failed


def records_table(records: Sequence[RunRecord], markdown: bool = False) -> str:
    """The runs as a table: as of, trigger, data gate, model gate, champion, PR-AUC."""
    header = ["as of", "trigger", "data gate", "model gate", "champion", "PR-AUC", "champ. PR-AUC"]
    rows = [
        [
            (r.as_of or "-")[:10],
            r.trigger,
            r.data_gate or "-",
            r.model_gate or r.outcome or "-",
            f"v{r.champion_version}" if r.champion_version else "none",
            f"{r.pr_auc:.3f}" if r.pr_auc is not None else "-",
            f"{r.champion_pr_auc:.3f}" if r.champion_pr_auc is not None else "-",
        ]
        for r in records
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [
        max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
        for i, h in enumerate(header)
    ]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [
            fmt.format(*header),
            fmt.format(*("-" * w for w in widths)),
            *(fmt.format(*row) for row in rows),
        ]
    )

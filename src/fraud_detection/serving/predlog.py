"""The prediction log: what the service scored, as Parquet part files for monitoring.

Layout (``<state>/serving/predictions/``)::

    date=YYYY-MM-DD/part-<UTC time>-<pid>-<n>.parquet   the transactions of that UTC day

A request only appends a tuple to an in-memory queue (never blocks, never raises: when
the queue is full the record is dropped and counted). A writer thread turns the queue
into a part file every ``flush_interval_s`` or as soon as ``flush_rows`` rows wait, and
the rest on shutdown. A failed write (disk full, folder unwritable) keeps its rows at
the head of the queue for the next flush; only beyond ``max_queue_rows`` are the oldest
dropped, and the counters say how many rows were written, wait, were lost and how many
flushes failed. Files are written under a temporary name and renamed, so a reader never sees
half a file, and are never rewritten. The columns are :data:`LOG_COLUMNS` (see
``docs/serving.md``), the model inputs last with the dtypes the model was trained on.

Every row is an answered prediction (``status`` 200). With a challenger in the service
(staged release) a row also holds the model scored beside the answer: ``route`` says which
answered (``shadow``: the champion, the challenger scored in shadow; ``canary``: the
challenger, the champion scored beside it), ``shadow_version`` / ``shadow_score`` /
``shadow_threshold`` / ``shadow_ms`` the model not answered with (a NaN score: it failed).
Logs written before these columns existed lack them; readers treat them as missing.

Requests answered 5xx go to a log of their own (``<state>/serving/errors/``, the same
writer with :func:`error_schema`), so every row here stays a scored prediction for
monitoring, and the health report can still count the failures.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
import threading
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fraud_detection.features.engineering import (
    CATEGORICAL_FEATURES,
    MODEL_FEATURES,
    REQUEST_FEATURE_DTYPES,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from fraud_detection.serving.settings import PredictionLogSettings

__all__ = [
    "ERROR_COLUMNS",
    "HEAD_COLUMNS",
    "INPUT_COLUMNS",
    "LOG_COLUMNS",
    "LogCounters",
    "PredictionLog",
    "error_schema",
    "log_schema",
    "write_part",
]

log = logging.getLogger(__name__)

HEAD_COLUMNS: tuple[str, ...] = (
    "request_id",
    "logged_at",
    "event_timestamp",
    "transaction_id",
    "card_id",
    "merchant_id",
    "model_version",
    "score",
    "decision",
    "threshold",
    "unknown_card",
    "unknown_merchant",
    "feature_age_s",
    "latency_ms",
    "source",
    "status",
    "route",
    "shadow_version",
    "shadow_score",
    "shadow_threshold",
    "shadow_ms",
)
# The model's inputs, after the head columns: the API's log and the batch scores alike.
INPUT_COLUMNS: tuple[str, ...] = (*MODEL_FEATURES, *CATEGORICAL_FEATURES)
LOG_COLUMNS: tuple[str, ...] = (*HEAD_COLUMNS, *INPUT_COLUMNS)
# A request answered 5xx: one row per transaction it carried.
ERROR_COLUMNS: tuple[str, ...] = (
    "request_id",
    "logged_at",
    "event_timestamp",
    "transaction_id",
    "card_id",
    "path",
    "status",
    "error",
    "model_version",
    "latency_ms",
)
# A record is a tuple in LOG_COLUMNS (or ERROR_COLUMNS) order; logged_at and
# event_timestamp are integer microseconds since the epoch (UTC), at the same positions.
Record = tuple[Any, ...]
_EVENT = HEAD_COLUMNS.index("event_timestamp")
_US_PER_DAY = 86_400 * 1_000_000
_POLL_S = 0.2  # how often the writer looks at the queue


def log_schema() -> pa.Schema:
    """The Arrow schema of a part file (the contract with monitoring)."""
    import pyarrow as pa

    stamp = pa.timestamp("us", tz="UTC")
    head = [
        ("request_id", pa.string()),
        ("logged_at", stamp),
        ("event_timestamp", stamp),
        ("transaction_id", pa.string()),
        ("card_id", pa.int64()),
        ("merchant_id", pa.int64()),
        ("model_version", pa.string()),
        ("score", pa.float64()),
        ("decision", pa.bool_()),
        ("threshold", pa.float64()),
        ("unknown_card", pa.bool_()),
        ("unknown_merchant", pa.bool_()),
        ("feature_age_s", pa.float64()),
        ("latency_ms", pa.float64()),
        ("source", pa.string()),
        ("status", pa.int64()),
        ("route", pa.string()),  # null: champion only; shadow; canary
        ("shadow_version", pa.string()),
        ("shadow_score", pa.float64()),
        ("shadow_threshold", pa.float64()),
        ("shadow_ms", pa.float64()),
    ]
    # As in the training sets: request-time integers stay int64; window features are
    # float64 (missing for a card's first transaction).
    features = [
        (name, pa.int64() if REQUEST_FEATURE_DTYPES.get(name) == "int64" else pa.float64())
        for name in MODEL_FEATURES
    ]
    categories = [(name, pa.string()) for name in CATEGORICAL_FEATURES]
    return pa.schema([pa.field(n, t) for n, t in (*head, *features, *categories)])


def error_schema() -> pa.Schema:
    """The Arrow schema of the error log's part files (:data:`ERROR_COLUMNS`)."""
    import pyarrow as pa

    stamp = pa.timestamp("us", tz="UTC")
    types = {
        "logged_at": stamp,
        "event_timestamp": stamp,
        "card_id": pa.int64(),
        "status": pa.int64(),
        "latency_ms": pa.float64(),
    }
    return pa.schema([pa.field(n, types.get(n, pa.string())) for n in ERROR_COLUMNS])


_sequence = itertools.count()


def write_part(
    records: Sequence[Record], folder: Path, schema: pa.Schema | None = None
) -> list[Path]:
    """Write ``records`` as new part files under ``folder/date=YYYY-MM-DD/`` (one file per
    UTC day of ``event_timestamp``) in ``schema`` (default: :func:`log_schema`); returns
    the files written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = schema or log_schema()
    by_day: dict[int, list[Record]] = defaultdict(list)
    for record in records:
        by_day[record[_EVENT] // _US_PER_DAY].append(record)
    written = []
    now = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    for day, rows in sorted(by_day.items()):
        columns = list(zip(*rows, strict=True))
        table = pa.table(
            [
                pa.array(column, type=field.type)
                for column, field in zip(columns, schema, strict=True)
            ],
            schema=schema,
        )
        date = (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()
        target = folder / f"date={date}" / f"part-{now}-{os.getpid()}-{next(_sequence):06d}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        pq.write_table(table, tmp)
        tmp.replace(target)
        written.append(target)
    return written


@dataclass(frozen=True)
class LogCounters:
    logged: int  # rows written to part files
    dropped: int  # rows lost: queue full (new rows, or the oldest after failed writes)
    pending: int  # rows waiting in the queue, those of failed writes included
    files: int
    last_error: str | None
    flush_failures: int = 0  # writes that failed (their rows wait for the next flush)

    def to_dict(self) -> dict[str, Any]:
        return {
            "logged": self.logged,
            "dropped": self.dropped,
            "pending": self.pending,
            "files": self.files,
            "flush_failures": self.flush_failures,
            "last_error": self.last_error,
        }


class PredictionLog:
    """A queue of records and the thread that writes them (see the module docstring).

    The queue is a ``collections.deque``: appending is atomic and wakes no thread, so a
    request pays well under a microsecond (a ``queue.Queue`` woke the writer on every
    put: ~0.1 ms and a thread switch per request). The writer looks every
    ``_POLL_S``.
    """

    def __init__(
        self, folder: Path, settings: PredictionLogSettings, schema: pa.Schema | None = None
    ) -> None:
        self.folder = folder
        self.settings = settings
        self.schema = schema  # None: log_schema()
        self._queue: deque[Record] = deque()
        self._limit = settings.max_queue_rows
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._logged = 0
        self._dropped = 0
        self._files = 0
        self._failures = 0
        self._last_error: str | None = None
        self._writing = threading.Lock()  # one flush at a time: rows stay in order

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def append(self, record: Record) -> None:
        """Queue one record; never blocks or raises (a full queue drops and counts it)."""
        if len(self._queue) >= self._limit:
            self._dropped += 1
            return
        self._queue.append(record)

    def counters(self) -> LogCounters:
        return LogCounters(
            self._logged,
            self._dropped,
            len(self._queue),
            self._files,
            self._last_error,
            self._failures,
        )

    def flush(self) -> LogCounters:
        """Write everything queued now (what a failed write left, too)."""
        self._drain(final=True)
        return self.counters()

    def close(self, timeout: float = 30.0) -> LogCounters:
        """Write what is queued and stop the writer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._drain(final=True)  # whatever arrived after the writer's last look
        return self.counters()

    def _run(self) -> None:
        interval = self.settings.flush_interval_s
        deadline = time.monotonic() + interval
        while not self._stop.wait(min(_POLL_S, interval)):
            due = time.monotonic() >= deadline
            if due or len(self._queue) >= self.settings.flush_rows:
                self._drain(final=due)
                deadline = time.monotonic() + interval
        self._drain(final=True)

    def _drain(self, *, final: bool) -> None:
        """Write the queue in chunks of ``flush_rows`` (all of it when ``final``); stop at
        the first failed write (its rows are back at the head, for the next flush)."""
        limit = self.settings.flush_rows
        with self._writing:
            while self._queue and (final or len(self._queue) >= limit):
                rows: list[Record] = []
                while self._queue and len(rows) < limit:
                    rows.append(self._queue.popleft())
                if not self._flush(rows):
                    return

    def _flush(self, rows: list[Record]) -> bool:
        """Write ``rows``, one part file per UTC day; the rows of the days not written go
        back to the head of the queue, in their order (the oldest beyond
        ``max_queue_rows`` are dropped). Whether every row was written."""
        by_day: dict[int, list[Record]] = defaultdict(list)
        for record in rows:
            by_day[record[_EVENT] // _US_PER_DAY].append(record)
        written: set[int] = set()
        for day in sorted(by_day):
            try:
                files = write_part(by_day[day], self.folder, self.schema)
            except Exception as exc:  # a write must never take the writer (or service) down
                kept = [r for r in rows if r[_EVENT] // _US_PER_DAY not in written]
                self._requeue(kept)
                self._failures += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "prediction log: writing %d rows failed (%s): kept for the next flush "
                    "(%d pending, %d dropped so far)",
                    len(kept),
                    self._last_error,
                    len(self._queue),
                    self._dropped,
                )
                return False
            written.add(day)
            self._logged += len(by_day[day])
            self._files += len(files)
        return True

    def _requeue(self, rows: list[Record]) -> None:
        """Put unwritten rows back at the head of the queue; beyond the limit the oldest
        rows go (counted as dropped)."""
        self._queue.extendleft(reversed(rows))
        while len(self._queue) > self._limit:
            self._queue.popleft()
            self._dropped += 1

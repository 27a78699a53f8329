"""The prediction log: every queued record lands in exactly one Parquet row, by UTC day."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fraud_detection.features.engineering import CATEGORICAL_FEATURES, MODEL_FEATURES
from fraud_detection.serving.predlog import LOG_COLUMNS, PredictionLog, log_schema
from fraud_detection.serving.settings import PredictionLogSettings

pytestmark = pytest.mark.unit

DAY_US = 86_400 * 1_000_000
JAN_1 = 1_767_225_600 * 1_000_000  # 2026-01-01T00:00:00Z in microseconds


def _record(i: int) -> tuple[object, ...]:
    features = [
        None if name == "card_txn_count_1h" and i % 3 else float(i) for name in MODEL_FEATURES
    ]
    for name in ("hour_of_day", "is_night", "is_online"):
        features[MODEL_FEATURES.index(name)] = i % 2
    event = JAN_1 + (i % 2) * DAY_US + i  # two UTC days
    return (
        f"r{i}",
        JAN_1,
        event,
        None if i % 4 == 0 else f"T{i}",
        i,
        i + 1,
        "3",
        i / 1000,
        i % 2 == 0,
        0.3,
        False,
        i % 5 == 0,
        None,
        0.5,
        "api",
        *features,
        "grocery",
        "online",
    )


def test_every_record_is_written_once_by_day(tmp_path: Path) -> None:
    # Given a log that flushes every 7 rows
    settings = PredictionLogSettings(flush_interval_s=0.05, flush_rows=7, max_queue_rows=1000)
    log = PredictionLog(tmp_path, settings)
    log.start()
    # When 100 predictions are logged and the service shuts down
    for i in range(100):
        log.append(_record(i))
    counters = log.close()
    # Then exactly 100 rows exist, each once, in the partition of its UTC day
    files = sorted(tmp_path.glob("date=*/part-*.parquet"))
    assert {f.parent.name for f in files} == {"date=2026-01-01", "date=2026-01-02"}
    table = pq.ParquetDataset(files).read()
    assert table.num_rows == 100 == counters.logged
    assert sorted(table.column("request_id").to_pylist()) == sorted(f"r{i}" for i in range(100))
    assert counters.dropped == 0
    assert counters.pending == 0
    # With the contract's columns and types (nulls kept as nulls)
    frame = pq.read_table(files[0]).to_pandas()
    assert list(frame.columns) == list(LOG_COLUMNS)
    assert pq.read_schema(files[0]).remove_metadata() == log_schema()
    assert list(frame.columns[-len(CATEGORICAL_FEATURES) :]) == list(CATEGORICAL_FEATURES)
    assert frame["feature_age_s"].isna().all()
    assert str(frame["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert not list(tmp_path.glob("date=*/.*.tmp"))  # no half-written file left


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    settings = PredictionLogSettings(flush_interval_s=60, flush_rows=10_000, max_queue_rows=10)
    log = PredictionLog(tmp_path, settings)  # writer not started: the queue only fills
    for i in range(25):
        log.append(_record(i))
    assert log.counters().dropped == 15
    assert log.close().logged == 10

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
        200,
        *((None,) * 5 if i % 2 else ("shadow", "4", i / 999, 0.4, 0.1)),
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


def _request_ids(folder: Path) -> list[str]:
    files = sorted(folder.glob("date=*/part-*.parquet"))
    if not files:
        return []
    return list(pq.ParquetDataset(files).read().column("request_id").to_pylist())


def test_a_failed_flush_keeps_its_rows_and_the_next_flush_writes_each_once(
    tmp_path: Path,
) -> None:
    # Given a log whose folder cannot be written: a file stands where the folder should be
    folder = tmp_path / "predictions"
    folder.write_text("not a folder")
    log = PredictionLog(folder, PredictionLogSettings(flush_rows=7, max_queue_rows=1000))
    for i in range(20):
        log.append(_record(i))

    # When a flush fails
    failed = log.flush()

    # Then no row is lost: all wait, and the counters say one write failed
    assert failed.logged == 0
    assert failed.pending == 20
    assert failed.dropped == 0
    assert failed.flush_failures == 1
    assert "predictions" in str(failed.last_error)
    assert failed.to_dict()["flush_failures"] == 1  # what /ready shows

    # When the folder is fixed, more rows arrive and the log flushes again
    folder.unlink()
    for i in range(20, 30):
        log.append(_record(i))
    counters = log.close()

    # Then every row arrived exactly once, and the counters match the files
    ids = _request_ids(folder)
    assert sorted(ids) == sorted(f"r{i}" for i in range(30))
    assert len(ids) == len(set(ids)) == counters.logged == 30
    assert (counters.pending, counters.dropped, counters.flush_failures) == (0, 0, 1)


def test_rows_kept_after_failed_flushes_are_bounded_dropping_the_oldest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fraud_detection.serving import predlog

    # Given a log of at most 10 rows whose writes fail while rows keep arriving
    log = PredictionLog(tmp_path, PredictionLogSettings(flush_rows=100, max_queue_rows=10))
    real_write = predlog.write_part
    arriving = iter(range(10, 16))

    def failing_write(records: object, folder: Path, schema: object = None) -> list[Path]:
        for _ in range(3):  # served while the write was failing
            log.append(_record(next(arriving)))
        raise OSError(28, "No space left on device")

    for i in range(10):
        log.append(_record(i))
    monkeypatch.setattr(predlog, "write_part", failing_write)

    # When two flushes fail
    log.flush()
    counters = log.flush()

    # Then the queue holds the newest 10 rows; the 6 oldest are counted as dropped
    assert (counters.pending, counters.dropped, counters.flush_failures) == (10, 6, 2)
    assert "No space left" in str(counters.last_error)

    # And once writes work, exactly the kept rows arrive, each once
    monkeypatch.setattr(predlog, "write_part", real_write)
    final = log.close()
    assert sorted(_request_ids(tmp_path)) == sorted(f"r{i}" for i in range(6, 16))
    assert final.logged + final.dropped == 16
    assert final.pending == 0


def test_old_part_files_without_the_shadow_columns_stay_readable(tmp_path: Path) -> None:
    import pyarrow as pa

    from fraud_detection.release.promotion import read_window
    from fraud_detection.serving import predlog

    folder = tmp_path / "serving" / "predictions"
    # Given a part file written before the status and shadow columns existed ...
    old_schema = pa.schema([f for f in log_schema() if f.name not in predlog.HEAD_COLUMNS[15:21]])
    old_rows = [r[:15] + r[21:] for r in (_record(i) for i in range(4))]
    predlog.write_part(old_rows, folder, old_schema)
    # ... and one written now, with a challenger in shadow on the even rows
    predlog.write_part([_record(i) for i in range(4, 10)], folder)
    # When the log is read as monitoring and the shadow check read it
    from fraud_detection.config import StatePaths
    from fraud_detection.monitoring.served import read_predictions

    frame = read_predictions(StatePaths(root=tmp_path))
    window = read_window(tmp_path, challenger="4", champion="3", since=None)
    # Then every row is there, and the shadow window holds the new rows scored by both
    assert len(frame) == 10
    assert len(window["shadow_scores"]) == 3  # rows 4, 6, 8
    assert list(window["shadow_scores"]) == [4 / 999, 6 / 999, 8 / 999]
    assert window["shadow_threshold"] == 0.4

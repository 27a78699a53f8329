"""The partition ledger: which raw partitions landed, and the data gate's verdict on each.

One JSON record per validated batch, written by the gates (``fraud_detection.validation.gate``)
and read by everything that must only use accepted data (feature building, training, batch
scoring, monitoring, the CT sensor)::

    <state>/raw/date=YYYY-MM-DD/transactions.parquet    a partition (fraud simulate, a feed)
    <state>/validation/raw/YYYY-MM-DD.json               the raw gate's verdict on it
    <state>/validation/training/<name>.json              the training-set gate's verdicts

A verdict holds the fingerprint of the file it judged: when the file changes (a new
``fraud simulate`` run, a re-delivered day) the old verdict no longer applies, and the day
counts as never validated until the gate sees it again. An unreadable record counts as
never validated too: the ledger fails closed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fraud_detection.config import StatePaths

__all__ = [
    "accepted_days",
    "current_raw_records",
    "current_record",
    "fingerprint",
    "partition_path",
    "partition_status",
    "raw_partition_days",
    "raw_records_folder",
    "read_record",
    "training_records_folder",
    "unchanged",
    "write_json",
]

PARTITION_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


def partition_path(paths: StatePaths, day: dt.date) -> Path:
    """``raw/date=YYYY-MM-DD/transactions.parquet``."""
    return paths.raw / f"date={day.isoformat()}" / "transactions.parquet"


def raw_partition_days(paths: StatePaths) -> list[dt.date]:
    """Every day with a partition folder on disk, in date order."""
    days = []
    if paths.raw.is_dir():
        for child in paths.raw.iterdir():
            match = PARTITION_DIR.match(child.name)
            if match and child.is_dir():
                days.append(dt.date.fromisoformat(match.group(1)))
    return sorted(days)


def raw_records_folder(paths: StatePaths) -> Path:
    return paths.root / "validation" / "raw"


def training_records_folder(paths: StatePaths) -> Path:
    return paths.root / "validation" / "training"


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write atomically: a reader never sees half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def fingerprint(path: Path) -> dict[str, Any]:
    stat = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return {
        "path": str(path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": digest.hexdigest(),
    }


def unchanged(source: Mapping[str, Any]) -> bool:
    """Whether the validated file is still the one on disk (cheap check first)."""
    path = Path(source["path"])
    try:
        stat = path.stat()
    except OSError:
        return False
    if stat.st_size == source.get("size") and stat.st_mtime_ns == source.get("mtime_ns"):
        return True
    return stat.st_size == source.get("size") and fingerprint(path)["sha256"] == source.get(
        "sha256"
    )


def read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # unreadable counts as never validated: the gate fails closed
    return record if isinstance(record, dict) else None


def current_record(path: Path) -> dict[str, Any] | None:
    """A raw record, if it still describes the partition on disk (else None)."""
    record = read_record(path)
    if record is None:
        return None
    source = record.get("source")
    return record if source is None or unchanged(source) else None


def current_raw_records(paths: StatePaths) -> dict[dt.date, dict[str, Any]]:
    """Each validated day's current record, in date order."""
    records: dict[dt.date, dict[str, Any]] = {}
    folder = raw_records_folder(paths)
    if not folder.is_dir():
        return records
    for path in sorted(folder.glob("*.json")):
        try:
            day = dt.date.fromisoformat(path.stem)
        except ValueError:
            continue
        if (record := current_record(path)) is not None:
            records[day] = record
    return records


def partition_status(paths: StatePaths, day: dt.date) -> bool | None:
    """True if ``day`` was accepted, False if rejected, None if never validated.

    None also when the partition file changed since it was validated (for example a new
    ``fraud simulate`` run): the old verdict no longer applies, validate it again.
    """
    record = current_record(raw_records_folder(paths) / f"{day.isoformat()}.json")
    return None if record is None else record.get("success") is True


def accepted_days(paths: StatePaths) -> list[dt.date]:
    """The days whose partition, as it is on disk now, passed the raw gate (date order)."""
    return [
        day for day, record in current_raw_records(paths).items() if record.get("success") is True
    ]

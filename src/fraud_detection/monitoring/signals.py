"""Signals from monitoring to the level-1 triggers: performance degradation and drift.

Monitoring writes a signal as a small JSON file under ``<state>/signals/pending/``; the
``signal-trigger`` flow starts a CT run for pending signals and moves each one to
``<state>/signals/consumed/`` with the run's outcome. Files rather than a message bus keep
the local profile dependency-free; a signal is written atomically, so a reader never sees
half of one.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from fraud_detection.config import StatePaths
from fraud_detection.errors import FraudError

Kind = Literal["performance", "drift"]
KINDS: tuple[str, ...] = ("performance", "drift")


@dataclass(frozen=True)
class Signal:
    """A reason to retrain: what was measured, against which threshold, and when."""

    kind: Kind
    detail: str
    metric: str
    value: float
    threshold: float
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    extra: dict[str, Any] = field(default_factory=dict)


def _folder(paths: StatePaths, which: str) -> Path:
    return paths.root / "signals" / which


def emit(paths: StatePaths, signal: Signal) -> Path:
    """Write ``signal`` as pending; the next ``signal-trigger`` run consumes it."""
    if signal.kind not in KINDS:
        raise FraudError(f"unknown signal kind {signal.kind!r}: choose from {', '.join(KINDS)}")
    folder = _folder(paths, "pending")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{signal.at.replace(':', '')}-{signal.kind}-{signal.id}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(signal), indent=2) + "\n")
    tmp.replace(path)
    return path


def pending(paths: StatePaths) -> list[Signal]:
    """Pending signals, oldest first."""
    folder = _folder(paths, "pending")
    if not folder.is_dir():
        return []
    return [Signal(**json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))]


def consumed(paths: StatePaths) -> list[Signal]:
    """Signals already acted on by a CT run, oldest first (the outcome stays in the file)."""
    folder = _folder(paths, "consumed")
    if not folder.is_dir():
        return []
    names = set(Signal.__dataclass_fields__)
    out = []
    for path in sorted(folder.glob("*.json")):
        payload = json.loads(path.read_text())
        out.append(Signal(**{k: v for k, v in payload.items() if k in names}))
    return out


def consume(paths: StatePaths, signal: Signal, outcome: str) -> Path:
    """Move a pending signal to ``consumed/``, noting what the CT run did about it."""
    source = next(_folder(paths, "pending").glob(f"*-{signal.id}.json"), None)
    target_dir = _folder(paths, "consumed")
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / (source.name if source else f"{signal.id}.json")
    payload = {
        **asdict(signal),
        "consumed_at": dt.datetime.now(dt.UTC).isoformat(),
        "outcome": outcome,
    }
    target.write_text(json.dumps(payload, indent=2) + "\n")
    if source is not None:
        source.unlink()
    return target

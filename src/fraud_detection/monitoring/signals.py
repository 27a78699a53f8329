"""Signals from monitoring to the level-1 triggers: performance degradation and drift.

Monitoring writes a signal as a small JSON file under ``<state>/signals/pending/`` and
announces it as a Prefect event (``fraud.monitoring.drift`` / ``.performance``,
:mod:`fraud_detection.events`); the ``ct-on-signal`` deployment's triggers start a CT run
(``trigger=drift|performance``), which retrains on the latest window and, when it ends,
moves every signal it answered to ``<state>/signals/consumed/`` with its outcome. The files
are the offline record (and what ``fraud ct signals`` reads without a server); a signal is
written atomically, so a reader never sees half of one.
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
    """Write ``signal`` as pending, then announce it (:func:`announce`)."""
    if signal.kind not in KINDS:
        raise FraudError(f"unknown signal kind {signal.kind!r}: choose from {', '.join(KINDS)}")
    folder = _folder(paths, "pending")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{signal.at.replace(':', '')}-{signal.kind}-{signal.id}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(signal), indent=2) + "\n")
    tmp.replace(path)
    announce(signal)
    return path


def announce(signal: Signal) -> bool:
    """Send the signal's Prefect event (again, for one still pending: its first event may
    have fallen in a trigger's quiet window); whether a server received it."""
    from fraud_detection import events

    return events.signal_raised(signal.kind, signal.id, asdict(signal))


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


def answering(paths: StatePaths, signal_id: str | None) -> tuple[list[Signal], str | None]:
    """The signals a CT run started by a signal answers: every pending one (one retraining
    answers them all), or, when the signal that started it (``signal_id``) was already
    answered by an earlier run, none and why the run has nothing to do."""
    if signal_id and not signal_id.replace("-", "").replace("_", "").isalnum():
        raise FraudError(f"signal_id {signal_id!r} is not a signal id (letters and digits)")
    waiting = pending(paths)
    if signal_id and not any(s.id == signal_id for s in waiting):
        done = next(_folder(paths, "consumed").glob(f"*{signal_id}.json"), None)
        if done is not None:
            outcome = json.loads(done.read_text()).get("outcome", "")
            return [], f"signal {signal_id} already consumed ({outcome or 'no outcome'})"
    return waiting, None

"""``fraud model rollback``: the champion back to an earlier version, in one audited step.

The registry does the move (:func:`fraud_detection.registry.tracking.rollback`: under the
promotion lock, refusing a version that does not exist, lacks its lineage or is already
the champion); this step adds who asked (``user@host``), a record of kind ``rollback`` in
``<state>/ct/runs.jsonl`` beside CT's runs, and the serving notice CT's promotion writes
(``<state>/serving/champion.json``), so a running service reloads within a quarter second
instead of at its next registry poll.
"""

from __future__ import annotations

import datetime as dt
import getpass
import socket
from dataclasses import asdict, dataclass
from typing import Any

from fraud_detection.config import project_dir
from fraud_detection.registry import runs, tracking
from fraud_detection.training import ct

KIND = "rollback"


@dataclass(frozen=True)
class Rollback:
    """What a rollback did: the ledger's record of kind ``rollback``."""

    model: str
    to_version: str
    from_version: str | None
    reason: str
    by: str  # user@host
    at: str
    code_version: str
    kind: str = KIND

    @property
    def champion_version(self) -> str:
        return self.to_version

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "champion_version": self.to_version, "outcome": "rolled back"}


def operator() -> str:
    """Who runs this: ``user@host``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def rollback(ctx: ct.CTContext, reason: str, to: str | None = None) -> Rollback:
    """Make ``to`` (default: the previous champion) the champion again; record and notify.

    Raises :class:`~fraud_detection.registry.tracking.RegistryError` (one line) when there
    is nothing to roll back to or the registry refuses the version.
    """
    from fraud_detection.registry import lineage

    tracking.setup_mlflow(ctx.profile)
    name = ctx.model_name
    if to is None:
        to = tracking.previous_champion(name)
        if to is None:
            current = tracking.champion(name)
            raise tracking.RegistryError(
                f"cannot roll back {name}: no earlier champion than "
                f"{'none' if current is None else 'version ' + str(current.version)} "
                "(name one with --to VERSION)"
            )
    by = operator()
    result = tracking.rollback(name, str(to), reason=reason, by=by)
    record = Rollback(
        model=name,
        to_version=str(to),
        from_version=result.previous,
        reason=reason.strip(),
        by=by,
        at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        code_version=lineage.git_commit(project_dir()),
    )
    runs.append_record(ctx.paths, record.to_dict())
    ct.notify_serving(ctx, str(to), promoted=True)
    return record

"""Prefect events for the level-1 triggers: data arrival and monitoring signals.

What happened is announced as a Prefect event; the deployments of ``prefect.yaml``
start CT from them through their ``triggers:`` (Prefect automations). The files stay
the offline record: a raw partition under ``<state>/raw/``, a signal under
``<state>/signals/``; an event only says that one is there.

| event                            | resource id                   | emitted by             |
|----------------------------------|-------------------------------|------------------------|
| ``fraud.data.partition-landed``  | ``fraud.partition.<date>``    | ``fraud simulate``     |
| ``fraud.monitoring.drift``       | ``fraud.signal.<signal id>``  | monitoring (a signal)  |
| ``fraud.monitoring.performance`` | ``fraud.signal.<signal id>``  | monitoring (a signal)  |

An event is sent only to a Prefect server that is configured (``PREFECT_API_URL``) and
answers: without one there is nothing to trigger, and ``emit_event`` would otherwise
start a temporary server of its own. A flow run always has its server configured.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

PARTITION_LANDED = "fraud.data.partition-landed"
SIGNAL_PREFIX = "fraud.monitoring."
# Every event a trigger of prefect.yaml may expect (`make check-deployments` checks).
EVENTS: tuple[str, ...] = (
    PARTITION_LANDED,
    SIGNAL_PREFIX + "drift",
    SIGNAL_PREFIX + "performance",
)

log = logging.getLogger(__name__)


@functools.cache
def _server() -> str | None:
    """The configured Prefect API when it answers, else None (checked once a process)."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return None
    try:
        if httpx.get(f"{str(url).rstrip('/')}/health", timeout=3).status_code == 200:
            return str(url)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        log.warning("Prefect server %s does not answer (%s): no event sent", url, exc)
        return None
    log.warning("Prefect server %s is not healthy: no event sent", url)
    return None


def enabled() -> bool:
    """Whether events are sent: a Prefect server is configured and answers."""
    return _server() is not None


def _emit(event: str, resource: Mapping[str, str], payload: Mapping[str, Any]) -> bool:
    from prefect.events import emit_event

    if _server() is None:
        return False
    return emit_event(event=event, resource=dict(resource), payload=dict(payload)) is not None


def partitions_landed(days: Sequence[dt.date], source: str = "") -> int:
    """Announce raw partitions that landed (one event each); how many were sent."""
    sent = 0
    for day in days:
        resource = {
            "prefect.resource.id": f"fraud.partition.{day.isoformat()}",
            "prefect.resource.name": f"raw partition {day.isoformat()}",
            "fraud.partition.date": day.isoformat(),
        }
        sent += _emit(PARTITION_LANDED, resource, {"date": day.isoformat(), "source": source})
    return sent


def signal_raised(kind: str, signal_id: str, payload: Mapping[str, Any]) -> bool:
    """Announce a monitoring signal (its file is already written); whether it was sent."""
    resource = {
        "prefect.resource.id": f"fraud.signal.{signal_id}",
        "prefect.resource.name": f"{kind} signal {signal_id}",
        "fraud.signal.kind": kind,
    }
    return _emit(SIGNAL_PREFIX + kind, resource, payload)

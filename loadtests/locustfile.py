"""Locust load test of the prediction API: ``make loadtest`` (docs/serving.md).

Each simulated user posts ``/predict`` back to back (no wait: a closed loop, so the users
are the concurrency) with Locust's ``FastHttpUser`` (geventhttpclient, its cheapest
client). The bodies are transactions of the newest raw day of the state folder
(``FRAUD_PROFILE__STATE_DIR`` or the profile's), each sent with a transaction id of its
own, so every request is a new event for its card (the service appends it to the card's
online state) and none is answered as a retry. ``FRAUD_LOADTEST_ROWS`` sets how many
transactions are cycled (default 1,000); ``FRAUD_API_KEY`` is sent as ``X-API-Key`` when
set.

Run it by hand as any locustfile::

    .venv/bin/locust -f loadtests/locustfile.py --host http://127.0.0.1:8000 \\
        --headless -u 16 -r 16 -t 30s

``benchmarks/bench_loadgen.py`` measures it against ``fraud loadtest`` on the same server.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

from locust import FastHttpUser, constant, events, task

_BODIES: list[dict[str, Any]] = []
_IDS = itertools.count()


@events.init.add_listener
def _load_bodies(environment: Any, **_: Any) -> None:
    """Read the request bodies once per process, before any user starts."""
    from fraud_detection.config import load_profile, state_paths
    from fraud_detection.release.loadtest import bodies_from_state

    rows = int(os.environ.get("FRAUD_LOADTEST_ROWS", "1000"))
    state = state_paths(load_profile()).root
    _BODIES.extend(bodies_from_state(state, rows))


class PredictUser(FastHttpUser):
    """One client scoring transactions one after another."""

    wait_time = constant(0)

    def on_start(self) -> None:
        key = os.environ.get("FRAUD_API_KEY")
        self._headers = {"X-API-Key": key} if key else {}
        self._tag = f"locust-{os.getpid()}-{id(self):x}"

    @task
    def predict(self) -> None:
        n = next(_IDS)
        body = {**_BODIES[n % len(_BODIES)], "transaction_id": f"{self._tag}-{n}"}
        self.client.post("/predict", json=body, headers=self._headers, name="/predict")

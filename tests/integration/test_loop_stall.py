"""Nothing stalls the event loop: a held online-store lock and large batches leave
``/health`` answering in milliseconds, and a request stuck behind the lock gets a 503
naming it, never a hang.

A real ``fraud serve`` (its own process, uvicorn) on a served world: an in-process
transport would run the app on the test's own loop and hide the stall. ``/health`` is
sent every 10 ms on a fixed schedule, each request on its own connection when the others
are busy (an open loop): a stalled server then shows as every request sent during the
stall waiting, not as one slow answer among many.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest

from fraud_detection.config import StatePaths
from fraud_detection.features import store
from fraud_detection.features.online import LOCK_WAIT_S, transaction_key
from fraud_detection.serving.schemas import requests_from_raw
from tests.stack import ROOT, free_port
from tests.worlds import served_world

pytestmark = pytest.mark.integration

HEALTH_P99_MS = 50.0
QUIET_P99_MS = 10.0  # an idle service's /health p99 on a quiet machine is a few ms
HEALTH_EVERY_S = 0.01
HOLD_S = 4.0  # longer than LOCK_WAIT_S: requests behind the lock must give up
BATCH_ROWS = 1_000  # serving.max_batch_rows


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> StatePaths:
    return served_world(tmp_path_factory.mktemp("stall"))


def _serve(world: StatePaths, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    """``fraud serve`` on the world in a process of its own, once it is ready."""
    port = free_port()
    api = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fraud_detection.cli",
            "serve",
            "--port",
            str(port),
            "--state-dir",
            str(world.root),
        ],
        env={**os.environ, "FRAUD_SERVING__RELOAD_INTERVAL_S": "60", **env},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/ready", timeout=5).status_code == 200:
                return api, base
        if api.poll() is not None or time.monotonic() > deadline:
            api.kill()
            pytest.fail("fraud serve exited or was not ready within 120 s")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def server(world: StatePaths) -> Iterator[str]:
    api, base = _serve(world)
    try:
        yield base
    finally:
        api.terminate()
        api.wait(timeout=30)


@pytest.fixture(scope="module")
def bodies(world: StatePaths) -> list[dict[str, Any]]:
    last = sorted(world.raw.glob("date=*/transactions.parquet"))[-1]
    return requests_from_raw(pd.read_parquet(last).head(BATCH_ROWS))


# The probe runs in a process of its own that imports little: in the test's process
# (pandas, Feast, MLflow loaded) a garbage collection or the load's own threads would
# delay the probe and show as a slow /health.
_PROBE = """
import asyncio, json, sys, threading, time
import httpx

base, every = sys.argv[1], float(sys.argv[2])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
latencies, failures = [], []

async def one(http):
    sent = time.perf_counter()
    try:
        response = await http.get("/health")
    except httpx.HTTPError as exc:
        failures.append(f"{type(exc).__name__}: {exc}")
        return
    latencies.append((time.perf_counter() - sent) * 1e3)
    if response.status_code != 200:
        failures.append(f"HTTP {response.status_code}")

async def main():
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=50)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        await one(http)  # connected before the first figure counts
        latencies.clear()
        print("ready", flush=True)
        tasks, due = [], time.perf_counter()
        while not stop.is_set():
            tasks.append(asyncio.create_task(one(http)))
            due += every
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        await asyncio.gather(*tasks)

asyncio.run(main())
print(json.dumps({"latencies": latencies, "failures": failures}), flush=True)
"""


class HealthProbe:
    """``GET /health`` every 10 ms on a fixed schedule, whether or not earlier answers came
    back (an open loop: a stall delays every probe sent during it), from its own process."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.latencies: list[float] = []
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> HealthProbe:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _PROBE, self.base, str(HEALTH_EVERY_S)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        assert self._process.stdout.readline().strip() == "ready"
        return self

    def __exit__(self, *_: object) -> None:
        assert self._process is not None
        out, _err = self._process.communicate(timeout=120)  # closes stdin: the probe stops
        result = json.loads(out.strip().splitlines()[-1])
        assert not result["failures"], result["failures"][:5]
        self.latencies = result["latencies"]

    def figures(self) -> tuple[int, float, float]:
        """How many probes answered, their p99 and max (ms)."""
        latencies = np.asarray(self.latencies)
        assert len(latencies) > 100, len(latencies)
        return len(latencies), float(np.percentile(latencies, 99)), float(latencies.max())


def _budget(server: str) -> float:
    """The /health p99 budget: 50 ms, plus what the machine itself adds on top of a quiet
    machine's idle p99 (measured now, on the same service with nothing else to do): a
    busy shared machine must not fail the test, a stall (seconds) always does."""
    with HealthProbe(server) as idle:
        time.sleep(2.0)
    _, p99, worst = idle.figures()
    budget = HEALTH_P99_MS + max(0.0, p99 - QUIET_P99_MS)
    print(f"idle: /health p99 {p99:.1f} ms, max {worst:.0f} ms; budget {budget:.0f} ms")
    return budget


def test_a_held_store_lock_neither_stalls_health_nor_hangs_a_request(
    world: StatePaths, server: str, bodies: list[dict[str, Any]]
) -> None:
    # Given a running service whose SQLite online store another connection has locked
    # for writing (BEGIN IMMEDIATE: what a long write by another process holds)
    budget = _budget(server)
    online = store.open_online(world, apply=False)
    path = online._file
    assert path is not None
    answers: list[tuple[dict[str, Any], float, int, str]] = []
    stop = threading.Event()

    def client(k: int) -> None:
        with httpx.Client(base_url=server, timeout=30) as http:
            i = 0
            while not stop.is_set():
                body = {**bodies[(k * 101 + i) % len(bodies)], "transaction_id": f"lock-{k}-{i}"}
                started = time.perf_counter()
                response = http.post("/predict", json=body)
                seconds = time.perf_counter() - started
                answers.append((body, seconds, response.status_code, response.text))
                i += 1
                time.sleep(0.05)

    with HealthProbe(server) as probe, contextlib.closing(sqlite3.connect(path)) as holder:
        time.sleep(0.5)
        holder.isolation_level = None
        holder.execute("BEGIN IMMEDIATE")
        held_at = time.monotonic()
        # When four clients keep sending /predict while the lock is held
        clients = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for thread in clients:
            thread.start()
        time.sleep(0.5)
        ready = httpx.get(f"{server}/ready", timeout=30)
        time.sleep(max(0.0, HOLD_S - (time.monotonic() - held_at)))
        holder.execute("ROLLBACK")
        time.sleep(1.0)
        stop.set()
        for thread in clients:
            thread.join(timeout=30)
    count, p99, worst = probe.figures()
    print(f"held lock: /health p99 {p99:.1f} ms, max {worst:.0f} ms, {count} probes")

    # Then /health kept answering at once
    assert p99 < budget, f"/health p99 {p99:.1f} ms (max {worst:.0f} ms, {count} probes)"
    # and no /predict hung: each answered 200 or, behind the lock, a 503 naming it
    assert {status for _, _, status, _ in answers} <= {200, 503}, answers[:3]
    busy = [text for _, _, status, text in answers if status == 503]
    assert busy, "no request was held up by the lock"
    assert all("online store busy" in text and "lock" in text for text in busy), busy[:3]
    longest = max(seconds for _, seconds, _, _ in answers)
    assert longest < 2 * LOCK_WAIT_S + 1.0, f"a /predict took {longest:.1f} s"
    # and /ready said why while the lock was held
    assert ready.status_code == 503, ready.text
    store_report = ready.json()["online_store"]
    assert not store_report["ok"]
    assert "online store busy" in store_report["error"], store_report

    # And once the lock is gone, a refused transaction sent again counts once
    retried = next(body for body, _, status, _ in answers if status == 503)
    assert httpx.post(f"{server}/predict", json=retried, timeout=30).status_code == 200
    assert httpx.get(f"{server}/ready", timeout=30).status_code == 200
    t_us = int(pd.Timestamp(retried["timestamp"]).value // 1_000)
    key = transaction_key(
        retried["transaction_id"],
        retried["card_id"],
        t_us,
        retried["merchant_id"],
        retried["amount"],
    )
    try:
        keys = online.read_state(retried["card_id"]).keys.tolist()
    finally:
        online.close()
    assert keys.count(key) == 1


def test_large_batches_do_not_stall_health(server: str, bodies: list[dict[str, Any]]) -> None:
    # Given four clients, each with three batches of 1,000 transactions (the limit)
    assert len(bodies) == BATCH_ROWS
    budget = _budget(server)
    payloads = {
        (k, j): orjson.dumps(
            {
                "transactions": [
                    {**body, "transaction_id": f"batch-{k}-{j}-{i}"}
                    for i, body in enumerate(bodies)
                ]
            }
        )
        for k in range(4)
        for j in range(3)
    }
    statuses: list[int] = []

    def client(k: int) -> None:
        with httpx.Client(base_url=server, timeout=120) as http:
            for j in range(3):
                response = http.post(
                    "/predict/batch",
                    content=payloads[(k, j)],
                    headers={"content-type": "application/json"},
                )
                statuses.append(response.status_code)

    # When they send them all at once
    with HealthProbe(server) as probe:
        time.sleep(0.5)
        clients = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(timeout=120)
        time.sleep(0.2)
    count, p99, worst = probe.figures()
    print(f"large batches: /health p99 {p99:.1f} ms, max {worst:.0f} ms, {count} probes")

    # Then every batch is scored and /health kept answering at once
    assert statuses == [200] * 12, statuses
    assert p99 < budget, f"/health p99 {p99:.1f} ms (max {worst:.0f} ms, {count} probes)"


# ------------------------------------------------------- kill -9: what is lost, and no more

FLUSH_INTERVAL_S = 0.5


def _logged_ids(world: StatePaths, prefix: str) -> set[str]:
    """Transaction ids starting with ``prefix`` in the prediction log's part files."""
    ids: set[str] = set()
    for part in (world.root / "serving" / "predictions").glob("date=*/part-*.parquet"):
        column = pd.read_parquet(part, columns=["transaction_id"])["transaction_id"]
        ids.update(t for t in column.dropna() if t.startswith(prefix))
    return ids


def test_a_killed_service_loses_only_the_unflushed_log_window_and_no_card_state(
    world: StatePaths, bodies: list[dict[str, Any]]
) -> None:
    # Given a service that flushes its prediction log every 0.5 s
    api, base = _serve(world, FRAUD_SERVING__PREDICTION_LOG__FLUSH_INTERVAL_S=str(FLUSH_INTERVAL_S))
    sent: list[dict[str, Any]] = []
    try:
        with httpx.Client(base_url=base, timeout=30) as http:

            def send(tag: str, count: int) -> None:
                for i in range(count):
                    body = {**bodies[(len(sent) * 7) % len(bodies)], "transaction_id": f"{tag}{i}"}
                    assert http.post("/predict", json=body).status_code == 200
                    sent.append(body)

            # When 200 transactions are answered, then, after more than a flush interval,
            # 50 more, and the process is killed (SIGKILL) right after the last answer
            send("kill-early-", 200)
            time.sleep(4 * FLUSH_INTERVAL_S)
            send("kill-late-", 50)
    finally:
        api.kill()
        api.wait(timeout=30)

    # Then every transaction answered before the last flush interval is in the log
    early = _logged_ids(world, "kill-early-")
    assert early == {f"kill-early-{i}" for i in range(200)}, f"{200 - len(early)} lost"
    late = _logged_ids(world, "kill-late-")
    print(f"kill -9: log kept 200/200 older rows, {len(late)}/50 of the last in-flight ones")
    # and every answered transaction is in its card's online state (written before the
    # answer): nothing of the features the next request sees is lost
    online = store.open_online(world, apply=False)
    try:
        missing = []
        for body in sent:
            t_us = int(pd.Timestamp(body["timestamp"]).value // 1_000)
            key = transaction_key(
                body["transaction_id"], body["card_id"], t_us, body["merchant_id"], body["amount"]
            )
            if key not in set(online.read_state(body["card_id"]).keys.tolist()):
                missing.append(body["transaction_id"])
    finally:
        online.close()
    assert missing == [], f"{len(missing)} answered transactions missing from the card state"

    # And a restarted service is ready at once, with no repair
    again, base = _serve(world)
    try:
        assert httpx.get(f"{base}/ready", timeout=30).status_code == 200
    finally:
        again.terminate()
        again.wait(timeout=30)

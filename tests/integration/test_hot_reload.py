"""Hot reload: the service follows the champion alias without a restart or a failed request.

A real uvicorn server on a free port, concurrent clients, and the registry moving under
them: first to a good version 2, then to a version 3 whose model file is gone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import uvicorn

from fraud_detection.config import StatePaths
from fraud_detection.registry import tracking
from fraud_detection.serving.app import create_app
from fraud_detection.serving.schemas import requests_from_raw
from fraud_detection.serving.settings import load_serving_config
from tests.conftest import free_port
from tests.worlds import served_world, train_version

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "fraud-detector"
CLIENTS = 8


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[StatePaths, str]:
    paths = served_world(tmp_path_factory.mktemp("reload"))
    version = train_version(paths, seed=2)  # registered, not promoted
    return paths, version


@pytest.fixture(scope="module")
def server(world: tuple[StatePaths, str]) -> Iterator[str]:
    paths, _ = world
    config = load_serving_config(overrides={"reload_interval_s": 0.5})
    app = create_app(paths.root, config=config)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=60)


@pytest.fixture(scope="module")
def bodies(world: tuple[StatePaths, str]) -> list[dict[str, Any]]:
    paths, _ = world
    last = sorted(paths.raw.glob("date=*/transactions.parquet"))[-1]
    return requests_from_raw(pd.read_parquet(last).head(300))


def _promote(version: str, expected: str) -> None:
    result = tracking.promote(
        MODEL, version, expected_champion=expected, decision={"promote": True, "reasons": ["test"]}
    )
    assert result.promoted, result.reason


def _wait_for(url: str, check: Any, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = httpx.get(f"{url}/ready", timeout=10).json()
        if check(body):
            return body
        assert time.monotonic() < deadline, f"timed out; /ready says {body}"
        time.sleep(0.2)


def test_promotion_under_load_switches_versions_without_a_failed_request(
    world: tuple[StatePaths, str], server: str, bodies: list[dict[str, Any]]
) -> None:
    _, v2 = world
    stop = threading.Event()
    seen: list[list[str]] = [[] for _ in range(CLIENTS)]
    failures: list[str] = []

    def client(k: int) -> None:
        with httpx.Client(base_url=server, timeout=30) as http:
            i = k
            while not stop.is_set():
                try:
                    response = http.post("/predict", json=bodies[i % len(bodies)])
                except httpx.HTTPError as exc:
                    failures.append(f"client {k}: {type(exc).__name__}: {exc}")
                    continue
                if response.status_code != 200:
                    failures.append(f"client {k}: {response.status_code} {response.text[:200]}")
                else:
                    seen[k].append(response.json()["model_version"])
                i += CLIENTS

    # Given >= 8 clients calling /predict on version 1
    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.5)
        # When version 2 becomes the champion while they call
        _promote(v2, expected="1")
        _wait_for(server, lambda b: b["model"]["model_version"] == v2)
        time.sleep(1.5)  # and they keep calling for a while
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)

    # Then no request failed, and every client moved from version 1 to 2, never back
    assert failures == []
    for versions in seen:
        assert versions
        assert versions[0] == "1"
        assert versions[-1] == v2
        switch = versions.index(v2)
        assert set(versions[switch:]) == {v2}, "a client saw the old version after the new"
    assert sum(len(v) for v in seen) > 50


def test_a_broken_version_is_refused_and_the_old_one_keeps_serving(
    world: tuple[StatePaths, str],
    server: str,
    bodies: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    paths, v2 = world
    _wait_for(server, lambda b: b["model"]["model_version"] == v2)
    # Given a version 3 whose model file has been deleted from the artifact store
    v3 = train_version(paths, seed=3)
    source = tracking.version_info(MODEL, v3)["download_uri"].removeprefix("file://")
    (Path(source) / "model.pkl").unlink()

    # When it becomes the champion
    with caplog.at_level(logging.WARNING, logger="fraud_detection.serving.champion"):
        _promote(v3, expected=v2)
        ready = _wait_for(server, lambda b: v3 in b["model"]["failed_versions"])

    # Then the service still answers with version 2 and says why it did not switch
    response = httpx.post(f"{server}/predict", json=bodies[0], timeout=10)
    assert response.status_code == 200
    assert response.json()["model_version"] == v2
    assert ready["ready"] is True  # still serving, on the previous champion
    assert ready["model"]["champion_alias"] == v3
    assert ready["model"]["serving_champion"] is False
    assert ready["model"]["last_reload"]["ok"] is False
    assert f"version {v3}" in ready["model"]["last_reload"]["error"]
    assert any(
        f"version {v3} failed to load; still serving version {v2}" in r.getMessage()
        for r in caplog.records
    )

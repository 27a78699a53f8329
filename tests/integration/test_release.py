"""Model release: ``fraud model rollback`` under load, and the rollbacks it refuses.

A real uvicorn server on a free port serves champion version 2 (version 1 was champion
before it); clients call ``/predict`` while the champion is rolled back with the CLI.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest
import uvicorn

from fraud_detection.config import StatePaths
from fraud_detection.registry import runs, tracking
from fraud_detection.serving.app import create_app
from fraud_detection.serving.schemas import requests_from_raw
from fraud_detection.serving.settings import load_serving_config
from fraud_detection.training import ct
from tests.conftest import fraud_in_process, free_port
from tests.worlds import served_world, train_version

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "fraud-detector"
CLIENTS = 4


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> StatePaths:
    paths = served_world(tmp_path_factory.mktemp("release"))
    assert train_version(paths, seed=2, promote=True) == "2"
    return paths


@pytest.fixture(scope="module")
def server(world: StatePaths) -> Iterator[str]:
    # A slow registry poll: only champion.json can make the switch within seconds.
    config = load_serving_config(overrides={"reload_interval_s": 60.0})
    app = create_app(world.root, config=config)
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
def bodies(world: StatePaths) -> list[dict[str, Any]]:
    last = sorted(world.raw.glob("date=*/transactions.parquet"))[-1]
    return requests_from_raw(pd.read_parquet(last).head(300))


def _served(url: str) -> str:
    return str(httpx.get(f"{url}/ready", timeout=10).json()["model"]["model_version"])


def test_rollback_under_load_serves_the_previous_champion_without_a_failed_request(
    world: StatePaths,
    server: str,
    bodies: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _served(server) == "2"
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

    # Given clients calling /predict on champion version 2
    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.5)
        # When the champion is rolled back, naming no version
        code, out, err = fraud_in_process(
            capsys,
            "model",
            "rollback",
            "--reason",
            "alerts doubled",
            "--state-dir",
            str(world.root),
        )
        rolled = time.monotonic()
        assert code == 0, err
        while _served(server) != "1":
            assert time.monotonic() - rolled < 5, "the service did not switch within 5 s"
            time.sleep(0.1)
        switched_in = time.monotonic() - rolled
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)

    # Then the previous champion serves within seconds, and no request failed
    assert "champion is version 1 again (was version 2)" in out
    assert switched_in < 5
    assert failures == []
    for versions in seen:
        assert versions[0] == "2"
        assert versions[-1] == "1"
        assert set(versions[versions.index("1") :]) == {"1"}
    # and the move is audited: on the version ...
    tags = tracking.version_info(MODEL, "1")["tags"]
    assert tags["rolled_back_from"] == "2"
    assert tags["rollback_reason"] == "alerts doubled"
    assert "@" in tags["rolled_back_by"]
    assert tags["rolled_back_at"]
    assert tracking.version_info(MODEL, "2")["tags"]["rolled_back_to"] == "1"
    # ... and in the ledger, which CT's own reading leaves out
    lines = (world.root / "ct" / "runs.jsonl").read_text().splitlines()
    record = json.loads(lines[-1])
    assert record["kind"] == "rollback"
    assert (record["to_version"], record["from_version"]) == ("1", "2")
    assert record["reason"] == "alerts doubled"
    assert "@" in record["by"]
    assert all(r.outcome != "rolled back" for r in runs.read_records(world))
    # and rolling back again goes no further than what was champion before version 1
    code, _, err = fraud_in_process(
        capsys, "model", "rollback", "--reason", "again", "--state-dir", str(world.root)
    )
    assert code == 2
    assert "no earlier champion than version 1" in err


def test_rollbacks_that_cannot_be_are_refused_in_one_line(
    world: StatePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    tracking.setup_mlflow(ct.context(world.root).profile)
    before = str(tracking.champion(MODEL).version)
    # Given a version registered without its lineage
    v1 = tracking.version_info(MODEL, "1")
    bare = str(
        tracking._client()
        .create_model_version(MODEL, source=v1["source"], run_id=v1["run_id"])
        .version
    )
    state = ["--state-dir", str(world.root)]
    cases = {
        "no such version": ["--to", "99"],
        "lineage is incomplete": ["--to", bare],
        "is the champion": ["--to", before],
    }
    for expected, args in cases.items():
        # When a rollback to it is asked for
        code, out, err = fraud_in_process(
            capsys, "model", "rollback", *args, "--reason", "test", *state
        )
        # Then it is refused in one line, with a non-zero exit
        assert code == 2, (args, out, err)
        assert len(err.strip().splitlines()) == 1, err
        assert expected in err, err
    # and the champion did not move
    assert str(tracking.champion(MODEL).version) == before


def test_a_challenger_is_champion_only_once_its_delivery_check_passes(
    world: StatePaths,
    server: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = ["--state-dir", str(world.root)]
    champion = _served(server)
    # Given a challenger (registered, not promoted) that has not passed the model gate
    version = train_version(world, seed=4)
    assert str(tracking.challenger(MODEL).version) == version
    code, _, err = fraud_in_process(capsys, "model", "release", *state)
    # Then it is not released
    assert code == 2, err
    assert "did not pass the model gate" in err

    # Given it passed the gate, and a throughput budget no service meets
    tracking.set_version_tags(MODEL, version, {"gate.promote": "true"})
    monkeypatch.setenv("FRAUD_SERVING__DELIVERY__DURATION_S", "1")
    monkeypatch.setenv("FRAUD_SERVING__DELIVERY__WARMUP_S", "0.2")
    monkeypatch.setenv("FRAUD_SERVING__DELIVERY__MIN_QPS", "1e9")
    # When it is released
    code, out, err = fraud_in_process(capsys, "model", "release", *state)
    # Then its delivery check fails, and it never takes traffic: it stays challenger
    assert code == 1, out + err
    assert "min_qps" in out
    assert f"version {version} stays challenger" in err
    assert str(tracking.champion(MODEL).version) == champion
    assert str(tracking.challenger(MODEL).version) == version
    assert "min_qps" in tracking.version_info(MODEL, version)["tags"]["release.blocked"]
    assert _served(server) == champion
    assert not list((world.root / "serving" / "predictions").rglob("*.parquet")) or all(
        version not in set(pd.read_parquet(part)["model_version"])
        for part in (world.root / "serving" / "predictions").rglob("*.parquet")
    )

    # When the budgets are met
    monkeypatch.setenv("FRAUD_SERVING__DELIVERY__MIN_QPS", "1")
    code, out, err = fraud_in_process(capsys, "model", "release", *state)
    # Then it becomes the champion, and the live service follows
    assert code == 0, out + err
    assert f"released: version {version} is the champion" in out
    deadline = time.monotonic() + 10
    while _served(server) != version:
        assert time.monotonic() < deadline, "the live service did not switch"
        time.sleep(0.1)
    records = runs.read_records(world)
    assert [r.model_gate for r in records if r.trigger == "release"] == [
        f"blocked v{version}: delivery check failed",
        f"released v{version}",
    ]

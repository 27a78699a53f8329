"""The service under load and the model-delivery checks, as a user runs them.

One served world for the module (``tests/worlds.py``: 8 simulated days, online store,
champion v1). Each test starts real ``fraud serve`` processes on free loopback ports:

- 60 s at 32 concurrent clients: no 5xx and no transport error, and once the service
  has stopped, the prediction log holds exactly one row per 200 answer (nothing lost);
- ``fraud delivery-check`` passes on a good champion (service started by the check),
  writes its report and tags the version ``delivery_check=passed``;
- with an impossible budget (``min_qps`` huge, set from the environment) it exits 1,
  names the budget and tags the version ``failed``.

The load figures are not asserted on (a shared 2-core machine); the delivery tests set
loose budgets except the one meant to fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from fraud_detection.config import StatePaths
from fraud_detection.release.loadtest import bodies_from_state, run_loadtest
from tests.conftest import free_port
from tests.worlds import served_world

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
]

LOAD_SECONDS = 60.0
CLIENTS = 32
# Loose budgets for the passing check: it proves the mechanism, not this machine's speed.
LOOSE = {
    "FRAUD_SERVING__DELIVERY__DURATION_S": "3",
    "FRAUD_SERVING__DELIVERY__WARMUP_S": "1",
    "FRAUD_SERVING__DELIVERY__MIN_QPS": "1",
    "FRAUD_SERVING__DELIVERY__MAX_P99_MS": "5000",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> StatePaths:
    return served_world(tmp_path_factory.mktemp("served"))


def _env(paths: StatePaths, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_SERVING__")}
    return {**env, "FRAUD_PROFILE__STATE_DIR": str(paths.root), "FEAST_USAGE": "False", **extra}


@contextlib.contextmanager
def serving(paths: StatePaths, log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``fraud serve`` on a free port; yields its base URL once ``/ready`` says 200."""
    port = free_port()
    cmd = [sys.executable, "-m", "fraud_detection.cli", "serve", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, env=_env(paths), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, f"fraud serve exited early:\n{log.read_text()[-3000:]}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"not ready:\n{log.read_text()[-3000:]}"
            time.sleep(0.25)
        yield base, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _stop(proc: subprocess.Popen[bytes]) -> int:
    """Ctrl+C as a user would (SIGINT): uvicorn shuts down and the log is flushed."""
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=60)


def _logged_rows(paths: StatePaths) -> int:
    files = (paths.root / "serving" / "predictions").glob("date=*/part-*.parquet")
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


@pytest.mark.slow
def test_a_minute_at_32_clients_fails_nothing_and_logs_every_answer(
    world: StatePaths, tmp_path: Path
) -> None:
    bodies = bodies_from_state(world.root, 1_000)
    before = _logged_rows(world)
    log = tmp_path / "serve.log"

    with serving(world, log) as (base, proc):
        result = run_loadtest(
            f"{base}/predict", bodies, concurrency=CLIENTS, duration_s=LOAD_SECONDS
        )
        code = _stop(proc)

    print(result.table())
    assert code == 0, log.read_text()[-3000:]
    assert result.transport_errors == 0, result.error_examples
    assert result.server_errors == 0, result.status_counts
    assert result.count(200) == result.requests > 0
    assert _logged_rows(world) - before == result.count(200)
    # The service's own account on shutdown agrees: everything written, nothing dropped.
    summary = re.search(
        r"prediction log: (\d+) rows in \d+ files under .* \((\d+) dropped\)", log.read_text()
    )
    assert summary is not None, log.read_text()[-3000:]
    assert (int(summary[1]), int(summary[2])) == (result.count(200), 0)


def _delivery_check(world: StatePaths, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "fraud_detection.cli", "delivery-check", *args]
    return subprocess.run(cmd, env=_env(world, **env), capture_output=True, text=True, timeout=600)


def _delivery_tag(world: StatePaths, version: str) -> str | None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{world.root / 'mlflow' / 'mlflow.db'}")
    tag: str | None = client.get_model_version("fraud-detector", version).tags.get("delivery_check")
    return tag


def test_the_delivery_check_passes_on_a_good_champion(world: StatePaths) -> None:
    run = _delivery_check(world, **LOOSE)

    assert run.returncode == 0, run.stdout + run.stderr
    assert "delivery check of fraud-detector v1: PASSED" in run.stdout
    for check in ("GET /health", "GET /ready serves the champion", "POST /predict", "load:"):
        assert f"ok   {check}" in run.stdout
    report = json.loads((world.root / "serving" / "delivery" / "v1.json").read_text())
    assert report["passed"] is True
    assert report["version"] == "1"
    assert report["load"]["status_counts"].keys() == {"200"}
    assert _delivery_tag(world, "1") == "passed"


def test_an_impossible_budget_fails_the_check_and_names_it(
    world: StatePaths, tmp_path: Path
) -> None:
    with serving(world, tmp_path / "serve.log") as (base, _proc):
        run = _delivery_check(
            world, "--url", base, **{**LOOSE, "FRAUD_SERVING__DELIVERY__MIN_QPS": "1000000000"}
        )

    assert run.returncode == 1, run.stdout + run.stderr
    assert "FAIL load: throughput" in run.stdout
    assert "min_qps" in run.stderr
    assert "failed budget(s): min_qps" in run.stdout
    report = json.loads((world.root / "serving" / "delivery" / "v1.json").read_text())
    assert report["passed"] is False
    assert [c["budget"] for c in report["checks"] if not c["passed"]] == ["min_qps"]
    assert _delivery_tag(world, "1") == "failed"

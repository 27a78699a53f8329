"""Level 2 end to end: ``make deploy`` then ``make stop``, as a user runs them.

In a fresh state folder with a small simulated world and a free port:

1. ``make deploy`` starts a Prefect server, registers every deployment of prefect.yaml,
   starts a worker and runs ``ct-on-demand`` through it: the run completes and promotes
   version 1, and the output gives the run's UI link;
2. ``make deploy-status`` shows the deployments and the worker polling;
3. ``make stop`` ends the recorded processes and frees the port; a second one has
   nothing to stop.

The processes are stopped in the fixture's finalizer even when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FRAUD = ROOT / ".venv" / "bin" / "fraud"
# Eight days, labels two days late: enough labelled history to train in seconds.
WORLD = ["--days", "8", "--rows-per-day", "2000", "--cards", "1000", "--merchants", "200"]
WORLD += ["--label-delay-days", "2"]
RUN_LINK = re.compile(r"http://127\.0\.0\.1:(\d+)/runs/flow-run/([0-9a-f-]{36})")


@dataclass
class Deployed:
    state: Path
    port: int
    env: dict[str, str]
    result: subprocess.CompletedProcess[str]
    seconds: float
    pids: dict[str, Any]

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def _make(target: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", target],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    state = tmp_path_factory.mktemp("deploy_e2e") / "state"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FRAUD_", "MLFLOW_"))
    }
    port = _free_port()
    env |= {
        "FRAUD_PROFILE__STATE_DIR": str(state),
        "FRAUD_DEPLOY_PORT": str(port),
        "FRAUD_TRAIN__MODEL__MAX_ITER": "50",  # faster training
    }
    subprocess.run(
        [str(FRAUD), "simulate", *WORLD, "--state-dir", str(state)],
        env=env,
        check=True,
        capture_output=True,
    )
    records = state / "deploy" / "pids.json"
    started = time.perf_counter()
    try:
        result = _make("deploy", env, timeout=900)
        seconds = time.perf_counter() - started
        print(f"\nmake deploy took {seconds:.0f} s (exit {result.returncode})")
        pids = json.loads(records.read_text()) if records.exists() else {}
        yield Deployed(state, port, env, result, seconds, pids)
    finally:
        if records.exists():
            leftover = json.loads(records.read_text())["processes"]
            stopped = _make("stop", env, timeout=120)
            if stopped.returncode != 0:  # last resort: nothing may outlive the tests
                for entry in leftover.values():
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(int(entry["pgid"]), signal.SIGKILL)


def test_make_deploy_registers_every_deployment_and_runs_ct(deployed: Deployed) -> None:
    result = deployed.result
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout

    # The server answered on the chosen port, and the worker polled before the run.
    assert httpx.get(f"{deployed.api}/health", timeout=10).status_code == 200
    assert "healthy after" in out
    assert "polls fraud-local" in out

    # Every deployment of prefect.yaml is registered, on the local pool.
    wanted = {d["name"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    response = httpx.post(f"{deployed.api}/deployments/filter", json={"limit": 200}, timeout=10)
    registered = {d["name"]: d for d in response.json()}
    assert wanted <= set(registered), sorted(wanted - set(registered))
    assert {registered[name]["work_pool_name"] for name in wanted} == {"fraud-local"}

    # The output links the deployed run, which completed, from ct-on-demand.
    links = RUN_LINK.findall(out)
    assert links, out
    port, run_id = links[-1]
    assert int(port) == deployed.port
    run = httpx.get(f"{deployed.api}/flow_runs/{run_id}", timeout=10).json()
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert run["deployment_id"] == registered["ct-on-demand"]["id"]
    assert run["parameters"]["trigger"] == "on_demand"
    assert f"flow run {run['name']} Completed" in out

    # ... and promoted a champion: the CT record and the registry agree.
    from mlflow import MlflowClient

    from fraud_detection.config import StatePaths, load_profile
    from fraud_detection.training.ct import read_records

    (record,) = [
        r for r in read_records(StatePaths(root=deployed.state)) if r.trigger == "on_demand"
    ]
    assert record.outcome == "promoted", record
    assert record.data_gate == "8 accepted"
    assert record.champion_version == "1"
    assert "champion:      v1" in out
    uri = f"sqlite:///{deployed.state / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    model = load_profile().mlflow.model_name
    assert str(client.get_model_version_by_alias(model, "champion").version) == "1"


def test_make_deploy_status_shows_the_worker_polling(deployed: Deployed) -> None:
    if deployed.result.returncode != 0:
        pytest.skip("make deploy failed (see the previous test)")

    result = _make("deploy-status", deployed.env, timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"server: {deployed.api} healthy" in result.stdout
    for name in ("ct-nightly", "ct-on-demand", "new-data-sensor", "batch-scoring"):
        assert name in result.stdout
    assert re.search(r"worker fraud-local-worker-\d+: ONLINE", result.stdout), result.stdout


def test_make_stop_ends_what_make_deploy_started(deployed: Deployed) -> None:
    processes = deployed.pids.get("processes", {})
    assert set(processes) == {"server", "worker"}, deployed.pids

    result = _make("stop", deployed.env, timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "prefect-server" in result.stdout
    assert "stopped" in result.stdout
    for entry in processes.values():
        assert _gone(int(entry["pid"])), entry
    assert _port_free(deployed.port)
    assert not (deployed.state / "deploy" / "pids.json").exists()
    # Idempotent: nothing left to stop.
    again = _make("stop", deployed.env, timeout=60)
    assert again.returncode == 0
    assert "nothing to stop" in again.stdout

"""Level 2 end to end: ``make deploy`` then ``make stop``, as a user runs them.

In a fresh state folder with a small simulated world and a free port:

1. ``make deploy`` starts a Prefect server, registers every deployment of prefect.yaml,
   starts a worker and runs ``ct-on-demand`` through it: the run completes and promotes
   version 1, and the output gives the run's UI link;
2. ``make deploy-status`` shows the deployments and the worker polling;
3. a drift signal raised by monitoring's emitter (its event) starts the ``ct-on-signal``
   deployment through its trigger; the worker runs CT with ``trigger=drift``, which
   retrains without a new partition and marks the signal consumed;
4. ``make stop`` ends the recorded processes and frees the port; a second one has
   nothing to stop.

The processes are stopped in the fixture's finalizer even when a test fails.
"""

from __future__ import annotations

import contextlib
import datetime as dt
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

from tests.conftest import free_port

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
    port = free_port()
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
    from fraud_detection.registry.runs import read_records

    (record,) = [
        r for r in read_records(StatePaths(root=deployed.state)) if r.trigger == "on_demand"
    ]
    assert record.outcome == "promoted", record
    assert record.data_gate == "8 accepted"
    assert record.champion_version == "1"
    assert "champion:      v1" in out
    # ... running a clone of this checkout's HEAD commit, which it recorded
    assert re.fullmatch(r"[0-9a-f]{40}", record.code_version or ""), record.code_version
    assert f"commit:{record.code_version}" in run["tags"]
    assert f"code version:  {record.code_version}" in out
    assert f"runs clone commit {record.code_version[:12]} of {ROOT.as_uri()}" in out
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


DRIFT_SIGNAL = """
import sys
from pathlib import Path
from fraud_detection.config import StatePaths
from fraud_detection.monitoring import signals

signal = signals.Signal(kind="drift", detail="test", metric="psi", value=0.3, threshold=0.2)
signals.emit(StatePaths(root=Path(sys.argv[1])), signal)
print(signal.id)
"""  # the event is flushed when the process exits


def test_a_drift_event_starts_ct_that_retrains_without_new_data(deployed: Deployed) -> None:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    from fraud_detection.config import StatePaths
    from fraud_detection.monitoring import signals
    from fraud_detection.registry.runs import read_records
    from pipelines.level2_cicd import deploy

    if deployed.result.returncode != 0:
        pytest.skip("make deploy failed (see the first test)")
    started = time.perf_counter()
    paths = StatePaths(root=deployed.state)
    runs_before = len(read_records(paths))

    # Given the deployed champion and no new partition, when monitoring raises a drift
    # signal (its file, then its event to the server)
    emitted = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-c", DRIFT_SIGNAL, str(deployed.state)],
        env=deployed.env | {"PREFECT_API_URL": deployed.api},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    signal_id = emitted.stdout.strip()

    # Then the trigger starts ct-on-signal, and the worker runs it to the end
    target = deploy.Target(api_url=deployed.api)
    only_signal = DeploymentFilter(name=DeploymentFilterName(any_=["ct-on-signal"]))
    begin, runs = time.monotonic(), []
    while not (runs and runs[0].state and runs[0].state.type.value in deploy.FINAL_STATES):
        assert time.monotonic() - begin < 600, f"ct-on-signal runs: {runs}"
        time.sleep(2)
        with deploy._client(target) as client:
            runs = list(client.read_flow_runs(deployment_filter=only_signal))
    (run,) = runs
    assert run.parameters == {"trigger": "drift", "signal_id": signal_id}
    assert run.state.type.value == "COMPLETED", run.state

    # ... a CT run that retrained on the latest window although no partition arrived
    records = read_records(paths)
    assert len(records) == runs_before + 1
    record = records[-1]
    assert record.trigger == "drift"
    assert record.data_gate == "no new partition"
    assert record.challenger_version == "2", record
    assert record.outcome in ("promoted", "kept champion"), record
    # ... and the signal consumed when it ended, with its outcome
    assert signals.pending(paths) == []
    (consumed,) = (deployed.state / "signals" / "consumed").glob(f"*{signal_id}.json")
    assert json.loads(consumed.read_text())["outcome"] == record.outcome
    print(f"\ndrift event -> CT run through the worker: {time.perf_counter() - started:.0f} s")


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


# --------------------------------------- pipeline CD: runs clone the released commit
#
# A clone of this repository stands in for the GitHub repository. It is deployed (the
# success path of `make deploy-prefect`, i.e. `deploy.py remote`) to a temporary Prefect
# server; a worker started in an empty directory, with no checkout, runs the
# new-data-sensor deployment (cheap: an empty state has nothing new). The run must record
# the deployed commit; after a new commit and a new deployment, the newer one (and its
# changed code); with the repository gone, the run fails with git's error.

SENSOR = "new-data-sensor/new-data-sensor"
NOTHING_NEW = "no new partition: nothing to do"
DEPLOY_MODULE = "pipelines.level2_cicd.deploy"
WORKER = "clean-worker"


@dataclass
class Release:
    repo: Path
    state: Path
    env: dict[str, str]
    target: Any  # deploy.Target
    worker_log: Path

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(self.repo), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    def deploy(self) -> subprocess.CompletedProcess[str]:
        """`make deploy-prefect`'s command, run from the clone as cd.yml runs it."""
        return subprocess.run(
            [str(ROOT / ".venv" / "bin" / "python"), "-m", DEPLOY_MODULE, "remote"],
            cwd=self.repo,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def run_sensor(self, timeout: float = 180) -> tuple[Any, list[str]]:
        """Run the sensor deployment; its final flow run and log lines."""
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        from pipelines.level2_cicd import deploy

        with deploy._client(self.target) as client:
            deployment = client.read_deployment_by_name(SENSOR)
            run = client.create_flow_run_from_deployment(
                deployment.id, parameters={"state_dir": str(self.state)}
            )
            begin = time.monotonic()
            while not (run.state and run.state.type.value in deploy.FINAL_STATES):
                assert time.monotonic() - begin < timeout, f"run still {run.state}"
                time.sleep(1)
                run = client.read_flow_run(run.id)
            time.sleep(2)  # the run's last log lines are shipped in batches
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id]))
            )
        return run, [log.message for log in logs]


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    from pipelines.level2_cicd import deploy

    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    base = tmp_path_factory.mktemp("release")
    repo, state, workdir = base / "repo", base / "state", base / "worker"
    workdir.mkdir()
    (state / "prefect").mkdir(parents=True)
    # The committed HEAD only: uncommitted edits in this working tree are not released.
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(repo)], check=True)
    port = free_port()
    target = deploy.Target(api_url=f"http://127.0.0.1:{port}/api")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FRAUD_", "MLFLOW_"))
    }
    env |= {
        "PREFECT_API_URL": target.api_url,
        "PREFECT_HOME": str(state / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # No scheduled sensor runs competing with the test's runs for the pool's one slot.
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_WORKER_HEARTBEAT_SECONDS": "10",
        "FRAUD_PROFILE__STATE_DIR": str(state),
        "FRAUD_DEPLOY_REPOSITORY": repo.as_uri(),
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    prefect = str(ROOT / ".venv" / "bin" / "prefect")
    server = deploy._spawn(
        "prefect-server",
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        base / "server.log",
    )
    worker: dict[str, Any] | None = None
    try:
        deploy._wait_healthy(target, server, base / "server.log")
        deploy.ensure_pool(env, target, base / "pool.log")
        log = base / "worker.log"
        with log.open("ab") as handle:
            process = subprocess.Popen(
                [prefect, "worker", "start", "--pool", deploy.POOL, "--name", WORKER],
                cwd=workdir,  # no checkout anywhere near the worker
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = {
            "name": WORKER,
            "pid": process.pid,
            "pgid": process.pid,
            "start": deploy._proc_start(process.pid),
            "log": str(log),
            "started_at": dt.datetime.now(dt.UTC).isoformat(),
        }
        deploy.wait_for_worker(target, worker)
        yield Release(repo=repo, state=state, env=env, target=target, worker_log=log)
    finally:
        for entry in (worker, server):
            if entry is not None:
                deploy._terminate(entry)


def _pull_step(release: Release) -> dict[str, Any]:
    from pipelines.level2_cicd import deploy

    with deploy._client(release.target) as client:
        (step,) = client.read_deployment_by_name(SENSOR).pull_steps
    return dict(step["prefect.deployments.steps.git_clone"])


def test_deployed_runs_record_the_deployed_commit_then_the_next(release: Release) -> None:
    started = time.perf_counter()
    first = release.git("rev-parse", "HEAD")

    # Given the clone deployed at its HEAD
    deployed = release.deploy()
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert f"runs clone commit {first[:12]} of {release.repo.as_uri()}" in deployed.stdout
    step = _pull_step(release)
    assert step["commit_sha"] == first  # pinned at deploy time, not read on the worker
    assert step["repository"] == release.repo.as_uri()

    # When the worker (no checkout) runs the sensor, it runs and records that commit
    run, logs = release.run_sensor()
    assert run.state.type.value == "COMPLETED", (run.state, logs)
    assert f"commit:{first}" in run.tags
    assert any(f"code version: commit {first}" in line for line in logs), logs
    assert any(line == NOTHING_NEW for line in logs), logs
    # ... with the clone's own package, not the one the worker's environment holds
    package = [line for line in logs if line.startswith("fraud_detection package from")]
    assert package, logs
    assert package[0].startswith("fraud_detection package from the checkout:"), package
    assert str(ROOT / "src") not in package[0], package

    # Given a new commit that changes the sensor's code, deployed
    flows = release.repo / "src" / "fraud_detection" / "orchestration" / "flows.py"
    flows.write_text(flows.read_text().replace(NOTHING_NEW, NOTHING_NEW + " (release 2)"))
    release.git("commit", "--quiet", "-am", "release 2")
    second = release.git("rev-parse", "HEAD")
    deployed = release.deploy()
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert _pull_step(release)["commit_sha"] == second

    # Then the next run runs the new commit's code and records it
    run, logs = release.run_sensor()
    assert run.state.type.value == "COMPLETED", (run.state, logs)
    assert f"commit:{second}" in run.tags
    assert f"commit:{first}" not in run.tags
    assert any(line == NOTHING_NEW + " (release 2)" for line in logs), logs
    print(
        f"\ntwo deployments and two runs from a clean worker: {time.perf_counter() - started:.0f} s"
    )


def test_a_worker_that_cannot_fetch_the_commit_fails_the_run(release: Release) -> None:
    # Given a deployed commit whose repository is gone (moved away)
    deployed = release.deploy()
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    commit = release.git("rev-parse", "HEAD")
    gone = release.repo.with_name("repo-gone")
    release.repo.rename(gone)
    try:
        # When the worker runs it
        run, logs = release.run_sensor()
    finally:
        gone.rename(release.repo)

    # Then the run fails in its pull step, no flow code ran and nothing was recorded; the
    # worker's output has git's error (Prefect 3.8 ships the pull step's traceback there,
    # not to the run's logs in the API)
    assert run.state.type.value in {"FAILED", "CRASHED"}, run.state
    assert "Executing deployment step: git_clone" in logs, logs
    assert not any("completed successfully" in line for line in logs), logs
    assert not any(tag.startswith("commit:") for tag in run.tags), run.tags
    assert not any(NOTHING_NEW in line for line in logs), logs
    assert f"Failed to clone repository '{release.repo.as_uri()}'" in release.worker_log.read_text()
    assert commit  # the deployment named a real commit: only the fetch failed

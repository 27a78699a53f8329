"""Level 2 end to end: CT deployments start from Prefect events, through the ``triggers:``
of prefect.yaml, as ``prefect deploy`` registers them (one automation per trigger).

One temporary Prefect server for the module, every deployment of prefect.yaml deployed
to it (what ``make deploy`` does), and no worker: a triggered flow run stays Scheduled,
so the tests read what the trigger created (deployment, parameters) without running CT.
That a CT run with ``trigger=drift`` and no new partition retrains, and consumes the
signal when it ends, is tests/e2e/test_ct_pipeline.py's step 5. The events come from the
project's own emitters, in a separate process as in production: ``signals.emit`` (what
monitoring calls for each signal it raises) and ``fraud simulate``.

1. a storm of ten drift signals starts one ``ct-on-signal`` run, trigger=drift, naming
   one of the signals;
2. a performance signal starts one run, trigger=performance;
3. ``fraud simulate`` announces its new partitions; the burst starts one
   ``ct-on-new-data`` run, trigger=new_data.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv" / "bin" / "python"
FRAUD = ROOT / ".venv" / "bin" / "fraud"
SIGNALS = """
import sys
from pathlib import Path
from fraud_detection.config import StatePaths
from fraud_detection.monitoring import signals

paths = StatePaths(root=Path(sys.argv[1]))
for i in range(int(sys.argv[3])):
    signal = signals.Signal(
        kind=sys.argv[2], detail=f"test signal {i}", metric="m", value=1.0, threshold=0.5
    )
    signals.emit(paths, signal)
    print(signal.id)
"""  # the events are flushed when the process exits


@dataclass
class Server:
    base: Path
    env: dict[str, str]
    target: Any  # deploy.Target

    def emit_signals(self, kind: str, count: int) -> list[str]:
        """``count`` signals raised by monitoring's emitter in another process; their ids."""
        state = self.base / f"state-{kind}"
        result = subprocess.run(
            [str(PYTHON), "-c", SIGNALS, str(state), kind, str(count)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return result.stdout.split()

    def events(self, name: str) -> int:
        """How many ``name`` events the server has stored."""
        from prefect.events.filters import EventFilter, EventNameFilter

        from pipelines.level2_cicd import deploy

        with deploy._client(self.target) as client:
            page = client.read_events(
                filter=EventFilter(event=EventNameFilter(name=[name])), limit=50
            )
        return len(page.events)

    def runs(self, deployment: str) -> list[Any]:
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

        from pipelines.level2_cicd import deploy

        with deploy._client(self.target) as client:
            return list(
                client.read_flow_runs(
                    deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment]))
                )
            )

    def settle(self, deployment: str, event: str, events: int, timeout: float = 60) -> list[Any]:
        """The deployment's runs once the server holds ``events`` ``event`` events, a run
        exists, and a few more seconds passed (time for any extra run to appear)."""
        begin = time.monotonic()
        while self.events(event) < events or not self.runs(deployment):
            assert time.monotonic() - begin < timeout, (
                f"after {timeout:.0f} s: {self.events(event)} {event} event(s), "
                f"{len(self.runs(deployment))} {deployment} run(s)"
            )
            time.sleep(1)
        time.sleep(5)  # the trigger service has seen every event by now; would it fire again?
        return self.runs(deployment)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from pipelines.level2_cicd import deploy

    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    base = tmp_path_factory.mktemp("triggers")
    (base / "prefect").mkdir()
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    port = free_port()
    target = deploy.Target(api_url=f"http://127.0.0.1:{port}/api")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FRAUD_", "MLFLOW_"))
    }
    env |= {
        "PREFECT_API_URL": target.api_url,
        "PREFECT_HOME": str(base / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",  # only triggered runs
        "FRAUD_PROFILE__STATE_DIR": str(base / "state"),
        **deploy.Release(ROOT.as_uri(), head).environment(),
    }
    prefect = str(ROOT / ".venv" / "bin" / "prefect")
    process = deploy._spawn(
        "prefect-server",
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        base / "server.log",
    )
    try:
        deploy._wait_healthy(target, process, base / "server.log")
        deploy.ensure_pool(env, target, base / "deploy.log")
        deploy.deploy_all(env, target, ROOT / "prefect.yaml", base / "deploy.log")
        yield Server(base=base, env=env, target=target)
    finally:
        deploy._terminate(process)


def test_a_storm_of_drift_signals_starts_one_ct_run(server: Server) -> None:
    started = time.perf_counter()
    # Given the deployed triggers, when monitoring raises ten drift signals at once
    ids = server.emit_signals("drift", 10)
    assert len(ids) == 10

    # Then the server got ten events, and the drift trigger started exactly one CT run
    (run,) = server.settle("ct-on-signal", "fraud.monitoring.drift", 10)
    assert run.parameters["trigger"] == "drift"
    assert run.parameters["signal_id"] in ids
    assert run.state.type.value == "SCHEDULED"  # no worker here: created, not run
    print(f"\n10 drift events -> 1 run in {time.perf_counter() - started:.0f} s")


def test_a_performance_signal_starts_ct_with_its_trigger(server: Server) -> None:
    before = {r.id for r in server.runs("ct-on-signal")}

    (signal_id,) = server.emit_signals("performance", 1)

    runs = server.settle("ct-on-signal", "fraud.monitoring.performance", 1)
    (run,) = [r for r in runs if r.id not in before]
    assert run.parameters == {"trigger": "performance", "signal_id": signal_id}


def test_new_partitions_from_simulate_start_one_ct_run(server: Server) -> None:
    state = server.base / "state-simulate"
    world = ["--days", "3", "--rows-per-day", "200", "--cards", "100", "--merchants", "20"]

    result = subprocess.run(
        [str(FRAUD), "simulate", *world, "--state-dir", str(state)],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "announced 3 new partition(s)" in result.stdout, result.stdout
    (run,) = server.settle("ct-on-new-data", "fraud.data.partition-landed", 3)
    assert run.parameters["trigger"] == "new_data"

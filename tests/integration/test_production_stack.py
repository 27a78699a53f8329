"""The production profile on real services: the MLflow and Prefect servers on
PostgreSQL, Feast's SQL registry on PostgreSQL and its Redis online store, started by
``fraud_detection.stack`` (what ``make prod-up`` runs) with databases of their own.

What a team taking the template to production needs to see: CT runs on the stack and
its results are where the servers say; two hosts promoting at once promote exactly one
(and without the cross-host lock both would); a database outage fails a run in one line
and leaves the champion alone; a tracking server killed mid-run never leaves an alias on
a version with incomplete lineage.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.stack import ROOT, Stack, private_stack

pytestmark = [pytest.mark.integration, pytest.mark.services, pytest.mark.slow]

WORLD = ["--rows-per-day", "1500", "--cards", "300", "--merchants", "60", "--label-delay-days", "1"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("production") / "state"
    with private_stack(state) as running:
        done = running.run("simulate", "--days", "6", *WORLD)
        assert done.returncode == 0, done.stderr
        first = running.run("ct", "run")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "model gate:     promoted v1" in first.stdout, first.stdout
        yield running


def _mlflow(stack: Stack, path: str, **params: str) -> dict:  # type: ignore[type-arg]
    response = httpx.get(f"{stack.mlflow_url}/api/2.0/mlflow/{path}", params=params, timeout=10)
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def _champion(stack: Stack) -> str:
    found = _mlflow(stack, "registered-models/alias", name="fraud-detector", alias="champion")
    return str(found["model_version"]["version"])


def _versions(stack: Stack) -> list[dict]:  # type: ignore[type-arg]
    found = _mlflow(stack, "model-versions/search", filter="name='fraud-detector'")
    return list(found.get("model_versions", []))


def test_ct_runs_on_the_stack_and_its_results_are_in_the_servers(stack: Stack) -> None:
    import psycopg
    import redis

    # The registry (MLflow server, PostgreSQL behind it) has the champion, lineage complete
    version = _mlflow(stack, "registered-models/alias", name="fraud-detector", alias="champion")
    tags = {t["key"]: t["value"] for t in version["model_version"].get("tags", [])}
    assert tags.get("lineage_complete") == "true"
    # Its artifacts went through the server (proxied), into the server's folder
    run = _mlflow(stack, "runs/get", run_id=version["model_version"]["run_id"])["run"]
    assert run["info"]["artifact_uri"].startswith("mlflow-artifacts:/")
    assert any((stack.state / "mlflow-artifacts").rglob("MLmodel"))
    # The Prefect server (PostgreSQL) recorded the flow run as completed
    runs = httpx.post(f"{stack.prefect_url}/flow_runs/filter", json={"limit": 20}, timeout=10)
    states = [r["state"]["type"] for r in runs.json()]
    assert "COMPLETED" in states, states
    # Feast's registry is in PostgreSQL and the online store in Redis
    feast_db = next(d for d in stack.databases if "_feast_" in d)
    with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={feast_db}") as conn:
        views = conn.execute("SELECT count(*) FROM feature_views").fetchone()
    assert views is not None
    assert views[0] >= 3
    online = redis.Redis(host="127.0.0.1", port=6379, db=14)
    assert online.dbsize() > 300  # one key per card and merchant at least
    # And the records the CLI keeps agree
    record = json.loads((stack.state / "ct" / "runs.jsonl").read_text().splitlines()[-1])
    assert record["outcome"] == "promoted"


PROMOTE = """
import json, os, sys, time
from fraud_detection.config import load_profile
from fraud_detection.registry import tracking

from pathlib import Path
version, folder, slow = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "slow"
tracking.setup_mlflow(load_profile())
if slow:  # widen the race: read the champion, then wait before acting on it
    read = tracking.champion
    def champion(name):
        found = read(name)
        time.sleep(1.5)
        return found
    tracking.champion = champion
(folder / f"ready-{version}").touch()
while not (folder / "go").exists():  # both hosts start at the same instant
    time.sleep(0.005)
result = tracking.promote("fraud-detector", version, expected_champion="1",
                          decision={"promote": True})
print(json.dumps({"version": version, "promoted": result.promoted, "reason": result.reason}))
"""


def _register_copies(stack: Stack, count: int) -> list[str]:
    """New versions of the champion's run, lineage complete (candidates to promote)."""
    script = f"""
import json
from fraud_detection.config import load_profile
from fraud_detection.registry import tracking
tracking.setup_mlflow(load_profile())
from mlflow import MlflowClient
client = MlflowClient()
champ = tracking.champion("fraud-detector")
made = []
for _ in range({count}):
    created = client.create_model_version("fraud-detector", source=champ.source,
        run_id=champ.run_id, tags=champ.tags, model_id=champ.source.removeprefix("models:/"))
    client.set_model_version_tag("fraud-detector", created.version, "lineage_complete", "true")
    made.append(str(created.version))
print(json.dumps(made))
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **stack.env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def _set_champion(stack: Stack, version: str) -> None:
    httpx.post(
        f"{stack.mlflow_url}/api/2.0/mlflow/registered-models/alias",
        json={"name": "fraud-detector", "alias": "champion", "version": version},
        timeout=10,
    ).raise_for_status()


def _race(stack: Stack, versions: list[str], tmp: Path, **extra: str) -> list[dict]:  # type: ignore[type-arg]
    """Two 'hosts' (processes with separate state folders) promote at the same instant."""
    tmp.mkdir(parents=True, exist_ok=True)
    procs = []
    for i, version in enumerate(versions):
        state = tmp / f"host-{i}"
        env = {**os.environ, **stack.env, "FRAUD_PROFILE__STATE_DIR": str(state), **extra}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", PROMOTE, version, str(tmp), "slow"],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    deadline = time.monotonic() + 120
    while not all((tmp / f"ready-{v}").exists() for v in versions):
        assert time.monotonic() < deadline, "the promoting processes did not get ready"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.05)
    (tmp / "go").touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_two_hosts_promoting_at_once_promote_exactly_one(stack: Stack, tmp_path: Path) -> None:
    a, b, c, d = _register_copies(stack, 4)
    # Given champion v1 and two hosts (separate state folders, so separate file locks)
    # each promoting its own challenger against v1 at the same instant
    _set_champion(stack, "1")
    results = _race(stack, [a, b], tmp_path / "locked")
    # Then with the PostgreSQL advisory lock exactly one promotes; the other is told who won
    promoted = [r for r in results if r["promoted"]]
    assert len(promoted) == 1, results
    loser = next(r for r in results if not r["promoted"])
    assert "champion moved from v1" in loser["reason"] or "moved" in loser["reason"], loser
    assert _champion(stack) == promoted[0]["version"]

    # And the lock is what made it so: with only the file locks, both would "win"
    _set_champion(stack, "1")
    unlocked = _race(
        stack, [c, d], tmp_path / "unlocked", FRAUD_PROFILE__MLFLOW__PROMOTION_LOCK_URL=""
    )
    assert all(r["promoted"] for r in unlocked), unlocked
    _set_champion(stack, "1")


def test_a_database_outage_fails_a_run_in_one_line_and_the_champion_stays(stack: Stack) -> None:
    before = _champion(stack)
    assert stack.run("simulate", "--days", "7", *WORLD).returncode == 0
    # When PostgreSQL goes away (for every client of the stack) and CT runs
    stack.proxy.cut()
    try:
        failed = stack.run("ct", "run", timeout=300)
    finally:
        stack.proxy.restore()
    # Then it fails with one clear line, no traceback
    assert failed.returncode != 0
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, failed.stderr
    assert "Traceback" not in failed.stdout + failed.stderr, failed.stderr[-2000:]
    assert "does not answer" in errors[0] or "failed" in errors[0], errors[0]
    # And the champion did not move
    assert _champion(stack) == before
    # And once PostgreSQL is back the next run succeeds (servers reconnect by themselves)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        again = stack.run("ct", "run")
        if again.returncode == 0:
            break
        time.sleep(3)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "CT run (on_demand):" in again.stdout


def _stack_pid(stack: Stack, name: str) -> int:
    return int((stack.state / "stack" / f"{name}.pid").read_text())


def test_a_tracking_server_killed_mid_run_never_leaves_an_alias_on_incomplete_lineage(
    stack: Stack,
) -> None:
    from fraud_detection import stack as stack_module

    before = _champion(stack)
    versions_before = {v["version"] for v in _versions(stack)}
    artifacts = stack.state / "mlflow-artifacts"
    seen = {p for p in artifacts.rglob("*") if p.is_file()}
    # When the MLflow server is killed while CT is logging its model
    run = subprocess.Popen(
        [sys.executable, "-m", "fraud_detection.cli", "ct", "run", "--force"],
        env={**os.environ, **stack.env},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and run.poll() is None:
        fresh = [p for p in artifacts.rglob("*") if p.is_file() and p not in seen]
        if any("model" in str(p.relative_to(artifacts)) for p in fresh):
            break
        time.sleep(0.05)
    os.killpg(_stack_pid(stack, "mlflow"), signal.SIGKILL)
    _, err = run.communicate(timeout=300)
    stack_module.up(stack.profile(), progress=lambda _: None)  # the server comes back
    assert run.returncode != 0, "the run finished before the kill: nothing was tested"
    # Then every version that carries an alias has complete lineage
    for version in _versions(stack):
        tags = {t["key"]: t["value"] for t in version.get("tags", [])}
        if version.get("aliases"):
            assert tags.get("lineage_complete") == "true", version
    # And the champion did not move; the run said so in one line
    assert _champion(stack) == before
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    # (a version may have been created before the kill: it has no alias)
    assert {v["version"] for v in _versions(stack)} >= versions_before
    # And the next run works
    again = stack.run("ct", "run", "--force")
    assert again.returncode == 0, again.stdout + again.stderr

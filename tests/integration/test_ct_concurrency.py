"""Continuous training under faults and concurrency, with real ``fraud ct run`` processes.

Given a small simulated world in one state folder:

- a CT run killed (SIGKILL) in the middle of registering its model leaves a version
  without ``lineage_complete`` that never becomes champion; the rerun completes and its
  champion has complete lineage;
- two CT runs at the same time, both approved by the gate against the same champion,
  promote exactly one new champion; the other is told the champion moved;
- two runs materializing the online store at the same time keep Feast's registry intact
  (the registry lock in ``features/store.py``).

The processes run against the session's Prefect test server (as against a deployed one:
``PREFECT_API_URL``), which spares each of them starting its own (~20 s). The tests share
the state folder and run in file order: the race starts from the rerun's champion.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from fraud_detection.config import StatePaths, load_simulate_config, project_dir
from fraud_detection.data.simulator import write_simulation
from fraud_detection.registry import lineage, runs, tracking
from fraud_detection.training import ct
from tests.conftest import mlflow_isolated, prefect_client_of

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    # MLflow 3.x's SQL store still uses it; nothing to act on here.
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
    # The Prefect test server's SQLAlchemy types are visible to MLflow's mappers here.
    pytest.mark.filterwarnings("ignore:Type object .*prefect.server.utilities.database.UUID"),
]

WORLD: dict[str, Any] = {
    "days": 10,
    "rows_per_day": 2_000,
    "cards": 1_000,
    "merchants": 200,
    "label_delay_days": 2,
    "scenario": {"drift": {"enabled": False}, "broken_feed": {"enabled": False}},
}
RUN_TIMEOUT_S = 300
FRAUD = Path(sys.executable).with_name("fraud")

# `fraud ...` in a process that SIGKILLs itself halfway through registering a model: the
# version and its lineage tags exist, `lineage_complete` is not written yet.
KILLED_IN_REGISTRATION = """
import os, signal, sys
from mlflow import MlflowClient
from fraud_detection.registry.tracking import LINEAGE_COMPLETE

set_tag = MlflowClient.set_model_version_tag

def dying_set_tag(self, name, version, key, value):
    if key == LINEAGE_COMPLETE:
        os.kill(os.getpid(), signal.SIGKILL)
    return set_tag(self, name, version, key, value)

MlflowClient.set_model_version_tag = dying_set_tag
from fraud_detection.cli import main
sys.argv[0] = "fraud"
main()
"""

# `fraud ...` in a process that waits, just before promoting, until every racer got there:
# all of them have then read the same champion and passed the gate against it. From there
# they go on one at a time (a lock held until the process exits): the promotion's own
# compare-and-set is what is tested here, and the steps after it (materialize) are not
# safe to run concurrently (see the last test).
PROMOTE_TOGETHER = """
import fcntl, os, sys, time
from pathlib import Path
from fraud_detection.registry import tracking

promote = tracking.promote
folder = Path(os.environ["CT_TEST_BARRIER"])
parties = int(os.environ["CT_TEST_PARTIES"])
held = []

def promote_together(*args, **kwargs):
    (folder / f"{os.getpid()}.ready").touch()
    deadline = time.monotonic() + 240
    while len(list(folder.glob("*.ready"))) < parties:
        if (folder / "abort").exists() or time.monotonic() > deadline:
            raise RuntimeError("the other racer never reached the promotion")
        time.sleep(0.05)
    if not held:
        handle = (folder / "one-at-a-time.lock").open("a")
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when this process exits
        held.append(handle)
    return promote(*args, **kwargs)

tracking.promote = promote_together
from fraud_detection.cli import main
sys.argv[0] = "fraud"
main()
"""

# Materialize the online store 15 times to successive ends, once every racer is ready.
MATERIALIZE_TOGETHER = """
import os, sys, time
from pathlib import Path
import pandas as pd
from fraud_detection.config import StatePaths
from fraud_detection.features import store

paths, end = StatePaths(root=sys.argv[1]), pd.Timestamp(sys.argv[2])
folder = Path(os.environ["CT_TEST_BARRIER"])
parties = int(os.environ["CT_TEST_PARTIES"])
(folder / f"{os.getpid()}.ready").touch()
while len(list(folder.glob("*.ready"))) < parties:
    time.sleep(0.01)
for i in range(15):
    store.materialize(paths, end=end + pd.Timedelta(minutes=10 * i + os.getpid() % 7))
"""


# ------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def prefect_api(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's Prefect test server, for the module's processes; its URL."""
    with prefect_client_of(prefect_server, tmp_path_factory.mktemp("prefect_home")) as url:
        yield url


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StatePaths]:
    """The simulated world in a fresh state folder; this process reads its MLflow store
    (URIs and session restored after the module)."""
    paths = StatePaths(root=tmp_path_factory.mktemp("ct_concurrency") / "state")
    write_simulation(load_simulate_config(overrides=WORLD), paths)
    with mlflow_isolated():
        yield paths


# -------------------------------------------------------------------- helpers


def _env(
    paths: StatePaths, api_url: str | None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "PREFECT_", "FRAUD_", "CT_TEST_"))
    }
    prefect_home = paths.root / "prefect"
    env |= {
        "FRAUD_PROFILE__STATE_DIR": str(paths.root),
        "FRAUD_TRAIN__MODEL__MAX_ITER": "50",  # faster training
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_LOCAL_STORAGE_PATH": str(prefect_home / "storage"),
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **(extra or {}),
    }
    if api_url is not None:
        env["PREFECT_API_URL"] = api_url
    return env


def _start(
    paths: StatePaths,
    api_url: str | None,
    log: Path,
    args: list[str],
    *,
    code: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``fraud <args>`` (or ``python -c code <args>``) in its own process group."""
    command = [str(FRAUD), *args] if code is None else [sys.executable, "-c", code, *args]
    with log.open("wb") as out:
        return subprocess.Popen(
            command,
            cwd=project_dir(),
            env=_env(paths, api_url, extra),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait(process: subprocess.Popen[bytes], log: Path) -> int:
    try:
        return process.wait(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(f"{process.args!r} hung; its output:\n{_tail(log)}")


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _ct_run(paths: StatePaths, *extra: str) -> list[str]:
    return ["ct", "run", "--state-dir", str(paths.root), *extra]


def _registry(paths: StatePaths) -> tuple[str, list[Any]]:
    """The model name and its versions (oldest first), read from the state's MLflow."""
    from mlflow import MlflowClient

    ctx = ct.context(paths.root)
    tracking.setup_mlflow(ctx.profile)
    found = MlflowClient().search_model_versions(f"name = '{ctx.model_name}'")
    return ctx.model_name, sorted(found, key=lambda mv: int(mv.version))


def _assert_champion_has_complete_lineage(paths: StatePaths) -> str:
    name, versions = _registry(paths)
    current = tracking.champion(name)
    assert current is not None
    tags = tracking.version_info(name, str(current.version))["tags"]
    assert tags.get(tracking.LINEAGE_COMPLETE) == "true", tags
    for tag in lineage.LINEAGE_TAGS:
        assert tags.get(tag, "").strip(), f"champion lacks {tag}: {tags}"
    for mv in versions:  # only the champion carries the alias
        if tracking.CHAMPION in mv.aliases:
            assert str(mv.version) == str(current.version)
    return str(current.version)


# ---------------------------------------------------------------------- tests


def test_run_killed_while_registering_is_never_champion_and_the_rerun_completes(
    state: StatePaths, prefect_api: str, tmp_path: Path
) -> None:
    # Given: a CT run dies (SIGKILL) right after creating its model version, before
    # marking it lineage_complete
    killed_log = tmp_path / "killed.log"
    killed = _start(state, prefect_api, killed_log, _ct_run(state), code=KILLED_IN_REGISTRATION)
    assert _wait(killed, killed_log) == -signal.SIGKILL, _tail(killed_log)

    # Then: it left an incomplete version, no champion and no run record
    name, versions = _registry(state)
    assert [str(mv.version) for mv in versions] == ["1"], _tail(killed_log)
    (orphan,) = versions
    assert tracking.LINEAGE_COMPLETE not in orphan.tags
    assert orphan.tags.get(lineage.GIT_COMMIT_TAG)  # the lineage itself was written
    assert not orphan.aliases
    assert tracking.champion(name) is None
    assert runs.read_records(state) == []

    # When: CT runs again
    rerun_log = tmp_path / "rerun.log"
    rerun = _start(state, prefect_api, rerun_log, _ct_run(state))
    assert _wait(rerun, rerun_log) == 0, _tail(rerun_log)

    # Then: it completes and promotes its own, complete version; the orphan stays out
    (record,) = runs.read_records(state)
    assert record.outcome == "promoted", record
    assert record.data_gate == "no new partition"  # the killed run's verdicts were kept
    assert record.challenger_version == "2"
    assert _assert_champion_has_complete_lineage(state) == "2"
    orphan_info = tracking.version_info(name, "1")
    assert tracking.LINEAGE_COMPLETE not in orphan_info["tags"]
    assert orphan_info["aliases"] == []


def test_two_concurrent_runs_promote_exactly_one_champion(
    state: StatePaths, prefect_api: str, tmp_path: Path
) -> None:
    name, before = _registry(state)
    current = tracking.champion(name)
    expected = None if current is None else str(current.version)
    runs_before = len(runs.read_records(state))
    barrier = tmp_path / "barrier"
    barrier.mkdir()

    # When: two CT runs start at once, train, pass the gate against the same champion and
    # try to promote at the same moment
    logs = [tmp_path / f"racer{i}.log" for i in range(2)]
    racers = [
        _start(
            state,
            prefect_api,
            log,
            _ct_run(state, "--force"),
            code=PROMOTE_TOGETHER,
            extra={"CT_TEST_BARRIER": str(barrier), "CT_TEST_PARTIES": "2"},
        )
        for log in logs
    ]
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while any(r.poll() is None for r in racers) and time.monotonic() < deadline:
            if any(r.returncode not in (None, 0) for r in racers):
                (barrier / "abort").touch()  # the other one stops waiting for it
            time.sleep(0.2)
        codes = [_wait(r, log) for r, log in zip(racers, logs, strict=True)]
    finally:
        for racer in racers:
            if racer.poll() is None:
                os.killpg(racer.pid, signal.SIGKILL)
                racer.wait()
    assert codes == [0, 0], "\n\n".join(_tail(log) for log in logs)

    # Then: both registered a version; exactly one became champion
    records = runs.read_records(state)[runs_before:]
    assert len(records) == 2, records
    new_versions = sorted((r.challenger_version for r in records), key=lambda v: int(str(v)))
    _, after = _registry(state)
    assert [str(mv.version) for mv in after] == [str(mv.version) for mv in before] + [
        str(v) for v in new_versions
    ]
    (winner,) = [r for r in records if r.outcome == "promoted"]
    (loser,) = [r for r in records if r is not winner]
    assert loser.outcome == "kept champion", loser
    assert loser.model_gate == f"rejected v{loser.challenger_version}"
    assert any(
        f"champion moved from {'none' if expected is None else 'version ' + expected} "
        f"to version {winner.challenger_version}" in reason
        for reason in loser.reasons
    ), loser.reasons
    assert winner.champion_version == loser.champion_version == winner.challenger_version
    assert _assert_champion_has_complete_lineage(state) == winner.challenger_version
    loser_info = tracking.version_info(name, str(loser.challenger_version))
    assert tracking.CHAMPION not in loser_info["aliases"]
    assert loser_info["tags"][tracking.LINEAGE_COMPLETE] == "true"


def test_concurrent_materializations_keep_the_feature_registry_intact(
    state: StatePaths, tmp_path: Path
) -> None:
    """Two CT runs that finish together both materialize the online store at once (seen
    with two real `fraud ct run`: one failed with EntityNotFoundException after promoting,
    so serving was never notified, and every later run failed to build a training set)."""
    from fraud_detection.features import store

    if not store.built_days(state):  # the earlier tests did not run
        for day in ct.pending_partitions(state):
            ct.validate_partition(state, day)
        ct.update_features(state, [])
    # Given: a copy of the state's features and Feast store (this test may break them)
    copy = StatePaths(root=tmp_path / "state")
    for folder in ("features", "feast"):
        if (state.root / folder).is_dir():
            shutil.copytree(state.root / folder, copy.root / folder)
    store.open_store(copy)  # the definitions applied for the copy's tables
    end = ct.as_of(state)
    barrier = tmp_path / "barrier"
    barrier.mkdir()

    # When: two processes materialize it at the same time
    logs = [tmp_path / f"materialize{i}.log" for i in range(2)]
    extra = {"CT_TEST_BARRIER": str(barrier), "CT_TEST_PARTIES": "2"}
    workers = [
        _start(
            copy,
            None,
            log,
            [str(copy.root), end.isoformat()],
            code=MATERIALIZE_TOGETHER,
            extra=extra,
        )
        for log in logs
    ]
    codes = [_wait(w, log) for w, log in zip(workers, logs, strict=True)]

    # Then: both succeed and the registry still holds every definition
    assert codes == [0, 0], "\n\n".join(_tail(log, 5) for log in logs)
    feast_store = store.open_store(copy, apply=False)
    assert {e.name for e in feast_store.list_entities()} >= {"card", "merchant"}
    assert feast_store.get_feature_service(store.FEATURE_SERVICE) is not None

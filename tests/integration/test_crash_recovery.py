"""What a killed process leaves behind is put right when the next run starts.

Real processes, killed with SIGKILL at a set point (a child that patches one MLflow call
to kill itself, as in ``test_ct_concurrency.py``), on a SQLite store under a temporary
state folder:

- a run killed mid-way stays RUNNING in MLflow; the next start (:func:`ct.recover`, what
  ``fraud ct run`` and ``fraud train`` call) marks it FAILED with a tag and one line
  saying it was killed, and leaves a live run of another process alone;
- a process killed right after moving the ``champion`` alias leaves no promotion record;
  the next start writes one, marked "reconciled after a crash", once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fraud_detection.config import project_dir
from fraud_detection.registry import runs, tracking
from fraud_detection.training import ct
from tests.conftest import mlflow_isolated

pytestmark = [
    pytest.mark.integration,
    # MLflow 3.x's SQL store still uses it; nothing to act on here.
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
]

CHILD_TIMEOUT_S = 180

# A child's first lines: MLflow set up on the state folder given as argv[1], a small
# model to log, and `log_run()`, which logs it as a CT run would.
PRELUDE = """
import os, signal, sys, time
from pathlib import Path
import numpy as np, pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from fraud_detection.registry import lineage, tracking
from fraud_detection.training import ct

ctx = ct.context(sys.argv[1])
tracking.setup_mlflow(ctx.profile)
rng = np.random.default_rng(0)
frame = pd.DataFrame({"amount": rng.gamma(2.0, 30.0, 100), "hour": rng.uniform(0, 24, 100)})
label = (frame["amount"] > 60).astype(int)
model = Pipeline([("classify", LogisticRegression())]).fit(frame, label)

def log_run(name):
    return tracking.log_training_run(
        model=model, params={}, metrics={"pr_auc": 0.5}, slice_metrics={}, figures={},
        artifacts={}, input_example=frame, run_name=name,
        tags={"trigger": "schedule", "variant": "normal",
              "training_set": "training_set_2026-01-10.parquet"},
    )

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
"""

# Killed while logging its model: the MLflow run exists, RUNNING.
KILLED_MID_RUN = (
    PRELUDE
    + """
import mlflow.sklearn
mlflow.sklearn.log_model = die
log_run("killed-mid-run")
"""
)

# Alive and busy inside its run until the test ends it.
BUSY_IN_RUN = (
    PRELUDE
    + """
import mlflow.sklearn
def busy(*args, **kwargs):
    Path(sys.argv[2]).touch()
    time.sleep(600)
mlflow.sklearn.log_model = busy
log_run("live")
"""
)

# Registers its model and promotes it, killed right after the `champion` alias moved
# (when it tags the version promoted_at), before anything else is written.
KILLED_AFTER_PROMOTING = (
    PRELUDE
    + """
from mlflow import MlflowClient
run = log_run("promoting")
tags = lineage.lineage_tags(
    git_commit="0123abc", data_hash="3f1e0c1d0e0b6a4e5b2f9d8c7a6b5c4d.dir",
    feature_service="fraud_model_v1", validation_ids=["training-set"],
    # pragma: allowlist nextline secret
    config_hash="a1b2c3d4e5f60718", training_window=("2026-01-01", "2026-01-09"),
)
version = tracking.register(run, ctx.model_name, tags)
set_tag = MlflowClient.set_model_version_tag
def dying_set_tag(self, name, version, key, value):
    if key == tracking.PROMOTED_AT:
        die()
    return set_tag(self, name, version, key, value)
MlflowClient.set_model_version_tag = dying_set_tag
tracking.promote(ctx.model_name, version, expected_champion=None, decision={"promote": True})
"""
)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    """A state folder of its own; MLflow's URIs and environment restored after."""
    with mlflow_isolated():
        yield tmp_path / "state"


def _child(code: str, *args: str, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "FRAUD_"))}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", code, *args],
            cwd=project_dir(),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _killed(code: str, state: Path, log: Path) -> None:
    child = _child(code, str(state), log=log)
    code_ = child.wait(timeout=CHILD_TIMEOUT_S)
    assert code_ == -signal.SIGKILL, log.read_text(errors="replace")[-3000:]


def _runs(name: str) -> dict[str, object]:
    from mlflow import MlflowClient

    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    return {r.info.run_name: r for r in client.search_runs(experiments) if r.info.run_name == name}


def test_a_run_killed_mid_way_is_marked_failed_at_the_next_start_and_a_live_one_is_not(
    state: Path, tmp_path: Path
) -> None:
    # Given a live process busy inside its run, and a run whose process was killed
    ready = tmp_path / "live.ready"
    live = _child(BUSY_IN_RUN, str(state), str(ready), log=tmp_path / "live.log")
    try:
        _killed(KILLED_MID_RUN, state, tmp_path / "killed.log")
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while not ready.exists():
            assert live.poll() is None, (tmp_path / "live.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the live run never started"
            time.sleep(0.1)
        ctx = ct.context(state)
        tracking.setup_mlflow(ctx.profile)
        (killed,) = _runs("killed-mid-run").values()
        assert killed.info.status == "RUNNING"  # for ever, before this fix

        # When the next run starts
        lines = ct.recover(ctx)

        # Then the killed run is FAILED, tagged and reported in one line; the live one runs
        (killed,) = _runs("killed-mid-run").values()
        assert killed.info.status == "FAILED"
        why = killed.data.tags[tracking.FAILED_BECAUSE]
        assert why.startswith("killed: process ")
        assert "is gone" in why
        (line,) = lines
        assert killed.info.run_id in line
        assert "killed" in line
        assert "marked FAILED" in line
        (alive,) = _runs("live").values()
        assert alive.info.status == "RUNNING"
        assert tracking.FAILED_BECAUSE not in alive.data.tags

        # And a second start finds nothing more to do
        assert ct.recover(ctx) == []
    finally:
        if live.poll() is None:
            os.killpg(live.pid, signal.SIGKILL)
        live.wait()


def test_a_promotion_whose_process_died_right_after_is_recorded_at_the_next_start(
    state: Path, tmp_path: Path
) -> None:
    # Given a process killed right after it moved the champion alias to its version
    _killed(KILLED_AFTER_PROMOTING, state, tmp_path / "promoting.log")
    ctx = ct.context(state)
    tracking.setup_mlflow(ctx.profile)
    champion = tracking.champion(ctx.model_name)
    assert champion is not None
    assert str(champion.version) == "1"
    assert runs.read_records(ctx.paths) == []  # no record of the promotion

    # When the next run starts
    lines = ct.recover(ctx)

    # Then the promotion is recorded, marked as reconciled, and said in one line
    (record,) = runs.read_records(ctx.paths)
    assert record.outcome == "promoted"
    assert record.champion_version == record.challenger_version == "1"
    assert record.model_gate == "promoted v1 (reconciled after a crash)"
    assert record.as_of == "2026-01-10T00:00:00+00:00"  # the training set's "now"
    assert record.trigger == "schedule"
    assert "is gone" in record.reasons[0]
    (line,) = lines
    assert "champion v1 had no promotion record" in line
    assert "reconciled after a crash" in line
    assert '"version": "1"' in (ctx.paths.root / "serving" / "champion.json").read_text()

    # And the next start does not record it twice
    assert ct.recover(ctx) == []
    assert len(runs.read_records(ctx.paths)) == 1


def test_a_promotion_by_a_live_process_is_left_for_it_to_record(state: Path) -> None:
    import pandas as pd
    from sklearn.dummy import DummyClassifier
    from sklearn.pipeline import Pipeline

    from fraud_detection.registry import lineage

    # Given this (live) process promoted a version and has not written its record yet
    ctx = ct.context(state)
    tracking.setup_mlflow(ctx.profile)
    frame = pd.DataFrame({"amount": [1.0, 2.0, 3.0, 4.0]})
    model = Pipeline([("classify", DummyClassifier())]).fit(frame, [0, 1, 0, 1])
    run = tracking.log_training_run(
        model=model,
        params={},
        metrics={},
        slice_metrics={},
        figures={},
        artifacts={},
        input_example=frame,
        tags={},
        run_name="live-promotion",
    )
    tags = lineage.lineage_tags(
        git_commit="0123abc",
        data_hash="3f1e0c1d0e0b6a4e5b2f9d8c7a6b5c4d.dir",
        feature_service="fraud_model_v1",
        validation_ids=["training-set"],
        config_hash="a1b2c3d4e5f60718",  # pragma: allowlist secret
        training_window=("2026-01-01", "2026-01-09"),
    )
    version = tracking.register(run, ctx.model_name, tags)
    assert tracking.promote(
        ctx.model_name, version, expected_champion=None, decision={"promote": True}
    ).promoted

    # When another run starts meanwhile, nothing is reconciled: the promoter still runs
    assert ct.recover(ctx) == []
    assert runs.read_records(ctx.paths) == []

"""MLflow tracking and the model registry, on a SQLite store under a temporary folder.

Given tiny scikit-learn pipelines: a logged run holds its params, metrics, figures and a
model with signature and input example; a registered version carries every lineage tag,
``lineage_complete`` and the ``challenger`` alias; promotion is a compare-and-set that
one of three racing processes wins; a registration killed midway is never promoted; the
infrastructure check reports, never raises. Lineage: ``dvc_hash`` equals what ``dvc add``
records, ``git_commit`` sees dirty trees.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytest

from fraud_detection.config import MlflowSettings, Profile
from fraud_detection.registry import lineage, tracking
from fraud_detection.registry.tracking import (
    CHALLENGER,
    CHAMPION,
    LINEAGE_COMPLETE,
    TrainingRun,
    register,
)
from tests.conftest import mlflow_isolated

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

pytestmark = [
    pytest.mark.integration,
    # MLflow 3.17's SQL store still uses it; nothing to act on here.
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
]

EXPERIMENT = "registry-test"
LINEAGE = lineage.lineage_tags(
    git_commit="0123abc",
    data_hash="3f1e0c1d0e0b6a4e5b2f9d8c7a6b5c4d.dir",
    feature_service="fraud_model_v1",
    validation_ids=["raw-2026-01-01", "training-set"],
    config_hash="a1b2c3d4e5f60718",  # pragma: allowlist secret
    training_window=("2026-01-01", "2026-01-10"),
)
APPROVED = {"promote": True, "reasons": ["beats the champion"], "checks": {"floor": True}}
CHILD_TIMEOUT_S = 120
RACERS = 3
RACE_MODEL = "fraud-race"
SPAWN = multiprocessing.get_context("spawn")


def _profile(state_dir: Path) -> Profile:
    return Profile(state_dir=state_dir, mlflow=MlflowSettings(experiment=EXPERIMENT))


def _frame(rows: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 30.0, rows),
            "hour": rng.uniform(0, 24, rows),
            "txn_count_1h": rng.integers(0, 4, rows),
        }
    )
    label = pd.Series((frame["amount"] + rng.normal(0, 20, rows) > 80).astype(int))
    frame.loc[0, "hour"] = np.nan  # in the input example too: the column stays required
    return frame, label


def _log(name: str, seed: int) -> TrainingRun:
    # Imported here: spawned children import this module, and imports cost seconds.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    frame, label = _frame(120, seed)
    model = Pipeline(
        [
            ("impute", SimpleImputer()),
            ("scale", StandardScaler()),
            ("classify", LogisticRegression()),
        ]
    )
    model.fit(frame, label)
    figure, axes = plt.subplots()
    axes.plot([0, 1], [1, 0])
    try:
        return tracking.log_training_run(
            model=model,
            params={"model": {"C": 1.0, "solver": "lbfgs"}, "seed": seed},
            metrics={"pr_auc": 0.91, "roc_auc": np.float64(0.95)},
            slice_metrics={
                "channel": {"online": {"pr_auc": 0.8, "rows": 60}, "pos": {"pr_auc": None}}
            },
            figures={"pr_curve": figure},
            artifacts={"threshold": {"value": np.float64(0.5), "target_precision": None}},
            input_example=frame,
            tags={"trigger": "test"},
            run_name=name,
        )
    finally:
        plt.close(figure)


# ------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Profile]:
    """One SQLite store for the module; MLflow's URIs and environment restored after."""
    profile = _profile(tmp_path_factory.mktemp("registry") / "state")
    with mlflow_isolated():
        tracking.setup_mlflow(profile)
        yield profile


@pytest.fixture(scope="module")
def runs(store: Profile) -> list[TrainingRun]:
    return [_log(f"run-{seed}", seed) for seed in (1, 2)]


def _client() -> Any:
    from mlflow import MlflowClient

    return MlflowClient()


def _versions(name: str) -> list[Any]:
    return sorted(
        _client().search_model_versions(f"name = '{name}'"), key=lambda mv: int(mv.version)
    )


# ------------------------------------------------------------ log + register


def test_logged_run_holds_evidence_and_model_with_signature(
    store: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    import mlflow.models

    def no_inference(*args: Any, **kwargs: Any) -> list[str]:
        raise AssertionError("pip requirements were inferred (slow) instead of passed")

    monkeypatch.setattr(mlflow.models, "infer_pip_requirements", no_inference)

    run = _log("evidence", seed=3)  # pip requirements passed, never inferred (no_inference)

    data = _client().get_run(run.run_id).data
    assert data.params == {"model.C": "1.0", "model.solver": "lbfgs", "seed": "3"}
    assert data.metrics["pr_auc"] == pytest.approx(0.91)
    assert data.metrics["slice.channel.online.pr_auc"] == pytest.approx(0.8)
    assert data.metrics["slice.channel.online.rows"] == 60
    assert "slice.channel.pos.pr_auc" not in data.metrics  # not a number: JSON only
    assert data.tags["trigger"] == "test"
    files = {a.path for a in _client().list_artifacts(run.run_id)}
    files |= {a.path for a in _client().list_artifacts(run.run_id, "figures")}
    assert {"figures/pr_curve.png", "slice_metrics.json", "threshold.json"} <= files
    slices = json.loads(mlflow.artifacts.load_text(f"{run.artifact_uri}/slice_metrics.json"))
    assert slices["channel"]["online"]["pr_auc"] == 0.8

    info = mlflow.models.get_model_info(run.model_uri)
    assert info.run_id == run.run_id
    assert info.signature.inputs.input_names() == ["amount", "hour", "txn_count_1h"]
    assert info.signature.inputs.required_input_names() == ["amount", "hour", "txn_count_1h"]
    assert info.saved_input_example_info is not None
    stored = mlflow.get_logged_model(info.model_id).artifact_location
    requirements = mlflow.artifacts.load_text(f"{stored}/requirements.txt").split()
    assert sorted(r.split("==")[0] for r in requirements) == sorted(tracking.MODEL_REQUIREMENTS)
    proba = tracking.load_pyfunc(run.model_uri).predict(_frame(4, seed=9)[0])
    assert np.asarray(proba).shape == (4, 2)  # the pyfunc returns predict_proba


def test_registered_version_has_lineage_then_complete_then_challenger(
    store: Profile, runs: list[TrainingRun]
) -> None:
    version = register(runs[0], "fraud-lineage", LINEAGE)

    info = tracking.version_info("fraud-lineage", version)
    assert {key: info["tags"][key] for key in lineage.LINEAGE_TAGS} == LINEAGE
    assert info["tags"][LINEAGE_COMPLETE] == "true"
    assert info["aliases"] == [CHALLENGER]
    assert info["run_id"] == runs[0].run_id
    assert info["source"] == runs[0].model_uri
    assert info["download_uri"].startswith("file://")
    challenger = tracking.challenger("fraud-lineage")
    assert challenger is not None
    assert str(challenger.version) == version
    assert tracking.champion("fraud-lineage") is None


def test_incomplete_lineage_is_refused_before_anything_is_written(
    store: Profile, runs: list[TrainingRun]
) -> None:
    partial = {k: v for k, v in LINEAGE.items() if k != lineage.DATA_HASH_TAG}

    with pytest.raises(tracking.RegistryError, match=r"lineage\.data_dvc_md5"):
        register(runs[0], "fraud-partial", partial)
    assert _versions("fraud-partial") == []


# ------------------------------------------------------------------ promotion


def test_promotion_is_compare_and_set(store: Profile, runs: list[TrainingRun]) -> None:
    name = "fraud-promote"
    v1 = register(runs[0], name, LINEAGE)

    first = tracking.promote(name, v1, expected_champion=None, decision=APPROVED)
    assert (first.promoted, first.champion, first.previous) == (True, v1, None)
    assert tracking.challenger(name) is None  # the challenger became the champion

    v2 = register(runs[1], name, LINEAGE)
    second = tracking.promote(name, v2, expected_champion=v1, decision=APPROVED)
    assert (second.promoted, second.champion, second.previous) == (True, v2, v1)
    assert tracking.version_info(name, v1)["tags"][tracking.SUPERSEDED_BY] == v2
    assert tracking.PROMOTED_AT in tracking.version_info(name, v2)["tags"]

    v3 = register(runs[1], name, LINEAGE)
    stale = tracking.promote(name, v3, expected_champion=v1, decision=APPROVED)
    assert not stale.promoted
    assert stale.champion == v2
    assert f"from version {v1} to version {v2}" in stale.reason
    champion = tracking.champion(name)
    assert champion is not None
    assert str(champion.version) == v2
    assert tracking.PROMOTED_AT not in tracking.version_info(name, v3)["tags"]

    rejected = {"promote": False, "reasons": ["pr_auc 0.10 below the floor 0.20"]}
    refused = tracking.promote(name, v3, expected_champion=v2, decision=rejected)
    assert not refused.promoted
    assert "below the floor" in refused.reason
    assert tracking.version_info(name, v3)["aliases"] == [CHALLENGER]


def test_gate_decision_is_kept_on_run_and_version(store: Profile, runs: list[TrainingRun]) -> None:
    import mlflow

    name = "fraud-decision"
    version = register(runs[0], name, LINEAGE)
    decision = {
        "promote": False,
        "reasons": ["slice channel=online dropped 0.09 > 0.05"] + ["x" * 80] * 40,
        "checks": [
            {"name": "floor", "passed": True},
            {"name": "slice channel=online", "passed": False},
        ],
    }

    tracking.record_decision(name, version, decision, runs[0].run_id)

    tags = tracking.version_info(name, version)["tags"]
    assert tags["gate.promote"] == "false"
    assert tags["gate.check.floor"] == "pass"
    assert tags["gate.check.slice_channel_online"] == "fail"
    assert tags["gate.reasons"].startswith("slice channel=online dropped")
    assert len(tags["gate.reasons"]) <= tracking.GATE_REASONS_MAX_CHARS
    assert tracking.GATE_DECISION_FILE in tags["gate.reasons"]
    saved = mlflow.artifacts.load_text(f"{runs[0].artifact_uri}/{tracking.GATE_DECISION_FILE}")
    assert json.loads(saved) == decision


# --------------------------------------------- concurrency and crashes (processes)


def _child_racer(state_dir: str, barrier: Any, run_file: str, out: str) -> None:
    """Set up a fresh store with the others; register the run the parent logged as a new
    version; race the others to promote it. The parent takes part in every barrier."""
    try:
        barrier.wait(timeout=CHILD_TIMEOUT_S)  # 1: everyone imported: set up at once
        tracking.setup_mlflow(_profile(Path(state_dir)))
        barrier.wait(timeout=CHILD_TIMEOUT_S)  # 2: all set up; the parent logs a run
        barrier.wait(timeout=CHILD_TIMEOUT_S)  # 3: the run is logged
        run = TrainingRun(**json.loads(Path(run_file).read_text()))
        version = register(run, RACE_MODEL, LINEAGE)
        read_champion = tracking.champion

        def slow_champion(name: str) -> ModelVersion | None:  # widen the read-then-write window
            current: ModelVersion | None = read_champion(name)
            time.sleep(0.5)
            return current

        tracking.champion = slow_champion
        barrier.wait(timeout=CHILD_TIMEOUT_S)  # 4: all registered: promote at once
        result = tracking.promote(RACE_MODEL, version, expected_champion=None, decision=APPROVED)
        Path(out).write_text(json.dumps({"version": version, **result.__dict__}))
    except BaseException:
        barrier.abort()  # the others (and the parent) fail now instead of timing out
        raise


def _child_killed_in_register(state_dir: str, run: TrainingRun, name: str) -> None:
    """Register, but die (SIGKILL) just before the lineage_complete tag is written."""
    from mlflow import MlflowClient

    tracking.setup_mlflow(_profile(Path(state_dir)))
    set_tag = MlflowClient.set_model_version_tag

    def dying_set_tag(self: Any, model: str, version: str, key: str, value: Any) -> None:
        if key == LINEAGE_COMPLETE:
            os.kill(os.getpid(), signal.SIGKILL)
        set_tag(self, model, version, key, value)

    MlflowClient.set_model_version_tag = dying_set_tag  # type: ignore[method-assign,assignment]
    register(run, name, LINEAGE)


def _run_children(*processes: Any) -> list[int]:
    for process in processes:
        process.start()
    return _join(*processes)


def _join(*processes: Any) -> list[int]:
    for process in processes:
        process.join(CHILD_TIMEOUT_S)
        if process.is_alive():
            process.kill()
            pytest.fail(f"child {process.name} hung for {CHILD_TIMEOUT_S} s")
    return [process.exitcode for process in processes]


def test_processes_sharing_a_fresh_store_promote_exactly_one_winner(
    store: Profile, tmp_path: Path
) -> None:
    """Three processes create a fresh store at once (no migration race), each registers
    a version, then all promote expecting no champion: one wins, the others are told."""
    state_dir = tmp_path / "fresh-state"
    run_file = tmp_path / "run.json"
    barrier = SPAWN.Barrier(RACERS + 1)
    outs = [tmp_path / f"racer{i}.json" for i in range(RACERS)]
    children = [
        SPAWN.Process(target=_child_racer, args=(str(state_dir), barrier, str(run_file), str(out)))
        for out in outs
    ]
    for child in children:
        child.start()
    try:
        try:
            barrier.wait(timeout=CHILD_TIMEOUT_S)  # 1
            barrier.wait(timeout=CHILD_TIMEOUT_S)  # 2: the children set the store up
            tracking.setup_mlflow(_profile(state_dir))
            run_file.write_text(json.dumps(_log("racers", seed=10).__dict__))
            barrier.wait(timeout=CHILD_TIMEOUT_S)  # 3
            barrier.wait(timeout=CHILD_TIMEOUT_S)  # 4
        except threading.BrokenBarrierError:
            pytest.fail(f"a child failed (exit codes {_join(*children)}); see its stderr")
        assert _join(*children) == [0] * RACERS

        results = [json.loads(out.read_text()) for out in outs]
        assert len({r["version"] for r in results}) == RACERS, results
        winners = [r["version"] for r in results if r["promoted"]]
        assert len(winners) == 1, results
        for loser in (r for r in results if not r["promoted"]):
            assert f"from none to version {winners[0]}" in loser["reason"]
            assert loser["champion"] == winners[0]
            assert CHAMPION not in tracking.version_info(RACE_MODEL, loser["version"])["aliases"]
        champion = tracking.champion(RACE_MODEL)
        assert champion is not None
        assert str(champion.version) == winners[0]
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
        tracking.setup_mlflow(store)  # back to the module's store


def test_registration_killed_midway_is_never_promoted(
    store: Profile, runs: list[TrainingRun]
) -> None:
    name = "fraud-crash"
    child = SPAWN.Process(
        target=_child_killed_in_register, args=(str(store.state_dir), runs[0], name)
    )

    assert _run_children(child) == [-signal.SIGKILL]

    (orphan,) = _versions(name)
    assert LINEAGE_COMPLETE not in orphan.tags
    assert orphan.tags[lineage.GIT_COMMIT_TAG] == LINEAGE[lineage.GIT_COMMIT_TAG]
    assert not orphan.aliases  # never became the challenger
    refused = tracking.promote(name, orphan.version, expected_champion=None, decision=APPROVED)
    assert not refused.promoted
    assert LINEAGE_COMPLETE in refused.reason
    assert tracking.champion(name) is None

    # The rerun registers a complete version and promotes it.
    version = register(runs[0], name, LINEAGE)
    rerun = tracking.promote(name, version, expected_champion=None, decision=APPROVED)
    assert rerun.promoted
    champion = tracking.champion(name)
    assert champion is not None
    assert str(champion.version) == version
    assert champion.tags[LINEAGE_COMPLETE] == "true"


# ---------------------------------------------------------------- infra check


def test_infra_check_reports_instead_of_raising(store: Profile, runs: list[TrainingRun]) -> None:
    sample = _frame(25, seed=5)[0]

    ok, detail = tracking.infra_check(runs[0].model_uri, sample)
    assert ok, detail
    assert "25 rows" in detail
    assert "a single row scores as in the batch" in detail
    assert tracking.infra_check(runs[0].model_uri, sample.iloc[:0]) == (
        False,
        "no sample rows to score",
    )

    # A missing count (a card's first transaction) passes: integer columns are typed Any.
    sample.loc[0, "txn_count_1h"] = np.nan
    ok, detail = tracking.infra_check(runs[0].model_uri, sample)
    assert ok, detail

    ok, detail = tracking.infra_check(runs[0].model_uri, sample.drop(columns="hour"))
    assert not ok
    assert "hour" in detail
    assert "\n" not in detail

    ok, detail = tracking.infra_check("models:/no-such-model/1", sample)
    assert not ok
    assert detail.startswith("load failed")


@pytest.mark.parametrize(
    ("output", "problem"),
    [
        (np.array([[0.2, 0.8], [0.5, np.nan]]), "NaN"),
        (np.array([[0.1, 0.2, 0.7]] * 2), "wrong shape"),
        (np.array([0.3]), "wrong shape"),
        (np.array([0.3, 1.5]), "outside [0, 1]"),
        (np.array(["a", "b"]), "not numeric"),
    ],
)
def test_bad_predictions_fail_the_infra_check(output: Any, problem: str) -> None:
    ok, detail = tracking.check_probabilities(output, n_rows=2)

    assert not ok
    assert problem in detail


# -------------------------------------------------------------------- lineage


def _dvc(cwd: Path, *args: str) -> None:
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(cwd.parent / "dvc-site-cache"),
        "XDG_CONFIG_HOME": str(cwd.parent / "xdg-config"),
    }
    dvc = Path(sys.executable).with_name("dvc")
    subprocess.run([str(dvc), *args], cwd=cwd, env=env, check=True, capture_output=True)


def test_dvc_hash_equals_what_dvc_add_records(tmp_path: Path) -> None:
    import yaml

    repo = tmp_path / "repo"
    data = repo / "data"
    (data / "day=2").mkdir(parents=True)
    (data / "transactions.csv").write_text("id,amount\n1,9.5\n2,120.0\n")
    (data / "day=2" / "labels.csv").write_bytes(b"id,is_fraud\r\n1,0\r\n")  # CRLF kept as is
    (data / "blob.bin").write_bytes(bytes(range(256)))
    (repo / "model.json").write_text('{"threshold": 0.5}\n')
    expected = {"data": lineage.dvc_hash(data), "model.json": lineage.dvc_hash(repo / "model.json")}

    _dvc(repo, "init", "--no-scm", "-q")
    _dvc(repo, "add", "-q", "data", "model.json")

    for target, md5 in expected.items():
        (out,) = yaml.safe_load((repo / f"{target}.dvc").read_text())["outs"]
        assert out["md5"] == md5, target
    assert expected["data"].endswith(".dir")


def _git(repo: Path, *args: str) -> str:
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.com"]
    done = subprocess.run(
        ["git", *identity, "-C", str(repo), *args], check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def test_git_commit_is_marked_dirty_only_for_tracked_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    repo = tmp_path / "repo"
    repo.mkdir()
    assert lineage.git_commit(repo) == "unknown"  # not a repository yet
    _git(repo, "init", "-q")
    (repo / "train.py").write_text("print('v1')\n")
    _git(repo, "add", "train.py")
    _git(repo, "commit", "-q", "-m", "v1")
    sha = _git(repo, "rev-parse", "HEAD")

    (repo / "notes.txt").write_text("untracked\n")
    assert lineage.git_commit(repo) == sha
    (repo / "train.py").write_text("print('v2')\n")
    assert lineage.git_commit(repo) == f"{sha}-dirty"


def test_config_hash_is_canonical(tmp_path: Path) -> None:
    profile = _profile(tmp_path)
    digest = lineage.config_hash(profile, {"b": 1, "a": [1, 2]})

    assert re.fullmatch(r"[0-9a-f]{16}", digest)
    assert digest == lineage.config_hash(profile.model_dump(mode="json"), {"a": [1, 2], "b": 1})
    assert digest != lineage.config_hash(profile, {"b": 2, "a": [1, 2]})
    assert list(LINEAGE) == list(lineage.LINEAGE_TAGS)
    assert LINEAGE[lineage.TRAINING_WINDOW_TAG] == "2026-01-01/2026-01-10"

"""A state folder copied or moved elsewhere works on its own.

MLflow's SQLite store (``<state>/mlflow/mlflow.db``) keeps artifact locations as
absolute ``file://`` URIs. Given a state folder with a champion: a copy logs, registers
and promotes its new models inside itself and never touches the original (not one file
changed), and its champions load with the original gone; a moved folder loads its
champion and goes on training. Opening the copy says in one line what was re-rooted.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from fraud_detection.config import Profile
from fraud_detection.registry import lineage, tracking
from fraud_detection.training import ct
from tests.conftest import mlflow_isolated

pytestmark = [
    pytest.mark.integration,
    # MLflow 3.x's SQL store still uses it; nothing to act on here.
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
]

LINEAGE = lineage.lineage_tags(
    git_commit="0123abc",
    data_hash="3f1e0c1d0e0b6a4e5b2f9d8c7a6b5c4d.dir",
    feature_service="fraud_model_v1",
    validation_ids=["training-set"],
    config_hash="a1b2c3d4e5f60718",  # pragma: allowlist secret
    training_window=("2026-01-01", "2026-01-09"),
)


@pytest.fixture(autouse=True)
def _mlflow_restored() -> Iterator[None]:
    with mlflow_isolated():
        yield


def _profile(state: Path) -> Profile:
    return ct.context(state).profile


def _train_and_promote(profile: Profile, seed: int) -> str:
    """What a CT run does in MLflow: log a model, register it, promote it."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    tracking.setup_mlflow(profile)
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"amount": rng.gamma(2.0, 30.0, 100)})
    model = Pipeline([("classify", LogisticRegression())])
    model.fit(frame, (frame["amount"] > 60).astype(int))
    run = tracking.log_training_run(
        model=model,
        params={"seed": seed},
        metrics={"pr_auc": 0.5},
        slice_metrics={},
        figures={},
        artifacts={"evaluation": {"seed": seed}},
        input_example=frame,
        tags={"trigger": "test"},
        run_name=f"run-{seed}",
    )
    name = profile.mlflow.model_name
    version = tracking.register(run, name, LINEAGE)
    current = tracking.champion(name)
    expected = None if current is None else str(current.version)
    result = tracking.promote(name, version, expected_champion=expected, decision={"promote": True})
    assert result.promoted, result.reason
    return version


def _listing(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``root``: size, mtime and content hash."""
    return {
        str(path.relative_to(root)): (
            path.stat().st_size,
            path.stat().st_mtime_ns,
            hashlib.sha256(path.read_bytes()).hexdigest(),
        )
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _load(profile: Profile, version: str) -> tuple[str, object]:
    """Where ``version``'s model is read from, and the model loaded from there."""
    import mlflow.sklearn

    tracking.setup_mlflow(profile)
    name = profile.mlflow.model_name
    where = str(tracking.version_info(name, version)["download_uri"])
    return where, mlflow.sklearn.load_model(f"models:/{name}/{version}")


def test_a_copied_state_folder_trains_into_itself_and_leaves_the_original_untouched(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a state folder with a champion, and a copy of it
    original = tmp_path / "original" / "state"
    first = _train_and_promote(_profile(original), seed=1)
    copy = tmp_path / "elsewhere" / "state"
    shutil.copytree(original, copy)
    before = _listing(original)

    # When the copy is opened and trains and promotes a new champion
    with caplog.at_level(logging.WARNING, logger="fraud_detection.registry.tracking"):
        tracking.setup_mlflow(_profile(copy))
    second = _train_and_promote(_profile(copy), seed=2)

    # Then not one file of the original changed, nor was one added
    assert _listing(original) == before

    # And opening it said what moved, in one line
    (line,) = [r.getMessage() for r in caplog.records if "state folder moved" in r.getMessage()]
    assert line.startswith(f"state folder moved from {original} to {copy}: re-rooted ")
    assert int(line.split("re-rooted ")[1].split()[0]) >= 4  # experiment, run, model, version

    # And both champions (the old and the new) load from the copy, the original gone
    shutil.rmtree(original)
    for version in (first, second):
        where, model = _load(_profile(copy), version)
        assert where.startswith(copy.as_uri()), where
        assert model is not None
    assert str(tracking.champion(_profile(copy).mlflow.model_name).version) == second


def test_a_moved_state_folder_loads_its_champion_and_goes_on_training(tmp_path: Path) -> None:
    # Given a state folder with a champion, renamed
    before = tmp_path / "before" / "state"
    first = _train_and_promote(_profile(before), seed=1)
    after = tmp_path / "after"
    before.rename(after)

    # Then its champion loads from where it is now, and the next model lands there too
    where, _ = _load(_profile(after), first)
    assert where.startswith(after.as_uri()), where
    second = _train_and_promote(_profile(after), seed=2)
    where, _ = _load(_profile(after), second)
    assert where.startswith(after.as_uri()), where
    assert not before.exists()

    # And opening it again finds nothing left to re-root
    assert tracking._reroot(_profile(after)) is None

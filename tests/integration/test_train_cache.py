"""CT's train step is cached (a Prefect task result kept 30 days) by its inputs and its code.

The key is the training set's content hash, the config hash, the variant and the code hash
of the train step's source files (``ct.TRAIN_CODE``). The same inputs and code: the cached
model comes back, nothing is fitted. A change to the model code: a refit, even with the
same data and config, so a forced retrain after a code change never returns the old model.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fraud_detection.config import StatePaths, load_profile
from fraud_detection.orchestration import flows
from fraud_detection.training import ct
from fraud_detection.training.settings import load_train_config
from tests.conftest import prefect_client_of
from tests.unit.frames import simulated_training_frame

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prefect_home(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's Prefect test server, with a result store of the module's own."""
    home = tmp_path_factory.mktemp("prefect_home")
    with prefect_client_of(prefect_server, home):
        yield home


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[ct.CTContext, ct.TrainingSet]:
    """A small training set on disk and a CT context that trains quickly on it."""
    root = tmp_path_factory.mktemp("train_cache")
    frame = simulated_training_frame(days=5, rows_per_day=1_000, cards=200, merchants=40)
    path = root / "training_set_2026-01-06.parquet"
    frame.to_parquet(path, index=False)
    train = load_train_config()
    train = train.model_copy(
        update={"holdout_days": 2, "model": train.model.model_copy(update={"max_iter": 20})}
    )
    ctx = ct.CTContext(profile=load_profile(), paths=StatePaths(root=root / "state"), train=train)
    stamps = pd.to_datetime(frame["event_timestamp"])
    training = ct.TrainingSet(
        path=path,
        rows=len(frame),
        fraud_rate=float(frame["is_fraud"].mean()),
        digest=ct._file_digest(path),
        window=(f"{stamps.min():%Y-%m-%d}", f"{stamps.max():%Y-%m-%d}"),
        validation_id="test",
    )
    return ctx, training


def _train(ctx: ct.CTContext, training: ct.TrainingSet) -> Any:
    """The CT flow's train task, in a flow of its own (the rest of CT is not needed)."""
    from prefect import flow

    @flow(name="train-cache-test")
    def train_once() -> Any:
        return flows.train(ctx, training, "normal")

    return train_once()


def _scores(model: Any, training: ct.TrainingSet) -> list[float]:
    frame = pd.read_parquet(training.path).head(200)
    return [float(p) for p in model.predict_proba(frame)[:, 1]]


def _edited_copy(tmp_path: Path) -> list[Path]:
    """The train step's source files copied, with one edit to the model code."""
    package = Path(ct.__file__).resolve().parents[1]
    copies = []
    for path in ct.TRAIN_CODE:
        copy = tmp_path / path.relative_to(package)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, copy)
        copies.append(copy)
    model = next(c for c in copies if c.name == "model.py")
    model.write_text(model.read_text() + "\n# the model code changed\n")
    return copies


def test_a_change_to_the_model_code_refits_the_same_code_hits_the_cache(
    prefect_home: Path,
    inputs: tuple[ct.CTContext, ct.TrainingSet],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctx, training = inputs
    fits: list[str] = []
    real_fit = ct.fit

    def counting_fit(*args: Any, **kwargs: Any) -> Any:
        fits.append(ct.code_hash())
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(ct, "fit", counting_fit)
    original = ct.code_hash()

    # Given: the train step ran once on this training set
    first = _train(ctx, training)
    assert len(fits) == 1

    # When: it runs again with the same data, config and code
    again = _train(ctx, training)
    # Then: the cached model comes back, nothing is fitted
    assert len(fits) == 1, "the same inputs and code refitted instead of hitting the cache"
    assert _scores(again, training) == _scores(first, training)

    # When: the model code changes (the hash reads an edited copy of the source files)
    monkeypatch.setattr(ct, "TRAIN_CODE", tuple(_edited_copy(tmp_path)))
    assert ct.code_hash() != original
    _train(ctx, training)
    # Then: a refit, though the data and config did not change
    assert fits == [original, ct.code_hash()], "a change to the model code hit the old cache"

    # ... and that new code's model is cached in turn
    _train(ctx, training)
    assert len(fits) == 2

    # When: the original code is back (a revert): its model is still cached
    monkeypatch.undo()
    monkeypatch.setattr(ct, "fit", counting_fit)
    restored = _train(ctx, training)
    assert len(fits) == 2
    assert _scores(restored, training) == _scores(first, training)

"""Level 0 end to end: the manual notebook runs headless on simulated data and hands over
a model file and its metrics, and fails with a clear message when there is no data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib
import nbformat
import numpy as np
import pandas as pd
import pytest

from fraud_detection.config import StatePaths, load_simulate_config, project_dir
from fraud_detection.data.simulator import write_simulation
from fraud_detection.errors import FraudError
from fraud_detection.notebooks import INJECTED_TAG, PARAMETERS_TAG, run_notebook

pytestmark = pytest.mark.e2e

NOTEBOOK = project_dir() / "pipelines" / "level0_manual" / "fraud_model.ipynb"


@pytest.fixture(scope="module")
def level0_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Simulate a small dataset, then run the notebook on it once for every test here."""
    state = StatePaths(root=tmp_path_factory.mktemp("state"))
    config = load_simulate_config(
        overrides={
            "days": 5,
            "rows_per_day": 2_000,
            "cards": 300,
            "merchants": 50,
            "scenario": {"drift": {"enabled": False}, "broken_feed": {"enabled": False}},
        }
    )
    write_simulation(config, state)
    executed = run_notebook(
        NOTEBOOK, state.root / "runs", parameters={"STATE_DIR": state.root, "TEST_DAYS": 2}
    )
    metrics = json.loads((state.level0 / "metrics.json").read_text())
    return {"state": state, "executed": executed, "metrics": metrics}


def test_notebook_hands_over_a_model_and_its_metrics(level0_run: dict[str, Any]) -> None:
    level0 = level0_run["state"].level0
    assert (level0 / "model.joblib").is_file()
    assert (level0 / "metrics.json").is_file()
    assert level0_run["executed"].is_file()
    for key in (
        "pr_auc",
        "roc_auc",
        "threshold",
        "precision",
        "recall",
        "confusion_matrix",
        "n_train",
        "n_test",
        "fraud_rate_train",
        "fraud_rate_test",
        "trained_at",
        "data_days",
    ):
        assert key in level0_run["metrics"], key


def test_parameters_are_injected_after_the_parameters_cell(level0_run: dict[str, Any]) -> None:
    nb = nbformat.read(level0_run["executed"], as_version=4)
    tags = [cell.metadata.get("tags", []) for cell in nb.cells]
    at = next(i for i, cell_tags in enumerate(tags) if PARAMETERS_TAG in cell_tags)
    assert INJECTED_TAG in tags[at + 1]
    assert "TEST_DAYS = 2" in nb.cells[at + 1].source


def test_model_learned_something(level0_run: dict[str, Any]) -> None:
    metrics = level0_run["metrics"]
    assert isinstance(metrics["pr_auc"], float)
    # A random model scores about the test fraud rate; this one must do far better.
    assert metrics["pr_auc"] > max(0.2, 5 * metrics["fraud_rate_test"])
    assert metrics["roc_auc"] > 0.7
    assert metrics["data_days"] == 5
    assert len(metrics["test_days"]) == 2


def test_confusion_matrix_covers_the_test_set(level0_run: dict[str, Any]) -> None:
    metrics = level0_run["metrics"]
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (2, 2)
    assert matrix.sum() == metrics["n_test"]
    # The fraud row holds the test set's frauds.
    assert matrix[1].sum() == round(metrics["fraud_rate_test"] * metrics["n_test"])


def _handed_over(level0_run: dict[str, Any]) -> tuple[Any, pd.DataFrame, dict[str, list[str]]]:
    level0 = level0_run["state"].level0
    model = joblib.load(level0 / "model.joblib")
    features = level0_run["metrics"]["features"]
    rows = pd.DataFrame(json.loads((level0 / "input_example.json").read_text()))
    rows = rows.astype(dict.fromkeys(features["numeric"], float))
    return model, rows, features


def test_handed_over_model_predicts_probabilities(level0_run: dict[str, Any]) -> None:
    model, rows, features = _handed_over(level0_run)
    assert list(rows.columns) == features["numeric"] + features["categorical"]

    scores = model.predict_proba(rows)[:, 1]

    assert len(scores) == len(rows) >= 3
    assert not np.isnan(scores).any()
    assert ((scores >= 0) & (scores <= 1)).all()


def test_handed_over_model_copes_with_a_new_card_and_an_unseen_category(
    level0_run: dict[str, Any],
) -> None:
    model, rows, _ = _handed_over(level0_run)
    new_card = rows.head(1).copy()
    # A card's first transaction has no history; a category the model never saw.
    new_card[["amount_to_card_mean", "seconds_since_prev_txn"]] = np.nan
    new_card["merchant_category"] = "never_seen_before"

    score = model.predict_proba(new_card)[:, 1]

    assert np.isfinite(score).all()
    assert 0 <= score[0] <= 1


def test_notebook_without_data_fails_with_a_clear_message(tmp_path: Path) -> None:
    empty = tmp_path / "empty-state"
    empty.mkdir()

    with pytest.raises(FraudError) as failure:
        run_notebook(NOTEBOOK, tmp_path / "runs", parameters={"STATE_DIR": empty})

    message = str(failure.value)
    assert "\n" not in message
    assert f"no transaction partitions under {empty / 'data' / 'raw'}" in message
    assert "make simulate" in message
    assert "cell " in message
    executed = tmp_path / "runs" / "fraud_model.executed.ipynb"
    assert str(executed) in message
    assert executed.is_file()
    assert not (empty / "level0").exists()

"""The fast scorer equals the registered pipeline's own predict_proba, row by row."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from fraud_detection.features.engineering import CATEGORICAL_FEATURES, MODEL_FEATURES
from fraud_detection.serving.champion import ModelLoadError, check_scorer
from fraud_detection.serving.scorer import ScorerError, build_scorer
from fraud_detection.training.model import drop_feature, split_holdout, train
from fraud_detection.training.settings import ModelSettings
from tests.unit.frames import simulated_training_frame

pytestmark = pytest.mark.unit

COLUMNS = [*MODEL_FEATURES, *CATEGORICAL_FEATURES]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return simulated_training_frame(days=8, rows_per_day=1_500, cards=400, merchants=80)


@pytest.fixture(scope="module")
def fitted(frame: pd.DataFrame) -> tuple[object, pd.DataFrame]:
    fit_part, holdout = split_holdout(frame, holdout_days=2)
    model = train(fit_part, ModelSettings(max_iter=30))
    return model, holdout


def _awkward(holdout: pd.DataFrame) -> pd.DataFrame:
    """Holdout rows with what serving meets: unseen and missing categories, missing numbers."""
    rows = (
        holdout[COLUMNS].sample(n=min(len(holdout), 2_000), random_state=3).reset_index(drop=True)
    )
    rows["merchant_category"] = rows["merchant_category"].astype(object)
    rows["channel"] = rows["channel"].astype(object)
    rows.loc[::7, "merchant_category"] = "never_seen_category"
    rows.loc[3::11, "channel"] = None
    rows.loc[5::13, "merchant_category"] = None
    rows.loc[::5, "card_amount_mean_7d"] = np.nan
    rows.loc[1::9, list(MODEL_FEATURES[:9])] = np.nan  # a card's first transaction
    rows.loc[2::17, "merchant_fraud_rate_30d"] = np.nan
    return rows


def test_scorer_equals_pipeline_on_holdout_rows(fitted: tuple[object, pd.DataFrame]) -> None:
    # Given a fitted pipeline and holdout rows including unseen/missing categories and numbers
    model, holdout = fitted
    rows = _awkward(holdout)
    expected = model.predict_proba(rows)[:, 1]  # type: ignore[attr-defined]

    # When the fast scorer scores them, as a frame and one row at a time (the API's path)
    scorer = build_scorer(model)  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no feature-name warnings on the numpy path
        by_frame = scorer.score_frame(rows)
        numbers = rows[list(scorer.numeric)].to_numpy(dtype=np.float64)
        categories = rows[list(scorer.categorical)].to_numpy(dtype=object)
        one_by_one = np.array(
            [scorer.score_one(numbers[i], list(categories[i])) for i in range(300)]
        )

    # Then every score equals the pipeline's to 1e-9
    np.testing.assert_allclose(by_frame, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(one_by_one, expected[:300], rtol=0, atol=1e-9)
    # And one row at a time the numpy trees walk them, bit for bit as sklearn's trees do
    assert scorer.engine == "numpy"
    np.testing.assert_array_equal(one_by_one, by_frame[:300])
    # And the awkward rows really took the missing/unknown branches somewhere
    assert rows["merchant_category"].isna().any()
    assert (rows["merchant_category"] == "never_seen_category").any()
    assert scorer.trees is not None
    assert scorer.trees.categorical.any()


def test_numpy_trees_that_disagree_with_sklearn_are_not_used(
    fitted: tuple[object, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the numpy trees of the fitted model, one split threshold moved a hair
    model, holdout = fitted
    trees = build_scorer(model).trees  # type: ignore[arg-type]
    assert trees is not None
    threshold = trees.threshold.copy()
    leaf = trees.children[0] == np.arange(len(threshold))
    split = int(np.flatnonzero(~trees.categorical & ~leaf)[0])
    threshold[split] = np.nextafter(threshold[split], -np.inf)
    moved = type(trees)(**{**trees.__dict__, "threshold": threshold})
    # Then the build-time check, which probes every threshold from both sides, sees it
    slots = build_scorer(model).categorical_slots  # type: ignore[arg-type]
    with pytest.raises(ScorerError, match="numpy trees differ from sklearn"):
        moved.check(moved.classifier.n_features_in_, slots)

    # And when the check fails, the scorer walks sklearn's trees and still equals the model
    def refuse(*_: object, **__: object) -> None:
        raise ScorerError("refused")

    monkeypatch.setattr(type(trees), "check", refuse)
    scorer = build_scorer(model)  # type: ignore[arg-type]
    assert scorer.engine == "sklearn"
    rows = _awkward(holdout).head(50)
    numbers = rows[list(scorer.numeric)].to_numpy(dtype=np.float64)
    categories = rows[list(scorer.categorical)].to_numpy(dtype=object)
    one = [scorer.score_one(numbers[i], list(categories[i])) for i in range(len(rows))]
    expected = model.predict_proba(rows)[:, 1]  # type: ignore[attr-defined]
    np.testing.assert_allclose(one, expected, rtol=0, atol=1e-9)


def test_scorer_follows_a_model_with_fewer_features(frame: pd.DataFrame) -> None:
    # Given a challenger trained without the key features (a CT experiment variant)
    fit_part, holdout = split_holdout(frame, holdout_days=2)
    features = drop_feature(MODEL_FEATURES, "distance_from_home_km", "amount_to_card_mean_7d")
    model = train(fit_part, ModelSettings(max_iter=10), features)
    scorer = build_scorer(model)
    # Then the scorer reads exactly that model's inputs and still equals it
    assert "distance_from_home_km" not in scorer.numeric
    rows = _awkward(holdout)
    np.testing.assert_allclose(
        scorer.score_frame(rows), model.predict_proba(rows)[:, 1], rtol=0, atol=1e-9
    )


def test_a_model_of_another_shape_is_refused() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    with pytest.raises(ScorerError, match="cannot build the fast scorer"):
        build_scorer(Pipeline([("classify", LogisticRegression())]))


def test_check_refuses_a_scorer_that_disagrees(fitted: tuple[object, pd.DataFrame]) -> None:
    # Given a scorer whose category codes are shuffled (a wrong encoding)
    model, holdout = fitted
    scorer = build_scorer(model)  # type: ignore[arg-type]
    codes = scorer.codes[0]
    shifted = {
        value: codes[other]
        for value, other in zip(codes, list(codes)[1:] + list(codes)[:1], strict=False)
    }
    broken = type(scorer)(**{**scorer.__dict__, "codes": (shifted, *scorer.codes[1:])})
    example = holdout[COLUMNS].head(200)
    # Then the load-time check names the gap instead of serving it
    check_scorer(model, scorer, example)
    with pytest.raises(ModelLoadError, match="differs from the pipeline"):
        check_scorer(model, broken, example)

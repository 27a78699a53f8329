"""Training and evaluation: the model learns, is robust to serving inputs, behaves sensibly.

The training frame is simulated and built with the pure feature functions the feature
store uses, joined as Feast joins them (card state just before each transaction, 7-day
TTL; the merchant snapshot of the previous midnight, 2-day TTL), so it has the columns
and the gaps of ``features.store.training_set`` without running Feast.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.metrics import average_precision_score
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from fraud_detection.config import ConfigError
from fraud_detection.features import engineering as fe
from fraud_detection.training.evaluation import (
    AMOUNT_BANDS,
    CALIBRATION_BINS,
    Evaluation,
    amount_band,
    choose_threshold,
    evaluate,
    permutation_importances,
    plot_calibration,
    plot_feature_importance,
    plot_pr_curves,
    scores,
)
from fraud_detection.training.model import (
    LABEL,
    TrainingError,
    drop_feature,
    input_columns,
    shuffled_labels,
    split_holdout,
    train,
)
from fraud_detection.training.settings import (
    ModelSettings,
    SliceSettings,
    ThresholdSettings,
    TrainConfig,
    load_train_config,
)
from tests.unit.frames import simulated_training_frame

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module", autouse=True)
def _one_openmp_thread() -> Iterator[None]:
    # Gradient boosting's OpenMP threads spin-wait when the CPUs are busy (e.g. tests in
    # parallel): a fit then takes up to 10x longer than with one thread, which is steady.
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


MODEL = ModelSettings(max_iter=100)
SLICES = SliceSettings(min_rows=200, min_positives=10)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return simulated_training_frame(days=10, rows_per_day=4000, cards=2000, merchants=300)


@pytest.fixture(scope="module")
def split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return split_holdout(frame, holdout_days=3)


@pytest.fixture(scope="module")
def model(split: tuple[pd.DataFrame, pd.DataFrame]) -> Pipeline:
    return train(split[0], MODEL)


@pytest.fixture(scope="module")
def evaluation(model: Pipeline, split: tuple[pd.DataFrame, pd.DataFrame]) -> Evaluation:
    return evaluate(model, split[1], threshold=0.3, slices_cfg=SLICES)


# ------------------------------------------------------------------ learning


def test_model_beats_trivial_baselines(
    split: tuple[pd.DataFrame, pd.DataFrame], evaluation: Evaluation
) -> None:
    train_part, holdout = split
    # Given a baseline that always predicts the training fraud rate
    dummy = DummyClassifier(strategy="prior").fit(train_part[["amount"]], train_part[LABEL])
    dummy_pr_auc = average_precision_score(
        holdout[LABEL], dummy.predict_proba(holdout[["amount"]])[:, 1]
    )
    # Then the model's PR-AUC on later days is many times the fraud rate and the baseline
    assert evaluation.pr_auc > 3 * evaluation.base_rate
    assert evaluation.pr_auc > 3 * dummy_pr_auc
    assert evaluation.pr_auc > 0.3
    assert evaluation.roc_auc > 0.8


def test_same_data_and_config_give_identical_scores(
    split: tuple[pd.DataFrame, pd.DataFrame], model: Pipeline
) -> None:
    train_part, holdout = split
    again = train(train_part, MODEL)
    np.testing.assert_array_equal(scores(again, holdout), scores(model, holdout))


def test_shuffled_labels_and_dropped_features_make_weaker_models(
    split: tuple[pd.DataFrame, pd.DataFrame], evaluation: Evaluation
) -> None:
    train_part, holdout = split
    shuffled = shuffled_labels(train_part, seed=1)
    # Shuffling permutes the labels: same fraud count, other rows
    assert shuffled[LABEL].sum() == train_part[LABEL].sum()
    assert not shuffled[LABEL].equals(train_part[LABEL])
    no_signal = evaluate(train(shuffled, MODEL), holdout, 0.3, SLICES)
    assert no_signal.pr_auc < 3 * no_signal.base_rate < evaluation.pr_auc

    features = drop_feature(fe.MODEL_FEATURES, "distance_from_home_km")
    assert "distance_from_home_km" not in features
    assert len(features) == len(fe.MODEL_FEATURES) - 1
    with pytest.raises(ValueError, match="not_a_feature"):
        drop_feature(fe.MODEL_FEATURES, "not_a_feature")


# ------------------------------------------------------- robustness at serving


def test_scores_are_never_nan_for_serving_inputs(
    split: tuple[pd.DataFrame, pd.DataFrame], model: Pipeline
) -> None:
    holdout = split[1]
    columns = input_columns(model)
    # A card's first transaction: no window features, and a merchant without a snapshot
    first_txn = holdout.head(50).copy()
    first_txn[list(fe.CARD_FEATURES)] = np.nan
    first_txn["merchant_fraud_rate_30d"] = np.nan
    # A category the model never saw, and a missing one
    unseen = holdout.head(50).assign(merchant_category="space_tourism", channel=None)
    # One row as the API builds it: plain Python values, None for what is unknown
    record = {c: holdout[c].iloc[0] for c in columns}
    record.update(card_txn_count_1h=None, merchant_fraud_rate_30d=None)
    one_row = pd.DataFrame([record]).astype({"card_txn_count_1h": object})
    # Nullable dtypes with pd.NA, as a typed request frame would hold them
    nullable = holdout[columns].head(20).astype({"card_txn_count_7d": "Int64", "channel": "string"})
    nullable.loc[nullable.index[:5], ["card_txn_count_7d", "channel"]] = pd.NA

    for name, rows in [
        ("first transaction", first_txn),
        ("unseen category", unseen),
        ("single row", one_row),
        ("nullable dtypes", nullable),
        ("whole holdout", holdout),
    ]:
        result = scores(model, rows)
        assert result.shape == (len(rows),), name
        assert np.isfinite(result).all(), name
        assert ((result >= 0) & (result <= 1)).all(), name
    # The real frame has such rows too (a card's first transaction: an empty window)
    assert (split[0]["card_txn_count_7d"] == 0).any()
    assert split[0]["card_amount_mean_7d"].isna().any()


def test_single_row_scores_equal_batch_scores(
    split: tuple[pd.DataFrame, pd.DataFrame], model: Pipeline
) -> None:
    rows = split[1].head(5)
    batch = scores(model, rows)
    alone = [scores(model, rows.iloc[[k]])[0] for k in range(len(rows))]
    np.testing.assert_allclose(alone, batch, rtol=1e-12)


def test_bad_inputs_are_named(split: tuple[pd.DataFrame, pd.DataFrame], model: Pipeline) -> None:
    rows = split[1].head(3)
    with pytest.raises(TrainingError, match=r"lacks column.*distance_from_home_km"):
        scores(model, rows.drop(columns="distance_from_home_km"))
    garbled = rows.astype({"amount_log": object})
    garbled.loc[garbled.index[1], "amount_log"] = "twelve"
    with pytest.raises(TrainingError, match=r"amount_log.*'twelve'"):
        scores(model, garbled)


def test_nan_scores_are_refused_naming_the_missing_inputs(
    split: tuple[pd.DataFrame, pd.DataFrame], model: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = split[1].head(4).copy()
    rows.loc[rows.index[1], "merchant_fraud_rate_30d"] = np.nan

    # Given a model that returns NaN where an input is missing (HGB never does)
    def nan_where_missing(x: pd.DataFrame) -> np.ndarray:
        p = np.full((len(x), 2), 0.5)
        p[x.isna().any(axis=1).to_numpy(), 1] = np.nan
        return p

    monkeypatch.setattr(model, "predict_proba", nan_where_missing)
    with pytest.raises(TrainingError, match=r"1 of 4 scores are NaN.*merchant_fraud_rate_30d"):
        scores(model, rows)


# ------------------------------------------------- directional and invariance


def test_much_larger_amounts_do_not_lower_the_fraud_score(
    split: tuple[pd.DataFrame, pd.DataFrame], model: Pipeline
) -> None:
    # Given legitimate holdout transactions of cards with a spending history
    legit = split[1]
    legit = legit[(legit[LABEL] == 0) & legit["card_amount_mean_7d"].notna()].head(2000)
    # When the same purchases are ten times larger (request features recomputed)
    larger = legit.assign(amount=legit["amount"] * 10)
    larger[list(fe.REQUEST_FEATURES)] = fe.request_features(larger)
    assert (larger["amount_to_card_mean_7d"] > legit["amount_to_card_mean_7d"]).all()
    # Then the mean fraud score does not go down (it goes up)
    before, after = scores(model, legit).mean(), scores(model, larger).mean()
    assert after >= before


def test_columns_the_model_does_not_read_change_nothing(
    split: tuple[pd.DataFrame, pd.DataFrame], model: Pipeline
) -> None:
    rows = split[1].head(500)
    other = rows.assign(
        transaction_id="T-elsewhere",
        card_id=rows["card_id"] + 1_000_000,
        merchant_id=rows["merchant_id"][::-1].to_numpy(),
        event_timestamp=rows["event_timestamp"] + pd.Timedelta(days=365),
        card_type="prepaid",
        is_fraud=1 - rows[LABEL],
        note="irrelevant",
    )
    other = other[other.columns[::-1]]  # column order does not matter either
    np.testing.assert_array_equal(scores(model, other), scores(model, rows))


# ------------------------------------------------------------------- holdout


def test_holdout_is_the_last_days(frame: pd.DataFrame) -> None:
    train_part, holdout = split_holdout(frame, holdout_days=3)
    assert len(train_part) + len(holdout) == len(frame)
    assert train_part["event_timestamp"].max() < holdout["event_timestamp"].min()
    assert holdout["event_timestamp"].dt.date.nunique() == 3
    assert train_part["event_timestamp"].dt.date.nunique() == 7


def test_holdout_without_fraud_is_an_error(frame: pd.DataFrame) -> None:
    last_day = frame["event_timestamp"].dt.date == frame["event_timestamp"].dt.date.max()
    no_recent_fraud = frame.assign(is_fraud=np.where(last_day, 0, frame[LABEL]))
    with pytest.raises(TrainingError, match=r"the holdout \(.* rows from .*\) has no fraud label"):
        split_holdout(no_recent_fraud, holdout_days=1)
    no_old_fraud = frame.assign(is_fraud=np.where(last_day, frame[LABEL], 0))
    with pytest.raises(TrainingError, match=r"the training part .* has no fraud label"):
        split_holdout(no_old_fraud, holdout_days=1)
    with pytest.raises(TrainingError, match=r"spans 10 day.*holding out the last 10"):
        split_holdout(frame, holdout_days=10)


def test_training_refuses_data_it_cannot_learn_from(frame: pd.DataFrame) -> None:
    # The first day: no merchant snapshot exists yet, so the merchant rate is all missing
    first_day = frame[frame["event_timestamp"].dt.date == frame["event_timestamp"].dt.date.min()]
    with pytest.raises(TrainingError, match="merchant_fraud_rate_30d have no value in any"):
        train(first_day, MODEL)
    with pytest.raises(TrainingError, match="single class"):
        train(frame.assign(is_fraud=0), MODEL)
    with pytest.raises(TrainingError, match=r"is_fraud must be 0 or 1, got \[0, 1, 2\]"):
        train(frame.assign(is_fraud=frame[LABEL] * 2 + (frame.index == 0)), MODEL)


# ---------------------------------------------------------------- evaluation


def test_evaluation_metrics_are_consistent(
    split: tuple[pd.DataFrame, pd.DataFrame], evaluation: Evaluation
) -> None:
    holdout = split[1]
    assert evaluation.n == evaluation.holdout_rows == len(holdout)
    assert evaluation.positives == holdout[LABEL].sum()
    assert evaluation.base_rate == pytest.approx(holdout[LABEL].mean())
    assert 0 < evaluation.recall <= 1
    assert 0 < evaluation.precision <= 1
    assert evaluation.alerts > 0
    assert 0 <= evaluation.brier < evaluation.base_rate
    # Calibration: ten bins covering every row; observed rates are rates
    assert len(evaluation.calibration) == CALIBRATION_BINS
    assert sum(b.count for b in evaluation.calibration) == evaluation.n
    assert all(0 <= (b.observed_rate or 0) <= 1 for b in evaluation.calibration)
    # The JSON artifact round-trips
    data = json.loads(json.dumps(evaluation.to_dict()))
    assert data["holdout_rows"] == evaluation.n
    assert data["pr_auc"] == evaluation.pr_auc
    assert all(isinstance(v, float) for v in evaluation.metrics().values())


def test_slice_table_covers_every_value_and_flags_thin_slices(
    split: tuple[pd.DataFrame, pd.DataFrame], evaluation: Evaluation
) -> None:
    holdout = split[1]
    present = {
        "merchant_category": set(holdout["merchant_category"]),
        "amount_band": set(amount_band(holdout["amount"])),
        "channel": set(holdout["channel"]),
    }
    for column, values in present.items():
        rows = [s for s in evaluation.slices if s.column == column]
        assert {s.value for s in rows} == values
        assert sum(s.n for s in rows) == evaluation.n
        assert sum(s.positives for s in rows) == evaluation.positives
    for s in evaluation.slices:
        enough = s.n >= SLICES.min_rows and SLICES.min_positives <= s.positives < s.n
        assert s.supported == enough, s
        assert (s.pr_auc is not None) == s.supported, s
    assert any(s.supported for s in evaluation.slices)
    assert any(not s.supported for s in evaluation.slices)
    assert evaluation.slice("channel", "online") is not None
    assert evaluation.slice("channel", "teleport") is None


def test_amount_bands_have_inclusive_lower_bounds() -> None:
    amounts = pd.Series([0.5, 19.99, 20.0, 99.99, 100.0, 499.99, 500.0, 12_000.0, np.nan])
    names = [name for name, _ in AMOUNT_BANDS]
    expected = [names[0], names[0], names[1], names[1], names[2], names[2], names[3], names[3]]
    bands = amount_band(amounts)
    assert bands.iloc[:-1].tolist() == expected
    assert pd.isna(bands.iloc[-1])


def test_threshold_rule_reaches_the_target_precision(
    split: tuple[pd.DataFrame, pd.DataFrame], model: Pipeline
) -> None:
    holdout = split[1]
    y, p = holdout[LABEL].to_numpy(), scores(model, holdout)
    assert choose_threshold(y, p, ThresholdSettings(value=0.4)) == 0.4
    chosen = choose_threshold(y, p, ThresholdSettings(value=0.4, target_precision=0.6))
    assert y[p >= chosen].mean() >= 0.6
    # The lowest such threshold: one notch lower and precision falls below the target
    below = p[p < chosen].max()
    assert y[p >= below].mean() < 0.6
    # Unreachable target: the configured value
    assert (
        choose_threshold(
            np.array([0, 1, 0]),
            np.array([0.9, 0.1, 0.8]),
            ThresholdSettings(value=0.4, target_precision=1.0),
        )
        == 0.4
    )


def test_plots_are_figures(
    split: tuple[pd.DataFrame, pd.DataFrame], model: Pipeline, evaluation: Evaluation
) -> None:
    from matplotlib.figure import Figure

    holdout = split[1]
    importances = permutation_importances(model, holdout, max_rows=1500, n_repeats=1)
    assert set(importances.index) == set(input_columns(model))
    # The feature this simulator's fraud depends on most ranks near the top
    assert "distance_from_home_km" in importances.head(3).index
    figures = [
        plot_pr_curves(holdout[LABEL], {"model": scores(model, holdout)}, threshold=0.3),
        plot_calibration(evaluation),
        plot_feature_importance(importances),
    ]
    assert all(isinstance(f, Figure) and f.axes for f in figures)


# -------------------------------------------------------------------- config


def test_train_config_loads_and_rejects_misspelt_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_train_config()
    assert cfg.gate.primary_metric == "pr_auc"
    assert cfg.model.early_stopping is False
    assert cfg.gate.floor > 0.05  # well above a random model's PR-AUC (the fraud rate)

    path = tmp_path / "train.yaml"
    path.write_text("model:\n  learnig_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"train\.yaml.*model\.learnig_rate: unknown key"):
        load_train_config(path)
    path.write_text("gate:\n  tolerance: -1\n")
    with pytest.raises(ConfigError, match=r"gate\.tolerance"):
        load_train_config(path)
    # The environment wins over the file
    monkeypatch.setenv("FRAUD_TRAIN__GATE__TOLERANCE", "0.05")
    assert load_train_config(path).gate.tolerance == 0.05
    assert TrainConfig().model == ModelSettings()

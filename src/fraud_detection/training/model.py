"""The model: a scikit-learn Pipeline (column preparation + gradient boosting) and its fit.

The fitted :class:`~sklearn.pipeline.Pipeline` *is* the model that is logged, registered
and served; there is no wrapper class. It takes a DataFrame holding the feature columns
(extra columns are ignored) and is robust to what serving sends: a single row, ``None``
or ``pd.NA`` for a missing value, object or nullable dtypes, and category values never
seen in training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

from fraud_detection.errors import FraudError
from fraud_detection.features.engineering import CATEGORICAL_FEATURES, MODEL_FEATURES
from fraud_detection.training.settings import ModelSettings

__all__ = [
    "LABEL",
    "MISSING_CATEGORY",
    "TrainingError",
    "build_pipeline",
    "drop_feature",
    "fraud_labels",
    "input_columns",
    "shuffled_labels",
    "split_holdout",
    "train",
]

LABEL = "is_fraud"
# A missing category value becomes this string, so that missing is a category of its own.
MISSING_CATEGORY = "(missing)"


class TrainingError(FraudError):
    """Training or evaluation cannot go on: the message names what is wrong with the data."""


def build_pipeline(
    cfg: ModelSettings,
    features: Sequence[str] = MODEL_FEATURES,
    categorical: Sequence[str] = CATEGORICAL_FEATURES,
) -> Pipeline:
    """An unfitted model: numeric ``features`` and ``categorical`` columns -> P(fraud).

    Numeric columns are cast to a nullable float, so ``None``/``pd.NA``/NaN all become
    missing, which the gradient boosting handles natively (a card's first transaction
    has no window features). Categorical columns are cast to strings, a missing value
    becomes :data:`MISSING_CATEGORY` and each value an ordinal code; a value not seen in
    training becomes NaN, i.e. the trees' missing-value branch. OrdinalEncoder cannot
    take ``pd.NA`` itself, hence the imputer.
    """
    overlap = set(features) & set(categorical)
    if overlap:
        raise ValueError(f"columns both numeric and categorical: {', '.join(sorted(overlap))}")
    categories = make_pipeline(
        FunctionTransformer(
            pd.DataFrame.astype, kw_args={"dtype": "string"}, feature_names_out="one-to-one"
        ),
        SimpleImputer(missing_values=pd.NA, strategy="constant", fill_value=MISSING_CATEGORY),
        OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan),
    )
    numbers = FunctionTransformer(
        pd.DataFrame.astype, kw_args={"dtype": "Float64"}, feature_names_out="one-to-one"
    )
    prepare = ColumnTransformer(
        [("numeric", numbers, list(features)), ("categorical", categories, list(categorical))],
        remainder="drop",
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    classifier = HistGradientBoostingClassifier(
        learning_rate=cfg.learning_rate,
        max_iter=cfg.max_iter,
        max_leaf_nodes=cfg.max_leaf_nodes,
        min_samples_leaf=cfg.min_samples_leaf,
        l2_regularization=cfg.l2_regularization,
        class_weight=cfg.class_weight,
        early_stopping=cfg.early_stopping,
        categorical_features=list(categorical) or None,
        random_state=cfg.random_state,
    )
    return Pipeline([("prepare", prepare), ("classify", classifier)])


def input_columns(model: Pipeline, kind: str | None = None) -> list[str]:
    """The columns a (fitted or not) model reads, numeric then categorical; with ``kind``
    (``"numeric"`` or ``"categorical"``) only those."""
    prepare: ColumnTransformer = model.named_steps["prepare"]
    return [
        column
        for name, _, columns in prepare.transformers
        if kind in (None, name)
        for column in columns
    ]


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise TrainingError(f"{what} lacks column(s) {', '.join(missing)}")


def fraud_labels(frame: pd.DataFrame, what: str = "the data") -> pd.Series:
    """``frame.is_fraud`` as int64 0/1; :class:`TrainingError` if missing or not 0/1."""
    _require(frame, [LABEL], what)
    labels = frame[LABEL]
    if labels.isna().any():
        raise TrainingError(f"{what} has {int(labels.isna().sum())} rows without a {LABEL} label")
    values = set(pd.unique(labels).tolist())
    if not values <= {0, 1}:
        raise TrainingError(f"{what}: {LABEL} must be 0 or 1, got {sorted(values, key=str)}")
    return labels.astype("int64")


def split_holdout(frame: pd.DataFrame, holdout_days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Time-based split: the holdout is the rows of the last ``holdout_days`` distinct
    (UTC) days of ``event_timestamp``, the training part everything before.

    Raises :class:`TrainingError` when either part would be empty or has no fraud, since
    neither fitting nor PR-AUC means anything then.
    """
    if holdout_days < 1:
        raise TrainingError(f"holdout_days must be at least 1, got {holdout_days}")
    _require(frame, ["event_timestamp"], "training set")
    labels = fraud_labels(frame, "training set")
    stamps = frame["event_timestamp"]
    if not isinstance(stamps.dtype, pd.DatetimeTZDtype):
        raise TrainingError(f"event_timestamp must be timezone-aware, got dtype {stamps.dtype}")
    day = stamps.dt.tz_convert("UTC").dt.floor("D")
    days = np.sort(day.unique())
    if len(days) <= holdout_days:
        raise TrainingError(
            f"the training set spans {len(days)} day(s); holding out the last {holdout_days} "
            "leaves nothing to train on: lower holdout_days or train on more days"
        )
    in_holdout = (day >= days[-holdout_days]).to_numpy()
    first = pd.Timestamp(days[-holdout_days]).date()
    for name, rows, where in (
        ("training part", ~in_holdout, f"before {first}"),
        ("holdout", in_holdout, f"from {first} on"),
    ):
        if not labels.to_numpy()[rows].any():
            raise TrainingError(
                f"the {name} ({int(rows.sum()):,} rows {where}) has no fraud label: PR-AUC "
                "needs positives; change holdout_days or train on more days"
            )
    return frame[~in_holdout], frame[in_holdout]


def train(
    frame: pd.DataFrame,
    cfg: ModelSettings,
    features: Sequence[str] = MODEL_FEATURES,
    categorical: Sequence[str] = CATEGORICAL_FEATURES,
) -> Pipeline:
    """Fit a new pipeline on ``frame``: X = the feature columns, y = ``is_fraud``."""
    model = build_pipeline(cfg, features, categorical)
    columns = input_columns(model)
    _require(frame, columns, "training set")
    y = fraud_labels(frame, "training set")
    if y.nunique() < 2:
        raise TrainingError(
            f"the training set ({len(frame):,} rows) has a single class ({LABEL}={y.iloc[0]})"
        )
    # The gradient boosting's binning fails obscurely on a column without any value.
    empty = [c for c in features if frame[c].isna().all()]
    if empty:
        raise TrainingError(
            f"feature(s) {', '.join(empty)} have no value in any of the {len(frame):,} training "
            "rows: train on more days, or check the feature tables"
        )
    model.fit(frame[columns], y.to_numpy())
    return model


# --------------------------------------------------------- degraded challengers


def shuffled_labels(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A copy of ``frame`` with ``is_fraud`` randomly permuted: a model with no signal."""
    out = frame.copy()
    rng = np.random.default_rng(seed)
    out[LABEL] = rng.permutation(out[LABEL].to_numpy())
    return out


def drop_feature(features: Sequence[str], *names: str) -> tuple[str, ...]:
    """``features`` without ``names``: a challenger missing a key signal."""
    unknown = [n for n in names if n not in features]
    if unknown:
        raise ValueError(f"not among the features: {', '.join(unknown)}")
    return tuple(f for f in features if f not in names)

"""``configs/train.yaml``: the model's hyperparameters, the holdout, the alert threshold,
the slices and the model-validation gate.

Like every job config it loads into a frozen model with unknown keys rejected, and any
value can be overridden from the environment as ``FRAUD_TRAIN__<SECTION>__<KEY>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

# The private bases give the same behaviour as every other config file: frozen,
# unknown keys rejected, FRAUD_<JOB>__<KEY> environment overrides.
from fraud_detection.config import (
    ENV_PREFIX,
    _FileSettings,
    _Section,
    config_path,
    load_yaml_model,
)


class ModelSettings(_Section):
    """Hyperparameters of the HistGradientBoostingClassifier."""

    learning_rate: float = Field(0.1, gt=0, le=1)
    max_iter: int = Field(200, ge=1)
    max_leaf_nodes: int = Field(31, ge=2)
    min_samples_leaf: int = Field(50, ge=1)
    l2_regularization: float = Field(1.0, ge=0)
    # "balanced" trades calibrated probabilities for recall at a fixed threshold.
    class_weight: Literal["balanced"] | None = None
    # Off by default: early stopping holds out a random 10 % of the training rows, so the
    # number of trees then depends on that split.
    early_stopping: bool = False
    random_state: int = 42


class ThresholdSettings(_Section):
    """The operating threshold: alert when P(fraud) >= ``value``.

    With ``target_precision`` set, the threshold is instead the lowest one whose precision
    on the evaluation data reaches the target (most recall at that precision); ``value``
    is kept when no threshold reaches it.
    """

    value: float = Field(0.3, gt=0, lt=1)
    target_precision: float | None = Field(None, gt=0, le=1)


class SliceSettings(_Section):
    """How much support a slice needs for its metrics to count (and to be gated)."""

    min_rows: int = Field(300, ge=1)
    min_positives: int = Field(30, ge=1)


class GateSettings(_Section):
    """Model validation: when a challenger may replace the champion."""

    primary_metric: Literal["pr_auc", "roc_auc"] = "pr_auc"
    # Largest allowed drop of the primary metric below the champion's (absolute).
    tolerance: float = Field(0.02, ge=0, le=1)
    # Largest allowed drop on any slice supported in both evaluations (absolute).
    slice_tolerance: float = Field(0.05, ge=0, le=1)
    # The primary metric must reach this whatever the champion (PR-AUC of a random
    # model is the base rate, about 0.01).
    floor: float = Field(0.2, ge=0, le=1)
    # Holdout rows the infrastructure check scores through the saved model.
    infra_sample_rows: int = Field(200, ge=1)


class TrainConfig(_FileSettings):
    """``configs/train.yaml``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX + "TRAIN__")

    model: ModelSettings = ModelSettings()
    # Train on the labelled transactions of the last N days before the as-of time
    # (None: every labelled day); a sliding window keeps old behaviour from lingering.
    window_days: int | None = Field(None, ge=1)
    # The last N distinct days of the training set are the holdout (a time-based split).
    holdout_days: int = Field(3, ge=1)
    threshold: ThresholdSettings = ThresholdSettings()
    slices: SliceSettings = SliceSettings()
    gate: GateSettings = GateSettings()


def load_train_config(
    path: Path | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Load ``configs/train.yaml`` (or ``path``) with environment and flag overrides."""
    return load_yaml_model(TrainConfig, path or config_path("train"), overrides)

"""``configs/monitoring.yaml``: what monitoring compares, its thresholds, its signals.

Like every job config it loads into a frozen model with unknown keys rejected, and any
value can be overridden from the environment as ``FRAUD_MONITORING__<SECTION>__<KEY>``
(e.g. ``FRAUD_MONITORING__WINDOW_DAYS=2``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
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


class DriftSettings(_Section):
    """When a feature (or the score) counts as drifted; see ``docs/monitoring.md``."""

    # Numeric features: PSI over this many reference-quantile bins (plus one for missing).
    bins: int = Field(10, ge=2, le=100)
    # Missing bins get this share instead of 0, so that PSI stays finite.
    epsilon: float = Field(1e-4, gt=0, lt=0.01)
    psi_warn: float = Field(0.1, ge=0)
    psi_alert: float = Field(0.25, ge=0)
    # The test's p-value must be below this AND its effect size at least the minimum:
    # with 100k rows every tiny difference is "significant".
    p_value: float = Field(0.01, gt=0, lt=1)
    ks_statistic_min: float = Field(0.1, gt=0, le=1)
    cramers_v_min: float = Field(0.1, gt=0, le=1)
    # Dataset drift: at least this share of the model's input features drifted.
    share: float = Field(0.25, gt=0, le=1)
    # Rows drawn at random from each side for the tests (a sorted 1M sample costs more
    # and says nothing more).
    max_rows: int = Field(200_000, ge=1_000)

    @model_validator(mode="after")
    def _ordered(self) -> DriftSettings:
        if self.psi_warn > self.psi_alert:
            raise ValueError(f"drift: psi_warn {self.psi_warn} is above psi_alert {self.psi_alert}")
        return self


class PerformanceSettings(_Section):
    """Model performance on served traffic once its delayed labels have arrived."""

    # PR-AUC per day over the last N days of served traffic (the report's curve).
    lookback_days: int = Field(14, ge=1)
    # The verdict pools the most recent N days whose labels have (mostly) arrived.
    recent_days: int = Field(3, ge=1)
    # A day counts as labelled when this share of its scored transactions has a label.
    min_label_coverage: float = Field(0.9, gt=0, le=1)
    # Fewer labelled frauds than this in the pooled days: no verdict (PR-AUC is noise).
    min_positives: int = Field(20, ge=1)
    # Degraded when PR-AUC < champion's holdout PR-AUC - tolerance, or < floor.
    tolerance: float = Field(0.1, ge=0, le=1)
    floor: float = Field(0.2, ge=0, le=1)


class SignalSettings(_Section):
    """The signals that start continuous training (``fraud ct signals``)."""

    enabled: bool = True
    # No new signal of a kind within this long after the last one of that kind was
    # written (pending or consumed): give the retrained champion time to show itself.
    cooldown_minutes: float = Field(60.0, ge=0)


class MonitoringConfig(_FileSettings):
    """``configs/monitoring.yaml``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX + "MONITORING__")

    # Current traffic: the last N days present in the prediction log and batch scores.
    window_days: int = Field(3, ge=1)
    # What current traffic is compared with: the champion's holdout (its newest labelled
    # days) or its whole training set.
    reference: Literal["holdout", "training_set"] = "holdout"
    # Fewer rows than this on either side: no drift verdict.
    min_rows: int = Field(500, ge=1)
    drift: DriftSettings = DriftSettings()
    performance: PerformanceSettings = PerformanceSettings()
    signals: SignalSettings = SignalSettings()
    # Histograms in the report for this many of the most drifted features.
    report_top_features: int = Field(6, ge=0, le=30)
    # MLflow experiment of the monitoring runs.
    experiment: str = "fraud-monitoring"


def load_monitoring_config(
    path: Path | None = None, overrides: dict[str, Any] | None = None
) -> MonitoringConfig:
    """Load ``configs/monitoring.yaml`` (or ``path``) with environment and flag overrides."""
    return load_yaml_model(MonitoringConfig, path or config_path("monitoring"), overrides)

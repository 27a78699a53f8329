"""``configs/validation.yaml``: the bounds of the data gates that a user may tune.

The expectations are fixed in the versioned suites; what depends on the deployment (how
much the daily volume may swing, the plausible label rate, the smallest training set)
comes from here and reaches the suites as suite parameters at run time.
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


class Tolerance(_Section):
    """How far a statistic may leave the band learnt from the history, per level.

    ``reject`` stops the partition; ``warn`` lets it through with a recorded warning; null
    turns that level off. The unit is the check's own (see ``configs/validation.yaml``).
    """

    reject: float | None = Field(None, ge=0)
    warn: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Tolerance:
        if self.reject is not None and self.warn is not None and self.warn > self.reject:
            raise ValueError(f"warn tolerance {self.warn} is above reject tolerance {self.reject}")
        return self


class ValueSkewSettings(_Section):
    """The value-skew stage: statistics of a partition against the accepted history."""

    # Fewer accepted partitions than this before the day: the history-based checks are
    # skipped (and the reason recorded); the reference-table checks still run.
    min_history: int = Field(5, ge=1)
    # amount quantiles and mean: a factor (>= 1) beyond the history's min..max
    amount: Tolerance = Tolerance(reject=2.0, warn=1.25)
    # latitude / longitude quantiles and mean: degrees beyond the history's min..max
    coordinates: Tolerance = Tolerance(reject=5.0, warn=1.0)
    # share of zeros, and share of the single most common value: points above the history's max
    zero_share: Tolerance = Tolerance(reject=0.02, warn=0.005)
    top_share: Tolerance = Tolerance(reject=0.05, warn=0.015)
    # merchant_category, channel, hour of day: total variation distance from the history's
    # mean shares, above the largest distance of a history day
    shares: Tolerance = Tolerance(reject=0.15, warn=0.05)
    # a value every history day had at least this share of, now absent: rejected
    vanished_min_share: float = Field(0.01, gt=0, le=1)
    # share of transactions far from the card's home: points above the history's max
    far_from_home: Tolerance = Tolerance(reject=0.15, warn=0.05)
    far_from_home_km: float = Field(500.0, gt=0)
    # share of rows whose card / merchant is not in the reference tables (no history needed)
    reference: Tolerance = Tolerance(reject=0.001, warn=0.0)
    # estimated share of rows already delivered in an accepted partition of the history
    replayed_ids: Tolerance = Tolerance(reject=0.0, warn=None)

    @model_validator(mode="after")
    def _factor(self) -> ValueSkewSettings:
        for level in (self.amount.reject, self.amount.warn):
            if level is not None and level < 1.0:
                raise ValueError(f"raw.values.amount: a factor must be >= 1, got {level}")
        return self


class RawGateSettings(_Section):
    """Row-volume bounds of a daily partition, relative to recently accepted ones, and the
    value-skew stage's tolerances."""

    history_partitions: int = Field(7, ge=1)
    min_volume_ratio: float = Field(0.5, gt=0)
    max_volume_ratio: float = Field(1.5, gt=0)
    values: ValueSkewSettings = ValueSkewSettings()

    @model_validator(mode="after")
    def _ordered(self) -> RawGateSettings:
        if not self.min_volume_ratio <= 1.0 <= self.max_volume_ratio:
            raise ValueError(
                "raw: need min_volume_ratio <= 1 <= max_volume_ratio, got "
                f"{self.min_volume_ratio} and {self.max_volume_ratio}"
            )
        return self


class TrainingValueSettings(_Section):
    """A training set against the champion's: its label rate and each model feature's
    distribution (GX expectations with bounds from the champion's training set)."""

    # label rate: a factor (>= 1) either way of the champion's training set's rate
    label_rate: Tolerance = Tolerance(reject=3.0, warn=1.5)
    # each model feature (and merchant_category, channel): KL divergence of its histogram
    # from the champion's (expect_column_kl_divergence_to_be_less_than)
    kl_divergence: Tolerance = Tolerance(reject=0.5, warn=0.1)
    bins: int = Field(10, ge=2, le=100)  # quantile bins of a numeric feature
    max_values: int = Field(12, ge=2)  # at most this many distinct values: kept as values

    @model_validator(mode="after")
    def _factor(self) -> TrainingValueSettings:
        for level in (self.label_rate.reject, self.label_rate.warn):
            if level is not None and level < 1.0:
                raise ValueError(f"training.values.label_rate: a factor must be >= 1, got {level}")
        return self


class TrainingGateSettings(_Section):
    """Size and label rate of a training set, and its values against the champion's."""

    min_rows: int = Field(1000, ge=1)
    label_rate_min: float = Field(0.001, ge=0, le=1)
    label_rate_max: float = Field(0.10, ge=0, le=1)
    values: TrainingValueSettings = TrainingValueSettings()

    @model_validator(mode="after")
    def _ordered(self) -> TrainingGateSettings:
        if self.label_rate_min > self.label_rate_max:
            raise ValueError(
                f"training: label_rate_min {self.label_rate_min} is above "
                f"label_rate_max {self.label_rate_max}"
            )
        return self


class ValidationConfig(_FileSettings):
    """``configs/validation.yaml``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX + "VALIDATION__")

    raw: RawGateSettings = RawGateSettings()
    training: TrainingGateSettings = TrainingGateSettings()
    sample_size: int = Field(3, ge=0, le=20)
    # BASIC reports what the gate's messages and records use (observed values, counts, 20
    # offending values); SUMMARY adds the offending rows' index in Data Docs, which costs
    # GX two more passes per column check (~+45 % on a 1M-row partition).
    result_format: Literal["BASIC", "SUMMARY"] = "BASIC"
    # GX's own batch fingerprint (``pandas_data_fingerprint``): a hash of every cell of the
    # frame, ~1 s per 1M-row partition (benchmarks/bench_value_skew.py). The gate's record
    # already fingerprints the partition file (sha256), so it is off by default.
    gx_frame_fingerprint: bool = False


def load_validation_config(
    path: Path | None = None, overrides: dict[str, Any] | None = None
) -> ValidationConfig:
    """Load ``configs/validation.yaml`` (or ``path``) with environment and flag overrides."""
    return load_yaml_model(ValidationConfig, path or config_path("validation"), overrides)

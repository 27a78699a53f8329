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


class RawGateSettings(_Section):
    """Row-volume bounds of a daily partition, relative to recently accepted ones."""

    history_partitions: int = Field(7, ge=1)
    min_volume_ratio: float = Field(0.5, gt=0)
    max_volume_ratio: float = Field(1.5, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> RawGateSettings:
        if not self.min_volume_ratio <= 1.0 <= self.max_volume_ratio:
            raise ValueError(
                "raw: need min_volume_ratio <= 1 <= max_volume_ratio, got "
                f"{self.min_volume_ratio} and {self.max_volume_ratio}"
            )
        return self


class TrainingGateSettings(_Section):
    """Size and label rate of a training set."""

    min_rows: int = Field(1000, ge=1)
    label_rate_min: float = Field(0.001, ge=0, le=1)
    label_rate_max: float = Field(0.10, ge=0, le=1)

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


def load_validation_config(
    path: Path | None = None, overrides: dict[str, Any] | None = None
) -> ValidationConfig:
    """Load ``configs/validation.yaml`` (or ``path``) with environment and flag overrides."""
    return load_yaml_model(ValidationConfig, path or config_path("validation"), overrides)

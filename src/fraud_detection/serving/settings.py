"""``configs/serving.yaml``: the prediction service's address, hot reload, limits,
threshold override and prediction log.

Like every job config it loads into a frozen model with unknown keys rejected, and any
value can be overridden from the environment as ``FRAUD_SERVING__<KEY>[__<SUBKEY>]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from fraud_detection.config import (
    ENV_PREFIX,
    _FileSettings,
    _Section,
    config_path,
    load_yaml_model,
)


class PredictionLogSettings(_Section):
    """Where and how often the service writes what it scored (Parquet part files)."""

    enabled: bool = True
    flush_interval_s: float = Field(5.0, gt=0, le=3600)
    flush_rows: int = Field(10_000, ge=1)
    max_queue_rows: int = Field(200_000, ge=1)


class DeliverySettings(_Section):
    """Model delivery checks: the load-test shape and its budgets (``release.delivery``)."""

    concurrency: int = Field(8, ge=1, le=1_024)
    duration_s: float = Field(10.0, gt=0, le=3_600)
    warmup_s: float = Field(2.0, ge=0, le=600)
    min_qps: float = Field(100.0, ge=0)
    max_p99_ms: float = Field(100.0, gt=0)
    max_error_rate: float = Field(0.0, ge=0, le=1)
    sample_rows: int = Field(500, ge=1)
    startup_timeout_s: float = Field(120.0, gt=0)


class ShadowSettings(_Section):
    """When a challenger scored in shadow beside the champion may replace it
    (``serving.release.shadow``; judged by ``fraud_detection.release.shadow.judge``)."""

    # false: a delivered challenger becomes champion at once (no shadow period)
    enabled: bool = True
    min_duration_s: float = Field(0.0, ge=0)  # the window also lasts at least this long
    min_requests: int = Field(1_000, ge=1)  # the window: requests scored by both
    min_agreement: float = Field(0.99, ge=0, le=1)  # same decision at each one's threshold
    max_error_rate: float = Field(0.0, ge=0, le=1)  # shadow scores that failed (NaN)
    max_p99_ms: float = Field(5.0, gt=0)  # the challenger's own scoring time, p99


class ReleaseSettings(_Section):
    """How a version that passed the model gate reaches serving (``serving.release``)."""

    # true: CT leaves it the `challenger`; `fraud model release` runs the delivery checks
    # on it in a service of its own and promotes it only if they pass. false: CT promotes
    # it at once (the delivery checks come after, `fraud delivery-check`).
    staged: bool = False
    shadow: ShadowSettings = ShadowSettings()
    # Share of requests a challenger in shadow answers (a canary), picked by a hash of the
    # transaction id (a retry gets the same model); 0: it never answers.
    canary_share: float = Field(0.0, ge=0, le=0.5)


class ServingConfig(_FileSettings):
    """``configs/serving.yaml``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX + "SERVING__")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65_535)
    reload_interval_s: float = Field(2.0, gt=0, le=3600)
    max_body_bytes: int = Field(1_048_576, ge=1_024)
    max_batch_rows: int = Field(1_000, ge=1)
    threshold: float | None = Field(None, gt=0, lt=1)
    # A transaction's timestamp must lie within this window around the service's clock.
    timestamp_max_future_s: float = Field(86_400.0, ge=0)
    timestamp_max_age_days: float = Field(3_650.0, gt=0)
    # The registry alias the service serves and follows: `challenger` only for a service
    # that takes no live traffic (the delivery check of a challenger starts one).
    alias: Literal["champion", "challenger"] = "champion"
    prediction_log: PredictionLogSettings = PredictionLogSettings()
    delivery: DeliverySettings = DeliverySettings()
    release: ReleaseSettings = ReleaseSettings()


def load_serving_config(
    path: Path | None = None, overrides: dict[str, Any] | None = None
) -> ServingConfig:
    """Load ``configs/serving.yaml`` (or ``path``) with environment and flag overrides."""
    return load_yaml_model(ServingConfig, path or config_path("serving"), overrides)

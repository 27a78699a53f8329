"""The served model and its hot reload: load a registered version, check it, swap it in.

:func:`load_version` downloads a version of the registered model, loads its sklearn
Pipeline, builds the fast :class:`~fraud_detection.serving.scorer.Scorer` and checks it
on the version's logged input example: finite scores in [0, 1], equal to the pipeline's
own ``predict_proba``. Anything wrong raises :class:`ModelLoadError`.

:class:`ChampionWatcher` keeps the current :class:`ServedModel` in one attribute. A
background thread polls the registry's ``champion`` alias every ``reload_interval_s``
(and at once when CT rewrites ``<state>/serving/champion.json``); when the alias moves it
loads the new version off the request path and swaps the reference. A request reads the
reference once, so in-flight requests finish on the model they started with. A version
that fails to load is not swapped in: the old one keeps serving, ``/ready`` names the
failure and a WARNING is logged (the failed version is retried every
``FAILED_RETRY_S`` while the alias stays on it).

The same watcher, following the ``challenger`` alias with ``admit=in_shadow`` and
``drop_when_absent=True``, holds the challenger a staged release scores in shadow: only a
version whose ``release.stage`` tag says it was delivered and is in shadow
(:data:`SHADOW_STAGES`) is loaded, and it is dropped as soon as the alias leaves it or
its stage ends (promoted, blocked).
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fraud_detection.errors import FraudError
from fraud_detection.features.engineering import MODEL_FEATURES
from fraud_detection.serving.scorer import PipelineScorer, Scorer, scorer_for

__all__ = [
    "SHADOW_STAGES",
    "STAGE_TAG",
    "ChampionWatcher",
    "ModelLoadError",
    "ServedModel",
    "in_shadow",
    "load_version",
]

log = logging.getLogger(__name__)

FAILED_RETRY_S = 30.0
# How closely the scorer must match the pipeline on the input example.
SCORER_TOLERANCE = 1e-9
_TICK_S = 0.25  # how often champion.json is looked at

# Where a challenger is in its staged release (a model-version tag written by
# ``fraud model release`` / ``shadow-check`` / ``approve``); the service scores it beside
# the champion only in these stages (delivered, not yet promoted nor blocked).
STAGE_TAG = "release.stage"
SHADOW_STAGES = ("shadow", "awaiting_approval")


def in_shadow(tags: Mapping[str, str]) -> bool:
    """Whether a version's tags say it is to be scored in shadow (:data:`SHADOW_STAGES`)."""
    return tags.get(STAGE_TAG) in SHADOW_STAGES


class ModelLoadError(FraudError):
    """A model version cannot be served; the message says why."""


@dataclass(frozen=True, eq=False)
class ServedModel:
    """A loaded, checked model version and what the API reports about it."""

    name: str
    version: str
    run_id: str | None
    scorer: Scorer | PipelineScorer
    threshold: float
    threshold_source: str  # "run" (logged with the training run), "config", "train.yaml"
    tags: dict[str, str]
    loaded_at: str
    # For each of the scorer's numeric inputs, its position in MODEL_FEATURES.
    feature_index: tuple[int, ...]

    @property
    def feature_service(self) -> str | None:
        return self.tags.get("lineage.feature_service")

    def metadata(self) -> dict[str, Any]:
        return {
            "model_name": self.name,
            "model_version": self.version,
            "run_id": self.run_id,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "feature_service": self.feature_service,
            "lineage": {k: v for k, v in self.tags.items() if k.startswith("lineage")},
            "tags": self.tags,
            "inputs": [*self.scorer.numeric, *self.scorer.categorical],
            "scorer": self.scorer.kind,
            "scorer_trees": self.scorer.engine,
            "loaded_at": self.loaded_at,
        }


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _threshold(run_id: str | None, override: float | None) -> tuple[float, str]:
    if override is not None:
        return override, "config"
    if run_id:
        from mlflow import MlflowClient

        logged = MlflowClient().get_run(run_id).data.params.get("threshold")
        if logged is not None:
            value = float(logged)
            if 0 < value < 1:
                return value, "run"
    from fraud_detection.training.settings import load_train_config

    return load_train_config().threshold.value, "train.yaml"


def check_scorer(pipeline: Any, scorer: Scorer | PipelineScorer, example: Any) -> None:
    """Raise :class:`ModelLoadError` unless the scorer reproduces the pipeline on
    ``example`` with finite probabilities in [0, 1]."""
    try:
        expected = np.asarray(pipeline.predict_proba(example))[:, 1]
        got = scorer.score_frame(example)
    except Exception as exc:
        raise ModelLoadError(f"predict failed on the input example: {exc}") from exc
    if not np.isfinite(got).all() or (got < 0).any() or (got > 1).any():
        raise ModelLoadError(f"scores of the input example are not probabilities: {got}")
    gap = float(np.max(np.abs(got - expected))) if len(got) else 0.0
    if not gap <= SCORER_TOLERANCE:
        raise ModelLoadError(
            f"the fast scorer differs from the pipeline by {gap:.3g} on the input example"
        )


def load_version(name: str, version: str, threshold_override: float | None = None) -> ServedModel:
    """Load, check and wrap version ``version`` of registered model ``name``.

    MLflow must be set up (``tracking.setup_mlflow``). Raises :class:`ModelLoadError`.
    """
    import mlflow
    import mlflow.sklearn
    from mlflow.models import Model

    from fraud_detection.registry import tracking

    try:
        info = tracking.version_info(name, version)
        with tempfile.TemporaryDirectory(prefix="fraud-serving-") as tmp:
            local = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=tmp)
            pipeline = mlflow.sklearn.load_model(local)
            example = Model.load(local).load_input_example(local)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"{name} version {version} cannot be loaded: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(example, pd.DataFrame):
        raise ModelLoadError(f"{name} version {version} has no logged input example to check")
    try:
        scorer = scorer_for(pipeline, example)
    except FraudError as exc:
        raise ModelLoadError(f"{name} version {version}: {exc}") from exc
    missing = [c for c in scorer.numeric if c not in MODEL_FEATURES]
    if missing:
        raise ModelLoadError(
            f"{name} version {version} needs feature(s) serving does not compute: "
            + ", ".join(missing)
        )
    try:
        check_scorer(pipeline, scorer, example)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{name} version {version}: {exc}") from exc
    threshold, source = _threshold(info.get("run_id"), threshold_override)
    return ServedModel(
        name=name,
        version=str(version),
        run_id=info.get("run_id"),
        scorer=scorer,
        threshold=threshold,
        threshold_source=source,
        tags=dict(info.get("tags") or {}),
        loaded_at=_now(),
        feature_index=tuple(MODEL_FEATURES.index(c) for c in scorer.numeric),
    )


@dataclass
class ReloadStatus:
    """The last reload attempt, as ``/ready`` shows it."""

    attempted_at: str | None = None
    version: str | None = None
    ok: bool | None = None
    error: str | None = None
    failed: dict[str, str] = field(default_factory=dict)  # version -> error, while current

    def to_dict(self) -> dict[str, Any]:
        return {
            "attempted_at": self.attempted_at,
            "version": self.version,
            "ok": self.ok,
            "error": self.error,
        }


class ChampionWatcher:
    """Holds the served model and follows the registry's ``champion`` alias."""

    def __init__(
        self,
        name: str,
        *,
        interval_s: float,
        champion_file: Path | None = None,
        threshold_override: float | None = None,
        alias: str = "champion",
        admit: Callable[[Mapping[str, str]], bool] | None = None,
        drop_when_absent: bool = False,
    ) -> None:
        self.name = name
        # `challenger`: a service that takes no live traffic, or the shadow beside the champion
        self.alias = alias
        # Only a version whose tags pass ``admit`` counts as the alias's version.
        self.admit = admit
        # The alias gone (or its version not admitted): stop holding the model (shadow).
        self.drop_when_absent = drop_when_absent
        self.interval_s = interval_s
        self.champion_file = champion_file
        self.threshold_override = threshold_override
        self.current: ServedModel | None = None
        self.status = ReloadStatus()
        self.champion_version: str | None = None  # what the alias said last time
        self.poll_error: str | None = None
        self._failed_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one load at a time
        self._file_stamp: float | None = None

    # ----------------------------------------------------------------- control

    def start(self) -> None:
        """Load the champion now (if there is one), then follow it in a thread."""
        self._file_stamp = self._stamp()
        self.poll()
        self._thread = threading.Thread(target=self._run, name=f"{self.alias}-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _stamp(self) -> float | None:
        if self.champion_file is None:
            return None
        try:
            return self.champion_file.stat().st_mtime_ns / 1e9
        except OSError:
            return None

    def _run(self) -> None:
        last_poll = time.monotonic()
        while not self._stop.wait(min(_TICK_S, self.interval_s)):
            stamp = self._stamp()
            file_changed = stamp != self._file_stamp
            self._file_stamp = stamp
            if file_changed or time.monotonic() - last_poll >= self.interval_s:
                last_poll = time.monotonic()
                try:
                    self.poll()
                except Exception as exc:  # never let the watcher die
                    log.warning("champion watcher: %s: %s", type(exc).__name__, exc)

    # ----------------------------------------------------------------- polling

    def poll(self) -> None:
        """Ask the registry for the champion (the watcher's alias); load and swap in a new
        version."""
        from fraud_detection.registry import tracking

        try:
            champion = tracking.by_alias(self.name, self.alias)
        except Exception as exc:
            message = f"cannot read the registry: {type(exc).__name__}: {exc}"
            if message != self.poll_error:
                log.warning("champion watcher: %s", message)
            self.poll_error = message
            return
        self.poll_error = None
        if champion is not None and self.admit is not None and not self.admit(champion.tags):
            champion = None
        wanted = None if champion is None else str(champion.version)
        self.champion_version = wanted
        current = None if self.current is None else self.current.version
        if wanted is None and current is not None and self.drop_when_absent:
            self.current = None
            log.info(
                "%s %s version %s dropped: no longer %s",
                self.alias,
                self.name,
                current,
                "in shadow" if self.admit else "the alias's version",
            )
            return
        if wanted is None or wanted == current:
            if wanted == current:
                self.status.failed.clear()
            return
        failed_at = self._failed_at.get(wanted)
        if failed_at is not None and time.monotonic() - failed_at < FAILED_RETRY_S:
            return
        self.load(wanted)

    def load(self, version: str) -> bool:
        """Load ``version`` and swap it in; on failure keep the current model."""
        with self._lock:
            self.status.attempted_at = _now()
            self.status.version = version
            started = time.perf_counter()
            try:
                model = load_version(self.name, version, self.threshold_override)
            except Exception as exc:
                error = str(exc) if isinstance(exc, FraudError) else f"{type(exc).__name__}: {exc}"
                self.status.ok, self.status.error = False, error
                self.status.failed[version] = error
                self._failed_at[version] = time.monotonic()
                kept = "nothing" if self.current is None else f"version {self.current.version}"
                log.warning(
                    "%s %s version %s failed to load; still serving %s: %s",
                    self.alias,
                    self.name,
                    version,
                    kept,
                    error,
                )
                return False
            previous = self.current
            self.current = model  # the swap: one reference, atomic for readers
            self.status.ok, self.status.error = True, None
            self.status.failed.pop(version, None)
            self._failed_at.pop(version, None)
            log.info(
                "now serving %s %s version %s (was %s), loaded in %.2f s, threshold %.4g (%s)",
                self.alias,
                self.name,
                version,
                "none" if previous is None else previous.version,
                time.perf_counter() - started,
                model.threshold,
                model.threshold_source,
            )
            return True

    def ready_report(self) -> dict[str, Any]:
        """What ``/ready`` shows about the model."""
        current = self.current
        return {
            "loaded": current is not None,
            "model_version": None if current is None else current.version,
            "champion_alias": self.champion_version,
            "serving_champion": current is not None and current.version == self.champion_version,
            "last_reload": self.status.to_dict(),
            "failed_versions": dict(self.status.failed),
            "registry_error": self.poll_error,
        }

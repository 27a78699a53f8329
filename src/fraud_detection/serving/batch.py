"""Batch scoring: one day's transactions scored by the champion, in one vectorised pass.

The same features as training, by the same point-in-time join: the day's raw
transactions (an accepted partition only) become Feast entity rows stamped just before
each transaction, ``features.store.historical_features`` joins the feature service onto
them from the offline store (card windows, merchant risk, request features), and the
champion's scikit-learn pipeline scores the whole frame with one ``predict_proba``. The
threshold is the champion's own (its run's ``threshold`` param).

The scores are written in the prediction-log schema (``serving.predlog``) with
``source="batch"`` to ``<state>/scores/date=YYYY-MM-DD/scores.parquet``; a rerun replaces
the file atomically (a reader sees the old scores or the new ones, never half).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fraud_detection.config import FeastSettings, Profile, StatePaths, state_paths
from fraud_detection.errors import FraudError

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from fraud_detection.scaleout import PartitionMap

__all__ = [
    "BatchResult",
    "BatchRun",
    "BatchScoringError",
    "Champion",
    "latest_day",
    "load_champion",
    "recent_days",
    "score_day",
    "score_days",
    "score_frame",
    "score_partition",
    "scores_path",
]

Progress = Callable[[str], None]


class BatchScoringError(FraudError):
    """Batch scoring cannot run: no champion, a day not accepted, no transactions."""


def scores_path(paths: StatePaths, day: dt.date) -> Path:
    """``<state>/scores/date=YYYY-MM-DD/scores.parquet``."""
    return paths.root / "scores" / f"date={day.isoformat()}" / "scores.parquet"


def latest_day(paths: StatePaths) -> dt.date:
    """The newest partition accepted by the data gate."""
    from fraud_detection.data.ledger import accepted_days

    days = accepted_days(paths)
    if not days:
        raise BatchScoringError(
            "no accepted partition to score: run `make simulate` and `fraud validate raw --new`"
        )
    return days[-1]


# ------------------------------------------------------------------ the champion


@dataclass(frozen=True)
class Champion:
    """The model that scores: its registered version, run, pipeline and threshold."""

    name: str
    version: str
    run_id: str
    model: Pipeline
    threshold: float
    threshold_source: str  # "run param" or "configs/train.yaml" (a run without the param)


def load_champion(profile: Profile) -> Champion:
    """The ``champion`` alias of the profile's model, loaded by its version number (so a
    promotion meanwhile cannot mix two versions), with the threshold it was evaluated at."""
    import mlflow.sklearn
    from mlflow import MlflowClient

    from fraud_detection.registry import tracking

    tracking.setup_mlflow(profile)
    name = profile.mlflow.model_name
    current = tracking.champion(name)
    if current is None:
        raise BatchScoringError(
            f"no champion of {name!r} to score with: run `fraud ct run` (or `make ct`) first"
        )
    version = str(current.version)
    model = mlflow.sklearn.load_model(f"models:/{name}/{version}")
    params = MlflowClient().get_run(current.run_id).data.params if current.run_id else {}
    if "threshold" in params:
        threshold, source = float(params["threshold"]), "run param"
    else:
        from fraud_detection.training.settings import load_train_config

        threshold, source = load_train_config().threshold.value, "configs/train.yaml"
    return Champion(name, version, str(current.run_id), model, threshold, source)


# ------------------------------------------------------------------ scoring


def entities(transactions: pd.DataFrame) -> pd.DataFrame:
    """Raw transactions as Feast entity rows, stamped as the training set stamps them
    (``features.store.entity_rows``): features as of each transaction's own time."""
    from fraud_detection.features.store import entity_rows

    return entity_rows(transactions)


def score_frame(
    features: pd.DataFrame, champion: Champion, logged_at: pd.Timestamp
) -> pd.DataFrame:
    """Score a frame of joined features; the rows in the prediction-log schema.

    ``features`` holds the raw transaction columns (``transaction_timestamp`` as the
    transaction's time) and the model's inputs. One ``predict_proba`` on the whole frame.
    """
    from fraud_detection.features.engineering import CATEGORICAL_FEATURES
    from fraud_detection.serving.predlog import INPUT_COLUMNS
    from fraud_detection.training.evaluation import scores

    score = scores(champion.model, features)
    n = len(features)
    index = pd.RangeIndex(n)

    def column(values: Any, dtype: str) -> pd.Series:
        return pd.Series(np.asarray(values), index=index).astype(pd.api.types.pandas_dtype(dtype))

    stamps = pd.to_datetime(features["transaction_timestamp"], utc=True).dt.as_unit("us")
    ids = column(features["transaction_id"].astype("string"), "string")
    out = pd.DataFrame(
        {
            "request_id": "batch-" + ids,
            "logged_at": pd.Series(logged_at.tz_convert("UTC"), index=index).dt.as_unit("us"),
            "event_timestamp": pd.Series(stamps.array, index=index),
            "transaction_id": ids,
            "card_id": column(features["card_id"], "int64"),
            "merchant_id": column(features["merchant_id"], "int64"),
            "model_version": pd.Series(champion.version, index=index, dtype="string"),
            "score": column(score, "float64"),
            "decision": column(score >= champion.threshold, "bool"),
            "threshold": pd.Series(champion.threshold, index=index, dtype="float64"),
            # No card-window row within its TTL (a new or long-idle card), no merchant
            # snapshot: what serving calls an unknown card or merchant.
            "unknown_card": column(features["card_txn_count_7d"].isna(), "bool"),
            "unknown_merchant": column(features["merchant_fraud_rate_30d"].isna(), "bool"),
            # The offline join is point in time by construction; serving measures the age.
            "feature_age_s": pd.Series(np.nan, index=index, dtype="float64"),
            "latency_ms": pd.Series(np.nan, index=index, dtype="float64"),
            "source": pd.Series("batch", index=index, dtype="string"),
        }
    )
    for name in INPUT_COLUMNS:
        # The dtypes the model was trained on: the training set comes from the same join.
        out[name] = features[name].to_numpy()
        if name in CATEGORICAL_FEATURES:
            out[name] = out[name].astype("string")
    return out


@dataclass
class BatchResult:
    """What one batch-scoring run did."""

    day: dt.date
    rows: int
    alerts: int
    path: Path
    model_version: str
    threshold: float
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def rows_per_minute(self) -> float:
        return self.rows / self.seconds * 60 if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "rows": self.rows,
            "alerts": self.alerts,
            "path": str(self.path),
            "model_version": self.model_version,
            "threshold": self.threshold,
            "seconds": round(self.seconds, 2),
            "rows_per_minute": round(self.rows_per_minute),
            "timings": {k: round(v, 2) for k, v in self.timings.items()},
        }


def _write_atomic(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)


def _check_accepted(paths: StatePaths, days: Sequence[dt.date]) -> None:
    from fraud_detection.data.ledger import partition_status

    for day in days:
        status = partition_status(paths, day)
        if status is not True:
            why = "was rejected by" if status is False else "has not been judged by"
            raise BatchScoringError(
                f"partition {day} {why} the data gate: only accepted days are scored "
                f"(`fraud validate raw --date {day}`)"
            )


def _update_features(
    paths: StatePaths, upto: dt.date, say: Progress, run: PartitionMap | None = None
) -> None:
    """Build the feature tables of the accepted days up to ``upto`` that lack them."""
    from fraud_detection.data.ledger import accepted_days
    from fraud_detection.features import store
    from fraud_detection.training import ct

    built = set(store.built_days(paths))
    missing = [d for d in accepted_days(paths) if d <= upto and d not in built]
    if missing:
        say(f"building the feature tables of {len(missing)} accepted day(s) missing them…")
        ct.update_features(paths, [], run=run)  # every accepted day without features (CT's code)


def score_partition(
    day: dt.date,
    *,
    paths: StatePaths,
    champion: Champion,
    feast: FeastSettings,
    logged_at: pd.Timestamp,
    progress: Progress | None = None,
) -> BatchResult:
    """Join, score and write one accepted day whose feature tables exist; runs on a Dask
    worker too. The Feast registry must be applied (``store.open_store``) beforehand:
    this only reads it. ``seconds`` and ``timings`` cover this day's work only."""
    from fraud_detection.features import store

    say = progress or (lambda _message: None)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = now - since
        return now

    transactions = store.read_transactions(paths, [day])
    if transactions.empty:
        raise BatchScoringError(f"partition {day} holds no transactions: nothing to score")
    say(f"joining point-in-time features for {len(transactions):,} transactions of {day} (Feast)…")
    feast_store = store.open_store(paths, apply=False, feast_settings=feast)
    t = lap("read_and_open_store", started)
    features = store.historical_features(feast_store, entities(transactions), lock=paths)
    t = lap("features", t)
    say(f"scoring {len(features):,} rows with v{champion.version}…")
    scored = score_frame(features, champion, logged_at)
    scored = scored.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    t = lap("score", t)
    path = scores_path(paths, day)
    _write_atomic(scored, path)
    lap("write", t)
    return BatchResult(
        day=day,
        rows=len(scored),
        alerts=int(scored["decision"].sum()),
        path=path,
        model_version=champion.version,
        threshold=champion.threshold,
        seconds=time.perf_counter() - started,
        timings=timings,
    )


def score_day(
    day: dt.date | None = None,
    *,
    profile: Profile | None = None,
    progress: Progress | None = None,
) -> BatchResult:
    """Score every transaction of ``day`` (default: the newest accepted partition).

    Builds the day's features first if they are missing (the same code as CT), then
    joins, scores and writes :func:`scores_path`. Raises :class:`BatchScoringError` when
    the day was not accepted by the data gate or there is no champion.
    """
    from fraud_detection.config import load_profile
    from fraud_detection.features import store

    say = progress or (lambda _message: None)
    profile = profile or load_profile()
    paths = state_paths(profile)
    started = time.perf_counter()
    day = day or latest_day(paths)
    _check_accepted(paths, [day])
    champion = load_champion(profile)
    say(
        f"champion {champion.name} v{champion.version} "
        f"(threshold {champion.threshold:g}, from its {champion.threshold_source})"
    )
    loaded = time.perf_counter()
    _update_features(paths, day, say)
    store.open_store(paths, feast_settings=profile.feast)  # definitions applied if changed
    prepared = time.perf_counter()
    result = score_partition(
        day,
        paths=paths,
        champion=champion,
        feast=profile.feast,
        logged_at=pd.Timestamp.now(tz="UTC"),
        progress=say,
    )
    result.timings = {
        "load_champion": loaded - started,
        "update_features": prepared - loaded,
        **result.timings,
    }
    result.seconds = time.perf_counter() - started
    say(
        f"wrote {result.rows:,} scores ({result.alerts:,} alerts) to {result.path} in "
        f"{result.seconds:.1f} s ({result.rows_per_minute:,.0f} rows/min)"
    )
    return result


def recent_days(paths: StatePaths, count: int | None = None) -> list[dt.date]:
    """The newest ``count`` accepted partitions (every one when None), oldest first."""
    from fraud_detection.data.ledger import accepted_days

    days = accepted_days(paths)
    if not days:
        raise BatchScoringError(
            "no accepted partition to score: run `make simulate` and `fraud validate raw --new`"
        )
    if count is not None and count < 1:
        raise BatchScoringError(f"--days must be at least 1, got {count}")
    return days if count is None else days[-count:]


@dataclass
class BatchRun:
    """What scoring several days did, end to end (champion load and cluster included)."""

    days: list[BatchResult]
    where: str
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(result.rows for result in self.days)

    @property
    def rows_per_minute(self) -> float:
        return self.rows / self.seconds * 60 if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "days": [result.to_dict() for result in self.days],
            "where": self.where,
            "rows": self.rows,
            "alerts": sum(result.alerts for result in self.days),
            "seconds": round(self.seconds, 2),
            "rows_per_minute": round(self.rows_per_minute),
            "timings": {k: round(v, 2) for k, v in self.timings.items()},
        }


def score_days(
    days: Sequence[dt.date],
    *,
    profile: Profile | None = None,
    progress: Progress | None = None,
    logged_at: pd.Timestamp | None = None,
) -> BatchRun:
    """Score several accepted days, on a Dask cluster from the profile's ``dask`` settings
    (:func:`fraud_detection.scaleout.partition_map`; in this process below
    ``min_partitions`` days).

    The champion is loaded once, here, and sent to the cluster once; missing feature
    tables are built first (on the cluster too), then each day is joined, scored and
    written by :func:`score_partition`, the days in parallel: each day's scores depend
    only on that day and the feature tables, so they are the ones scoring the days one by
    one writes. Every day's ``logged_at`` is ``logged_at`` (default: now, once).
    """
    from fraud_detection.config import load_profile
    from fraud_detection.features import store
    from fraud_detection.scaleout import partition_map

    say = progress or (lambda _message: None)
    profile = profile or load_profile()
    paths = state_paths(profile)
    started = time.perf_counter()
    days = sorted(set(days))
    if not days:
        raise BatchScoringError("no day to score")
    _check_accepted(paths, days)
    timings: dict[str, float] = {}
    # The workers import what scoring needs while this process loads the champion.
    preload = ("fraud_detection.features.store", "feast", "sklearn.ensemble")
    with partition_map(profile.dask, len(days), progress=say, preload=preload) as run:
        timings["start_cluster"] = time.perf_counter() - started
        say(f"scoring {len(days)} day(s), {days[0]} .. {days[-1]}, {run.where}")
        t = time.perf_counter()
        champion = load_champion(profile)
        say(
            f"champion {champion.name} v{champion.version} "
            f"(threshold {champion.threshold:g}, from its {champion.threshold_source})"
        )
        timings["load_champion"] = time.perf_counter() - t
        t = time.perf_counter()
        _update_features(paths, days[-1], say, run)
        store.open_store(paths, feast_settings=profile.feast)  # applied once, here
        timings["update_features"] = time.perf_counter() - t
        t = time.perf_counter()
        results = run.map(
            functools.partial(
                score_partition,
                paths=paths,
                feast=profile.feast,
                logged_at=logged_at or pd.Timestamp.now(tz="UTC"),
            ),
            days,
            done="scored",
            noun="days",
            champion=champion,
        )
        timings["score_days"] = time.perf_counter() - t
        t = time.perf_counter()
    timings["stop_cluster"] = time.perf_counter() - t
    return BatchRun(results, run.where, time.perf_counter() - started, timings)

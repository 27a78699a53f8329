"""A small served world for serving and monitoring tests: data, features, a champion.

``served_world(root)`` simulates a few days, runs the continuous-training steps of
``fraud_detection.training.ct`` as plain calls (no Prefect server: the flows are tested
elsewhere), and leaves behind what a deployed service finds: raw partitions and labels,
feature tables, a materialized Feast online store, version 1 of the registered model with
the ``champion`` alias, and ``<state>/serving/champion.json``.

``arrive(paths, days, feed)`` lets held-back days arrive the way CT takes them in (gate,
feature tables, materialization), and ``rematerialize(paths)`` is CT rebuilding every
feature table and loading the online store again from scratch.

``train_version(paths)`` registers one more version and returns it *without* promoting it:
tests move the alias themselves when they want to. (Gradient boosting without early
stopping is deterministic on data this small, so the versions score alike; tell them apart
by the version number the service reports.)
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from fraud_detection.config import StatePaths, load_simulate_config
from fraud_detection.data.simulator import write_simulation

START = dt.date(2026, 1, 1)
WORLD: dict[str, Any] = {
    "seed": 7,
    "start_date": START,
    "days": 8,
    "rows_per_day": 2_000,
    "cards": 1_000,
    "merchants": 200,
    "label_delay_days": 2,
}
# Small and quick: the tests need a real champion, not a good one.
FAST_MODEL = {"FRAUD_TRAIN__MODEL__MAX_ITER": "40"}


def simulate(root: Path, **overrides: Any) -> StatePaths:
    """Write the simulated world (raw partitions, labels, reference tables) under ``root``."""
    cfg = load_simulate_config(overrides={**WORLD, **overrides})
    paths = StatePaths(root=root)
    write_simulation(cfg, paths)
    return paths


@contextmanager
def _environment(paths: StatePaths) -> Iterator[None]:
    """The state folder and the quick model for the steps' own config loads; restored after."""
    wanted = {"FRAUD_PROFILE__STATE_DIR": str(paths.root), **FAST_MODEL}
    saved = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def train_version(
    paths: StatePaths,
    *,
    promote: bool = False,
    seed: int = 1,
    fit: Callable[[pd.DataFrame], Any] | None = None,
) -> str:
    """Train and register a challenger on the accepted data; promote it if asked.

    The model is the configured one with fewer iterations (:data:`FAST_MODEL`) and
    ``seed`` as its random state, or what ``fit`` returns for the training part of the
    training set (any sklearn classifier pipeline a user might register). Leaves MLflow
    set up for ``paths`` in this process.
    """
    with _environment(paths):
        return _train_version(paths, promote=promote, seed=seed, fit=fit)


def _train_version(
    paths: StatePaths, *, promote: bool, seed: int, fit: Callable[[pd.DataFrame], Any] | None
) -> str:
    from fraud_detection.registry import tracking
    from fraud_detection.training import ct

    ctx = ct.context(str(paths.root))
    tracking.setup_mlflow(ctx.profile)
    model_cfg = ctx.train.model.model_copy(update={"random_state": seed})
    ctx = ct.CTContext(
        profile=ctx.profile,
        paths=ctx.paths,
        train=ctx.train.model_copy(update={"model": model_cfg}),
    )
    pending = ct.pending_partitions(ctx.paths)
    gate = ct.summarize_data_gate({d: ct.validate_partition(ctx.paths, d) for d in pending})
    ct.update_features(ctx.paths, gate.accepted)
    training = ct.validate_training_set(ctx, ct.build_training_set(ctx, ct.as_of(ctx.paths)))
    if fit is None:
        model = ct.fit(ctx, training, "normal")
    else:
        from fraud_detection.training.model import split_holdout

        frame = pd.read_parquet(training.path)
        model = fit(split_holdout(frame, ctx.train.holdout_days)[0])
    evals = ct.evaluate(ctx, model, training)
    plots = ct.figures(model, training, ctx, evals)
    registered = ct.log_and_register(
        ctx,
        model,
        training,
        evals,
        plots,
        trigger="on_demand",
        variant="normal",
        validation_ids=[training.validation_id],
    )
    if promote:
        current = tracking.champion(ctx.model_name)
        result = tracking.promote(
            ctx.model_name,
            registered.version,
            expected_champion=None if current is None else str(current.version),
            decision={"promote": True, "reasons": ["test world"]},
        )
        assert result.promoted, result.reason
        ct.materialize(ctx)
        ct.notify_serving(ctx, registered.version, True)
    return registered.version


def hold_back(paths: StatePaths, days: list[dt.date], feed: Path) -> None:
    """Move the raw partitions of ``days`` out of the state, into ``feed``: not arrived yet."""
    feed.mkdir(parents=True, exist_ok=True)
    for day in days:
        folder = paths.raw / f"date={day.isoformat()}"
        folder.rename(feed / folder.name)


def arrive(paths: StatePaths, days: list[dt.date], feed: Path) -> None:
    """Held-back days arrive: their partitions pass CT's data gate, get their feature
    tables, and the online store is materialized (CT's own steps, no Prefect)."""
    from fraud_detection.features import store
    from fraud_detection.training import ct

    for day in days:
        (feed / f"date={day.isoformat()}").rename(paths.raw / f"date={day.isoformat()}")
    with _environment(paths):
        gate = ct.summarize_data_gate({d: ct.validate_partition(paths, d) for d in days})
        assert not gate.rejected, gate
        ct.update_features(paths, gate.accepted)
        store.materialize(paths)


def rematerialize(paths: StatePaths) -> None:
    """CT rebuilding every feature table and loading the online store from scratch."""
    from fraud_detection.features import store

    with _environment(paths):
        for day in store.built_days(paths):
            store.build_day(paths, day)
        store.materialized_marker(paths).unlink()
        store.materialize(paths)


def served_world(root: Path, **overrides: Any) -> StatePaths:
    """Simulated data, features, an online store and a champion (version 1) under ``root``."""
    paths = simulate(root, **overrides)
    train_version(paths, promote=True)
    return paths

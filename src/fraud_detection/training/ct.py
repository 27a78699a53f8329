"""The steps of continuous training (CT), each one function with its I/O at the edges.

The Prefect flow (``fraud_detection.orchestration.flows``), the CLI
(``fraud ct run``, ``fraud train``) and the DVC stages call these, so every way of
running the pipeline runs the same code. Pure logic stays in ``model``, ``evaluation``
and ``gate``; this module reads and writes: raw partitions, feature tables, MLflow.

Each run leaves one record in the run ledger (:mod:`fraud_detection.registry.runs`,
``<state>/ct/runs.jsonl``): what the demo's table and the ``ct.yml`` job summary print.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from fraud_detection.config import Profile, StatePaths, load_profile, project_dir, state_paths
from fraud_detection.errors import FraudError
from fraud_detection.registry.runs import (
    RunRecord,
    append_record,
    last_trained_as_of,
    ledger_lock,
    read_records,
)
from fraud_detection.training.settings import TrainConfig, load_train_config

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from fraud_detection.scaleout import PartitionMap
    from fraud_detection.training.evaluation import Evaluation
    from fraud_detection.training.gate import GateDecision
    from fraud_detection.validation.gate import ValidationOutcome

Variant = Literal["normal", "shuffled_labels", "drop_key_features"]
VARIANTS: tuple[str, ...] = ("normal", "shuffled_labels", "drop_key_features")
# What a "drop_key_features" challenger loses: distance from home is the strongest signal
# (PR-AUC 0.64 -> 0.47 without it on the default data).
KEY_FEATURES: tuple[str, ...] = ("distance_from_home_km", "amount_to_card_mean_7d")
TRIGGERS: tuple[str, ...] = ("on_demand", "schedule", "new_data", "performance", "drift")


class CTError(FraudError):
    """A CT step cannot proceed; the message says which and what to do."""


@dataclass(frozen=True)
class CTContext:
    """Everything a CT run reads its settings from, resolved once."""

    profile: Profile
    paths: StatePaths
    train: TrainConfig

    @property
    def model_name(self) -> str:
        return self.profile.mlflow.model_name

    @property
    def folder(self) -> Path:
        return self.paths.root / "ct"


def context(state_dir: str | Path | None = None) -> CTContext:
    """The active profile and configs; ``state_dir`` overrides the profile's state folder."""
    profile = load_profile()
    if state_dir is not None:
        profile = profile.model_copy(update={"state_dir": Path(state_dir).resolve()})
    return CTContext(profile=profile, paths=state_paths(profile), train=load_train_config())


# ------------------------------------------------------------------ data: ingest


def pending_partitions(paths: StatePaths) -> list[dt.date]:
    """Raw partitions on disk that the data gate has not judged (new data), oldest first."""
    from fraud_detection.data.ledger import partition_status, raw_partition_days

    return [day for day in raw_partition_days(paths) if partition_status(paths, day) is None]


@dataclass(frozen=True)
class DataGateResult:
    accepted: list[dt.date]
    rejected: dict[dt.date, str]  # day -> the first failed expectation, one line
    data_docs: dict[dt.date, str]
    # accepted day -> the columns the value-skew stage warned about (the record has more)
    warned: dict[dt.date, str] = field(default_factory=dict)

    def summary(self) -> str:
        if not self.accepted and not self.rejected:
            return "no new partition"
        parts = []
        if self.accepted:
            parts.append(f"{len(self.accepted)} accepted")
        for day, why in self.rejected.items():
            # The first failed expectation, cut to its column and check (the record and
            # Data Docs hold the rest).
            parts.append(f"{day} REJECTED ({why.split(' — ')[0]})")
        parts.extend(f"{day} warned ({columns})" for day, columns in self.warned.items())
        return ", ".join(parts)


def validate_partition(paths: StatePaths, day: dt.date) -> ValidationOutcome:
    """The data gate on one raw partition (records its verdict; never raises for bad data)."""
    from fraud_detection.validation.gate import validate_raw_partition

    return validate_raw_partition(paths, day)


def summarize_data_gate(outcomes: Mapping[dt.date, ValidationOutcome]) -> DataGateResult:
    accepted = sorted(day for day, o in outcomes.items() if o.success)
    rejected = {}
    for day, outcome in sorted(outcomes.items()):
        if not outcome.success:
            lines = outcome.failure_lines()
            rejected[day] = lines[0] if lines else "rejected"
    docs = {day: str(o.data_docs) for day, o in outcomes.items() if o.data_docs}
    warned = {
        day: ", ".join(dict.fromkeys(w.subject for w in o.warnings))
        for day, o in sorted(outcomes.items())
        if o.success and o.warnings
    }
    return DataGateResult(accepted, rejected, docs, warned)


def update_features(
    paths: StatePaths, days: Sequence[dt.date], *, run: PartitionMap | None = None
) -> int:
    """Feature tables for newly accepted days (and days whose files are missing).

    ``run`` (a :func:`fraud_detection.scaleout.partition_map`) builds the days on a Dask
    cluster: each day reads its own history and writes only its own files, so the tables
    are the ones built one after another (the default, in this process).
    """
    from fraud_detection.data.ledger import accepted_days
    from fraud_detection.features import store

    store.build_profile(paths)
    built = set(store.built_days(paths))
    todo = sorted(set(days) | {d for d in accepted_days(paths) if d not in built})
    if run is None:
        for day in todo:
            store.build_day(paths, day)
    else:
        run.map(functools.partial(store.build_day, paths), todo, done="featurized", noun="days")
    return len(todo)


def as_of(paths: StatePaths) -> pd.Timestamp:
    """The simulated "now": midnight after the newest accepted partition."""
    from fraud_detection.data.ledger import accepted_days

    days = accepted_days(paths)
    if not days:
        raise CTError("no accepted partition yet: run `make simulate`, then the pipeline")
    return pd.Timestamp(days[-1] + dt.timedelta(days=1)).tz_localize("UTC")


# -------------------------------------------------------------- training set


@dataclass(frozen=True)
class TrainingSet:
    path: Path
    rows: int
    fraud_rate: float
    digest: str  # content hash: the cache key of training
    window: tuple[str, str]
    validation_id: str


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def build_training_set(ctx: CTContext, when: pd.Timestamp) -> Path:
    """A point-in-time training set (Feast) of the labels known at ``when``, as Parquet."""
    from fraud_detection.features import store

    frame = store.training_set(ctx.paths, when, ctx.train.window_days)
    path = ctx.paths.root / "training" / f"training_set_{when:%Y-%m-%d}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # atomic: readers never see half
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def champion_training_set(ctx: CTContext) -> tuple[str | None, str | None]:
    """The champion's training set (the file stem its run was tagged with), or None and
    why there is none to compare a new training set with."""
    from fraud_detection.registry import tracking

    try:
        current = tracking.champion(ctx.model_name)
        if current is None:
            return None, "no champion yet: nothing to compare the training set with"
        tag = tracking.run_tags(str(current.run_id)).get("training_set")
    except Exception as exc:  # the registry down: the schema checks still run
        return None, f"the champion could not be read from the registry ({type(exc).__name__})"
    if not tag:
        return None, f"champion v{current.version}'s run names no training set"
    return Path(tag).stem, None


def validate_training_set(ctx: CTContext, path: Path) -> TrainingSet:
    """The training-set gate, against the champion's training set when there is one;
    raises :class:`DataValidationError` when it fails."""
    from fraud_detection.validation.gate import validate_training_set as gate

    frame = pd.read_parquet(path)
    reference, why = champion_training_set(ctx)
    outcome = gate(ctx.paths, frame, path.stem, source=path, reference=reference, skipped=why)
    outcome.raise_for_failure()
    for line in outcome.warning_lines():  # let through, recorded: say it
        logging.getLogger(__name__).warning("training set %s: %s", path.stem, line)
    stamps = frame["event_timestamp"]
    return TrainingSet(
        path=path,
        rows=len(frame),
        fraud_rate=float(frame["is_fraud"].mean()),
        digest=_file_digest(path),
        window=(f"{stamps.min():%Y-%m-%d}", f"{stamps.max():%Y-%m-%d}"),
        validation_id=outcome.result_id or outcome.record.name,
    )


# ---------------------------------------------------------------- train, evaluate


def features_for(variant: Variant) -> tuple[str, ...]:
    from fraud_detection.features.engineering import MODEL_FEATURES
    from fraud_detection.training.model import drop_feature

    if variant == "drop_key_features":
        return drop_feature(MODEL_FEATURES, *KEY_FEATURES)
    return tuple(MODEL_FEATURES)


# The train step's code: this module (fit, features_for) and the package modules it imports
# to build and fit the model. Their bytes are the code version in the train step's cache key
# and the run's `code_hash` tag, so a change to the model code is never answered with a
# model cached before it. errors.py, config.py and registry/runs.py are left out: exception
# classes, where settings are read (the settings themselves are in the key as the config
# hash), and the run ledger, which records runs and never touches the model. A
# change to this module outside fit costs one refit; a module missing here would cost a
# stale model, hence tests/unit/test_train_code.py checks this list against the imports.
_PACKAGE = Path(__file__).resolve().parents[1]
TRAIN_CODE: tuple[Path, ...] = tuple(
    _PACKAGE / name
    for name in (
        "training/ct.py",
        "training/model.py",
        "training/settings.py",
        "features/engineering.py",
    )
)
CODE_HASH_TAG = "code_hash"


def code_hash(files: Sequence[Path] | None = None) -> str:
    """The train step's code version: the first 16 hex digits of a sha256 over the bytes
    of ``files`` (default :data:`TRAIN_CODE`), in order, each prefixed by its length.

    Any edit to the model code changes it, a reformatting included; it is the same in
    every copy of the same files, with or without git.
    """
    digest = hashlib.sha256()
    for path in TRAIN_CODE if files is None else files:
        data = Path(path).read_bytes()
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()[:16]


def fit(ctx: CTContext, training: TrainingSet, variant: Variant = "normal") -> Pipeline:
    """Train on the training part (all but the holdout days) of the training set."""
    from fraud_detection.training.model import shuffled_labels, split_holdout, train

    frame = pd.read_parquet(training.path)
    fit_part, _ = split_holdout(frame, ctx.train.holdout_days)
    if variant == "shuffled_labels":
        fit_part = shuffled_labels(fit_part, seed=ctx.train.model.random_state)
    return train(fit_part, ctx.train.model, features_for(variant))


@dataclass(frozen=True)
class Evaluations:
    challenger: Evaluation
    champion: Evaluation | None
    champion_version: str | None
    threshold: float


def champion_model(ctx: CTContext) -> tuple[str | None, Pipeline | None]:
    """The current champion's version and its sklearn pipeline (None, None without one)."""
    import mlflow.sklearn

    from fraud_detection.registry import tracking

    current = tracking.champion(ctx.model_name)
    if current is None:
        return None, None
    model = mlflow.sklearn.load_model(f"models:/{ctx.model_name}@champion")
    return str(current.version), model


def evaluate(ctx: CTContext, model: Pipeline, training: TrainingSet) -> Evaluations:
    """Score the challenger and the champion on the same frozen holdout."""
    from fraud_detection.training.evaluation import choose_threshold, evaluate, scores
    from fraud_detection.training.model import split_holdout

    frame = pd.read_parquet(training.path)
    _, holdout = split_holdout(frame, ctx.train.holdout_days)
    threshold = choose_threshold(holdout["is_fraud"], scores(model, holdout), ctx.train.threshold)
    challenger = evaluate(model, holdout, threshold, ctx.train.slices)
    version, champion = champion_model(ctx)
    reference = None
    if champion is not None:
        reference = evaluate(champion, holdout, threshold, ctx.train.slices)
    return Evaluations(challenger, reference, version, threshold)


def figures(
    model: Pipeline, training: TrainingSet, ctx: CTContext, evals: Evaluations
) -> dict[str, Any]:
    """The plots logged with each run: PR curve, calibration, feature importance."""
    from fraud_detection.training.evaluation import (
        permutation_importances,
        plot_calibration,
        plot_feature_importance,
        plot_pr_curves,
        scores,
    )
    from fraud_detection.training.model import split_holdout

    _, holdout = split_holdout(pd.read_parquet(training.path), ctx.train.holdout_days)
    curves = {"challenger": scores(model, holdout)}
    return {
        "pr_curve": plot_pr_curves(holdout["is_fraud"], curves, evals.threshold),
        "calibration": plot_calibration(evals.challenger),
        "feature_importance": plot_feature_importance(permutation_importances(model, holdout)),
    }


# ----------------------------------------------------------- register, promote


@dataclass(frozen=True)
class Registered:
    version: str
    run_id: str
    model_uri: str


def log_and_register(
    ctx: CTContext,
    model: Pipeline,
    training: TrainingSet,
    evals: Evaluations,
    plots: Mapping[str, Any],
    *,
    trigger: str,
    variant: Variant,
    validation_ids: Sequence[str],
) -> Registered:
    """Log the run to MLflow and register the model as the new ``challenger``."""
    from fraud_detection.features.store import FEATURE_SERVICE
    from fraud_detection.registry import lineage, tracking
    from fraud_detection.training.model import input_columns, split_holdout

    tracking.setup_mlflow(ctx.profile)
    _, holdout = split_holdout(pd.read_parquet(training.path), ctx.train.holdout_days)
    slices: dict[str, dict[str, Any]] = {s.column: {} for s in evals.challenger.slices}
    for s in evals.challenger.slices:
        slices[s.column][s.value] = {
            "n": s.n,
            "positives": s.positives,
            "pr_auc": s.pr_auc,
            "supported": s.supported,
        }
    run = tracking.log_training_run(
        model=model,
        params={
            "model": ctx.train.model.model_dump(),
            "holdout_days": ctx.train.holdout_days,
            "window_days": ctx.train.window_days,
            "variant": variant,
            "threshold": evals.threshold,
            "training_rows": training.rows,
        },
        metrics=evals.challenger.metrics(),
        slice_metrics=slices,
        figures=plots,
        artifacts={
            "evaluation": evals.challenger.to_dict(),
            "champion_evaluation": evals.champion.to_dict() if evals.champion else None,
        },
        input_example=holdout[input_columns(model)].head(5),
        tags={
            "trigger": trigger,
            "variant": variant,
            "training_set": training.path.name,
            CODE_HASH_TAG: code_hash(),
        },
        run_name=f"ct-{training.path.stem.removeprefix('training_set_')}-{trigger}",
    )
    tags = lineage.lineage_tags(
        git_commit=lineage.git_commit(project_dir()),
        data_hash=lineage.dvc_hash(training.path),
        feature_service=FEATURE_SERVICE,
        validation_ids=list(validation_ids),
        config_hash=lineage.config_hash(ctx.train),
        training_window=training.window,
    )
    version = tracking.register(run, ctx.model_name, tags)
    return Registered(version=version, run_id=run.run_id, model_uri=run.model_uri)


def model_gate(
    ctx: CTContext,
    model: Pipeline,
    evals: Evaluations,
    registered: Registered,
    training: TrainingSet,
) -> GateDecision:
    """Decide promotion: infrastructure check through pyfunc, then the metric rules."""
    from fraud_detection.registry import tracking
    from fraud_detection.training.gate import decide
    from fraud_detection.training.model import input_columns, split_holdout

    _, holdout = split_holdout(pd.read_parquet(training.path), ctx.train.holdout_days)
    sample = holdout[input_columns(model)].head(ctx.train.gate.infra_sample_rows)
    ok, detail = tracking.infra_check(f"models:/{ctx.model_name}/{registered.version}", sample)
    decision = decide(evals.challenger, evals.champion, ctx.train.gate, ok, detail)
    tracking.record_decision(
        ctx.model_name, registered.version, decision.to_dict(), registered.run_id
    )
    return decision


def promote(
    ctx: CTContext, registered: Registered, evals: Evaluations, decision: GateDecision
) -> tuple[bool, str | None, str]:
    """Move the ``champion`` alias if the gate approved and nobody promoted meanwhile."""
    from fraud_detection.registry import tracking

    result = tracking.promote(
        ctx.model_name,
        registered.version,
        expected_champion=evals.champion_version,
        decision=decision.to_dict(),
    )
    return result.promoted, result.champion, result.reason


def materialize(ctx: CTContext) -> str:
    from fraud_detection.features import store

    start, end = store.materialize(ctx.paths)
    return f"{start:%Y-%m-%d} → {end:%Y-%m-%d}"


def notify_serving(ctx: CTContext, champion: str | None, promoted: bool) -> Path:
    """Tell serving which version is champion: a small JSON file the service watches."""
    path = ctx.paths.root / "serving" / "champion.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": ctx.model_name,
        "version": champion,
        "uri": f"models:/{ctx.model_name}@champion",
        "changed": promoted,
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
    return path


# ------------------------------------------------------------- crash recovery

RECONCILED = "reconciled after a crash"


def reconcile_promotion(ctx: CTContext) -> list[str]:
    """Record a promotion whose run died before recording it; one line if it did.

    The champion version was promoted by a CT run of this host (its ``promoted_by`` tag,
    written before the alias moved) whose process is gone, and the ledger has no
    promotion record for it: the record is written now, marked "reconciled after a
    crash", and serving is told. A promoting run that is still alive is left to write its
    own record.
    """
    from fraud_detection.registry import tracking

    current = tracking.champion(ctx.model_name)
    if current is None:
        return []
    version = str(current.version)
    tags = dict(current.tags)
    try:
        promoter = json.loads(tags.get(tracking.PROMOTED_BY) or "{}")
    except ValueError:
        return []
    why = tracking.process_gone(promoter) if isinstance(promoter, dict) else None
    if why is None:
        return []  # promoted before these tags, by a live run, or on another host
    with ledger_lock(ctx.paths):
        if any(
            r.outcome == "promoted" and r.champion_version == version
            for r in read_records(ctx.paths)
        ):
            return []
        run = tracking.run_tags(str(current.run_id)) if current.run_id else {}
        day = Path(run.get("training_set", "")).stem.removeprefix("training_set_")
        try:
            as_of = pd.Timestamp(day).tz_localize("UTC").isoformat()  # the set's "now"
        except ValueError:
            as_of = None
        reason = f"v{version} became champion but its run died before recording it ({why})"
        append_record(
            ctx.paths,
            RunRecord(
                trigger=run.get("trigger", "unknown"),
                started_at=tags.get(tracking.PROMOTED_AT)
                or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                variant=run.get("variant", "normal"),
                as_of=as_of,
                model_gate=f"promoted v{version} ({RECONCILED})",
                challenger_version=version,
                champion_version=version,
                outcome="promoted",
                reasons=[f"{RECONCILED}: {reason}"],
            ),
        )
    notify_serving(ctx, version, promoted=True)
    return [f"champion v{version} had no promotion record: {reason}; recorded ({RECONCILED})"]


def recover(ctx: CTContext) -> list[str]:
    """Put right what a killed run left, when a run starts (MLflow set up): its MLflow
    run still RUNNING is marked FAILED, a promotion it did not record is recorded. One
    line per thing put right."""
    from fraud_detection.registry import tracking

    return [*tracking.fail_abandoned_runs(), *reconcile_promotion(ctx)]


def nothing_new(paths: StatePaths, as_of: str | None, variant: str) -> bool:
    """Whether a run has nothing to train: a normal run whose data (``as_of``) the last
    normal training already saw. A degraded variant (``shuffled_labels``,
    ``drop_key_features``) is an experiment on the data as it is, never skipped."""
    return variant == "normal" and last_trained_as_of(paths) == as_of

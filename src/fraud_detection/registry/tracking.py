"""The MLflow adapter: training runs, model versions with lineage, aliases, promotion.

Runs, versions, lineage and aliases are written through it (the delivery checks add
their tag themselves). Readers also query MLflow directly: serving and batch scoring load
models; monitoring, the delivery checks and the audit read runs and tags (``import
mlflow`` inside functions everywhere: it costs seconds). What it keeps in MLflow:

- a **run** per training: params, metrics (slice metrics flattened as
  ``slice.<column>.<value>.<metric>``), figures, JSON artifacts, and the sklearn
  ``Pipeline`` as a logged model whose pyfunc returns ``predict_proba``;
- a **model version** per registered run, tagged with its lineage
  (:mod:`~fraud_detection.registry.lineage`) and then ``lineage_complete=true``;
- two **aliases**: ``challenger`` (the latest complete version awaiting the gate) and
  ``champion`` (the version serving uses). Stages are deprecated and never used.

Promotion is a compare-and-set under a lock: it moves ``champion`` only if the champion
is still the one the caller's gate compared against, and only to a version whose
registration finished. MLflow itself has no compare-and-set for aliases. The lock is a
file lock (``<state>/mlflow/promotion.lock``) for the processes sharing a state folder,
or, with ``mlflow.promotion_lock_url`` (the production profile), a PostgreSQL advisory
lock that every host sharing the registry takes: held by a session, so a process that
dies releases it.

Every run is tagged with the process that started it (``fraud.process.*``: host, pid,
the pid's start time and boot, its pid namespace), and a promotion tags the version with
the promoting process before the alias moves. A process killed mid-run leaves its run
RUNNING; :func:`fail_abandoned_runs`, called when the next run starts, marks such runs
FAILED once their process is known to be gone (same host and pid namespace; a run of
another host is left alone: it cannot be told from a live one here).

Models are stored with (standard) pickle: skops cannot serialize the pipeline's
``FunctionTransformer(pd.DataFrame.astype)``, and MLflow 3.17 notes that a skops allow-list
read from the model itself is no safety control either. Load only models this project
logged.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import importlib.metadata
import json
import logging
import os
import re
import socket
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fraud_detection.config import Profile
from fraud_detection.errors import FraudError, ServiceUnavailableError
from fraud_detection.registry.lineage import missing_lineage

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.models import ModelSignature
    from mlflow.pyfunc import PyFuncModel
    from sklearn.pipeline import Pipeline

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
LINEAGE_COMPLETE = "lineage_complete"
PROMOTED_AT = "promoted_at"
SUPERSEDED_BY = "superseded_by"
PROMOTED_BY = "promoted_by"  # the promoting process (JSON), tagged before the alias moves
# Written by a rollback (``fraud model rollback``): on the version rolled back to ...
ROLLED_BACK_FROM = "rolled_back_from"
ROLLBACK_REASON = "rollback_reason"
ROLLED_BACK_BY = "rolled_back_by"  # user@host
ROLLED_BACK_AT = "rolled_back_at"
# ... and on the version rolled back from
ROLLED_BACK_TO = "rolled_back_to"
PROCESS_TAG_PREFIX = "fraud.process."
FAILED_BECAUSE = "fraud.failed_because"
GATE_DECISION_FILE = "gate_decision.json"
SLICE_METRICS_FILE = "slice_metrics.json"
MODEL_NAME_IN_RUN = "model"
# Pinned from the running environment: MLflow's own inference would take ~10 s.
MODEL_REQUIREMENTS = ("mlflow", "scikit-learn", "pandas", "numpy")
INPUT_EXAMPLE_ROWS = 5
GATE_REASONS_MAX_CHARS = 1000
LOCK_TIMEOUT_S = 120.0
_PARAM_MAX_CHARS = 6000  # MLflow rejects longer param values

# Loggers that are chatty at INFO when a store is created or a model is logged.
_QUIET_LOGGERS = ("mlflow", "alembic")
# Messages that are expected here and say nothing actionable.
_EXPECTED_WARNINGS = (
    "Failed to resolve installed pip version",  # uv environments have no pip
    "Saving scikit-learn models in the pickle",  # a deliberate choice (module docstring)
)


class RegistryError(FraudError):
    """The registry cannot do what was asked; the message says what and why."""


@dataclass(frozen=True)
class TrainingRun:
    """A finished MLflow run holding a logged model."""

    run_id: str
    model_uri: str  # ``models:/<model_id>``: what gets registered and loaded
    experiment_id: str
    artifact_uri: str  # the run's own artifacts (figures, JSON files)


@dataclass(frozen=True)
class PromotionResult:
    """What :func:`promote` did; ``champion`` is the champion version after the call."""

    promoted: bool
    champion: str | None
    previous: str | None
    reason: str


@dataclass(frozen=True)
class _Session:
    experiment_id: str
    lock_dir: Path
    lock_url: str | None = None  # PostgreSQL for the cross-host promotion lock
    model_name: str = "fraud-detector"


_session: _Session | None = None


# ------------------------------------------------------------------------ setup


class _DropExpected(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(expected in message for expected in _EXPECTED_WARNINGS)


def _quiet() -> None:
    for name in _QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)
    for name in ("mlflow.utils.environment", "mlflow.sklearn"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropExpected) for f in logger.filters):
            logger.addFilter(_DropExpected())


@contextlib.contextmanager
def _exclusive_lock(path: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``; released when the process dies, too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RegistryError(
                        f"waited {timeout:.0f} s for the lock {path}: another process holds "
                        "it (a stuck training or promotion?)"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _advisory_key(name: str) -> int:
    """The advisory-lock key of registered model ``name`` (a signed 64-bit integer)."""
    import hashlib

    digest = hashlib.blake2b(f"fraud-detection promotion {name}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


@contextlib.contextmanager
def _advisory_lock(url: str, name: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold PostgreSQL's session advisory lock for ``name`` (every host that promotes
    takes the same key); released when the block ends or the connection drops."""
    import psycopg

    from fraud_detection.stack import postgres_dsn

    key = _advisory_key(name)
    try:
        conn = psycopg.connect(postgres_dsn(url), autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        where = url.split("@")[-1]
        raise RegistryError(
            f"cannot take the promotion lock: PostgreSQL at {where} does not answer "
            f"({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})"
        ) from exc
    with conn:
        deadline = time.monotonic() + timeout
        while True:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            if row is not None and row[0]:
                break
            if time.monotonic() > deadline:
                raise RegistryError(
                    f"waited {timeout:.0f} s for the promotion lock of {name!r}: another "
                    "host holds it (a stuck promotion?)"
                )
            time.sleep(0.05)
        try:
            yield
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def _promotion_lock(session: _Session) -> contextlib.AbstractContextManager[None]:
    """The lock around registering and promoting: cross-host when the profile has one."""
    if session.lock_url:
        return _advisory_lock(session.lock_url, session.model_name)
    return _exclusive_lock(session.lock_dir / "promotion.lock")


def _as_uri(location: str) -> str:
    """An artifact location as a URI: plain paths become ``file://`` of the absolute path."""
    # A scheme of two letters or more (mlflow-artifacts:/x, s3://b, file:///p); not C:\.
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", location):
        return location
    return Path(location).expanduser().resolve().as_uri()


def _lock_dir(profile: Profile) -> Path:
    return profile.state_dir / "mlflow"


# The columns of MLflow's SQL store (2.x and 3.x) that hold artifact locations.
_ARTIFACT_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
)


def _reroot(profile: Profile) -> str | None:
    """Point a copied or moved state folder's MLflow store at its own artifacts.

    MLflow keeps artifact locations as absolute ``file://`` URIs, so a copy of the state
    folder would read the original's models and write new ones into it. When the store is
    the profile's own SQLite file and its artifacts the default folder beside it, an
    experiment whose artifact location is ``<another folder>/mlflow/artifacts`` names the
    folder the state was copied or moved from: every location under it is rewritten to
    this folder (MLflow has no API to move an experiment's artifacts). One line when it
    did, else ``None``.
    """
    import sqlite3

    if profile.mlflow.tracking_uri or profile.mlflow.artifact_root:
        return None  # stores set explicitly: where they are is the profile's business
    database = profile.state_dir / "mlflow" / "mlflow.db"
    if not database.is_file():
        return None
    here = _as_uri(profile.mlflow_artifact_root)
    suffix = "/mlflow/artifacts"
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        if "experiments" not in tables:
            return None
        found = db.execute(
            "SELECT DISTINCT artifact_location FROM experiments "
            "WHERE artifact_location LIKE 'file://%' AND artifact_location != ?",
            (here,),
        ).fetchall()
        old = sorted({loc for (loc,) in found if loc.endswith(suffix)})
        if not old:
            return None
        columns = {
            (table, column)
            for table, column in _ARTIFACT_COLUMNS
            if table in tables
            and column in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        }
        changed = 0
        for prefix in old:
            for table, column in sorted(columns):
                changed += db.execute(
                    f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608  (known names; values bound)
                    f"WHERE {column} = ? OR substr({column}, 1, ?) = ?",
                    (here, len(prefix) + 1, prefix, len(prefix) + 1, prefix + "/"),
                ).rowcount
    origins = ", ".join(str(Path(prefix.removeprefix("file://")).parent.parent) for prefix in old)
    return (
        f"state folder moved from {origins} to {profile.state_dir}: re-rooted {changed} "
        "artifact locations"
    )


_SQLITE_HEADER = b"SQLite format 3\x00"


def _check_sqlite_store(path: Path) -> None:
    """Fail in one line, now, on a SQLite store MLflow cannot open: MLflow retries opening
    it for about 100 s and then raises a traceback. A missing file is fine (created)."""
    if not path.exists():
        return
    why = None
    if not path.is_file():
        why = "it is not a file"
    else:
        try:
            with path.open("r+b") as db:  # MLflow writes to it: read and write access
                head = db.read(len(_SQLITE_HEADER))
        except OSError as exc:
            why = exc.strerror
        else:
            if head and head != _SQLITE_HEADER:
                why = "it is not an SQLite database"
    if why:
        raise ServiceUnavailableError(
            f"MLflow's database {path} cannot be opened: {why}; fix its permissions, "
            "restore it from a backup, or move it away to start an empty registry"
        )


def setup_mlflow(profile: Profile) -> str:
    """Point MLflow at the profile's stores and return the experiment's id.

    Sets the tracking and registry URI (SQLite under the state folder by default),
    re-roots a copied or moved state folder's artifact locations (:func:`_reroot`),
    creates the database and the experiment once under an exclusive file lock (several
    processes creating a fresh SQLite store at once otherwise race in its migrations),
    with the profile's artifact root as the experiment's artifact location, and makes it
    the active experiment. Idempotent; silences MLflow's and alembic's INFO logs.
    """
    global _session
    if profile.mlflow_tracking_uri.startswith("sqlite:///"):  # before seconds of imports
        _check_sqlite_store(Path(profile.mlflow_tracking_uri.removeprefix("sqlite:///")))
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import LifecycleStage

    _quiet()  # after the import: importing mlflow configures its logger
    # No tqdm bars on stderr each time a model is loaded; users may still turn them on.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    uri = profile.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if uri.startswith(("http://", "https://")):
        # A tracking server that is down fails a call within ~15 s (retries after 1, 2, 4
        # and 8 s), not MLflow's default of ~4 minutes; the environment can still say more.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    name = profile.mlflow.experiment
    lock_dir = _lock_dir(profile)
    with _exclusive_lock(lock_dir / "setup.lock"):
        moved = _reroot(profile)  # before MLflow reads a location of the old folder
        if moved:
            log.warning(moved)
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        # The first store access creates and migrates the schema; under the lock, once.
        experiment = client.get_experiment_by_name(name)
        client.search_registered_models(max_results=1)
        if experiment is None:
            experiment_id = client.create_experiment(
                name, artifact_location=_as_uri(profile.mlflow_artifact_root)
            )
        else:
            experiment_id = experiment.experiment_id
            if experiment.lifecycle_stage == LifecycleStage.DELETED:
                client.restore_experiment(experiment_id)
            wanted = _as_uri(profile.mlflow_artifact_root)
            if experiment.artifact_location != wanted:  # MLflow cannot move it
                log.warning(
                    "experiment %r keeps its artifact location %s (the profile says %s)",
                    name,
                    experiment.artifact_location,
                    wanted,
                )
    mlflow.set_experiment(experiment_id=experiment_id)
    _session = _Session(
        experiment_id=experiment_id,
        lock_dir=lock_dir,
        lock_url=profile.mlflow.promotion_lock_url,
        model_name=profile.mlflow.model_name,
    )
    return experiment_id


def _require_session() -> _Session:
    if _session is None:
        raise RegistryError("MLflow is not set up in this process: call setup_mlflow(profile)")
    return _session


def _client() -> MlflowClient:
    from mlflow import MlflowClient

    _require_session()
    return MlflowClient()


# ------------------------------------------------------------ process identity


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _start_mark(pid: int) -> str:
    """``<boot id>/<start time in ticks>`` of process ``pid`` ("" where there is no
    ``/proc`` or no such process): a pid reused by a later process has another mark."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return ""
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) ": field 3 on
    return f"{_read('/proc/sys/kernel/random/boot_id')}/{fields[19]}"  # field 22: starttime


def this_process() -> dict[str, str]:
    """Who is running: host, pid, the pid's start mark and pid namespace."""
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": str(pid),
        "start": _start_mark(pid),
        "pid_ns": _pid_namespace(),
    }


def process_tags() -> dict[str, str]:
    """The run tags naming the process that starts the run (``fraud.process.*``)."""
    return {f"{PROCESS_TAG_PREFIX}{key}": value for key, value in this_process().items()}


def _process_of(tags: Mapping[str, str]) -> dict[str, str]:
    return {
        key.removeprefix(PROCESS_TAG_PREFIX): value
        for key, value in tags.items()
        if key.startswith(PROCESS_TAG_PREFIX)
    }


def process_gone(process: Mapping[str, str]) -> str | None:
    """Why the recorded ``process`` is known to have ended (``"process 42 on h is gone"``),
    or ``None``: it still runs, or this process cannot tell (another host or pid
    namespace, nothing recorded)."""
    me = this_process()
    host, pid = process.get("host", ""), process.get("pid", "")
    if not host or not pid.isdigit() or host != me["host"]:
        return None
    if process.get("pid_ns") and me["pid_ns"] and process["pid_ns"] != me["pid_ns"]:
        return None  # another container on this host: its pids are not ours
    gone = f"process {pid} on {host} is gone"
    recorded = process.get("start", "")
    if recorded and me["start"]:  # /proc here: the pid and its start time
        now = _start_mark(int(pid))
        if now == recorded:
            return None
        return gone if not now else f"{gone} (pid {pid} is now another process)"
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return gone
    except PermissionError:  # exists, someone else's
        return None
    return None


def fail_abandoned_runs() -> list[str]:
    """Mark FAILED every run left RUNNING by a process that is gone (killed, crashed, the
    machine restarted), tagged ``fraud.failed_because``; one line per run marked.

    Call it when a run starts. Runs of live processes, of other hosts and runs without
    ``fraud.process.*`` tags are left as they are.
    """
    from mlflow.entities import ViewType

    client = _client()
    experiments = [
        e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
    ]
    if not experiments:
        return []
    lines = []
    running = client.search_runs(
        experiments, filter_string="attributes.status = 'RUNNING'", max_results=1000
    )
    for run in running:
        why = process_gone(_process_of(run.data.tags))
        if why is None:
            continue
        reason = f"killed: {why}; the run never finished (found when the next run started)"
        client.set_tag(run.info.run_id, FAILED_BECAUSE, reason)
        client.set_terminated(run.info.run_id, "FAILED")
        started = dt.datetime.fromtimestamp(run.info.start_time / 1000, dt.UTC)
        lines.append(
            f"MLflow run {run.info.run_id} ({run.info.run_name}, started "
            f"{started:%Y-%m-%d %H:%M:%S} UTC) was left RUNNING: {reason}: marked FAILED"
        )
    return lines


# --------------------------------------------------------------------- tracking


def _key(part: Any) -> str:
    """A metric/param/tag name (segment) in MLflow's allowed characters: ``in store`` and
    ``channel=online`` become ``in_store`` and ``channel_online``; dots are kept."""
    return re.sub(r"[^\w\-.]+", "_", str(part)).strip("_") or "_"


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{_key(key)}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _number(value: Any) -> float | None:
    """A metric value as a float; ``None`` for what is not a number (skipped)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _to_json(obj: Any) -> str:
    def default(value: Any) -> Any:
        if hasattr(value, "model_dump"):
            return value.model_dump(mode="json")
        if hasattr(value, "tolist"):  # numpy scalars and arrays
            return value.tolist()
        if hasattr(value, "isoformat"):
            return value.isoformat()
        return str(value)

    return json.dumps(obj, indent=2, sort_keys=True, default=default, allow_nan=True)


def _pinned_requirements() -> list[str]:
    return [f"{name}=={importlib.metadata.version(name)}" for name in MODEL_REQUIREMENTS]


def _signature(example: pd.DataFrame, proba: Any) -> ModelSignature:
    """The signature inferred from ``example``: integer columns typed ``Any``, all required.

    MLflow's schema enforcement refuses NaN in an integer column and int64 in a double
    one, and serving sends both for a count: a number, or missing for a card's first
    transaction (the pipeline casts every numeric column to Float64 itself). MLflow makes
    a column optional when the example rows happen to hold a missing value; every column
    of the example is an input of the model, so all are required, and the signature does
    not depend on which rows were sampled.
    """
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

    with warnings.catch_warnings():  # the hint about integer columns, handled here
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer", UserWarning)
        inferred = infer_signature(example, proba)
    if inferred.inputs is None:
        return inferred
    columns = [
        ColSpec(
            AnyType() if spec.type in (DataType.long, DataType.integer) else spec.type,
            spec.name,
            required=True,
        )
        if isinstance(spec, ColSpec)
        else spec
        for spec in inferred.inputs.inputs
    ]
    return ModelSignature(inputs=Schema(columns), outputs=inferred.outputs)


def _figure_file(name: str) -> str:
    stem = Path(name)
    return f"figures/{name}" if stem.suffix in {".png", ".svg", ".pdf"} else f"figures/{name}.png"


def log_training_run(
    *,
    model: Pipeline,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    slice_metrics: Mapping[str, Any],
    figures: Mapping[str, Figure],
    artifacts: Mapping[str, Any],
    input_example: pd.DataFrame,
    tags: Mapping[str, str],
    run_name: str,
) -> TrainingRun:
    """Log one training as an MLflow run and return where it went.

    ``params`` may be nested (keys joined with dots); ``slice_metrics`` is nested too,
    e.g. ``{"channel": {"online": {"pr_auc": 0.8}}}``, and is logged both as flattened
    metrics (``slice.channel.online.pr_auc``, non-numbers skipped) and as
    ``slice_metrics.json``. Each figure becomes ``figures/<name>.png``, each artifact
    ``<name>.json``. The model is logged with a signature inferred from ``input_example``
    and its ``predict_proba`` output (integer columns typed ``Any``, see
    :func:`_signature`), the first rows of ``input_example``, pinned pip requirements (no
    slow inference) and a pyfunc that returns probabilities. Metrics are linked to the
    logged model, so MLflow's model page shows them as well.
    """
    import mlflow
    import mlflow.sklearn

    session = _require_session()
    started = time.perf_counter()
    example = input_example.head(INPUT_EXAMPLE_ROWS)
    signature = _signature(example, model.predict_proba(example))
    flat_params = {key: str(value)[:_PARAM_MAX_CHARS] for key, value in _flatten(params).items()}
    flat_metrics = {key: _number(value) for key, value in _flatten(metrics).items()}
    flat_metrics |= {
        key: _number(value) for key, value in _flatten(slice_metrics, "slice.").items()
    }
    numeric = {key: value for key, value in flat_metrics.items() if value is not None}

    with mlflow.start_run(
        experiment_id=session.experiment_id,
        run_name=run_name,
        tags={**tags, **process_tags()},
        nested=mlflow.active_run() is not None,
    ) as run:
        if flat_params:
            mlflow.log_params(flat_params)
        info = mlflow.sklearn.log_model(
            model,
            name=MODEL_NAME_IN_RUN,
            signature=signature,
            input_example=example,
            pip_requirements=_pinned_requirements(),
            pyfunc_predict_fn="predict_proba",
            serialization_format="pickle",
        )
        if numeric:
            mlflow.log_metrics(numeric, model_id=info.model_id)
        mlflow.log_text(_to_json(slice_metrics), SLICE_METRICS_FILE)
        for name, figure in figures.items():
            mlflow.log_figure(figure, _figure_file(name))
        for name, content in artifacts.items():
            filename = name if name.endswith(".json") else f"{name}.json"
            mlflow.log_text(_to_json(content), filename)
    elapsed = time.perf_counter() - started
    log.info("logged run %s (model %s) in %.2f s", run.info.run_id, info.model_id, elapsed)
    return TrainingRun(
        run_id=run.info.run_id,
        model_uri=info.model_uri,
        experiment_id=run.info.experiment_id,
        artifact_uri=str(run.info.artifact_uri),
    )


def log_report_run(
    *,
    experiment: str,
    artifact_root: str,
    run_name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    artifacts_dir: Path,
) -> str:
    """Log a report (monitoring) as a run of its own ``experiment``; return the run id.

    The experiment is created on first use with its artifacts under ``artifact_root``
    (next to the training experiment's). Params are flattened and cut like a training
    run's; non-numeric metrics are skipped; every file of ``artifacts_dir`` becomes an
    artifact. The active experiment of the process is left as it was.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    _require_session()
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        try:
            experiment_id = client.create_experiment(
                experiment, artifact_location=_as_uri(artifact_root)
            )
        except MlflowException:  # created meanwhile by another process
            found = client.get_experiment_by_name(experiment)
            if found is None:
                raise
            experiment_id = found.experiment_id
    else:
        experiment_id = found.experiment_id
    flat_params = {key: str(value)[:_PARAM_MAX_CHARS] for key, value in _flatten(params).items()}
    numeric = {
        _key(key): value
        for key, raw in _flatten(metrics).items()
        if (value := _number(raw)) is not None and np.isfinite(value)
    }
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=run_name,
        tags={**tags, **process_tags()},
        nested=mlflow.active_run() is not None,
    ) as run:
        if flat_params:
            mlflow.log_params(flat_params)
        if numeric:
            mlflow.log_metrics(numeric)
        mlflow.log_artifacts(str(artifacts_dir))
    return str(run.info.run_id)


# --------------------------------------------------------------------- registry


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:  # another run (or process) created it first
        if exc.error_code not in {"RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"}:
            raise


def register(run: TrainingRun, name: str, lineage: Mapping[str, str]) -> str:
    """Register ``run``'s model as a new version of ``name``; return the version.

    The version is created with every lineage tag, the tags are read back, and only then
    is it tagged ``lineage_complete=true`` and given the ``challenger`` alias. A process
    that dies in between leaves a version without ``lineage_complete``, which
    :func:`promote` refuses. Lineage with a required tag missing or empty is an error
    before anything is written.
    """
    missing = missing_lineage(lineage)
    if missing:
        raise RegistryError(
            f"cannot register {name!r} from run {run.run_id}: lineage incomplete, "
            f"missing {', '.join(missing)}"
        )
    session = _require_session()
    client = _client()
    started = time.perf_counter()
    # Under the registry lock: MLflow sets an alias as delete-then-insert, so two
    # processes registering at once collide on the alias table (seen with SQLite).
    with _promotion_lock(session):
        _ensure_registered_model(client, name)
        created = client.create_model_version(
            name,
            source=run.model_uri,
            run_id=run.run_id,
            tags={key: str(value) for key, value in lineage.items()},
            model_id=_model_id(run.model_uri),
        )
        version = str(created.version)
        written = client.get_model_version(name, version).tags
        absent = [key for key, value in lineage.items() if written.get(key) != str(value)]
        if absent:
            raise RegistryError(
                f"{name} version {version}: lineage tags not stored ({', '.join(absent)}); "
                "it stays incomplete and cannot be promoted"
            )
        client.set_model_version_tag(name, version, LINEAGE_COMPLETE, "true")
        client.set_registered_model_alias(name, CHALLENGER, version)
    log.info("registered %s version %s in %.2f s", name, version, time.perf_counter() - started)
    return version


def _model_id(model_uri: str) -> str | None:
    match = re.fullmatch(r"models:/(m-[0-9a-f]+)", model_uri)
    return match.group(1) if match else None


def _by_alias(name: str, alias: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return _client().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        # No such model: RESOURCE_DOES_NOT_EXIST; no such alias: INVALID_PARAMETER_VALUE.
        absent = exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"} or (
            exc.error_code == "INVALID_PARAMETER_VALUE" and "not found" in exc.message
        )
        if absent:
            return None
        raise


def by_alias(name: str, alias: str) -> ModelVersion | None:
    """The version an alias points at (``champion``, ``challenger``), or ``None``."""
    return _by_alias(name, alias)


def champion(name: str) -> ModelVersion | None:
    """The version serving uses (alias ``champion``), or ``None`` before the first promotion."""
    return _by_alias(name, CHAMPION)


def run_tags(run_id: str) -> dict[str, str]:
    """A run's tags (``training_set``, ``trigger``, lineage ...)."""
    return dict(_client().get_run(run_id).data.tags)


def challenger(name: str) -> ModelVersion | None:
    """The latest complete version not yet promoted (alias ``challenger``), or ``None``."""
    return _by_alias(name, CHALLENGER)


def version_info(name: str, version: str) -> dict[str, Any]:
    """A version's evidence as plain data: tags, aliases, run, source and download URI."""
    client = _client()
    mv = client.get_model_version(name, str(version))
    return {
        "name": mv.name,
        "version": str(mv.version),
        "run_id": mv.run_id,
        "model_id": mv.model_id or _model_id(mv.source or ""),
        "source": mv.source,
        "download_uri": client.get_model_version_download_uri(name, str(version)),
        "aliases": sorted(mv.aliases),
        "tags": dict(mv.tags),
        "created_at": dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.UTC).isoformat(),
        "status": mv.status,
    }


def promote(
    name: str,
    version: str,
    *,
    expected_champion: str | None,
    decision: Mapping[str, Any],
) -> PromotionResult:
    """Make ``version`` the champion if the gate said so and nothing moved meanwhile.

    ``expected_champion`` is the champion version the gate compared against (``None`` if
    there was none). Under the promotion lock: if the champion is no longer that one,
    nothing changes and the result says who moved it; a version without
    ``lineage_complete=true`` is refused; otherwise the version is tagged ``promoted_by``
    (this process), the ``champion`` alias moves, the new
    champion is tagged ``promoted_at``, the previous one ``superseded_by``, and the
    ``challenger`` alias is dropped if it pointed at the promoted version. A decision
    whose ``promote`` is not ``True`` promotes nothing (fail closed).
    """
    session = _require_session()
    version = str(version)
    expected = None if expected_champion is None else str(expected_champion)
    if decision.get("promote") is not True:
        current = champion(name)
        now = None if current is None else str(current.version)
        reasons = _reasons(decision) or "no reason given"
        return PromotionResult(
            False, now, now, f"the gate did not approve version {version}: {reasons}"
        )
    client = _client()
    with _promotion_lock(session):
        current = champion(name)
        now = None if current is None else str(current.version)
        if now != expected:
            return PromotionResult(
                False,
                now,
                now,
                f"champion moved from {_shown(expected)} to {_shown(now)} since this run "
                f"started; version {version} was not promoted",
            )
        if now == version:
            return PromotionResult(False, now, now, f"version {version} is already the champion")
        tags = client.get_model_version(name, version).tags
        if tags.get(LINEAGE_COMPLETE) != "true":
            return PromotionResult(
                False,
                now,
                now,
                f"version {version} has no {LINEAGE_COMPLETE}=true tag (its registration did "
                "not finish); register the run again",
            )
        # Who promotes, before the alias moves: if this process dies right after, the
        # next run can tell a crashed promotion from a live one (ct.recover).
        client.set_model_version_tag(name, version, PROMOTED_BY, json.dumps(this_process()))
        client.set_registered_model_alias(name, CHAMPION, version)
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        client.set_model_version_tag(name, version, PROMOTED_AT, stamp)
        if tags.get(ROLLED_BACK_TO):  # promoted again: a rollback target once more
            client.delete_model_version_tag(name, version, ROLLED_BACK_TO)
        if now is not None:
            client.set_model_version_tag(name, now, SUPERSEDED_BY, version)
        pending = challenger(name)
        if pending is not None and str(pending.version) == version:
            client.delete_registered_model_alias(name, CHALLENGER)
    return PromotionResult(
        True, version, now, f"version {version} is the champion (was {_shown(now)})"
    )


def _shown(version: str | None) -> str:
    return "none" if version is None else f"version {version}"


# -------------------------------------------------------------------- rollback


def _became_champion_at(tags: Mapping[str, str]) -> str:
    """When a version last became champion: promoted or rolled back to (ISO text)."""
    return max(tags.get(PROMOTED_AT, ""), tags.get(ROLLED_BACK_AT, ""))


def previous_champion(name: str) -> str | None:
    """The version that was champion before the current one, from the registry's tags.

    Every promotion tags its version ``promoted_at`` (CT's, a test's, one by hand: the
    CT ledger only sees CT's) and every rollback its target ``rolled_back_at``. The
    previous champion is the version other than the current one that became champion
    last, leaving out versions a rollback moved away from (``rolled_back_to``): rolling
    back twice goes further back, never to the version just rolled back. Ties within
    the tags' second go to the higher version.
    """
    current = champion(name)
    now = None if current is None else str(current.version)
    candidates = []
    for mv in _client().search_model_versions(f"name = '{name}'"):
        tags = dict(mv.tags)
        if str(mv.version) == now or not _became_champion_at(tags) or tags.get(ROLLED_BACK_TO):
            continue
        candidates.append((_became_champion_at(tags), int(mv.version)))
    return str(max(candidates)[1]) if candidates else None


def rollback(name: str, version: str, *, reason: str, by: str) -> PromotionResult:
    """Move ``champion`` back to ``version``, audited; refuse in one line what cannot be.

    Under the promotion lock: a version that does not exist, lacks its lineage (no
    ``lineage_complete=true`` or a lineage tag missing) or is already the champion is
    refused (:class:`RegistryError`). Otherwise the target is tagged
    ``rolled_back_from`` (the champion it replaces), ``rollback_reason``,
    ``rolled_back_by`` (``by``: user@host) and ``rolled_back_at``, the version left is
    tagged ``rolled_back_to`` and ``superseded_by``, and the alias moves.
    """
    from mlflow.exceptions import MlflowException

    session = _require_session()
    version = str(version)
    if not reason.strip():
        raise RegistryError('a rollback needs a reason: --reason "what is wrong with it"')
    client = _client()
    with _promotion_lock(session):
        current = champion(name)
        now = None if current is None else str(current.version)
        try:
            tags = dict(client.get_model_version(name, version).tags)
        except MlflowException as exc:
            if exc.error_code not in {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"}:
                raise
            known = sorted(
                int(mv.version) for mv in client.search_model_versions(f"name = '{name}'")
            )
            raise RegistryError(
                f"cannot roll back {name} to version {version}: no such version "
                f"(registered: {', '.join(map(str, known)) or 'none'})"
            ) from None
        missing = missing_lineage(tags)
        if tags.get(LINEAGE_COMPLETE) != "true" or missing:
            lacking = ", ".join(missing) if missing else f"{LINEAGE_COMPLETE}=true"
            raise RegistryError(
                f"cannot roll back {name} to version {version}: its lineage is incomplete "
                f"(missing {lacking}); only a version with whole lineage may serve"
            )
        if now == version:
            raise RegistryError(f"cannot roll back {name}: version {version} is the champion")
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        audit = {
            ROLLED_BACK_FROM: now or "none",
            ROLLBACK_REASON: reason.strip()[:GATE_REASONS_MAX_CHARS],
            ROLLED_BACK_BY: by,
            ROLLED_BACK_AT: stamp,
        }
        for key, value in audit.items():  # the evidence first, then the move
            client.set_model_version_tag(name, version, key, value)
        if tags.get(ROLLED_BACK_TO):  # back in service: no longer a version rolled away from
            client.delete_model_version_tag(name, version, ROLLED_BACK_TO)
        client.set_registered_model_alias(name, CHAMPION, version)
        if now is not None:
            client.set_model_version_tag(name, now, ROLLED_BACK_TO, version)
            client.set_model_version_tag(name, now, SUPERSEDED_BY, version)
    return PromotionResult(
        True, version, now, f"version {version} is the champion again (was {_shown(now)})"
    )


# ---------------------------------------------------------------- gate decision


def _reasons(decision: Mapping[str, Any]) -> str:
    reasons = decision.get("reasons") or []
    if isinstance(reasons, str):
        return reasons
    return "; ".join(str(reason) for reason in reasons)


def _checks(decision: Mapping[str, Any]) -> dict[str, bool]:
    """Per-check outcomes from ``checks``: ``{name: bool | {"passed": bool}}`` or a list
    of ``{"name": ..., "passed": ...}``."""
    raw = decision.get("checks") or {}
    items: list[tuple[Any, Any]]
    if isinstance(raw, Mapping):
        items = list(raw.items())
    else:
        items = [(check.get("name"), check) for check in raw if isinstance(check, Mapping)]
    outcome: dict[str, bool] = {}
    for check_name, value in items:
        passed = value.get("passed") if isinstance(value, Mapping) else value
        outcome[_key(check_name)] = passed is True
    return outcome


def decision_tags(decision: Mapping[str, Any]) -> dict[str, str]:
    """The model-version tags summing up a gate decision.

    ``gate.promote`` (``true`` only if ``decision["promote"] is True``), ``gate.reasons``
    (joined, cut to about 1000 characters; the whole decision is in the run's
    ``gate_decision.json``) and ``gate.check.<name>`` = ``pass``/``fail`` per check.
    """
    reasons = _reasons(decision)
    if len(reasons) > GATE_REASONS_MAX_CHARS:
        suffix = f"... [{len(reasons)} chars, see {GATE_DECISION_FILE}]"
        reasons = reasons[: GATE_REASONS_MAX_CHARS - len(suffix)] + suffix
    tags = {
        "gate.promote": "true" if decision.get("promote") is True else "false",
        "gate.reasons": reasons,
    }
    for check_name, passed in _checks(decision).items():
        tags[f"gate.check.{check_name}"] = "pass" if passed else "fail"
    return tags


def set_version_tags(name: str, version: str, tags: Mapping[str, str]) -> None:
    """Tag a model version (release evidence: ``release.blocked`` ...)."""
    client = _client()
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))


def record_decision(name: str, version: str, decision: Mapping[str, Any], run_id: str) -> None:
    """Keep the gate's decision: ``gate_decision.json`` on the run, summary tags on the version."""
    client = _client()
    client.log_text(run_id, _to_json(dict(decision)), GATE_DECISION_FILE)
    for key, value in decision_tags(decision).items():
        client.set_model_version_tag(name, str(version), key, value)


# ------------------------------------------------------------------ infra check


def load_pyfunc(model_uri: str) -> PyFuncModel:
    """Load a logged or registered model (``models:/...``) as an MLflow pyfunc."""
    import mlflow.pyfunc

    model: PyFuncModel = mlflow.pyfunc.load_model(model_uri)
    return model


def fraud_scores(output: Any) -> np.ndarray:
    """P(fraud) per row from a pyfunc's output: ``predict_proba``'s last column."""
    scores = np.asarray(output.to_numpy() if hasattr(output, "to_numpy") else output)
    if scores.ndim == 2 and scores.shape[1] in (1, 2):
        scores = scores[:, -1]
    return scores


def check_probabilities(output: Any, n_rows: int) -> tuple[bool, str]:
    """Whether ``output`` is one finite probability in [0, 1] per row; the detail says why."""
    try:
        raw_shape = np.shape(output)
        scores = fraud_scores(output).astype(float)
    except (TypeError, ValueError) as exc:
        return False, f"output is not numeric: {_one_line(exc)}"
    if scores.shape != (n_rows,):
        return False, f"wrong shape: expected one probability per row ({n_rows}), got {raw_shape}"
    bad = ~np.isfinite(scores)
    if bad.any():
        return False, f"{int(bad.sum())} of {n_rows} predictions are NaN or infinite"
    outside = (scores < 0) | (scores > 1)
    if outside.any():
        return False, (
            f"{int(outside.sum())} of {n_rows} predictions are outside [0, 1] "
            f"(min {scores.min():.3g}, max {scores.max():.3g})"
        )
    return True, (
        f"{n_rows} rows scored, probabilities in [{scores.min():.3f}, {scores.max():.3f}]"
        if n_rows
        else "0 rows scored"
    )


def _one_line(exc: BaseException, limit: int = 300) -> str:
    message = " ".join(str(exc).split())
    # MLflow's schema errors quote the whole input first; the cause comes after "Error: ".
    if message.startswith("Failed to enforce schema") and "Error: " in message:
        message = message.rsplit("Error: ", 1)[-1]
    message = f"{type(exc).__name__}: {message}"
    return message if len(message) <= limit else message[: limit - 3] + "..."


def infra_check(model_uri: str, sample: pd.DataFrame) -> tuple[bool, str]:
    """Load the model the way serving will and score ``sample``; never raises.

    OK iff the pyfunc loads, returns one finite probability in [0, 1] per row, and scores
    the first row alone exactly as in the batch (the API scores one transaction at a
    time). The detail is one line: what was scored, or what failed (load, predict, shape,
    NaN, a single row scored otherwise). The model gate (``training.gate.decide``) takes
    the verdict.
    """
    if sample.empty:
        return False, "no sample rows to score"
    try:
        model = load_pyfunc(model_uri)
    except Exception as exc:
        return False, f"load failed for {model_uri}: {_one_line(exc)}"
    try:
        output = model.predict(sample)
        alone = model.predict(sample.iloc[:1])
    except Exception as exc:
        return False, f"predict failed on {len(sample)} rows: {_one_line(exc)}"
    ok, detail = check_probabilities(output, len(sample))
    if not ok:
        return ok, detail
    first, single = fraud_scores(output)[0], fraud_scores(alone)[0]
    if not np.isclose(single, first, rtol=1e-9, atol=1e-12):
        return False, f"the first row scored alone gives {single:.6f}, in the batch {first:.6f}"
    return True, f"{detail}; a single row scores as in the batch"

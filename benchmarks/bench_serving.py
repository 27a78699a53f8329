"""The prediction service on SQLite and on Redis, against its floor, ``mlflow models
serve`` and Feast's own feature server: ``python benchmarks/bench_serving.py``.

One run, on loopback, on a served world of realistic size: the default simulation
(``configs/simulate.yaml``: 14 days x 10,000 transactions, 5,000 cards, 500 merchants)
with drift and the broken feed off, the continuous-training steps run as plain calls with
the default training config (``configs/train.yaml``, the full-size model), the champion
registered and promoted and the Feast online store materialized into SQLite; then the same
world materialized into Redis database 12 (``features.store.materialize`` in a child with
``FRAUD_PROFILE__FEAST__ONLINE_STORE=redis``; flushed before and after). Measured:

(a) **floor**: the serving scorer's own predict of one transaction in-process (the code
    ``/predict`` runs once the features are looked up; the numpy trees of
    ``serving.scorer.Trees``), the same scorer walking sklearn's trees (the gain that
    justifies the hand-written walker), and for context scikit-learn's
    ``pipeline.predict_proba`` on a one-row DataFrame and the MLflow pyfunc's ``predict``;
    median and p99 of many calls after a warm-up, once before and once after the load
    tests.
(b) **ours**: ``fraud serve`` (uvicorn, one process) answering ``POST /predict`` with the
    raw transaction in the body: the Feast online lookup, the card-state update written
    back, the score and the prediction log. Each body carries a transaction id of its own,
    so every request appends an event to its card's state and writes it (checked against
    the service's own count of state writes). A closed-loop load test at concurrency 1, 4,
    16 and 32 (``release.loadtest``, one asyncio client on keep-alive connections), p50,
    p99 and requests per second, on the SQLite store and on the Redis store.
(c) **peer**: ``mlflow models serve -m models:/fraud-detector@champion --env-manager
    local`` (one uvicorn worker) on the same model, each request one row of the model's
    inputs (``dataframe_split``) as our service computes them for the same transactions.
(d) **batch** scoring rows per minute: runs of at least 200,000 rows (``--batch-rows``;
    ``serving.batch.score_day`` of each accepted day in turn), the cold first run in a
    fresh process and the median (range) of three warm runs; the goal on the warm runs.
(e) **Feast's feature server**: ``feast serve`` (gunicorn, one uvicorn worker) on the same
    registry and the Redis store, answering ``POST /get-online-features`` for the same
    transactions with the views our lookup reads (card state arrays, card profile,
    merchant risk): a lookup only, no update, no model.
(f) **state operations** in-process, on each store: ``OnlineFeatures.write_states`` of one
    card's state with one new event, ``OnlineFeatures.read`` of one transaction's
    features, and the read-modify-write ``/predict`` does under the writers' lock.
(g) **onnxruntime**: skl2onnx's conversion of the champion (the pipeline, then the
    classifier on the serving scorer's encoded rows), its scores against the pipeline's on
    holdout rows, and one-row latency of onnxruntime, the serving scorer and the pipeline.

Every server runs with ``OMP_NUM_THREADS=1``. Compared servers are up together and their
load tests alternate at each concurrency; the pairs (ours on SQLite with the peer, ours on
Redis with the feature server) and the order inside them swap from round to round, and
each pair starts from the online store as materialized. Figures are medians over the
rounds with their range. A goal is met when every round meets it, not met when none does,
and inconclusive otherwise or when a compared load test had failed requests.

(a), (d), (f), (g) and the Redis materialization run in fresh child processes
(``--child``), not in this one, which trained the model and drives the load tests. A goal
not met makes it exit 1 (after the whole run). Writes ``benchmarks/results/serving.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "serving.json"
CONCURRENCIES = (1, 4, 16, 32)
GOAL_CONCURRENCIES = (1, 16)  # the peer-ratio and feature-server goals
ROUNDS = 2
SECONDS = 10.0  # per load test
WARMUP_SECONDS = 2.0  # before each load test, not counted
REQUEST_ROWS = 10_000  # the newest day's transactions, cycled through by the load tests
# Distinct /predict bodies per load test: each request sent carries a new transaction id.
# ~500 requests/s x 12 s here; a load test that sends more repeats ids (seen in the writes).
PREDICT_POOL = 20_000
FLOOR_CALLS = 2_000  # the serving scorer (~1-3 ms a call)
SLOW_CALLS = 300  # sklearn and the pyfunc on a DataFrame (~15-20 ms a call)
FLOOR_WARMUP = 50
STATE_CALLS = 3_000  # per state operation and store
STATE_WARMUP = 300
ONNX_ROWS = 500  # holdout rows the onnxruntime scores are checked on
ONNX_TOLERANCE = 1e-5
START_TIMEOUT_S = 180.0
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 12
REDIS_CONNECTION = f"{REDIS_HOST}:{REDIS_PORT},db={REDIS_DB}"
# What our /predict looks up, as Feast's feature server is asked for it.
FEAST_FEATURES = [
    "card_recent:recent_timestamps_us",
    "card_recent:recent_amounts",
    "card_recent:recent_merchants",
    "card_recent:recent_keys",
    "card_profile:home_latitude",
    "card_profile:home_longitude",
    "card_profile:card_type",
    "merchant_risk:merchant_fraud_rate_30d",
]
GOAL_P50_OVER_FLOOR_MS = 1.5
GOAL_P99_OVER_P50 = 3.0
GOAL_THROUGHPUT_RATIO = 2.0
GOAL_PEER_RATIO = 5.0
GOAL_UPDATE_P99_MS = 2.0
GOAL_BATCH_ROWS_PER_MINUTE = 1_000_000
# (d) scores at least this many rows per run (not a small day extrapolated), cold then warm.
BATCH_ROWS = 200_000
BATCH_WARM_RUNS = 3
SEED = 42


def _progress(message: str) -> None:
    print(f"... {message}", flush=True)


# ------------------------------------------------------------------------- world


def build_world(root: Path) -> dict[str, Any]:
    """Default simulation, CT steps as plain calls with the default (full-size) model."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from fraud_detection.config import load_simulate_config
    from tests import worlds

    cfg = load_simulate_config(
        overrides={"scenario": {"drift": {"enabled": False}, "broken_feed": {"enabled": False}}}
    )
    simulate = {
        "seed": cfg.seed,
        "start_date": cfg.start_date,
        "days": cfg.days,
        "rows_per_day": cfg.rows_per_day,
        "cards": cfg.cards,
        "merchants": cfg.merchants,
        "label_delay_days": cfg.label_delay_days,
        "scenario": {"drift": {"enabled": False}, "broken_feed": {"enabled": False}},
    }
    started = time.perf_counter()
    paths = worlds.simulate(root, **simulate)
    simulated = time.perf_counter() - started
    # The tests' world trains a 40-iteration model; here the configured one (train.yaml).
    worlds.FAST_MODEL = {}
    started = time.perf_counter()
    version = worlds.train_version(paths, promote=True, seed=SEED)
    trained = time.perf_counter() - started
    from fraud_detection.training.settings import load_train_config

    model = load_train_config().model
    return {
        "state_dir": str(paths.root),
        "transactions": _count_rows(paths.raw),
        "days": cfg.days,
        "rows_per_day": cfg.rows_per_day,
        "cards": cfg.cards,
        "merchants": cfg.merchants,
        "label_delay_days": cfg.label_delay_days,
        "model": f"HistGradientBoostingClassifier max_iter={model.max_iter} "
        f"max_leaf_nodes={model.max_leaf_nodes}",
        "champion_version": version,
        "simulate_seconds": round(simulated, 1),
        "ct_seconds": round(trained, 1),
    }


def _count_rows(raw: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in raw.glob("date=*/*.parquet"))


def _bench_dir(state: Path) -> Path:
    """This benchmark's own files in the state folder (the store's snapshot, model inputs)."""
    return state / "bench"


def request_bodies(state: Path, rows: int = REQUEST_ROWS) -> list[dict[str, Any]]:
    """``/predict`` bodies: the newest day's transactions (``schemas.requests_from_raw``)."""
    from fraud_detection.release.loadtest import bodies_from_state

    return bodies_from_state(state, rows)


def predict_bodies(base: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    """:data:`PREDICT_POOL` bodies cycling through ``base``, each with a transaction id of
    its own: every one is a new event for its card, which the service appends and writes."""
    return [
        {**base[i % len(base)], "transaction_id": f"bench-{tag}-{i}"} for i in range(PREDICT_POOL)
    ]


def feast_bodies(base: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``/get-online-features`` bodies of the same transactions: what our lookup reads."""
    return [
        {
            "features": FEAST_FEATURES,
            "entities": {"card_id": [b["card_id"]], "merchant_id": [b["merchant_id"]]},
        }
        for b in base
    ]


# ----------------------------------------------------------------- online stores


def _feast_folder(state: Path) -> Path:
    from fraud_detection.config import StatePaths
    from fraud_detection.features.store import FeaturePaths

    return FeaturePaths(StatePaths(root=state)).feast


def sqlite_snapshot(state: Path, dest: Path) -> None:
    """A copy of the SQLite online store as materialized (its WAL folded in first)."""
    import sqlite3

    db = _feast_folder(state) / "online_store.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(db, dest)


def sqlite_restore(state: Path, source: Path) -> None:
    """Put the snapshot back (no server may have the store open)."""
    db = _feast_folder(state) / "online_store.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(source, db)


def redis_client() -> Any:
    import redis

    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)


def redis_snapshot(client: Any) -> dict[bytes, bytes]:
    """Every key of the benchmark's database, as Redis serializes it (DUMP)."""
    keys = list(client.scan_iter(count=1_000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.dump(key)
    return dict(zip(keys, pipe.execute(), strict=True))


def redis_restore(client: Any, dumps: dict[bytes, bytes]) -> None:
    client.flushdb()
    pipe = client.pipeline(transaction=False)
    for key, value in dumps.items():
        pipe.restore(key, 0, value)
    pipe.execute()


def write_feast_repo(state: Path, folder: Path) -> Path:
    """A Feast repo folder for ``feast serve``: the repo's ``feature_store.yaml`` with the
    state folder's registry (already applied: never ``feast apply`` here) and Redis db 12,
    as ``features.store.open_store`` configures the store for the Redis profile."""
    import yaml

    from fraud_detection.features.store import feature_repo

    config = yaml.safe_load((feature_repo() / "feature_store.yaml").read_text())
    config["registry"] = str(_feast_folder(state) / "registry.db")
    config["online_store"] = {"type": "redis", "connection_string": REDIS_CONNECTION}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "feature_store.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


# -------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _environment(state: Path, store: str = "sqlite") -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "FRAUD_PROFILE__STATE_DIR": str(state),
            "FRAUD_PROJECT_DIR": str(ROOT),
            "MLFLOW_TRACKING_URI": f"sqlite:///{state / 'mlflow' / 'mlflow.db'}",
            # mlflow models serve runs `uvicorn` from PATH.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "FEAST_USAGE": "False",
            "PYTHONDONTWRITEBYTECODE": "1",
            "FRAUD_PROFILE__FEAST__ONLINE_STORE": store,
        }
    )
    if store == "redis":
        env["FRAUD_PROFILE__FEAST__REDIS_CONNECTION_STRING"] = REDIS_CONNECTION
    return env


def _server_environment(state: Path, store: str = "sqlite") -> dict[str, str]:
    # One OpenMP thread per predict on every server: with the default two, each one-row
    # call waits on a thread barrier, and on a busy 2-core machine a descheduled spinning
    # worker stalls it for a scheduler slice (seen: 2 req/s, p99 2 s, at one client).
    return {**_environment(state, store), "OMP_NUM_THREADS": "1"}


class Server:
    """A server in a child process (its own process group), its log and its CPU time."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.cmd, self.log = name, cmd, log
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, url: str, ok: Callable[[Any], bool], timeout: float) -> float:
        """Poll ``url`` until ``ok(response)``; the seconds it took. Fails if the process dies."""
        import httpx

        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {self.proc.returncode} before it was ready; "
                    f"last lines of {self.log.name}:\n{self.tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                response = httpx.get(url, timeout=2.0)
                if ok(response):
                    return time.perf_counter() - started
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.tail()}")

    def cpu_seconds(self) -> float:
        """CPU seconds so far of the server process and its children (uvicorn under mlflow,
        the gunicorn worker under feast)."""
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            total = 0.0
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system
            return total
        except psutil.Error:
            return 0.0

    def tail(self, lines: int = 15) -> str:
        self._log.flush()
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        """SIGTERM (a graceful shutdown that flushes the prediction log), then SIGKILL."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


@contextlib.contextmanager
def _started(server: Server, ready: str, ok: Callable[[Any], bool]) -> Iterator[Server]:
    try:
        seconds = server.wait_ready(ready, ok, START_TIMEOUT_S)
        print(f"    {server.name} ready in {seconds:.1f} s", flush=True)
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def our_server(state: Path, logs: Path, store: str) -> Iterator[tuple[Server, str]]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "fraud_detection.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--state-dir",
        str(state),
    ]
    env = _server_environment(state, store)
    server = Server(f"fraud serve ({store})", cmd, env, logs / f"fraud-serve-{store}.log")
    base = f"http://127.0.0.1:{port}"
    with _started(server, f"{base}/ready", lambda r: r.status_code == 200):
        yield server, base


@contextlib.contextmanager
def peer_server(state: Path, logs: Path, model_uri: str) -> Iterator[tuple[Server, str]]:
    port = free_port()
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = _server_environment(state)
    server = Server("mlflow models serve", cmd, env, logs / "mlflow-serve.log")
    base = f"http://127.0.0.1:{port}"
    with _started(server, f"{base}/ping", lambda r: r.status_code == 200):
        yield server, base


def feast_command(repo: Path, port: int) -> list[str]:
    """``feast serve`` with one worker that lives through the run: gunicorn's default
    ``--max-requests 1000`` would restart the only worker every ~1,000 requests (a
    reload inside the measured window), where ours never restarts."""
    return [
        str(Path(sys.executable).parent / "feast"),
        "-c",
        str(repo),
        "serve",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "--no-access-log",
        "--workers",
        "1",
        "--max-requests",
        "0",
    ]


@contextlib.contextmanager
def feast_server(state: Path, logs: Path, repo: Path) -> Iterator[tuple[Server, str]]:
    port = free_port()
    env = _server_environment(state, "redis")
    server = Server("feast serve", feast_command(repo, port), env, logs / "feast-serve.log")
    base = f"http://127.0.0.1:{port}"
    with _started(server, f"{base}/health", lambda r: r.status_code == 200):
        yield server, base


# ------------------------------------------------------------------------- floor


def _timed(
    fn: Callable[[], Any], calls: int = FLOOR_CALLS, warmup: int = FLOOR_WARMUP
) -> dict[str, float]:
    import numpy as np

    for _ in range(warmup):
        fn()
    times = np.empty(calls)
    for i in range(calls):
        started = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - started
    return _stats(times * 1000)


def _stats(ms: Any) -> dict[str, float]:
    import numpy as np

    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "mean_ms": round(float(np.mean(ms)), 4),
        "calls": len(ms),
    }


def _champion() -> tuple[Any, Any, list[str]]:
    """The champion's pyfunc, its sklearn Pipeline and its input columns."""
    from fraud_detection.config import load_profile
    from fraud_detection.registry import tracking

    profile = load_profile()
    tracking.setup_mlflow(profile)
    pyfunc = tracking.load_pyfunc(f"models:/{profile.mlflow.model_name}@champion")
    columns = list(pyfunc.metadata.get_input_schema().input_names())
    return pyfunc, pyfunc.get_raw_model(), columns


def model_inputs(state: Path, columns: list[str]) -> Any:
    """The model's input rows of the load tests' transactions, as our service computes
    them (``features.store.online_features`` on the store as materialized); cached in
    the state folder, so every measurement uses the same rows."""
    import pandas as pd

    file = _bench_dir(state) / "model_inputs.parquet"
    if not file.exists():
        from fraud_detection.config import StatePaths
        from fraud_detection.features import store

        paths = StatePaths(root=state)
        newest = sorted(paths.raw.glob("date=*/transactions.parquet"))[-1]
        raw = pd.read_parquet(newest).head(REQUEST_ROWS).reset_index(drop=True)
        rows = raw.rename(columns={"event_timestamp": "transaction_timestamp"})
        online = store.open_online(paths, apply=False)
        frame = store.online_features(online, rows.to_dict("records"))
        for column in columns:  # request columns the model takes as they come
            if column not in frame.columns:
                frame[column] = raw[column]
        file.parent.mkdir(parents=True, exist_ok=True)
        frame[columns].to_parquet(file, index=False)
    return pd.read_parquet(file)[columns]


def measure_floor(state: Path) -> dict[str, Any]:
    """(a): one-row predicts in-process: the serving scorer, sklearn, the pyfunc.

    The floor is ``Scorer.score_one`` (``serving.scorer``), the model call on the
    service's hot path once the features are looked up. The same rows feed all three.
    """
    import numpy as np

    from fraud_detection.serving.scorer import build_scorer

    os.environ["FRAUD_PROFILE__STATE_DIR"] = str(state)
    pyfunc, pipeline, columns = _champion()
    rows = model_inputs(state, columns).head(200)
    scorer = build_scorer(pipeline)
    numbers = rows[list(scorer.numeric)].astype("Float64").to_numpy(np.float64, na_value=np.nan)
    categories = [
        [None if v is None or v != v else str(v) for v in rows[c].astype(object)]
        for c in scorer.categorical
    ]
    one = [(numbers[i].tolist(), [cats[i] for cats in categories]) for i in range(len(rows))]
    agree = float(
        np.abs(
            np.array([scorer.score_one(n, c) for n, c in one]) - pipeline.predict_proba(rows)[:, 1]
        ).max()
    )
    state_ = {"i": 0}

    def score_one() -> float:
        state_["i"] = (state_["i"] + 1) % len(one)
        n, c = one[state_["i"]]
        return scorer.score_one(n, c)

    # The same scorer walking sklearn's trees: the gain of the numpy trees.
    sklearn_trees = dataclasses.replace(scorer, trees=None)
    agree_sklearn = float(
        np.abs(
            np.array([scorer.score_one(n, c) for n, c in one])
            - np.array([sklearn_trees.score_one(n, c) for n, c in one])
        ).max()
    )
    state_sk = {"i": 0}

    def score_one_sklearn() -> float:
        state_sk["i"] = (state_sk["i"] + 1) % len(one)
        n, c = one[state_sk["i"]]
        return sklearn_trees.score_one(n, c)

    frames = [rows.iloc[[i]] for i in range(len(rows))]

    def cycle(fn: Callable[[Any], Any]) -> Callable[[], Any]:
        box = {"i": 0}

        def call() -> Any:
            box["i"] = (box["i"] + 1) % len(frames)
            return fn(frames[box["i"]])

        return call

    return {
        "feature_rows_from": "the load tests' transactions, features as the service computes "
        "them (features.store.online_features)",
        "columns": columns,
        "scorer_vs_pipeline_max_abs_diff": agree,
        "scorer_engine": scorer.engine,
        "numpy_vs_sklearn_trees_max_abs_diff": agree_sklearn,
        "serving_scorer": _timed(score_one),
        "serving_scorer_sklearn_trees": _timed(score_one_sklearn),
        "sklearn_predict_proba": _timed(cycle(pipeline.predict_proba), calls=SLOW_CALLS),
        "pyfunc_predict": _timed(cycle(pyfunc.predict), calls=SLOW_CALLS),
    }


# ---------------------------------------------------------------- Redis, state ops


def _transactions(state: Path) -> list[tuple[int, int, int, float]]:
    """(card, merchant, time in us, amount) of the load tests' transactions."""
    import pandas as pd

    from fraud_detection.config import StatePaths

    newest = sorted(StatePaths(root=state).raw.glob("date=*/transactions.parquet"))[-1]
    raw = pd.read_parquet(newest).head(REQUEST_ROWS)
    micros = pd.to_datetime(raw["event_timestamp"], utc=True).dt.as_unit("us").astype("int64")
    return list(
        zip(
            raw["card_id"].astype(int).tolist(),
            raw["merchant_id"].astype(int).tolist(),
            micros.tolist(),
            raw["amount"].astype(float).tolist(),
            strict=True,
        )
    )


def materialize_redis(state: Path) -> dict[str, Any]:
    """Load the world into Redis (this process's profile says Redis) and check that every
    feature read through it equals the SQLite store's for the load tests' transactions.

    Each online store has its own materialization marker, so the first ``materialize``
    with the Redis profile backfills Redis in full.
    """
    import math

    from fraud_detection.config import FeastSettings, StatePaths, load_profile
    from fraud_detection.features import store

    profile = load_profile()
    if profile.feast.online_store != "redis":
        raise RuntimeError("materialize_redis needs FRAUD_PROFILE__FEAST__ONLINE_STORE=redis")
    paths = StatePaths(root=state)
    started = time.perf_counter()
    start, end = store.materialize(paths)
    seconds = time.perf_counter() - started
    redis_online = store.open_online(paths, apply=False)
    sqlite_online = store.open_online(
        paths, apply=False, feast_settings=FeastSettings(online_store="sqlite")
    )
    worst, mismatched, checked = 0.0, 0, 0
    for card, merchant, t_us, _ in _transactions(state)[:500]:
        a = redis_online.read(card, merchant, t_us)
        b = sqlite_online.read(card, merchant, t_us)
        checked += 1
        same = a.strings == b.strings and len(a.state) == len(b.state)
        for name, value in a.values.items():
            other = b.values[name]
            if math.isnan(value) or math.isnan(other):
                same &= math.isnan(value) and math.isnan(other)
            else:
                worst = max(worst, abs(value - other))
        mismatched += not same
    return {
        "connection": REDIS_CONNECTION,
        "window": [start.isoformat(), end.isoformat()],
        "seconds": round(seconds, 1),
        "keys": int(redis_client().dbsize()),
        "reads_compared_with_sqlite": checked,
        "reads_differing": mismatched,
        "max_abs_diff": worst,
    }


def measure_state_ops(state: Path) -> dict[str, Any]:
    """(f): the card-state operations of ``/predict`` in-process, on this process's store.

    ``write``: ``write_states`` of one card's state with one new event (the state read
    with ``read_state`` and extended with ``with_events`` outside the timing); ``read``:
    ``read`` of one transaction's features (the card's state, its profile, the
    merchant's row); ``read_modify_write``: both with the event appended under the
    writers' lock, as ``/predict`` does. Each event has a key of its own, so each write
    adds to the card's state.
    """
    import numpy as np

    from fraud_detection.config import StatePaths, load_profile
    from fraud_detection.features import store
    from fraud_detection.features.online import transaction_key

    kind = load_profile().feast.online_store
    online = store.open_online(StatePaths(root=state), apply=False)
    txns = _transactions(state)
    tag = f"bench-state-{kind}-{os.getpid()}"
    sizes: list[int] = []

    def event(i: int) -> tuple[int, int, int, float, int]:
        card, merchant, t_us, amount = txns[i % len(txns)]
        return card, merchant, t_us, amount, transaction_key(f"{tag}-{i}", card, t_us, merchant, 1)

    def run(op: Callable[[int], float]) -> dict[str, float]:
        times = [op(i) for i in range(STATE_WARMUP + STATE_CALLS)][STATE_WARMUP:]
        return _stats(np.asarray(times) * 1000)

    def write(i: int) -> float:
        card, merchant, t_us, amount, key = event(i)
        updated = online.read_state(card).with_events([t_us], [amount], [merchant], [key])
        assert updated is not None, "a new key always adds an event"
        sizes.append(len(updated))
        started = time.perf_counter()
        online.write_states([(card, updated)])
        return time.perf_counter() - started

    def read(i: int) -> float:
        card, merchant, t_us, _, _ = event(i)
        started = time.perf_counter()
        online.read(card, merchant, t_us)
        return time.perf_counter() - started

    offset = STATE_WARMUP + STATE_CALLS  # new keys again

    def read_modify_write(i: int) -> float:
        card, merchant, t_us, amount, key = event(offset + i)
        started = time.perf_counter()
        with online.writing():
            row = online.read(card, merchant, t_us)
            updated = row.state.with_events([t_us], [amount], [merchant], [key])
            if updated is not None:
                online.write_states([(card, updated)])
        return time.perf_counter() - started

    out: dict[str, Any] = {"store": kind}
    if getattr(online, "_batched_redis", False):
        # Redis: the one-pipeline read of all views against Feast's online_read view by
        # view (the fallback), call by call in alternating order (the same cards, warm).
        per_view = store.open_online(StatePaths(root=state), apply=False)
        per_view._batched_redis = False
        pairs: dict[str, list[float]] = {"one_pipeline": [], "view_by_view": []}
        for i in range(STATE_WARMUP + STATE_CALLS):
            card, merchant, t_us, _, _ = event(i)
            arms = [("one_pipeline", online), ("view_by_view", per_view)]
            for name, reader in arms if i % 2 else arms[::-1]:
                started = time.perf_counter()
                reader.read(card, merchant, t_us)
                if i >= STATE_WARMUP:
                    pairs[name].append(time.perf_counter() - started)
        out["read_batching"] = {k: _stats(np.asarray(v) * 1000) for k, v in pairs.items()}
    return {
        **out,
        "write": run(write),
        "read": run(read),
        "read_modify_write": run(read_modify_write),
        "events_per_written_state": {
            "median": int(np.median(sizes)),
            "p99": int(np.percentile(sizes, 99)),
            "max": int(max(sizes)),
        },
    }


# ---------------------------------------------------------------------- onnxruntime


def _error(exc: BaseException) -> str:
    """An exception in a line or two: its first line and, if any, its cause's."""
    text = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    if exc.__cause__ is not None:
        cause = str(exc.__cause__).strip().splitlines()
        text += f" (caused by {type(exc.__cause__).__name__}: {cause[0] if cause else ''})"
    return text[:600]


def measure_onnx(state: Path) -> dict[str, Any]:
    """(g): the champion in onnxruntime (converted by skl2onnx) against the serving scorer
    and the pipeline: which conversion works, whether its scores equal the pipeline's on
    holdout rows, and one-row latency of each."""
    from unittest import mock

    import numpy as np
    import onnxruntime as ort
    import pandas as pd
    from skl2onnx import convert_sklearn
    from skl2onnx.common import tree_ensemble
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType

    from fraud_detection.serving.scorer import build_scorer
    from fraud_detection.training.model import split_holdout
    from fraud_detection.training.settings import load_train_config

    os.environ["FRAUD_PROFILE__STATE_DIR"] = str(state)
    _, pipeline, columns = _champion()
    scorer = build_scorer(pipeline)
    training = sorted((state / "training").glob("training_set_*.parquet"))[-1]
    holdout = split_holdout(pd.read_parquet(training), load_train_config().holdout_days)[1]
    rows = holdout.sample(n=min(ONNX_ROWS, len(holdout)), random_state=SEED)[columns]
    rows = rows.reset_index(drop=True)
    numbers = rows[list(scorer.numeric)].astype("Float64").to_numpy(np.float64, na_value=np.nan)
    categories = [
        [None if v is None or v != v else str(v) for v in rows[c].astype(object)]
        for c in scorer.categorical
    ]
    encoded = scorer.encode(numbers, categories)
    expected = pipeline.predict_proba(rows)[:, 1]
    classifier = scorer.classifier
    nodes = [n for trees in classifier._predictors for tree in trees for n in tree.nodes]
    splits = [n for n in nodes if not n["is_leaf"]]
    out: dict[str, Any] = {
        "versions": {p: _version(p) for p in ("skl2onnx", "onnxruntime", "onnx", "protobuf")},
        "holdout_rows": len(rows),
        "tree_splits": len(splits),
        "categorical_splits": sum(bool(n["is_categorical"]) for n in splits),
        "attempts": [],
    }
    opsets = {"": 17, "ai.onnx.ml": 3}
    n_inputs = scorer.n_inputs

    def attempt(what: str, convert: Callable[[], Any]) -> Any:
        try:
            model = convert()
        except Exception as exc:
            out["attempts"].append({"what": what, "converted": False, "error": _error(exc)})
            return None
        out["attempts"].append({"what": what, "converted": True})
        return model

    pipeline_types = [
        (c, StringTensorType([None, 1]) if c in scorer.categorical else DoubleTensorType([None, 1]))
        for c in columns
    ]
    attempt(
        "the whole Pipeline, one input per column",
        lambda: convert_sklearn(pipeline, initial_types=pipeline_types, target_opset=opsets),
    )
    options = {id(classifier): {"zipmap": False}}

    def classifier_model(tensor: Any) -> Any:
        return convert_sklearn(
            classifier,
            initial_types=[("X", tensor([None, n_inputs]))],
            target_opset=opsets,
            options=options,
        )

    attempt(
        "the classifier alone on the scorer's encoded rows (Scorer.encode_one), float32",
        lambda: classifier_model(FloatTensorType),
    )
    # skl2onnx writes a leaf's missing-value flag as a Python bool, which protobuf >= 5
    # refuses in an int attribute: the shim passes it as the int it means.
    original = tree_ensemble.add_node

    def add_node(*args: Any, nodes_missing_value_tracks_true: Any = 0, **kwargs: Any) -> Any:
        flag = int(nodes_missing_value_tracks_true)
        return original(*args, nodes_missing_value_tracks_true=flag, **kwargs)

    shim = "with a shim passing skl2onnx's boolean missing-value flag as an int"
    sessions: dict[str, tuple[Any, Any]] = {}
    for tensor, dtype in ((FloatTensorType, np.float32), (DoubleTensorType, np.float64)):
        label = f"the classifier alone, {np.dtype(dtype).name}, {shim}"
        with mock.patch.object(tree_ensemble, "add_node", add_node):
            model = attempt(label, lambda t=tensor: classifier_model(t))
        if model is None:
            continue
        options_ = ort.SessionOptions()
        options_.intra_op_num_threads = 1  # as the service's one OpenMP thread
        options_.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(
                model.SerializeToString(), options_, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            out["attempts"][-1].update(runs=False, error=_error(exc))
            continue
        out["attempts"][-1]["runs"] = True
        sessions[np.dtype(dtype).name] = (session, dtype)
    if not sessions:
        out["verdict"] = "keep fast scorer"
        out["why"] = "no conversion of the champion runs in onnxruntime (see attempts)"
        return out
    dtype_name = "float64" if "float64" in sessions else "float32"  # the closer to sklearn
    session, dtype = sessions[dtype_name]
    output = session.get_outputs()[1].name  # probabilities (label is the first)
    got = session.run([output], {"X": encoded.astype(dtype)})[0][:, 1]
    diff = np.abs(got - expected)
    faithful = float(diff.max()) <= ONNX_TOLERANCE
    out["check"] = {
        "session_input": dtype_name,
        "max_abs_diff_vs_pipeline": float(diff.max()),
        "rows_over_tolerance": int((diff > ONNX_TOLERANCE).sum()),
        "tolerance": ONNX_TOLERANCE,
        "equal": faithful,
    }
    one = [
        (numbers[i].tolist(), [cats[i] for cats in categories], encoded[i : i + 1].astype(dtype))
        for i in range(len(rows))
    ]
    frames = [rows.iloc[[i]] for i in range(len(rows))]
    box = {"i": 0}

    def pick() -> int:
        box["i"] = (box["i"] + 1) % len(one)
        return box["i"]

    def onnx_from_raw() -> Any:
        n, c, _ = one[pick()]
        x = scorer.encode_one(n, c).astype(dtype)
        return session.run([output], {"X": x})[0][0, 1]

    out["latency"] = {
        "fast_scorer_score_one": _timed(lambda: scorer.score_one(*one[pick()][:2])),
        "onnxruntime_encode_one_and_run": _timed(onnx_from_raw),
        "onnxruntime_run_only": _timed(lambda: session.run([output], {"X": one[pick()][2]})),
        "pipeline_predict_proba_1_row": _timed(
            lambda: pipeline.predict_proba(frames[pick()]), calls=SLOW_CALLS
        ),
    }
    fast = out["latency"]["fast_scorer_score_one"]["p50_ms"]
    onnx = out["latency"]["onnxruntime_encode_one_and_run"]["p50_ms"]
    if not faithful:
        out["verdict"] = "keep fast scorer"
        out["why"] = (
            f"onnxruntime's scores are not the pipeline's: max |diff| {diff.max():.3g} on "
            f"{len(rows)} holdout rows, {int((diff > ONNX_TOLERANCE).sum())} over "
            f"{ONNX_TOLERANCE:g}. skl2onnx writes every split as a threshold (BRANCH_LEQ), "
            f"the {out['categorical_splits']} categorical splits (category in a set) "
            "included. Its speed on the same trees (p50 "
            f"{onnx:.3f} ms with the encoding vs the fast scorer's {fast:.3f} ms) is what a "
            "faithful conversion would be worth."
        )
    elif onnx < 0.8 * fast:
        out["verdict"] = "switch to onnxruntime"
        out["why"] = f"equal scores; p50 {onnx:.3f} ms vs the fast scorer's {fast:.3f} ms"
    else:
        out["verdict"] = "keep fast scorer"
        out["why"] = f"equal scores but p50 {onnx:.3f} ms vs the fast scorer's {fast:.3f} ms"
    return out


# ----------------------------------------------------------------- load tests


def _state_updates(base: str) -> dict[str, int]:
    """Our service's own count of card-state writes (``/ready``)."""
    import httpx

    body = httpx.get(f"{base}/ready", timeout=10.0).json()
    updates = body["online_store"]["state_updates"] or {}
    return {"written": int(updates.get("written", 0)), "failed": int(updates.get("failed", 0))}


def load_test(
    name: str,
    server: Server,
    url: str,
    bodies: list[Any],
    concurrency: int,
    ours: str | None = None,
) -> dict[str, Any]:
    """One closed-loop load test; for our service (``ours`` = its base URL), also the
    card-state writes it made meanwhile (warm-up included)."""
    from fraud_detection.release.loadtest import run_loadtest

    load = os.getloadavg()[0]
    cpu = server.cpu_seconds()
    before = _state_updates(ours) if ours else None
    result = run_loadtest(
        url, bodies, concurrency=concurrency, duration_s=SECONDS, warmup_s=WARMUP_SECONDS
    )
    server_cpu = server.cpu_seconds() - cpu
    row = result.to_dict()
    row["server_cpu_seconds"] = round(server_cpu, 2)
    row["server_cpu_ms_per_request"] = (
        round(1000 * server_cpu / max(1, result.ok), 3) if result.ok else None
    )
    row["load_average_1m_at_start"] = round(load, 2)
    if ours and before is not None:
        after = _state_updates(ours)
        row["state_writes"] = after["written"] - before["written"]
        row["state_write_failures"] = after["failed"] - before["failed"]
        row["distinct_bodies"] = len(bodies)
    lat = result.latency_ms
    writes = f"  writes {row['state_writes']:,}" if "state_writes" in row else ""
    print(
        f"    {name:<12} c={concurrency:<2} {result.requests_per_second:>7,.0f} req/s  "
        f"p50 {lat['p50']:7.2f} ms  p99 {lat['p99']:7.2f} ms  "
        f"statuses {result.status_counts}  errors {result.transport_errors}{writes}",
        flush=True,
    )
    return row


def _failed(row: dict[str, Any]) -> int:
    """Transport errors, 5xx answers and failed state writes of one load test."""
    return (
        int(row["transport_errors"])
        + sum(n for s, n in row["status_counts"].items() if int(s) >= 500)
        + int(row.get("state_write_failures") or 0)
    )


def measure_round(
    number: int,
    state: Path,
    logs: Path,
    inputs: dict[str, Any],
    redis: dict[str, Any] | None,
    feast: dict[str, Any],
) -> dict[str, Any]:
    """One round: ours on SQLite with the peer, ours on Redis with Feast's feature server.

    Odd rounds run the SQLite pair first and ours first inside each pair; even rounds
    the other way round. Each pair starts from its store as materialized.
    """
    pairs = ["sqlite", "redis"] if number % 2 else ["redis", "sqlite"]
    ours_first = bool(number % 2)
    out: dict[str, Any] = {"round": number, "order": []}
    for pair in pairs:
        if pair == "redis" and redis is None:
            continue
        if pair == "sqlite":
            sqlite_restore(state, inputs["sqlite_snapshot"])
        else:
            assert redis is not None
            redis_restore(redis["client"], redis["snapshot"])
        with contextlib.ExitStack() as stack:
            _progress(f"round {number}: ours on {pair}")
            ours, ours_base = stack.enter_context(our_server(state, logs, pair))
            sides: list[tuple[str, Server, str, Any]] = [
                ("ours", ours, f"{ours_base}/predict", None)
            ]
            if pair == "sqlite":
                peer, peer_base = stack.enter_context(peer_server(state, logs, inputs["model_uri"]))
                sides.append(("peer", peer, f"{peer_base}/invocations", inputs["peer_bodies"]))
            elif feast.get("error") is None:
                try:
                    server, feast_base = stack.enter_context(
                        feast_server(state, logs, feast["repo"])
                    )
                except RuntimeError as exc:
                    feast["error"] = str(exc)
                    print(f"    feast serve failed: {exc}", flush=True)
                else:
                    if "sample" not in feast:
                        feast["sample"] = _feast_sample(feast_base, inputs["feast_bodies"])
                    sides.append(
                        (
                            "feast",
                            server,
                            f"{feast_base}/get-online-features",
                            inputs["feast_bodies"],
                        )
                    )
            if not ours_first:
                sides.reverse()
            out["order"].append(f"{pair}: " + " / ".join(s[0] for s in sides))
            rows: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in sides}
            for concurrency in CONCURRENCIES:
                for name, server_, url, bodies in sides:
                    mine = name == "ours"
                    if mine:
                        tag = f"r{number}-{pair}-c{concurrency}"
                        bodies = predict_bodies(inputs["base"], tag)
                    label = f"{name} ({pair})" if mine else name
                    row = load_test(
                        label,
                        server_,
                        url,
                        bodies,
                        concurrency,
                        ours=ours_base if mine else None,
                    )
                    row["round"] = number
                    rows[name].append(row)
            out[pair] = rows
    return out


def _feast_sample(base: str, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """What the feature server answers for a few of the load test's bodies: the count of
    each feature status (PRESENT, NOT_FOUND, OUTSIDE_MAX_AGE), or the error."""
    import httpx

    statuses: dict[str, int] = {}
    try:
        for body in bodies[:50]:
            answer = httpx.post(f"{base}/get-online-features", json=body, timeout=10.0)
            answer.raise_for_status()
            for result in answer.json()["results"]:
                for status in result["statuses"]:
                    statuses[status] = statuses.get(status, 0) + 1
    except Exception as exc:  # reported; the load test shows the same answers
        return {"bodies": 50, "error": _error(exc)}
    return {"bodies": 50, "feature_statuses": statuses}


# -------------------------------------------------------------------------- batch


def measure_batch(state: Path) -> dict[str, Any] | None:
    """(d): batch scoring (``serving.batch.score_day``) of at least ``BATCH_ROWS`` rows.

    One batch run scores the world's accepted days one after another, newest first and
    round again, until ``BATCH_ROWS`` rows (env ``BENCH_BATCH_ROWS``) are scored: each call
    is the whole job of ``fraud score`` for a day (champion, features, join, score, write).
    The first run in this fresh process is the cold one (Feast's and DuckDB's first use);
    then ``BATCH_WARM_RUNS`` warm runs. Rates are measured rows over measured time.
    """
    try:
        from fraud_detection.serving import batch
    except ImportError:
        return None
    from fraud_detection.config import load_profile, state_paths
    from fraud_detection.data.ledger import accepted_days

    os.environ["FRAUD_PROFILE__STATE_DIR"] = str(state)
    target = int(os.environ.get("BENCH_BATCH_ROWS", BATCH_ROWS))
    profile = load_profile()
    days = sorted(accepted_days(state_paths(profile)), reverse=True)

    def one_run() -> dict[str, Any]:
        rows, calls, started = 0, 0, time.perf_counter()
        while rows < target:
            rows += batch.score_day(days[calls % len(days)], profile=profile).rows
            calls += 1
        seconds = time.perf_counter() - started
        return {"rows": rows, "calls": calls, "seconds": round(seconds, 2),
                "rows_per_minute": round(60 * rows / seconds)}  # fmt: skip

    cold = one_run()
    warm = [one_run() for _ in range(BATCH_WARM_RUNS)]
    rates = [w["rows_per_minute"] for w in warm]
    return {
        "rows_target": target,
        "days": len(days),
        "cold": cold,
        "warm": warm,
        "warm_rows_per_minute": {
            "median": round(statistics.median(rates)),
            "min": min(rates),
            "max": max(rates),
        },
    }


# -------------------------------------------------------------- child processes

CHILD_MARK = "BENCH-RESULT "
CHILDREN: dict[str, Callable[[Path], Any]] = {
    "floor": measure_floor,
    "batch": measure_batch,
    "redis-materialize": materialize_redis,
    "state-ops": measure_state_ops,
    "onnx": measure_onnx,
}


def in_child(kind: str, state: Path, store: str = "sqlite") -> Any:
    """Run one of :data:`CHILDREN` in a fresh Python process on ``store``.

    The measurements then run in a process like the service's (not one that just
    trained a model and ran load tests), and the scorer's one-OpenMP-thread setting does
    not leak into the batch scoring, which uses both cores.
    """
    env = _environment(state, store)
    if kind in ("floor", "onnx"):
        # One-row predicts run on one OpenMP thread, as the service's scorer does: with
        # two, each call waits on a thread barrier, and on a busy 2-core machine a spinning
        # worker that is descheduled turns a 20 ms sklearn call into seconds.
        env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", kind, str(state)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1_800,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(CHILD_MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"{kind} measurement failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
        )
    return json.loads(lines[-1][len(CHILD_MARK) :])


def child_main(kind: str, state: Path) -> int:
    import warnings

    warnings.filterwarnings("ignore")
    result = CHILDREN[kind](state)
    print(CHILD_MARK + json.dumps(result, default=str), flush=True)
    return 0


# ----------------------------------------------------------------------- summary


def _spread(values: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "rounds": [round(v, 3) for v in values],
    }


def series(rounds: list[dict[str, Any]], pair: str, name: str) -> dict[int, list[dict[str, Any]]]:
    """Per concurrency, the load tests of ``name`` in ``pair`` over the rounds."""
    out: dict[int, list[dict[str, Any]]] = {}
    for r in rounds:
        for row in r.get(pair, {}).get(name, []):
            out.setdefault(int(row["concurrency"]), []).append(row)
    return out


def summarize(rows: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    """Median over the rounds (with the range) of throughput, p50 and p99 per concurrency."""
    return {
        str(c): {
            "requests_per_second": _spread([r["requests_per_second"] for r in runs]),
            "p50_ms": _spread([r["latency_ms"]["p50"] for r in runs]),
            "p99_ms": _spread([r["latency_ms"]["p99"] for r in runs]),
            "failed_requests": sum(_failed(r) for r in runs),
        }
        for c, runs in sorted(rows.items())
    }


# ------------------------------------------------------------------------- goals


def _verdict(
    checks: list[bool], confound: str | None = None, loads: str | None = None
) -> tuple[str, str | None]:
    """Met when every round meets the goal, not met when none does; else inconclusive."""
    if not checks:
        return "not measured", None
    if confound:
        return "inconclusive", confound
    if all(checks):
        return "met", None
    if not any(checks):
        return "not met", None
    return "inconclusive", "the rounds disagree" + (f" ({loads})" if loads else "")


def _goal(
    goal: str,
    checks: list[bool],
    value: Any,
    detail: str,
    rounds: list[Any] | None = None,
    confound: str | None = None,
    loads: str | None = None,
) -> dict[str, Any]:
    verdict, why = _verdict(checks, confound, loads)
    out = {"goal": goal, "verdict": verdict, "value": value, "detail": detail}
    if rounds is not None:
        out["rounds"] = rounds
    if why:
        out["why"] = why
    return out


def _paired(
    a: dict[int, list[dict[str, Any]]], b: dict[int, list[dict[str, Any]]], c: int
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The two sides' load tests at concurrency ``c``, round by round."""
    by_round = {row["round"]: row for row in b.get(c, [])}
    return [(row, by_round[row["round"]]) for row in a.get(c, []) if row["round"] in by_round]


def _loads(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    """The machine's load average at the start of each round's compared load tests."""
    parts = []
    for pair in pairs:
        values = [side["load_average_1m_at_start"] for side in pair if side]
        parts.append(
            f"round {pair[0]['round']} {min(values):.1f}-{max(values):.1f}"
            if len(values) > 1
            else f"round {pair[0]['round']} {values[0]:.1f}"
        )
    return "1-minute load average at the start of the compared load tests: " + ", ".join(parts)


def _confound(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> str | None:
    bad = sum(_failed(side) for pair in pairs for side in pair if side)
    return f"{bad} failed requests in the compared load tests" if bad else None


def goals(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal: what was measured, the target, and its verdict."""
    rounds = result["load_tests"]["rounds"]
    ours_sqlite = series(rounds, "sqlite", "ours")
    peer = series(rounds, "sqlite", "peer")
    ours_redis = series(rounds, "redis", "ours")
    feast = series(rounds, "redis", "feast")
    out: list[dict[str, Any]] = []

    floors = [run["serving_scorer"]["p50_ms"] for run in result["floor"]["runs"]]
    walks = [
        (run["serving_scorer_sklearn_trees"]["p50_ms"], run["serving_scorer"]["p50_ms"])
        for run in result["floor"]["runs"]
        if "serving_scorer_sklearn_trees" in run
    ]
    if walks:
        out.append(
            _goal(
                "numpy trees >= 2x faster than sklearn's trees, one row, scores identical",
                [
                    sk / np_ >= 2 and run["numpy_vs_sklearn_trees_max_abs_diff"] == 0
                    for (sk, np_), run in zip(walks, result["floor"]["runs"], strict=False)
                ],
                round(statistics.median(sk / np_ for sk, np_ in walks), 2),
                "p50 ms sklearn's / numpy trees by run: "
                + ", ".join(f"{sk:.3f}/{np_:.3f}" for sk, np_ in walks)
                + "; largest score difference "
                + ", ".join(
                    f"{run['numpy_vs_sklearn_trees_max_abs_diff']:.1g}"
                    for run in result["floor"]["runs"]
                ),
            )
        )
    ones = [r["latency_ms"]["p50"] for r in ours_sqlite.get(1, [])]
    gaps = [one - floor for one in ones for floor in floors]
    out.append(
        _goal(
            "p50 - floor <= 1.5 ms (SQLite, c=1)",
            [g <= GOAL_P50_OVER_FLOOR_MS for g in gaps],
            round(statistics.median(gaps), 3) if gaps else None,
            f"/predict p50 at c=1 {', '.join(f'{v:.2f}' for v in ones)} ms by round; floor "
            f"p50 {', '.join(f'{v:.3f}' for v in floors)} ms by run (before, after); "
            "every pairing counts",
            rounds=[round(g, 3) for g in gaps],
            confound=_confound([(r, {}) for r in ours_sqlite.get(1, [])]),
            loads=_loads([(r, {}) for r in ours_sqlite.get(1, [])]),
        )
    )
    for store, rows in (("SQLite", ours_sqlite), ("Redis", ours_redis)):
        for c in CONCURRENCIES:
            runs = rows.get(c, [])
            ratios = [
                r["latency_ms"]["p99"] / r["latency_ms"]["p50"]
                if r["latency_ms"]["p50"]
                else float("inf")
                for r in runs
            ]
            out.append(
                _goal(
                    f"p99 / p50 <= 3 at c={c} ({store})",
                    [x <= GOAL_P99_OVER_P50 for x in ratios],
                    round(statistics.median(ratios), 2) if ratios else None,
                    "p50/p99 ms by round: "
                    + ", ".join(
                        f"{r['latency_ms']['p50']:.2f}/{r['latency_ms']['p99']:.2f}" for r in runs
                    ),
                    rounds=[round(x, 2) for x in ratios],
                )
            )
    for target, levels in (
        (GOAL_THROUGHPUT_RATIO, CONCURRENCIES),
        (GOAL_PEER_RATIO, GOAL_CONCURRENCIES),
    ):
        for c in levels:
            pairs = _paired(ours_sqlite, peer, c)
            ratios = [
                x["requests_per_second"] / y["requests_per_second"]
                if y["requests_per_second"]
                else float("inf")
                for x, y in pairs
            ]
            out.append(
                _goal(
                    f"throughput vs peer >= {target:g}x at c={c} (SQLite)",
                    [x >= target for x in ratios],
                    round(statistics.median(ratios), 2) if ratios else None,
                    "ours/peer req/s by round: "
                    + ", ".join(
                        f"{x['requests_per_second']:,.0f}/{y['requests_per_second']:,.0f}"
                        for x, y in pairs
                    ),
                    rounds=[round(x, 2) for x in ratios],
                    confound=_confound(pairs),
                    loads=_loads(pairs),
                )
            )
    maxima = []
    for r in rounds:
        mine = [row["requests_per_second"] for row in r.get("sqlite", {}).get("ours", [])]
        theirs = [row["requests_per_second"] for row in r.get("sqlite", {}).get("peer", [])]
        if mine and theirs and max(theirs):
            maxima.append(max(mine) / max(theirs))
    out.append(
        _goal(
            "max throughput vs peer's max >= 2x (SQLite)",
            [x >= GOAL_THROUGHPUT_RATIO for x in maxima],
            round(statistics.median(maxima), 2) if maxima else None,
            "per round, our best concurrency over the peer's best",
            rounds=[round(x, 2) for x in maxima],
        )
    )
    ours_all = [row for rs in (ours_sqlite, ours_redis) for runs in rs.values() for row in runs]
    errors = sum(_failed(r) for r in ours_all)
    out.append(
        _goal(
            "no 5xx, transport errors or failed state writes under load (ours)",
            [errors == 0] if ours_all else [],
            errors,
            f"{errors} failed over {len(ours_all)} load tests on SQLite and Redis",
        )
    )
    short = [
        f"{r['concurrency']}@r{r['round']}"
        for r in ours_all
        if r.get("state_writes", 0) < sum(n for s, n in r["status_counts"].items() if s == "200")
    ]
    out.append(
        _goal(
            "every /predict writes its card's state (ours)",
            [not short] if ours_all else [],
            sum(r.get("state_writes", 0) for r in ours_all),
            "state writes counted by the service (warm-up included) >= answered requests in "
            "every load test" + (f"; fewer in {', '.join(short)}" if short else ""),
        )
    )
    feast_error = result["feast_server"].get("error")
    for c in GOAL_CONCURRENCIES:
        pairs = _paired(ours_redis, feast, c)
        detail = "ours/feature server p99 ms by round: " + ", ".join(
            f"{x['latency_ms']['p99']:.2f}/{y['latency_ms']['p99']:.2f}" for x, y in pairs
        )
        if pairs and not any(y["status_counts"].get("200") for _, y in pairs):
            detail = f"feast serve answered no 200: statuses {pairs[0][1]['status_counts']}"
            pairs = []
        if feast_error and not pairs:
            detail = f"feast serve did not answer: {feast_error.splitlines()[0]}"
        out.append(
            _goal(
                f"/predict p99 <= feature server lookup p99 at c={c} (Redis)",
                [x["latency_ms"]["p99"] <= y["latency_ms"]["p99"] for x, y in pairs],
                round(
                    statistics.median(
                        x["latency_ms"]["p99"] / y["latency_ms"]["p99"] for x, y in pairs
                    ),
                    2,
                )
                if pairs
                else None,
                detail,
                rounds=[
                    round(x["latency_ms"]["p99"] / y["latency_ms"]["p99"], 2) for x, y in pairs
                ],
                confound=_confound(pairs),
                loads=_loads(pairs),
            )
        )
    ops = result["state_ops"]
    redis_writes = [
        run["write"]["p99_ms"] for run in ops.get("runs", []) if run["store"] == "redis"
    ]
    sqlite_writes = [
        run["write"]["p99_ms"] for run in ops.get("runs", []) if run["store"] == "sqlite"
    ]
    out.append(
        _goal(
            "state update p99 <= 2 ms (Redis, write_states of one card)",
            [x <= GOAL_UPDATE_P99_MS for x in redis_writes],
            round(statistics.median(redis_writes), 3) if redis_writes else None,
            f"Redis p99 {', '.join(f'{x:.3f}' for x in redis_writes)} ms by run; SQLite p99 "
            f"{', '.join(f'{x:.3f}' for x in sqlite_writes)} ms by run",
            rounds=redis_writes,
        )
    )
    batching = [r["read_batching"] for r in ops.get("runs", []) if "read_batching" in r]
    if batching:
        gains = [
            round(b["view_by_view"]["p50_ms"] / b["one_pipeline"]["p50_ms"], 2) for b in batching
        ]
        out.append(
            {
                "goal": "Redis read of a request's views: one pipeline vs Feast's online_read "
                "view by view (the reason for the batched read; reported)",
                "verdict": "reported",
                "value": statistics.median(gains),
                "rounds": gains,
                "detail": "p50 ms one pipeline / view by view by run: "
                + ", ".join(
                    f"{b['one_pipeline']['p50_ms']:.3f}/{b['view_by_view']['p50_ms']:.3f}"
                    for b in batching
                ),
            }
        )
    batch = result["batch"]
    if batch is not None:
        warm = batch["warm_rows_per_minute"]
        out.append(
            _goal(
                "batch scoring >= 1M rows/min (warm)",
                [w["rows_per_minute"] >= GOAL_BATCH_ROWS_PER_MINUTE for w in batch["warm"]],
                warm["median"],
                f"warm median {warm['median']:,} rows/min ({warm['min']:,}..{warm['max']:,}) "
                f"over {len(batch['warm'])} runs of {batch['warm'][0]['rows']:,}+ rows; the cold "
                f"first run {batch['cold']['rows_per_minute']:,} rows/min "
                f"({batch['cold']['rows']:,} rows in {batch['cold']['seconds']:.1f} s)",
            )
        )
    return out


# ------------------------------------------------------------------------ report


def _print_report(result: dict[str, Any]) -> None:
    world = result["world"]
    print()
    print(
        f"world: {world['transactions']:,} transactions ({world['days']} days), "
        f"{world['cards']:,} cards, {world['merchants']:,} merchants; champion "
        f"v{world['champion_version']} ({world['model']})"
    )
    print()
    print("(a) in-process, one transaction (ms), per run          p50      p99     mean")
    for run_no, floor in enumerate(result["floor"]["runs"], 1):
        for key, label in (
            ("serving_scorer", "serving scorer (the floor)"),
            ("serving_scorer_sklearn_trees", "same scorer on sklearn's trees"),
            ("sklearn_predict_proba", "sklearn predict_proba, 1-row DataFrame"),
            ("pyfunc_predict", "MLflow pyfunc predict, 1-row DataFrame"),
        ):
            f = floor[key]
            print(
                f"  {run_no} {label:<49} {f['p50_ms']:>7.3f}  {f['p99_ms']:>7.3f}  "
                f"{f['mean_ms']:>7.3f}"
            )
    print()
    rounds = len(result["load_tests"]["rounds"])
    print(f"load tests, closed loop, {SECONDS:.0f} s each; median of {rounds} rounds [min-max]")
    head = f"{'':<16}{'c':>3} {'req/s':>22} {'p50 ms':>24} {'p99 ms':>24} {'failed':>7}"
    print(head)
    print("-" * len(head))
    for label, key in (
        ("ours SQLite", "ours_sqlite"),
        ("mlflow peer", "peer"),
        ("ours Redis", "ours_redis"),
        ("feast serve", "feast_server"),
    ):
        for c, s in result["summary"].get(key, {}).items():
            cells = []
            for metric, fmt in (
                ("requests_per_second", "{:,.0f}"),
                ("p50_ms", "{:.2f}"),
                ("p99_ms", "{:.2f}"),
            ):
                v = s[metric]
                median, low, high = (fmt.format(v[k]) for k in ("median", "min", "max"))
                cells.append(f"{median} [{low}-{high}]")
            print(
                f"{label:<16}{c:>3} {cells[0]:>22} {cells[1]:>24} {cells[2]:>24} "
                f"{s['failed_requests']:>7}"
            )
    ops = result["state_ops"]
    if ops.get("runs"):
        print()
        print("(f) state operations in-process (ms), per run   p50      p99")
        for run in ops["runs"]:
            for op in ("write", "read", "read_modify_write"):
                f = run[op]
                label = f"{run['store']} {op}"
                print(f"  {label:<44} {f['p50_ms']:>7.3f}  {f['p99_ms']:>7.3f}")
            for arm, f in run.get("read_batching", {}).items():
                label = f"{run['store']} read, {arm.replace('_', ' ')}"
                print(f"  {label:<44} {f['p50_ms']:>7.3f}  {f['p99_ms']:>7.3f}")
    onnx = result["onnx"]
    print()
    print("(g) onnxruntime")
    for a in onnx.get("attempts", []):
        state = "converted" if a["converted"] else "refused"
        if a.get("runs") is False:
            state = "converted, does not run"
        print(f"  {state:<24} {a['what']}")
        if a.get("error"):
            print(textwrap.indent(textwrap.fill(a["error"], 92), "      "))
    if "check" in onnx:
        check = onnx["check"]
        print(
            f"  scores vs pipeline: max |diff| {check['max_abs_diff_vs_pipeline']:.3g}, "
            f"{check['rows_over_tolerance']} of {onnx['holdout_rows']} rows over "
            f"{check['tolerance']:g}"
        )
        for key, f in onnx["latency"].items():
            print(f"  {key:<44} p50 {f['p50_ms']:>7.3f}  p99 {f['p99_ms']:>7.3f}")
    if onnx.get("verdict"):
        print(f"  verdict: {onnx['verdict']}: {onnx.get('why', '')}")
    if result["batch"] is not None:
        b = result["batch"]
        print()
        w = b["warm_rows_per_minute"]
        print(
            f"(d) batch, runs of {b['rows_target']:,}+ rows over {b['days']} days: cold first "
            f"run {b['cold']['rows_per_minute']:,} rows/min ({b['cold']['seconds']:.1f} s), "
            f"warm median {w['median']:,} rows/min ({w['min']:,}..{w['max']:,})"
        )
    print()
    for goal in result["goals"]:
        print(f"{goal['verdict'].upper():<13} {goal['goal']:<58} {goal['value']!s:>8}")
        print(textwrap.indent(textwrap.fill(goal["detail"], 90), " " * 14))
        if goal.get("why"):
            print(textwrap.indent(textwrap.fill(f"inconclusive: {goal['why']}", 90), " " * 14))
    print()
    for note in result["notes"]:
        print(textwrap.fill(note, width=100, initial_indent="note: ", subsequent_indent="  "))


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _machine() -> dict[str, Any]:
    packages = (
        "fastapi",
        "uvicorn",
        "uvloop",
        "httptools",
        "mlflow",
        "feast",
        "gunicorn",
        "redis",
        "scikit-learn",
        "skl2onnx",
        "onnxruntime",
    )
    redis_server = None
    with contextlib.suppress(Exception):
        redis_server = redis_client().info("server")["redis_version"]
    return {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "redis_server": redis_server,
        **{name: _version(name) for name in packages},
    }


def _prepare_redis(state: Path) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Redis db 12 flushed and loaded with the world; (handle with a snapshot, report)."""
    try:
        client = redis_client()
        client.ping()
        client.flushdb()
        loaded = in_child("redis-materialize", state, "redis")
        snapshot = redis_snapshot(client)
    except Exception as exc:  # reported: the Redis measurements are then not made
        return None, {"error": _error(exc)}
    return {"client": client, "snapshot": snapshot}, loaded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULT,
        help=f"result JSON (default {RESULT.relative_to(ROOT)})",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="build the world in this folder and keep it (reused when it is there)",
    )
    parser.add_argument(
        "--rounds", type=int, default=ROUNDS, help=f"load-test rounds (default {ROUNDS})"
    )
    parser.add_argument(
        "--batch-rows",
        type=int,
        default=BATCH_ROWS,
        help=f"rows each batch-scoring run scores (default {BATCH_ROWS:,})",
    )
    parser.add_argument("--child", nargs=2, metavar=("KIND", "STATE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child[0], Path(args.child[1]))
    os.environ.setdefault("FRAUD_PROJECT_DIR", str(ROOT))
    os.environ.setdefault("FEAST_USAGE", "False")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    started = time.perf_counter()
    redis: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        state = args.keep.resolve() if args.keep else Path(tmp) / "state"
        logs = Path(tmp)
        kept = state / "bench-world.json"
        if args.keep and kept.exists():
            _progress(f"reusing the served world in {state}")
            world = json.loads(kept.read_text())
        else:
            if state.exists():
                shutil.rmtree(state)
            _progress("building the served world (simulate, CT with the default model)")
            world = build_world(state)
            kept.write_text(json.dumps(world, default=str))
        print(
            f"    {world['transactions']:,} transactions, champion v{world['champion_version']}, "
            f"CT {world['ct_seconds']:.0f} s",
            flush=True,
        )
        snapshot = _bench_dir(state) / "online_store.materialized.db"
        if not snapshot.exists():
            sqlite_snapshot(state, snapshot)
        sqlite_restore(state, snapshot)  # a kept world starts as it was materialized
        base = request_bodies(state)
        _progress("(a) the floor: one-row predicts in-process (before the load tests)")
        floor_runs = [in_child("floor", state)]
        columns = floor_runs[0].pop("columns")
        from fraud_detection.config import load_profile

        model_uri = f"models:/{load_profile().mlflow.model_name}@champion"
        inputs = {
            "base": base,
            "sqlite_snapshot": snapshot,
            "model_uri": model_uri,
            "peer_bodies": peer_bodies(model_inputs(state, columns)),
            "feast_bodies": feast_bodies(base),
        }
        try:
            _progress(f"Redis {REDIS_CONNECTION}: flush, materialize the world (a child)")
            redis, redis_report = _prepare_redis(state)
            if redis is None:
                print(f"    Redis unavailable: {redis_report['error']}", flush=True)
            else:
                print(
                    f"    {redis_report['keys']:,} keys in {redis_report['seconds']:.0f} s; "
                    f"{redis_report['reads_differing']} of "
                    f"{redis_report['reads_compared_with_sqlite']} reads differ from SQLite",
                    flush=True,
                )
            feast: dict[str, Any] = {
                "repo": write_feast_repo(state, Path(tmp) / "feast-repo"),
                "error": None if redis else "Redis unavailable",
            }
            feast["command"] = " ".join(feast_command(feast["repo"], 0)).replace(
                " -p 0", " -p PORT"
            )
            feast["feature_store_yaml"] = (feast["repo"] / "feature_store.yaml").read_text()
            rounds = []
            for number in range(1, args.rounds + 1):
                rounds.append(measure_round(number, state, logs, inputs, redis, feast))
            _progress("(a) the floor again (after the load tests)")
            floor_runs.append(in_child("floor", state))
            floor_runs[-1].pop("columns")
            _progress("(f) state operations in-process, SQLite and Redis alternately")
            ops_runs = []
            for number in range(1, args.rounds + 1):
                stores = ["sqlite", "redis"] if number % 2 else ["redis", "sqlite"]
                for store in stores:
                    if store == "redis" and redis is None:
                        continue
                    if store == "sqlite":
                        sqlite_restore(state, snapshot)
                    else:
                        assert redis is not None
                        redis_restore(redis["client"], redis["snapshot"])
                    run = in_child("state-ops", state, store)
                    run["round"] = number
                    ops_runs.append(run)
                    print(
                        f"    {store:<6} write p50 {run['write']['p50_ms']:.3f} p99 "
                        f"{run['write']['p99_ms']:.3f} ms; read p50 {run['read']['p50_ms']:.3f} "
                        f"p99 {run['read']['p99_ms']:.3f} ms",
                        flush=True,
                    )
            sqlite_restore(state, snapshot)
        finally:
            if redis is not None:
                redis["client"].flushdb()
        _progress("(g) onnxruntime vs the serving scorer vs the pipeline")
        try:
            onnx = in_child("onnx", state)
        except Exception as exc:  # reported, not fatal
            onnx = {"error": str(exc), "verdict": "keep fast scorer", "why": "not measured"}
        batch = None
        _progress(f"(d) batch scoring, runs of {args.batch_rows:,}+ rows, cold then warm")
        os.environ["BENCH_BATCH_ROWS"] = str(args.batch_rows)
        try:
            batch = in_child("batch", state)
        except Exception as exc:  # reported, not fatal
            print(f"    batch scoring failed: {type(exc).__name__}: {exc}", flush=True)
    result = _result(world, floor_runs, rounds, redis_report, feast, ops_runs, onnx, batch)
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    result["goals"] = goals(result)
    _print_report(result)
    print(f"run time {result['total_seconds']:.0f} s")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.output}")
    missed = [g["goal"] for g in result["goals"] if g["verdict"] == "not met"]
    if missed:
        print("goals not met: " + "; ".join(missed))
    return 1 if missed else 0


def peer_bodies(rows: Any) -> list[dict[str, Any]]:
    """One-row ``dataframe_split`` bodies of model input features."""
    split = json.loads(rows.to_json(orient="split", index=False))
    return [
        {"dataframe_split": {"columns": split["columns"], "data": [row]}} for row in split["data"]
    ]


def _result(
    world: dict[str, Any],
    floor_runs: list[dict[str, Any]],
    rounds: list[dict[str, Any]],
    redis_report: dict[str, Any],
    feast: dict[str, Any],
    ops_runs: list[dict[str, Any]],
    onnx: dict[str, Any],
    batch: dict[str, Any] | None,
) -> dict[str, Any]:
    every = [
        row
        for r in rounds
        for pair in ("sqlite", "redis")
        for rows in r.get(pair, {}).values()
        for row in rows
    ]
    notes = [
        f"Load tests: closed loop (each client sends its next request when the answer is in), "
        f"{SECONDS:.0f} s per concurrency after {WARMUP_SECONDS:.0f} s not counted; one asyncio "
        "client process on keep-alive connections (release.loadtest); its CPU use is in each "
        f"row. Client, servers and the rest of the machine share {os.cpu_count()} cores, so "
        "the throughput at high concurrency is the machine's, not the server's alone.",
        f"Our /predict bodies are the newest day's {REQUEST_ROWS:,} transactions (fewer when "
        f"the day has fewer), {PREDICT_POOL:,} per load test, each with a transaction id of "
        "its own: every request appends an event to its card's state and writes it "
        "(state_writes in each row, counted by the service). Each pair of servers starts "
        "from its store as materialized, so the states grow alike in every round.",
        "The peer's bodies are one row of the model's inputs each, computed for the same "
        "transactions by features.store.online_features (the service's lookup, reads only); "
        "ours carry the raw transaction and look the features up in the Feast online store.",
        "Feast's feature server: "
        f"`{feast['command']}` (gunicorn, one uvicorn worker, never recycled) on the "
        "registry of the state folder and Redis db 12 (the states ours wrote in the same "
        "pair included); bodies ask for the state arrays, the card profile and the "
        "merchant risk of the same transactions: a lookup, without the window features, "
        "the update and the model that our /predict adds.",
        "Ours on SQLite and ours on Redis run in different pairs, minutes apart, alternated "
        "across rounds (odd rounds SQLite first, even rounds Redis first): a drift of the "
        "machine's load between the pairs moves them apart. The in-process state operations "
        "(state_ops), SQLite and Redis alternately in fresh processes, isolate the store's "
        "own cost.",
        "Every server runs one process with OMP_NUM_THREADS=1 (ours also sets one OpenMP "
        "thread itself; the peer fell to 2 req/s at one client without it on this busy "
        "machine).",
        "Redis: the world was loaded with features.store.materialize under the Redis "
        "profile (its own materialization marker: a full backfill), and 500 reads through "
        "it were compared with the SQLite store's.",
    ]
    loads = [r["load_average_1m_at_start"] for r in every]
    if loads and max(loads) > (os.cpu_count() or 1):
        notes.append(
            f"The machine was busy (1-minute load average up to {max(loads):.1f} on "
            f"{os.cpu_count()} cores during the load tests): latencies and throughput carry "
            "that noise; the verdicts need every round to agree."
        )
    summary = {
        "ours_sqlite": summarize(series(rounds, "sqlite", "ours")),
        "peer": summarize(series(rounds, "sqlite", "peer")),
        "ours_redis": summarize(series(rounds, "redis", "ours")),
        "feast_server": summarize(series(rounds, "redis", "feast")),
    }
    ops_summary = {}
    for store in ("sqlite", "redis"):
        runs = [r for r in ops_runs if r["store"] == store]
        if runs:
            ops_summary[store] = {
                op: {
                    "p50_ms": _spread([r[op]["p50_ms"] for r in runs]),
                    "p99_ms": _spread([r[op]["p99_ms"] for r in runs]),
                }
                for op in ("write", "read", "read_modify_write")
            }
    feast_report = {k: v for k, v in feast.items() if k != "repo"}
    return {
        "benchmark": "serving",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "world": world,
        "settings": {
            "concurrencies": list(CONCURRENCIES),
            "rounds": len(rounds),
            "seconds": SECONDS,
            "warmup_seconds": WARMUP_SECONDS,
            "request_rows": REQUEST_ROWS,
            "predict_bodies_per_load_test": PREDICT_POOL,
            "state_calls": STATE_CALLS,
            "redis": REDIS_CONNECTION,
        },
        "floor": {"runs": floor_runs},
        "summary": summary,
        "load_tests": {"rounds": rounds},
        "redis": redis_report,
        "feast_server": feast_report,
        "state_ops": {"runs": ops_runs, "summary": ops_summary},
        "onnx": onnx,
        "batch": batch,
        "notes": notes,
    }


if __name__ == "__main__":
    sys.exit(main())

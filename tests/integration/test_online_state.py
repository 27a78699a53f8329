"""The card's online state as a user of the API sees it: every scored transaction moves
it, retries do not, a failed write is never silent, any registered classifier serves, and
a Redis outage is a clear 503 the service recovers from by itself."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from fraud_detection.config import FeastSettings, StatePaths
from fraud_detection.features.engineering import CATEGORICAL_FEATURES, MODEL_FEATURES
from fraud_detection.serving.app import create_app
from fraud_detection.serving.schemas import requests_from_raw
from fraud_detection.serving.settings import load_serving_config
from tests.conftest import free_port
from tests.worlds import served_world, train_version

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> StatePaths:
    return served_world(tmp_path_factory.mktemp("state"))


def _config() -> Any:
    return load_serving_config(overrides={"reload_interval_s": 0.5})


@pytest.fixture(scope="module")
def client(world: StatePaths) -> Iterator[TestClient]:
    with TestClient(create_app(world.root, config=_config())) as test_client:
        yield test_client


def _next_day_body(world: StatePaths, row: int = 0, **change: Any) -> dict[str, Any]:
    """A request on the day after the data, for a card the store knows (the last day's
    ``row``-th transaction, moved to 09:00 the next day)."""
    last = sorted(world.raw.glob("date=*/transactions.parquet"))[-1]
    body = requests_from_raw(pd.read_parquet(last).iloc[row : row + 1])[0]
    when = pd.Timestamp(body["timestamp"]).normalize() + pd.Timedelta(days=1, hours=9)
    return {**body, "timestamp": when.isoformat(), **change}


def _state_keys(world: StatePaths, card: int) -> list[int]:
    from fraud_detection.features import store

    return store.open_online(world, apply=False).read_state(card).keys.tolist()


def _hour_count(world: StatePaths, card: int, merchant: int, when: str) -> float:
    from fraud_detection.features import store

    at_us = int(pd.Timestamp(when).value // 1_000)
    online = store.open_online(world, apply=False)
    return online.read(card, merchant, at_us).values["card_txn_count_1h"]


def test_the_next_request_of_the_card_sees_the_transaction(
    world: StatePaths, client: TestClient
) -> None:
    # Given a card with no transaction in the last hour of a new morning
    first = _next_day_body(world, transaction_id="state-a")
    later = pd.Timestamp(first["timestamp"]) + pd.Timedelta(minutes=10)
    card, merchant = first["card_id"], first["merchant_id"]
    assert _hour_count(world, card, merchant, later.isoformat()) == 0

    # When the API scores a transaction of that card
    assert client.post("/predict", json=first).status_code == 200

    # Then ten minutes later the card's 1-hour count holds it
    assert _hour_count(world, card, merchant, later.isoformat()) == 1


def test_a_retry_neither_counts_twice_nor_changes_its_answer(
    world: StatePaths, client: TestClient
) -> None:
    body = _next_day_body(world, transaction_id="state-retry", amount=432.1)
    first = client.post("/predict", json=body).json()
    again = client.post("/predict", json=body).json()
    assert again["score"] == first["score"]
    assert _state_keys(world, body["card_id"]).count(_key(body)) == 1


def test_a_replaced_store_file_is_reopened_not_read_stale(
    world: StatePaths, client: TestClient
) -> None:
    import os
    import shutil
    import sqlite3

    from fraud_detection.features import store

    # Given the service's SQLite store replaced by another file (a rebuilt store; here a
    # copy of it, checkpointed first so the copy holds everything)
    path = store.open_online(world, apply=False)._file
    assert path is not None
    assert path.is_file()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    copy = path.with_name(path.name + ".rebuilt")
    shutil.copyfile(path, copy)
    os.replace(copy, path)
    for leftover in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)

    # When the API scores a transaction of a card
    body = _next_day_body(world, row=7, transaction_id="state-after-replace")
    answer = client.post("/predict", json=body)

    # Then it was written to the new file, which a fresh reader sees, and /ready is ok
    assert answer.status_code == 200, answer.text
    assert _key(body) in _state_keys(world, body["card_id"])
    assert client.get("/ready").json()["online_store"]["ok"] is True


def _key(body: dict[str, Any]) -> int:
    from fraud_detection.features.online import transaction_key

    t_us = int(pd.Timestamp(body["timestamp"]).value // 1_000)
    return transaction_key(
        body["transaction_id"], body["card_id"], t_us, body["merchant_id"], body["amount"]
    )


def test_a_failed_state_update_is_counted_logged_and_shown(
    world: StatePaths, caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(create_app(world.root, config=_config())) as fresh:
        body = _next_day_body(world, transaction_id="state-fail")
        assert fresh.post("/predict", json=body).status_code == 200  # opens the store
        online_store = fresh.app.state.service.predictor.online.online  # type: ignore[attr-defined]

        def refuse(*_: Any, **__: Any) -> None:
            raise OSError("disk full")

        original = online_store.online_write_batch
        online_store.online_write_batch = refuse
        try:
            with caplog.at_level(logging.WARNING, logger="fraud_detection.serving.service"):
                response = fresh.post("/predict", json={**body, "transaction_id": "state-fail-2"})
        finally:
            online_store.online_write_batch = original
        assert response.status_code == 200  # the score is still given
        updates = fresh.get("/ready").json()["online_store"]["state_updates"]
    assert updates["failed"] == 1
    assert "disk full" in updates["last_error"]
    assert any("card state update failed" in r.getMessage() for r in caplog.records)


def _logistic_regression(frame: pd.DataFrame) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = list(MODEL_FEATURES)
    categorical = list(CATEGORICAL_FEATURES)
    prepare = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            (
                "categorical",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="(missing)"),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                categorical,
            ),
        ]
    )
    model = Pipeline([("prepare", prepare), ("classify", LogisticRegression(max_iter=500))])
    x = frame[numeric + categorical].astype(dict.fromkeys(categorical, object))
    return model.fit(x, frame["is_fraud"])


def test_any_registered_classifier_serves(world: StatePaths, client: TestClient) -> None:
    import mlflow.sklearn

    # Given a LogisticRegression pipeline registered and promoted as the champion
    version = train_version(world, promote=True, fit=_logistic_regression)
    deadline = time.monotonic() + 30
    while client.get("/metadata").json()["model_version"] != version:
        assert time.monotonic() < deadline, client.get("/ready").json()
        time.sleep(0.2)

    # When transactions are scored
    bodies = [
        _next_day_body(world, transaction_id=f"lr-{i}", amount=20.0 + 37 * i) for i in range(5)
    ]
    answers = [client.post("/predict", json=b).json() for b in bodies]

    # Then it serves through the pipeline's own predict_proba, with its scores
    assert client.get("/metadata").json()["scorer"] == "pipeline"
    assert {a["model_version"] for a in answers} == {version}
    pipeline = mlflow.sklearn.load_model(f"models:/fraud-detector/{version}")
    scores = [a["score"] for a in answers]
    assert all(0 <= s <= 1 for s in scores)
    assert len(set(scores)) > 1
    assert np.isfinite(scores).all()
    assert pipeline.named_steps["classify"].__class__.__name__ == "LogisticRegression"


# ------------------------------------------------------------------ Redis outage


class _RedisServer:
    """A private redis-server (the shared one must not go down under other tests)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    return
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.mark.services
@pytest.mark.slow
def test_a_redis_outage_is_a_503_and_the_service_recovers_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from fraud_detection.features import store
    from tests.conftest import service_unavailable

    if shutil.which("redis-server") is None:
        service_unavailable("redis-server is not installed", "apt-get install redis-server")
    server = _RedisServer(free_port())
    monkeypatch.setenv("FRAUD_PROFILE__FEAST__ONLINE_STORE", "redis")
    monkeypatch.setenv("FRAUD_PROFILE__FEAST__REDIS_CONNECTION_STRING", f"127.0.0.1:{server.port}")
    server.start()
    try:
        # Given a service on a world materialized into Redis, answering
        world = served_world(tmp_path / "state")
        with TestClient(create_app(world.root, config=_config())) as client:
            body = _next_day_body(world, transaction_id="outage-0")
            assert client.post("/predict", json=body).status_code == 200
            assert client.get("/ready").status_code == 200
            # (the batch features of every card and merchant of the first day, as loaded)
            at_us = int(pd.Timestamp(body["timestamp"]).value // 1_000)
            first = sorted(world.raw.glob("date=*/transactions.parquet"))[0]
            pairs = pd.read_parquet(first, columns=["card_id", "merchant_id"]).drop_duplicates()
            online = store.open_online(world, apply=False)
            batch = sorted(set(online.features) - set(online.window_features))

            def batch_values() -> list[list[float | None]]:
                reads = [online.read(int(c), int(m), at_us) for c, m in pairs.to_numpy()]
                return [[r.values.get(k) for k in batch] for r in reads]

            loaded = batch_values()

            # When Redis goes down: a 503 that says why, and not ready
            server.stop()
            down = client.post("/predict", json={**body, "transaction_id": "outage-1"})
            ready = client.get("/ready")
            assert down.status_code == 503
            assert "online store unavailable" in down.json()["detail"]
            assert "Connection" in down.json()["detail"]
            assert ready.status_code == 503
            assert ready.json()["online_store"]["ok"] is False

            # When it is back (empty: it keeps nothing on disk) and CT materializes again
            # (as usual: nobody tells it Redis lost its data), the same service answers
            # again, with the card and the merchant known: no restart, a full backfill
            server.start()
            deadline = time.monotonic() + 20
            while client.post("/predict", json=body).status_code != 200:
                assert time.monotonic() < deadline, "no recovery"
                time.sleep(0.2)
            assert client.get("/ready").status_code == 200
            assert store.materialized_marker(world).exists()
            said: list[str] = []
            store.materialize(world, progress=said.append)
            assert any("backfilling it in full" in line for line in said), said
            back = client.post("/predict", json={**body, "transaction_id": "outage-2"})
            assert back.status_code == 200
            assert back.json()["unknown_card"] is False
            assert back.json()["unknown_merchant"] is False
            # and every batch view's values are back, not only the recent ones
            again = batch_values()
            online.close()
            assert len(loaded) > 100
            differ = sum(a != b for a, b in zip(again, loaded, strict=True))
            assert differ == 0, f"{differ} of {len(loaded)} first-day pairs lost batch values"
    finally:
        server.stop()


@pytest.mark.services
def test_switching_a_state_folder_to_redis_backfills_it_in_full(
    world: StatePaths, redis_profile: str
) -> None:
    from fraud_detection.features import store

    # Given a folder already materialized into SQLite, now pointed at an empty Redis
    body = _next_day_body(world, row=100)  # a card no other test here scores
    at_us = int(pd.Timestamp(body["timestamp"]).value // 1_000)
    sqlite = store.open_online(world, apply=False, feast_settings=FeastSettings())
    expected = sqlite.read(body["card_id"], body["merchant_id"], at_us)

    # When it is materialized with the Redis profile
    store.materialize(world)

    # Then Redis holds everything SQLite does for the card: profile, risk, state
    redis = store.open_online(world, apply=False)
    got = redis.read(body["card_id"], body["merchant_id"], at_us)
    assert got.values == pytest.approx(expected.values, nan_ok=True)
    assert not np.isnan(got.values["home_latitude"])
    assert len(got.state) == len(expected.state) > 0

    # And the one-pipeline read of every view (Feast's own batched HMGETs) gives what
    # Feast's online_read gives view by view, for known and unknown cards and merchants
    assert redis._batched_redis
    per_view = store.open_online(world, apply=False)
    per_view._batched_redis = False
    last = pd.read_parquet(sorted(world.raw.glob("date=*/transactions.parquet"))[-1])
    keys = [(int(c), int(m)) for c, m in last[["card_id", "merchant_id"]].head(20).values]
    for card, merchant in [*keys, (10**9, int(last["merchant_id"].iloc[0])), (10**9, 10**9)]:
        batched, alone = redis.read(card, merchant, at_us), per_view.read(card, merchant, at_us)
        assert batched.values == pytest.approx(alone.values, nan_ok=True)
        assert batched.state.keys.tolist() == alone.state.keys.tolist()
        assert (batched.unknown_card, batched.unknown_merchant, batched.feature_age_s) == (
            alone.unknown_card,
            alone.unknown_merchant,
            alone.feature_age_s,
        )


@pytest.mark.services
@pytest.mark.slow
def test_redis_restarted_under_a_30_s_load_errs_only_inside_the_outage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import shutil
    import sys
    import threading

    import httpx

    from tests.conftest import service_unavailable
    from tests.stack import ROOT, free_port

    if shutil.which("redis-server") is None:
        service_unavailable("redis-server is not installed", "apt-get install redis-server")
    server = _RedisServer(free_port())
    monkeypatch.setenv("FRAUD_PROFILE__FEAST__ONLINE_STORE", "redis")
    monkeypatch.setenv("FRAUD_PROFILE__FEAST__REDIS_CONNECTION_STRING", f"127.0.0.1:{server.port}")
    server.start()
    port = free_port()
    api = None
    try:
        # Given `fraud serve` (uvicorn) on a world materialized into Redis
        world = served_world(tmp_path / "state")
        last = sorted(world.raw.glob("date=*/transactions.parquet"))[-1]
        bodies = requests_from_raw(pd.read_parquet(last))
        api = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fraud_detection.cli",
                "serve",
                "--port",
                str(port),
                "--state-dir",
                str(world.root),
            ],
            env={**os.environ, "FRAUD_SERVING__RELOAD_INTERVAL_S": "0.5"},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            assert api.poll() is None, "fraud serve exited"
            assert time.monotonic() < deadline, "fraud serve not ready"
            time.sleep(0.3)

        # When 4 clients send /predict for 30 s and Redis is down from 10 s to 18 s
        seen: list[tuple[float, int | str]] = []
        ends: list[float] = []
        lock = threading.Lock()
        started = time.monotonic()

        def client(k: int) -> None:
            with httpx.Client(base_url=base, timeout=10) as http:
                i = k
                while (now := time.monotonic() - started) < 30:
                    body = {**bodies[i % len(bodies)], "transaction_id": f"load-{k}-{i}"}
                    try:
                        status: int | str = http.post("/predict", json=body).status_code
                    except httpx.HTTPError as exc:
                        status = type(exc).__name__
                    with lock:
                        seen.append((now, status))
                        ends.append(time.monotonic() - started)
                    i += 4

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(max(0.0, 10 - (time.monotonic() - started)))
        server.stop()
        down_at = time.monotonic() - started
        time.sleep(max(0.0, 18 - (time.monotonic() - started)))
        server.start()
        up_at = time.monotonic() - started
        for thread in threads:
            thread.join()

        # Then: every answer is a 200 or a 503, never another error, and the 503s all fall
        # inside the outage (or the in-flight second around its ends)
        statuses = {status for _, status in seen}
        assert statuses <= {200, 503}, statuses
        outside = [(t, s) for t, s in seen if s != 200 and not down_at - 0.5 <= t <= up_at + 2.0]
        assert not outside, outside[:5]
        inside = [s for t, s in seen if down_at + 0.5 <= t <= up_at - 0.5]
        assert inside, "no request during the outage"
        timeline = [
            (round(t, 2), round(e, 2), st)
            for (t, st), e in zip(seen, ends, strict=True)
            if down_at - 1 <= t <= up_at + 1
        ]
        assert set(inside) == {503}, (down_at, up_at, timeline[:40])
        # And the service recovered alone: the last 5 s all answered 200
        tail = [s for t, s in seen if t >= 25]
        assert tail, "no request in the last 5 s"
        assert set(tail) == {200}, set(tail)
        assert sum(1 for _, s in seen if s == 200) > 100
    finally:
        if api is not None:
            api.terminate()
            api.wait(timeout=30)
        server.stop()

"""Fixtures every test folder shares: one Prefect test server for the session, MLflow
isolation, free ports, real services (Redis) for tests marked ``services``, and the level
marker (unit, integration, e2e) of each test set by its folder.

A test that needs a service asks for its fixture. When the service does not answer, the
test is skipped with one line saying how to start it, unless ``FRAUD_REQUIRE_SERVICES=1``
(set by ``.ci/run``): then it fails, so CI always runs the services tests.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# Tests use their own Redis database, flushed before and after each test.
REDIS_TEST_DB = 13
START_REDIS = (
    "start Redis on 127.0.0.1:6379, e.g. `redis-server --daemonize yes --port 6379 "
    '--save ""` (docs/feature_store.md)'
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


MLFLOW_VARIABLES = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
)


@contextlib.contextmanager
def mlflow_isolated() -> Iterator[None]:
    """Inside: no MLflow variable from the environment, so the code under test points
    MLflow at the store of its own state folder. After: MLflow's URIs, its variables, its
    active experiment and the project's tracking session as they were (MLflow has no
    public way to unset the active experiment)."""
    import mlflow

    from fraud_detection.registry import tracking

    old_tracking, old_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    with pytest.MonkeyPatch.context() as patch:
        for var in MLFLOW_VARIABLES:
            patch.delenv(var, raising=False)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(old_tracking)
            mlflow.set_registry_uri(old_registry)
            mlflow.tracking.fluent._active_experiment_id = None
            tracking._session = None


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Prefect test server for the whole session, on a database of its own: its API
    URL. Starting one takes 15-25 s, so the modules that run flows share it; each points
    at it only while it runs (:func:`prefect_client_of`), so the rest of the session sees
    no server. Prefect's own harness does the same per use, and stays active after."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import (
        PREFECT_HOME,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_DATABASE_CONNECTION_URL,
        temporary_settings,
    )

    home = tmp_path_factory.mktemp("prefect_server")
    database = f"sqlite+aiosqlite:///{home / 'prefect.db'}"
    # The server process takes its settings from these, at start
    with temporary_settings(
        updates={
            PREFECT_HOME: home,
            PREFECT_SERVER_DATABASE_CONNECTION_URL: database,
            PREFECT_SERVER_ANALYTICS_ENABLED: False,
        }
    ):
        server = SubprocessASGIServer(port=free_port())
        server.start(timeout=120)
    try:
        yield str(server.api_url)
    finally:
        server.stop()


@contextlib.contextmanager
def prefect_client_of(api_url: str, home: Path) -> Iterator[str]:
    """Inside: this process and the processes it starts run flows against ``api_url``,
    with Prefect's home (results, local storage) in ``home``."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_LOCAL_STORAGE_PATH,
        temporary_settings,
    )

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_API_URL", api_url)
        patch.setenv("PREFECT_HOME", str(home))
        patch.setenv("PREFECT_LOCAL_STORAGE_PATH", str(home / "storage"))
        patch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        patch.setenv("PREFECT_LOGGING_LEVEL", "WARNING")
        with temporary_settings(
            updates={
                PREFECT_API_URL: api_url,
                PREFECT_HOME: home,
                PREFECT_LOCAL_STORAGE_PATH: home / "storage",
            }
        ):
            yield api_url


def fraud_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``fraud <args>`` in this process: exit code, stdout, stderr."""
    from unittest.mock import patch

    from fraud_detection.cli import main

    capsys.readouterr()
    with patch.object(sys, "argv", ["fraud", *args]), pytest.raises(SystemExit) as stopped:
        main()
    out, err = capsys.readouterr()
    code = stopped.value.code
    return (code if isinstance(code, int) else 0), out, err


def service_unavailable(what: str, how: str) -> None:
    """Skip (or, with FRAUD_REQUIRE_SERVICES=1, fail) a test whose service is missing."""
    message = f"{what}: {how}"
    if os.environ.get("FRAUD_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} (FRAUD_REQUIRE_SERVICES=1: services tests must run)")
    pytest.skip(message)


@pytest.fixture
def redis_db() -> Iterator[str]:
    """A Redis database of its own for the test: Feast's connection string to it."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_TEST_DB)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_unavailable(
            f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT} ({exc})", START_REDIS
        )
    client.flushdb()
    try:
        yield f"{REDIS_HOST}:{REDIS_PORT},db={REDIS_TEST_DB}"
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def redis_profile(redis_db: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The profile's online store switched to Redis (for this process and its children)."""
    monkeypatch.setenv("FRAUD_PROFILE__FEAST__ONLINE_STORE", "redis")
    monkeypatch.setenv("FRAUD_PROFILE__FEAST__REDIS_CONNECTION_STRING", redis_db)
    return redis_db


LEVELS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test gets the level marker of its folder (``tests/unit/`` -> ``unit``), so
    ``make test-unit`` and ``-m "not e2e"`` select by folder; a test marked with another
    level than its folder's is a collection error naming it."""
    misplaced = []
    for item in items:
        parts = item.path.relative_to(config.rootpath).parts
        folder = parts[1] if len(parts) > 2 and parts[0] == "tests" else None
        if folder not in LEVELS:
            continue
        marked = {m.name for m in item.iter_markers() if m.name in LEVELS}
        if marked - {folder}:
            misplaced.append(
                f"{item.nodeid}: marked {', '.join(sorted(marked))}, in tests/{folder}/"
            )
        item.add_marker(getattr(pytest.mark, folder))
    if misplaced:
        raise pytest.UsageError(
            "a test's level marker must match its folder:\n  " + "\n  ".join(misplaced)
        )

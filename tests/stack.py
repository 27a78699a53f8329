"""A private production stack for tests: the production profile on the real PostgreSQL
and Redis of the machine, with databases, ports and a Redis database of its own.

PostgreSQL is reached through :class:`TcpProxy`, so a test can take "the database" away
from every client of the stack (the MLflow and Prefect servers, Feast's registry, the
promotion lock) and give it back, without touching the server other processes share.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REDIS_HOST, REDIS_PORT, free_port, service_unavailable

PG_HOST, PG_PORT = "127.0.0.1", 5432
STACK_REDIS_DB = 14
START_POSTGRES = (
    "start PostgreSQL on 127.0.0.1:5432 (trust auth for user postgres), e.g. "
    "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
)
ROOT = Path(__file__).resolve().parents[1]


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``; :meth:`cut` drops every connection and
    refuses new ones (the server is gone, for its clients), :meth:`restore` listens again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            if self._listener is not None:
                with contextlib.suppress(OSError):
                    self._listener.shutdown(socket.SHUT_RDWR)
                self._listener.close()
                self._listener = None
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    upstream.close()
                    return
                self._sockets.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def postgres_or_skip() -> None:
    import psycopg

    try:
        with psycopg.connect(
            f"host={PG_HOST} port={PG_PORT} user=postgres dbname=postgres", connect_timeout=3
        ):
            pass
    except psycopg.OperationalError as exc:
        service_unavailable(
            f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} ({exc})", START_POSTGRES
        )


def redis_or_skip() -> None:
    import redis

    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        from tests.conftest import START_REDIS

        service_unavailable(
            f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT} ({exc})", START_REDIS
        )


@dataclass
class Stack:
    """A running private stack: ``env`` selects it (FRAUD_PROFILE=production + overrides)."""

    env: dict[str, str]
    state: Path
    proxy: TcpProxy
    databases: tuple[str, ...]
    mlflow_url: str
    prefect_url: str

    def run(
        self, *args: str, timeout: float = 600, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        """``fraud <args>`` on this stack, as a user runs it."""
        return subprocess.run(
            [sys.executable, "-m", "fraud_detection.cli", *args],
            env={**os.environ, **self.env, **extra},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def profile(self):  # type: ignore[no-untyped-def]
        from fraud_detection.config import load_profile

        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            return load_profile()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def stack_env(
    state: Path, proxy_port: int, suffix: str, mlflow_port: int, prefect_port: int
) -> dict[str, str]:
    pg = f"postgres@127.0.0.1:{proxy_port}"
    redis_db = f"{REDIS_HOST}:{REDIS_PORT},db={STACK_REDIS_DB}"
    db = {name: f"fraud_t_{name}_{suffix}" for name in ("mlflow", "prefect", "feast")}
    return {
        "FRAUD_PROFILE": "production",
        "FRAUD_PROJECT_DIR": str(ROOT),
        "FRAUD_PROFILE__STATE_DIR": str(state),
        "FRAUD_PROFILE__MLFLOW__TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
        "FRAUD_PROFILE__MLFLOW__PROMOTION_LOCK_URL": f"postgresql://{pg}/{db['mlflow']}",
        "FRAUD_PROFILE__MLFLOW_SERVER__BACKEND_STORE_URI": (
            f"postgresql+psycopg://{pg}/{db['mlflow']}"
        ),
        "FRAUD_PROFILE__MLFLOW_SERVER__ARTIFACTS_DESTINATION": str(state / "mlflow-artifacts"),
        "FRAUD_PROFILE__PREFECT__API_URL": f"http://127.0.0.1:{prefect_port}/api",
        "FRAUD_PROFILE__PREFECT__DATABASE_URL": f"postgresql+asyncpg://{pg}/{db['prefect']}",
        "FRAUD_PROFILE__FEAST__ONLINE_STORE": "redis",
        "FRAUD_PROFILE__FEAST__REDIS_CONNECTION_STRING": redis_db,
        "FRAUD_PROFILE__FEAST__REGISTRY_URL": f"postgresql+psycopg://{pg}/{db['feast']}",
        "FRAUD_PROFILE__DASK__SCHEDULER_ADDRESS": "",
        "FRAUD_PROFILE__POSTGRES__ADMIN_URL": f"postgresql://{pg}/postgres",
        "FRAUD_PROFILE__POSTGRES__DATABASES": json.dumps(list(db.values())),
        "FRAUD_API_KEY": "test-key",  # pragma: allowlist secret
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
    }


def _drop(databases: tuple[str, ...]) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        f"host={PG_HOST} port={PG_PORT} user=postgres dbname=postgres", autocommit=True
    ) as conn:
        for name in databases:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextlib.contextmanager
def private_stack(state: Path) -> Iterator[Stack]:
    """Start the stack (MLflow and Prefect servers on PostgreSQL, Feast on PostgreSQL and
    Redis; no Dask cluster) for ``state``; stop it and drop its databases afterwards."""
    import redis

    from fraud_detection import stack as stack_module

    postgres_or_skip()
    redis_or_skip()
    proxy = TcpProxy((PG_HOST, PG_PORT))
    suffix = uuid.uuid4().hex[:8]
    mlflow_port, prefect_port = free_port(), free_port()
    env = stack_env(state, proxy.port, suffix, mlflow_port, prefect_port)
    running = Stack(
        env=env,
        state=state,
        proxy=proxy,
        databases=tuple(f"fraud_t_{n}_{suffix}" for n in ("mlflow", "prefect", "feast")),
        mlflow_url=f"http://127.0.0.1:{mlflow_port}",
        prefect_url=f"http://127.0.0.1:{prefect_port}/api",
    )
    profile = running.profile()
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=STACK_REDIS_DB)
    client.flushdb()
    try:
        stack_module.up(profile, progress=lambda _: None)
        yield running
    finally:
        if proxy._listener is None:  # a test cut it: the servers need it to stop cleanly
            proxy.restore()
        stack_module.down(profile, progress=lambda _: None)
        proxy.cut()
        _drop(running.databases)
        client.flushdb()
        client.close()

"""The production stack as local processes: ``fraud stack up | down | status``.

``make prod-up`` (``FRAUD_PROFILE=production fraud stack up``) brings up what the
production profile (``configs/profiles/production.yaml``) points at, against the
PostgreSQL and Redis servers at the profile's addresses:

1. the databases in ``postgres.databases`` (``mlflow``, ``prefect``, ``feast``), created
   when missing, through ``postgres.admin_url``;
2. their migrations, idempotently: ``mlflow db upgrade`` and ``prefect server database
   upgrade`` (Feast's SQL registry creates its tables on first use);
3. the servers, each a detached process with its log and pid file under
   ``<state>/stack/``: ``mlflow server`` on PostgreSQL with proxied artifacts (clients
   use ``http://``, never the database), ``prefect server start`` on PostgreSQL, a Dask
   scheduler and its workers;
4. a wait until each answers its health check, then every address is printed.

``fraud stack down`` stops exactly the processes ``up`` started (from their pid files);
``up`` leaves a server that already answers alone. Each server's address comes from the
profile (``mlflow.tracking_uri``, ``prefect.api_url``, ``dask.scheduler_address``), so
the stack and its clients cannot disagree. ``docker-compose.yml`` describes the same
stack for a real host.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fraud_detection.config import Profile, project_dir
from fraud_detection.errors import FraudError

__all__ = [
    "Server",
    "StackError",
    "down",
    "ensure_databases",
    "migrate",
    "postgres_dsn",
    "servers",
    "status",
    "up",
]

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0

Progress = Callable[[str], None]


class StackError(FraudError):
    """A piece of the stack cannot be set up or started; the message says what to do."""


@dataclass(frozen=True)
class Server:
    """One long-running process of the stack."""

    name: str
    command: list[str]
    host: str
    port: int
    health: str  # an http(s) URL answering 200 when up, or "tcp" (the port accepts)
    shows: str  # what ``up`` prints: the address people open or point clients at
    env: dict[str, str] = field(default_factory=dict)
    after: tuple[str, ...] = ()  # servers that must answer before this one starts


def _state(profile: Profile) -> Path:
    return profile.state_dir / "stack"


def _pid_file(profile: Profile, name: str) -> Path:
    return _state(profile) / f"{name}.pid"


def _log_file(profile: Profile, name: str) -> Path:
    return _state(profile) / "logs" / f"{name}.log"


def _bin(name: str) -> str:
    """A console script of this environment (``mlflow``, ``prefect``, ``dask``)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    return parts.hostname or "127.0.0.1", parts.port or default_port


def postgres_dsn(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg://...``) as a libpq DSN psycopg accepts."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.startswith("postgresql"):
        raise StackError(f"not a PostgreSQL URL: {_redact(url)}")
    return f"postgresql://{rest}"


def _redact(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def _resolve(path: str) -> Path:
    given = Path(path)
    return given if given.is_absolute() else project_dir() / given


# ------------------------------------------------------------------- databases


def ensure_databases(profile: Profile, progress: Progress = print) -> list[str]:
    """Create each of ``postgres.databases`` that does not exist; the names created."""
    settings = profile.postgres
    if not settings.databases:
        return []
    if not settings.admin_url:
        raise StackError(
            "the profile lists databases but no postgres.admin_url to create them with: "
            "set FRAUD_PROFILE__POSTGRES__ADMIN_URL=postgresql://user@host:5432/postgres"
        )
    import psycopg
    from psycopg import sql

    created = []
    try:
        with psycopg.connect(
            postgres_dsn(settings.admin_url), autocommit=True, connect_timeout=5
        ) as conn:
            for name in settings.databases:
                row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if row.fetchone() is None:
                    with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # a race
                        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                        created.append(name)
    except psycopg.OperationalError as exc:
        raise StackError(
            f"cannot reach PostgreSQL at {_redact(settings.admin_url)} "
            f"({_first_line(exc)}): start it, or point FRAUD_PROFILE__POSTGRES__ADMIN_URL "
            "at a running server"
        ) from exc
    present = ", ".join(settings.databases)
    progress(
        f"postgres: databases {present} ready"
        + (f" (created {', '.join(created)})" if created else " (all existed)")
    )
    return created


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _run(command: list[str], env: dict[str, str], what: str, timeout: float = 300) -> None:
    done = subprocess.run(  # noqa: S603  (the stack's own commands, no shell)
        command, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise StackError(f"{what} failed (exit {done.returncode}): {tail[0]}")


def migrate(profile: Profile, progress: Progress = print) -> None:
    """Bring the MLflow and Prefect databases to their installed versions' schema
    (idempotent: a database already up to date is left as it is)."""
    backend = profile.mlflow_server.backend_store_uri
    if backend:
        _run([_bin("mlflow"), "db", "upgrade", backend], {}, "mlflow db upgrade")
        progress(f"mlflow: database schema up to date ({_redact(backend)})")
    database = profile.prefect.database_url
    if database:
        _run(
            [_bin("prefect"), "server", "database", "upgrade", "-y"],
            _prefect_env(profile),
            "prefect server database upgrade",
        )
        progress(f"prefect: database schema up to date ({_redact(database)})")


# --------------------------------------------------------------------- servers


def _prefect_env(profile: Profile) -> dict[str, str]:
    home = _state(profile) / "prefect"
    env = {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    if profile.prefect.database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = profile.prefect.database_url
    return env


def servers(profile: Profile) -> list[Server]:
    """The stack's servers for ``profile``, in start order (none for the local profile)."""
    out: list[Server] = []
    tracking = profile.mlflow.tracking_uri or ""
    backend = profile.mlflow_server.backend_store_uri
    if tracking.startswith("http") and backend:
        host, port = _host_port(tracking, 5000)
        artifacts = _resolve(
            profile.mlflow_server.artifacts_destination
            or str(profile.state_dir / "mlflow-artifacts")
        )
        out.append(
            Server(
                name="mlflow",
                command=[
                    _bin("mlflow"),
                    "server",
                    "--backend-store-uri",
                    backend,
                    "--artifacts-destination",
                    str(artifacts),
                    "--serve-artifacts",
                    "--host",
                    host,
                    "--port",
                    str(port),
                    "--workers",
                    "2",
                ],
                host=host,
                port=port,
                health=f"http://{host}:{port}/health",
                shows=f"MLflow      http://{host}:{port}  (runs and registry on "
                f"{_redact(backend)}; artifacts in {artifacts})",
            )
        )
    api = profile.prefect.api_url
    if api and profile.prefect.database_url:
        host, port = _host_port(api, 4200)
        out.append(
            Server(
                name="prefect",
                command=[_bin("prefect"), "server", "start", "--host", host, "--port", str(port)],
                host=host,
                port=port,
                health=f"http://{host}:{port}/api/health",
                shows=f"Prefect     http://{host}:{port}  (API {api}; database "
                f"{_redact(profile.prefect.database_url)})",
                env=_prefect_env(profile),
            )
        )
    scheduler = profile.dask.scheduler_address
    if scheduler:
        host, port = _host_port(scheduler, 8786)
        threads = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        out.append(
            Server(
                name="dask-scheduler",
                command=[
                    _bin("dask"),
                    "scheduler",
                    "--host",
                    host,
                    "--port",
                    str(port),
                    "--no-dashboard",
                ],
                host=host,
                port=port,
                health="tcp",
                shows=f"Dask        {scheduler}  ({profile.dask.workers} worker processes, "
                f"{profile.dask.threads_per_worker} thread each)",
            )
        )
        out.append(
            Server(
                name="dask-workers",
                command=[
                    _bin("dask"),
                    "worker",
                    f"tcp://{host}:{port}",
                    "--nworkers",
                    str(profile.dask.workers),
                    "--nthreads",
                    str(profile.dask.threads_per_worker),
                    "--no-dashboard",
                    "--local-directory",
                    str(_state(profile) / "dask-workers"),
                ],
                host=host,
                port=port,
                health="workers",
                shows="",
                env=threads,
                after=("dask-scheduler",),
            )
        )
    return out


def _pid(profile: Profile, name: str) -> int | None:
    """The pid ``up`` recorded for ``name``, if that process still runs."""
    path = _pid_file(profile, name)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        return None
    except PermissionError:
        return pid
    return pid


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
        return True
    return False


def _answers(server: Server, profile: Profile) -> bool:
    if server.health == "tcp":
        return _port_open(server.host, server.port)
    if server.health == "workers":
        return _dask_workers(server.host, server.port) >= profile.dask.workers
    import httpx

    try:
        return httpx.get(server.health, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _dask_workers(host: str, port: int) -> int:
    """How many workers the scheduler at host:port has (0 when it does not answer)."""
    if not _port_open(host, port):
        return 0
    try:
        from distributed import Client

        with Client(f"tcp://{host}:{port}", timeout=5) as client:
            return len(client.scheduler_info().get("workers", {}))
    except Exception:
        return 0


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


def _start(server: Server, profile: Profile) -> int:
    log = _log_file(profile, server.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as handle:
        proc = subprocess.Popen(  # noqa: S603  (a server command the stack builds, no shell)
            server.command,
            env={**os.environ, **server.env},
            cwd=project_dir(),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: `down` stops it and its children
        )
    _pid_file(profile, server.name).write_text(f"{proc.pid}\n")
    return proc.pid


def _wait(server: Server, profile: Profile, pid: int, timeout: float) -> float:
    log = _log_file(profile, server.name)
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if _answers(server, profile):
            return time.monotonic() - started
        if _pid(profile, server.name) != pid:
            raise StackError(
                f"{server.name} exited before it answered; its log ({log}) ends: {_log_tail(log)}"
            )
        time.sleep(0.5)
    raise StackError(
        f"{server.name} did not answer {server.health} within {timeout:.0f} s; its log "
        f"({log}) ends: {_log_tail(log)}"
    )


@dataclass
class Report:
    """What ``up`` / ``status`` found for one server."""

    name: str
    state: str  # started | running | already up (not ours) | stopped
    shows: str
    seconds: float | None = None


def up(
    profile: Profile, progress: Progress = print, timeout: float = START_TIMEOUT_S
) -> list[Report]:
    """Databases, migrations, then every server started (or found running) and healthy.

    Servers that depend on none start together; those with ``after`` once those answer.
    """
    ensure_databases(profile, progress)
    migrate(profile, progress)
    reports: list[Report] = []
    every = servers(profile)
    for wave in ([s for s in every if not s.after], [s for s in every if s.after]):
        launched: list[tuple[Server, int, float]] = []
        for server in wave:
            if _answers(server, profile):
                mine = _pid(profile, server.name) is not None
                state = "running" if mine else "already up (not started here)"
                reports.append(Report(server.name, state, server.shows))
                progress(f"{server.name}: already answering on {server.host}:{server.port}")
                continue
            if server.health != "workers" and _port_open(server.host, server.port):
                raise StackError(
                    f"port {server.host}:{server.port} is taken by something that is not "
                    f"{server.name}: stop it or change the address in the profile"
                )
            if (pid := _pid(profile, server.name)) is None:
                pid = _start(server, profile)
            progress(f"{server.name}: starting (pid {pid}, log {_log_file(profile, server.name)})")
            launched.append((server, pid, time.monotonic()))
        for server, pid, since in launched:
            _wait(server, profile, pid, timeout - (time.monotonic() - since))
            seconds = time.monotonic() - since
            progress(f"{server.name}: up in {seconds:.1f} s")
            reports.append(Report(server.name, "started", server.shows, round(seconds, 1)))
    return reports


def _stop_pid(pid: int, timeout: float) -> bool:
    """SIGTERM the process group, then SIGKILL after ``timeout``; whether it had to be killed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):  # reap it if this process started it
            os.waitpid(pid, os.WNOHANG)
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return True


def down(
    profile: Profile, progress: Progress = print, timeout: float = STOP_TIMEOUT_S
) -> list[str]:
    """Stop the servers ``up`` started, in reverse order; the names stopped."""
    stopped = []
    for server in reversed(servers(profile)):
        pid = _pid(profile, server.name)
        if pid is None:
            continue
        killed = _stop_pid(pid, timeout)
        _pid_file(profile, server.name).unlink(missing_ok=True)
        how = f", killed after {timeout:.0f} s" if killed else ""
        progress(f"{server.name}: stopped (pid {pid}{how})")
        stopped.append(server.name)
    if not stopped:
        progress("nothing to stop: no server of the stack was started by `fraud stack up` here")
    return stopped


def status(profile: Profile) -> list[Report]:
    """Each server: started here and answering, answering but not ours, or stopped."""
    out = []
    for server in servers(profile):
        answering = _answers(server, profile)
        mine = _pid(profile, server.name) is not None
        state = (
            "running"
            if answering and mine
            else "already up (not started here)"
            if answering
            else "starting or unhealthy"
            if mine
            else "stopped"
        )
        out.append(Report(server.name, state, server.shows))
    return out


def describe(profile: Profile) -> list[str]:
    """The lines ``up`` ends with: every address, the stores the servers use."""
    lines = [s.shows for s in servers(profile) if s.shows]
    feast = profile.feast
    if feast.registry_url or feast.online_store == "redis":
        lines.append(
            f"Feast       registry {_redact(feast.registry_url or 'file under the state folder')}; "
            f"online store {feast.online_store}"
            + (
                f" {_redact('redis://' + feast.redis_connection_string)}"
                if feast.online_store == "redis"
                else ""
            )
        )
    lines.append(f"State       {profile.state_dir} (partitions, offline store, reports)")
    return lines


def environment(profile: Profile) -> dict[str, Any]:
    """What a client of the stack needs in its environment (``PREFECT_API_URL``)."""
    return {"PREFECT_API_URL": profile.prefect.api_url} if profile.prefect.api_url else {}


# ------------------------------------------------------------------- preflight


def _probe_http(url: str) -> str | None:
    import httpx

    try:
        response = httpx.get(url, timeout=3.0)
    except httpx.HTTPError as exc:
        return _first_line(exc) or type(exc).__name__
    return None if response.status_code == 200 else f"HTTP {response.status_code}"


def problems(profile: Profile) -> list[str]:
    """What the profile points at that does not answer, one line each with the fix
    (empty for the local profile, which needs nothing running)."""
    out: list[str] = []
    start = "start the stack (make prod-up) or point the profile elsewhere"
    tracking = profile.mlflow.tracking_uri or ""
    if tracking.startswith(("http://", "https://")):
        why = _probe_http(tracking.rstrip("/") + "/health")
        if why:
            out.append(
                f"the MLflow tracking server at {tracking} does not answer ({why}): {start} "
                "(FRAUD_PROFILE__MLFLOW__TRACKING_URI)"
            )
    api = os.environ.get("PREFECT_API_URL") or profile.prefect.api_url
    if api and profile.prefect.api_url:
        why = _probe_http(api.rstrip("/") + "/health")
        if why:
            out.append(
                f"the Prefect server at {api} does not answer ({why}): {start} "
                "(PREFECT_API_URL / FRAUD_PROFILE__PREFECT__API_URL)"
            )
    for label, url in (
        ("Feast's registry database", profile.feast.registry_url),
        ("the promotion lock's database", profile.mlflow.promotion_lock_url),
    ):
        if url:
            why = _probe_postgres(url)
            if why:
                out.append(f"{label} at {_redact(url)} does not answer ({why}): {start}")
    if profile.feast.online_store == "redis":
        why = _probe_redis(profile.feast.redis_connection_string)
        if why:
            out.append(
                f"the Redis online store at {profile.feast.redis_connection_string.split(',')[0]} "
                f"does not answer ({why}): start Redis (make services) or set "
                "FRAUD_PROFILE__FEAST__REDIS_CONNECTION_STRING"
            )
    return out


def _probe_postgres(url: str) -> str | None:
    import psycopg

    try:
        with psycopg.connect(postgres_dsn(url), connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return _first_line(exc)


def _probe_redis(connection: str) -> str | None:
    import redis

    host, _, port = connection.split(",")[0].partition(":")
    options = dict(part.split("=", 1) for part in connection.split(",")[1:] if "=" in part)
    try:
        client = redis.Redis(
            host=host or "127.0.0.1",
            port=int(port or 6379),
            password=options.get("password"),
            ssl=options.get("ssl", "").lower() == "true",
            socket_connect_timeout=3,
        )
        client.ping()
        client.close()
    except redis.RedisError as exc:
        return _first_line(exc)
    return None


def preflight(profile: Profile) -> None:
    """Raise :class:`StackError` naming the first service the profile needs that does
    not answer, so a command fails in one line before it starts, not minutes into it."""
    found = problems(profile)
    if found:
        more = f" (and {len(found) - 1} more: fraud stack status)" if len(found) > 1 else ""
        raise StackError(found[0] + more)

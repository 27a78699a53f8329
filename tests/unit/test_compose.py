"""docker-compose.yml, the production stack on one host, kept true without a Docker engine.

No engine runs here, so these tests read the file: every server `make prod-up` starts (and
the worker and API using them) is a service; the published ports are the production
profile's; every ``FRAUD_PROFILE__...`` variable is a real profile key and points at a
service of the file; the databases the init script creates are the profile's; the servers
run with the flags ``stack.py`` gives them; no secret is written out; the API refuses to
start without its key; every dependency has a health check; every build path exists. With
``docker compose`` (v2) installed, it also validates the file itself.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel

from fraud_detection.config import ConfigError, Profile, load_profile
from fraud_detection.stack import servers

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
PREFIX = "FRAUD_PROFILE__"

# The services that run project code: they need the profile's addresses and the state volume.
PROJECT_CODE = ("prefect-worker", "dask-worker", "serving")
# Each server stack.py starts, the compose service running it, and the words of its command.
SERVERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "mlflow": ("mlflow", ("mlflow", "server")),
    "prefect": ("prefect-server", ("prefect", "server", "start")),
    "dask-scheduler": ("dask-scheduler", ("dask", "scheduler")),
    "dask-workers": ("dask-worker", ("dask", "worker")),
}
# Flags a container needs beyond stack.py's: MLflow refuses the Host header `mlflow:5000`
# unless it is allowed (stack.py's clients use 127.0.0.1, allowed by default).
EXTRA_FLAGS = {"mlflow": {"--allowed-hosts"}}
# What the stack's migrations run (stack.migrate), before each server starts.
MIGRATIONS = {
    "mlflow": ("mlflow", "db", "upgrade"),
    "prefect-server": ("prefect", "server", "database", "upgrade"),
}
# Variables besides FRAUD_PROFILE__* that hold a service's address.
ADDRESS_VARS = ("PREFECT_API_URL", "PREFECT_API_DATABASE_CONNECTION_URL")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|AUTH", re.IGNORECASE)
# A value that is a reference, not a secret: ${VAR...} (compose) or $$VAR / $${VAR} (container).
REFERENCE = re.compile(r"\$\{[A-Za-z_]\w*(?:[:?\-][^}]*)?\}|\$\$\{?[A-Za-z_]\w*\}?")


# ------------------------------------------------------------------------ reading


@cache
def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict), f"{COMPOSE}: not a mapping"
    assert "services" in data, f"{COMPOSE}: no services"
    return data


def _services() -> dict[str, dict[str, Any]]:
    return dict(_compose()["services"])


def _service(name: str) -> dict[str, Any]:
    services = _services()
    assert name in services, f"docker-compose.yml has no service {name!r}"
    return services[name]


def _raw_env(service: str) -> dict[str, str]:
    """The service's environment as written (``${...}`` references left in)."""
    env = _service(service).get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _interpolate(value: str) -> str:
    """``value`` as compose would pass it, with a stand-in for each variable: its default
    for ``${VAR:-default}``, else ``test-<var>``; ``$$`` is a literal ``$``."""

    def stand_in(match: re.Match[str]) -> str:
        name, _, rest = match[1].partition(":")
        return rest[1:] if rest.startswith("-") else f"test-{name.lower()}"

    return re.sub(r"\$\{([^}]+)\}", stand_in, value).replace("$$", "$")


def _env(service: str) -> dict[str, str]:
    return {k: _interpolate(v) for k, v in _raw_env(service).items()}


def _profile_env() -> dict[str, str]:
    """Every FRAUD_PROFILE__ variable of the file (one value each: checked below)."""
    out: dict[str, str] = {}
    for name in _services():
        for key, value in _env(name).items():
            if key.startswith(PREFIX):
                assert out.setdefault(key, value) == value, (
                    f"{key} has two values in docker-compose.yml ({out[key]!r}, {value!r}): "
                    "every service must see the same profile"
                )
    return out


def _tokens(service: str) -> list[str]:
    """The service's command as words, the script of ``sh -c`` split as the shell would,
    with the container's variables (``$NAME``) replaced by their values."""
    command = _service(service).get("command") or []
    if isinstance(command, str):
        words = shlex.split(_interpolate(command))
    else:
        words = [_interpolate(str(c)) for c in command]
        if words[:1] == ["sh"] and len(words) >= 3 and re.fullmatch(r"-\w*c\w*", words[1]):
            words = shlex.split(words[-1])
    env = _env(service)
    return [
        re.sub(r"\$\{?([A-Za-z_]\w*)\}?", lambda m: env.get(m[1], m[0]), word) for word in words
    ]


def _invocation(tokens: list[str], words: tuple[str, ...]) -> list[str] | None:
    """The arguments after ``words`` in ``tokens``, up to the next shell operator."""
    for i in range(len(tokens) - len(words) + 1):
        if tuple(tokens[i : i + len(words)]) == words:
            args = []
            for token in tokens[i + len(words) :]:
                if token in {"&&", "||", ";", "|", "}", "};"}:
                    break
                if token.endswith(";"):
                    args.append(token[:-1])
                    break
                args.append(token)
            return args
    return None


def _flags(args: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in args if a.startswith("--")}


def _option(args: list[str], flag: str) -> str:
    assert flag in args, f"no {flag} in {args}"
    return args[args.index(flag) + 1]


def _ports(service: str) -> list[tuple[str, int, int]]:
    """(host address, published port, container port) of each published port."""
    out = []
    for port in _service(service).get("ports") or []:
        if isinstance(port, dict):
            host = str(port.get("host_ip", "0.0.0.0"))
            out.append((host, int(port["published"]), int(port["target"])))
            continue
        parts = str(port).split("/")[0].split(":")
        host = parts[0] if len(parts) == 3 else "0.0.0.0"
        published = parts[-2] if len(parts) >= 2 else parts[-1]
        out.append((host, int(published), int(parts[-1])))
    return out


def _mounts(service: str) -> dict[str, str]:
    """Mount target → source (a named volume or a host path) of the service's volumes."""
    out = {}
    for volume in _service(service).get("volumes") or []:
        if isinstance(volume, dict):
            out[str(volume["target"])] = str(volume.get("source", ""))
        else:
            source, target = str(volume).split(":")[:2]
            out[target] = source
    return out


def _host(value: str) -> tuple[str, int | None] | None:
    """The (service, port) an address points at; None for a value that is no address."""
    if "://" in value:
        parts = urlsplit(value)
        return parts.hostname or "", parts.port
    match = re.fullmatch(r"([A-Za-z0-9._-]+):(\d+)(,.*)?", value)  # Feast's host:port[,...]
    return (match[1], int(match[2])) if match else None


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No FRAUD_ variable of the caller's shell, and no .env of the checkout, is read."""
    for key in list(os.environ):
        if key.startswith("FRAUD_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FRAUD_PROJECT_DIR", str(ROOT))
    return monkeypatch


def _load(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Profile:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_profile("production")


# ----------------------------------------------------------------- the services


def test_every_server_of_the_stack_and_its_users_is_a_service(
    clean_env: pytest.MonkeyPatch,
) -> None:
    profile = _load(clean_env, {})
    started = {s.name for s in servers(profile)}
    unmapped = started - set(SERVERS)
    assert not unmapped, (
        f"stack.py starts {sorted(unmapped)}, which docker-compose.yml does not run: add a "
        "service for each and map it in SERVERS in tests/unit/test_compose.py"
    )
    wanted = {"postgres", "redis", *(SERVERS[s][0] for s in started), *PROJECT_CODE}
    missing = wanted - set(_services())
    assert not missing, f"docker-compose.yml lacks the services {sorted(missing)}"


def test_published_ports_are_the_production_profiles(clean_env: pytest.MonkeyPatch) -> None:
    profile = _load(clean_env, {})
    (exposed,) = re.findall(r"^EXPOSE\s+(\d+)", (ROOT / "Dockerfile").read_text(), re.M)

    def port(address: str | None) -> int:
        found = _host(address or "")
        port = found[1] if found else None
        assert port, f"configs/profiles/production.yaml: no port in {address!r}"
        return port

    expected = {
        "postgres": port(profile.postgres.admin_url),
        "redis": port(profile.feast.redis_connection_string),
        "mlflow": port(profile.mlflow.tracking_uri),
        "prefect-server": port(profile.prefect.api_url),
        "dask-scheduler": port(profile.dask.scheduler_address),
        "serving": int(exposed),
    }
    assert sorted(expected.values()) == [4200, 5000, 5432, 6379, 8000, 8786]
    for name in _services():
        published = {(p, t) for _, p, t in _ports(name)}
        if name in expected:
            want = expected[name]
            assert published == {(want, want)}, (
                f"docker-compose.yml: {name} publishes {sorted(published)}; the production "
                f'profile expects port {want}: ports: ["127.0.0.1:{want}:{want}"]'
            )
        else:
            assert not published, f"docker-compose.yml: {name} publishes {published}: none needed"
    # No authentication (Dask) or not for the world (the databases): the host only.
    for name in ("postgres", "redis", "dask-scheduler"):
        hosts = {h for h, _, _ in _ports(name)}
        assert hosts == {"127.0.0.1"}, f"{name} is published on {hosts}: keep it on 127.0.0.1"


# ------------------------------------------------------------ profile variables


def _model_field(path: list[str]) -> bool:
    """``path`` (lower-case keys) names a field of the Profile model."""
    model: type[BaseModel] = Profile
    for i, key in enumerate(path):
        field = model.model_fields.get(key)
        if field is None:
            return False
        annotation = field.annotation
        if i < len(path) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return False
            model = annotation
    return True


def _key_path(variable: str) -> list[str]:
    return variable.removeprefix(PREFIX).lower().split("__")


def test_every_profile_variable_is_a_key_of_the_profile(clean_env: pytest.MonkeyPatch) -> None:
    env = _profile_env()
    assert len(env) >= 8
    for variable in env:
        assert _model_field(_key_path(variable)), (
            f"docker-compose.yml sets {variable}, which is no key of the profile "
            f"({'.'.join(_key_path(variable))} is not in configs/profiles/production.yaml's "
            "model, src/fraud_detection/config.py Profile): misspelt?"
        )
    # The loader takes every one of them, with the value the file gives.
    profile = _load(clean_env, {"FRAUD_PROFILE": "production", **env})
    for variable, value in env.items():
        got: Any = profile
        for key in _key_path(variable):
            got = getattr(got, key)
        assert str(got) == value, f"{variable}={value!r} loads as {got!r}"


def test_a_misspelt_key_in_a_section_is_refused(clean_env: pytest.MonkeyPatch) -> None:
    # What protects the variables above at run time: extra keys are forbidden.
    with pytest.raises(ConfigError, match=r"MLFLOW__TRACKING_URL \(did you mean .*TRACKING_URI"):
        _load(clean_env, {PREFIX + "MLFLOW__TRACKING_URL": "http://mlflow:5000"})


def test_a_misspelt_section_is_refused(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"(?i)mlfow"):
        _load(clean_env, {PREFIX + "MLFOW__TRACKING_URI": "http://mlflow:5000"})


def _address_variables() -> Iterator[tuple[str, str, str]]:
    """(service, variable, value) of every address or path a service is given."""
    for name in _services():
        for key, value in _env(name).items():
            if key.startswith(PREFIX) or key in ADDRESS_VARS:
                yield name, key, value


def test_profile_addresses_point_at_services_and_paths_at_volumes() -> None:
    services = _services()
    seen = 0
    for name, variable, value in _address_variables():
        found = _host(value)
        if found is None:
            if value.startswith("/"):  # a path: it must be on a volume the service mounts
                assert any(value == t or value.startswith(t + "/") for t in _mounts(name)), (
                    f"docker-compose.yml: {name}'s {variable}={value} is on no volume it mounts"
                )
            continue
        host, port = found
        seen += 1
        assert host in services, (
            f"docker-compose.yml: {name}'s {variable} points at {host!r}, which is no service "
            f"of the file (services: {', '.join(sorted(services))})"
        )
        container_ports = {t for _, _, t in _ports(host)}
        assert port in container_ports, (
            f"docker-compose.yml: {name}'s {variable} uses port {port} of {host}, which "
            f"listens on {sorted(container_ports)}"
        )
    assert seen >= 8


def test_services_running_project_code_share_the_profile_and_the_state_volume() -> None:
    required = {
        "STATE_DIR",
        "MLFLOW__TRACKING_URI",
        "MLFLOW__PROMOTION_LOCK_URL",
        "PREFECT__API_URL",
        "FEAST__REGISTRY_URL",
        "FEAST__REDIS_CONNECTION_STRING",
        "DASK__SCHEDULER_ADDRESS",
    }
    volumes = set()
    for name in PROJECT_CODE:
        env = _env(name)
        assert env.get("FRAUD_PROFILE") == "production", f"{name}: FRAUD_PROFILE=production"
        missing = {PREFIX + k for k in required} - set(env)
        assert not missing, f"docker-compose.yml: {name} lacks {sorted(missing)}"
        state = env[PREFIX + "STATE_DIR"]
        source = _mounts(name).get(state)
        assert source, f"docker-compose.yml: {name} mounts no volume at its state folder {state}"
        volumes.add(source)
    assert len(volumes) == 1, f"the state folder is not one shared volume: {volumes}"
    (volume,) = volumes
    assert volume in (_compose().get("volumes") or {}), f"{volume} is no named volume"
    # MLflow's proxied artifacts live in the same volume.
    artifacts = _env("mlflow")[PREFIX + "MLFLOW_SERVER__ARTIFACTS_DESTINATION"]
    assert any(artifacts.startswith(t + "/") and s == volume for t, s in _mounts("mlflow").items())


def test_the_init_script_creates_the_profiles_databases(clean_env: pytest.MonkeyPatch) -> None:
    profile = _load(clean_env, {})
    mounts = _mounts("postgres")
    scripts = [s for t, s in mounts.items() if t.startswith("/docker-entrypoint-initdb.d/")]
    assert scripts, "postgres: no init script mounted into /docker-entrypoint-initdb.d/"
    created = []
    for script in scripts:
        path = ROOT / script
        assert path.is_file(), f"postgres mounts {script}, which does not exist"
        created += re.findall(r"^\s*CREATE DATABASE\s+(\w+)", path.read_text(), re.I | re.M)
    assert sorted(created) == sorted(profile.postgres.databases), (
        f"{', '.join(scripts)} creates {created}; the production profile's postgres.databases "
        f"is {list(profile.postgres.databases)}"
    )


def test_env_example_lists_real_profile_keys_and_every_variable_compose_needs() -> None:
    text = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, re.M))
    for variable in sorted(v for v in listed if v.startswith(PREFIX)):
        assert _model_field(_key_path(variable)), f".env.example: {variable} is no profile key"
    # What production.yaml says to override from the environment, with the secrets.
    assert {PREFIX + "MLFLOW__PROMOTION_LOCK_URL", PREFIX + "POSTGRES__ADMIN_URL"} <= listed
    needed = {
        name
        for _, _, value in _strings(_compose())
        for name in re.findall(r"(?<!\$)\$\{([A-Za-z_]\w*)", value)
    }
    assert {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "FRAUD_API_KEY"} <= needed
    assert needed <= listed, f".env.example does not list {sorted(needed - listed)}"


# --------------------------------------------------------------- the commands


def test_servers_run_with_the_flags_stack_py_gives_them(clean_env: pytest.MonkeyPatch) -> None:
    env = _profile_env()
    profile = _load(clean_env, env)
    started = servers(profile)
    assert {s.name for s in started} == set(SERVERS)
    for server in started:
        service, words = SERVERS[server.name]
        stack_args = _invocation([Path(server.command[0]).name, *server.command[1:]], words)
        ours = _invocation(_tokens(service), words)
        assert stack_args is not None
        assert ours is not None, f"docker-compose.yml: {service} does not run `{' '.join(words)}`"
        want = _flags(stack_args) | EXTRA_FLAGS.get(server.name, set())
        assert _flags(ours) == want, (
            f"docker-compose.yml: {service} runs `{' '.join(words)}` with "
            f"{sorted(_flags(ours))}; stack.py with {sorted(_flags(stack_args))}: missing "
            f"{sorted(want - _flags(ours))}, unexpected {sorted(_flags(ours) - want)}"
        )
        if "--host" in ours:  # reachable from the other containers
            assert _option(ours, "--host") == "0.0.0.0", f"{service}: --host 0.0.0.0"
        if "--port" in ours:
            assert int(_option(ours, "--port")) == server.port, f"{service}: --port {server.port}"
    for service, words in MIGRATIONS.items():
        assert _invocation(_tokens(service), words) is not None, (
            f"docker-compose.yml: {service} must run `{' '.join(words)}` before the server, "
            "as `make prod-up` does"
        )
    # The values behind the flags.
    mlflow = _invocation(_tokens("mlflow"), SERVERS["mlflow"][1]) or []
    backend = urlsplit(_option(mlflow, "--backend-store-uri"))
    profiles = urlsplit(profile.mlflow_server.backend_store_uri or "")
    assert (backend.scheme, backend.hostname, backend.path) == (
        profiles.scheme,
        "postgres",
        profiles.path,
    ), f"mlflow's backend store is {backend.geturl()}; the profile's {profiles.geturl()}"
    allowed = _option(mlflow, "--allowed-hosts").split(",")
    assert any(fnmatch.fnmatch("mlflow:5000", a) for a in allowed), allowed
    workers = _invocation(_tokens("dask-worker"), SERVERS["dask-workers"][1]) or []
    assert workers[:1] == [env[PREFIX + "DASK__SCHEDULER_ADDRESS"]], (
        f"dask-worker must connect to dask.scheduler_address; it runs `dask worker {workers}`"
    )
    for flag, want in (
        ("--nworkers", profile.dask.workers),
        ("--nthreads", profile.dask.threads_per_worker),
    ):
        assert int(_option(workers, flag)) == want, f"dask-worker: {flag} {want}, as the profile"


def test_the_prefect_server_uses_the_profiles_database(clean_env: pytest.MonkeyPatch) -> None:
    profile = _load(clean_env, {})
    url = urlsplit(_env("prefect-server")["PREFECT_API_DATABASE_CONNECTION_URL"])
    want = urlsplit(profile.prefect.database_url or "")
    assert (url.scheme, url.hostname, url.port, url.path) == (
        want.scheme,
        "postgres",
        want.port,
        want.path,
    ), f"prefect-server's database is {url.geturl()}; the profile's {want.geturl()}"


def test_the_worker_polls_the_work_pool_of_the_deployments() -> None:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    pools = {d["work_pool"]["name"] for d in config["deployments"]}
    start = _invocation(_tokens("prefect-worker"), ("prefect", "worker", "start")) or []
    pool = _option(start, "--pool")
    assert {pool} == pools, f"prefect-worker polls {pool}; prefect.yaml's deployments use {pools}"
    assert _option(start, "--type") == "process"
    assert "--with-healthcheck" in start  # what its health check asks


# ---------------------------------------------------------------- secrets, API key


def _strings(node: Any, where: str = "") -> Iterator[tuple[str, str, str]]:
    """(where, key, value) of every string in the file (keys of environment mappings kept)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, (dict, list)):
                yield from _strings(value, f"{where}.{key}")
            elif value is not None:
                yield where, str(key), str(value)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{where}[{i}]")
    elif node is not None:
        yield where, "", str(node)


def _literal_secrets(key: str, value: str) -> list[str]:
    """Secrets written out in ``value`` (of key ``key``), not referenced."""
    found = []
    candidates = re.findall(r"://[^:/@\s]+:([^@\s]+)@", value)  # user:password@host
    candidates += re.findall(r"password=([^,\s]+)", value, re.I)
    candidates += re.findall(r"--requirepass\s+(\S+)", value)
    if SECRET_NAME.search(key):
        candidates.append(value)
    for candidate in candidates:
        if REFERENCE.sub("", candidate.strip("'\"")):
            found.append(candidate)
    return found


def test_the_secret_check_catches_a_written_out_password() -> None:
    # pragma: allowlist nextline secret
    assert _literal_secrets("URL", "postgresql://postgres:hunter2@postgres:5432/mlflow")
    assert _literal_secrets("X", "redis:6379,password=hunter2")
    assert _literal_secrets("POSTGRES_PASSWORD", "hunter2")
    assert _literal_secrets("C", 'redis-server --requirepass "hunter2"')
    assert not _literal_secrets("URL", "postgresql://postgres:${POSTGRES_PASSWORD}@postgres/x")
    assert not _literal_secrets("FRAUD_API_KEY", "${FRAUD_API_KEY:?set it}")
    assert not _literal_secrets("C", 'redis-server --requirepass "$$REDIS_PASSWORD"')


def test_no_secret_is_written_in_the_file() -> None:
    for where, key, value in _strings(_compose()):
        found = _literal_secrets(key, value)
        assert not found, (
            f"docker-compose.yml{where}.{key}: a literal secret {found}: use a ${{VAR}} "
            "reference (set in the environment or .env, see .env.example)"
        )


def test_serving_runs_the_production_profile_and_refuses_to_start_without_a_key(
    clean_env: pytest.MonkeyPatch,
) -> None:
    assert _load(clean_env, {}).serving.api_key_required
    env = _raw_env("serving")
    assert env.get("FRAUD_PROFILE") == "production"
    assert re.fullmatch(r"\$\{FRAUD_API_KEY:\?[^}]+\}", env.get("FRAUD_API_KEY", "")), (
        "serving: FRAUD_API_KEY: ${FRAUD_API_KEY:?message}, so compose refuses to start "
        f"without it (got {env.get('FRAUD_API_KEY')!r})"
    )
    assert _service("serving")["build"]["dockerfile"] == "Dockerfile"


# -------------------------------------------------------- dependencies and builds


def test_every_dependency_exists_and_reports_its_health() -> None:
    services = _services()
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            pytest.fail(f"{name}: depends_on as a list waits for nothing: use condition: ...")
        for target, how in depends.items():
            assert target in services, f"{name} depends on {target!r}, which is no service"
            assert how.get("condition") == "service_healthy", (
                f"{name} → {target}: condition: service_healthy (else it starts too early)"
            )
            assert services[target].get("healthcheck", {}).get("test"), (
                f"{name} waits for {target} to be healthy, but {target} has no healthcheck"
            )


def _builds() -> Iterator[tuple[str, Path, Path]]:
    for name, service in _services().items():
        build = service.get("build")
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = ROOT / build.get("context", ".")
        yield name, context, context / build.get("dockerfile", "Dockerfile")


def _copied(dockerfile: Path) -> set[str]:
    """What the Dockerfile copies from the build context (COPY without --from)."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    out = set()
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            out |= {w.rstrip("/") for w in words[1:-1] if not w.startswith("--")}
    return out


def test_every_build_exists_and_its_context_holds_what_it_copies() -> None:
    builds = list(_builds())
    assert len(builds) >= 2
    for name, context, dockerfile in builds:
        assert context.is_dir(), f"{name}: build context {context} does not exist"
        assert dockerfile.is_file(), f"{name}: no Dockerfile {dockerfile}"
        # BuildKit reads <Dockerfile>.dockerignore beside it, else the context's .dockerignore.
        ignore = Path(f"{dockerfile}.dockerignore")
        ignore = ignore if ignore.is_file() else context / ".dockerignore"
        lines = ignore.read_text().splitlines() if ignore.is_file() else []
        ignored = {line.strip().rstrip("/") for line in lines if not line.startswith("#")}
        for source in _copied(dockerfile):
            assert (context / source).exists(), f"{dockerfile.name} copies {source}: missing"
            assert source not in ignored, (
                f"{dockerfile.name} copies {source}, which {ignore.relative_to(ROOT)} leaves "
                "out of the build context"
            )


def _image_user_and_state(dockerfile: Path) -> tuple[str, str]:
    text = dockerfile.read_text()
    user = re.findall(r"^USER\s+(\S+)", text, re.M)[-1]
    (state,) = re.findall(r"FRAUD_PROFILE__STATE_DIR=(\S+)", text)
    return user, state


def test_both_images_own_the_shared_state_volume_alike() -> None:
    # The first container to mount the empty volume gives it its owner: the same in both.
    pipeline = ROOT / "docker" / "Dockerfile.pipeline"
    assert _image_user_and_state(pipeline) == _image_user_and_state(ROOT / "Dockerfile")
    _, state = _image_user_and_state(pipeline)
    assert _env("serving")[PREFIX + "STATE_DIR"] == state


def test_hadolint_passes_on_the_pipeline_image() -> None:
    hadolint = ROOT / ".venv" / "bin" / "hadolint"
    out = subprocess.run(
        [hadolint, ROOT / "docker" / "Dockerfile.pipeline"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


# ---------------------------------------------------------------- docker compose


def _has_docker_compose() -> bool:
    """``docker compose`` (v2) is installed (``config`` reads the file without a daemon)."""
    if shutil.which("docker") is None:
        return False
    out = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    return out.returncode == 0


def test_docker_compose_accepts_the_file_and_demands_the_secrets() -> None:
    if not _has_docker_compose():
        pytest.skip("docker compose (v2) is not installed: the file's own check is skipped")
    secrets = {"POSTGRES_PASSWORD": "p", "REDIS_PASSWORD": "r", "FRAUD_API_KEY": "k"}
    base = {k: v for k, v in os.environ.items() if k not in secrets}
    run = ["docker", "compose", "--project-directory", str(ROOT), "-f", str(COMPOSE)]
    run += ["config", "-q"]
    ok = subprocess.run(run, env={**base, **secrets}, capture_output=True, text=True, cwd=ROOT)
    if ok.returncode != 0 and "Cannot connect to the Docker daemon" in ok.stderr:
        pytest.skip("this docker compose needs a Docker daemon even for `config`: none answers")
    assert ok.returncode == 0, ok.stderr
    without = {k: v for k, v in secrets.items() if k != "FRAUD_API_KEY"}
    refused = subprocess.run(run, env={**base, **without}, capture_output=True, text=True)
    assert refused.returncode != 0
    assert "FRAUD_API_KEY" in refused.stderr

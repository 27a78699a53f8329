"""Level 2: the level-1 flows as Prefect deployments, on a local server or a remote one.

``make deploy`` (``up``) starts a local Prefect server if none answers (SQLite under the
state folder), creates the ``fraud-local`` process work pool, starts a worker and checks
that it polls the pool (a run nobody polls for sits in "Late" forever), registers every
deployment of ``prefect.yaml`` with ``prefect deploy --all``, then runs the
``ct-on-demand`` deployment and prints its UI link and CT result. Before it starts a
worker, runs that came due while none polled (the schedules went on while ``make stop``
had stopped it) are cancelled, so the worker does not work through a backlog first. ``make stop``
(``down``) ends exactly the processes ``up`` started, by the process ids it recorded in
``<state>/deploy/``.
Deployments start from a schedule, by hand, or from Prefect events through their
``triggers:`` (``prefect deploy`` turns each into an automation; see
:mod:`fraud_detection.events` for what emits what).
``make deploy-status`` (``status``) and ``make check-deployments`` (``check``, no server
needed: what CI runs) inspect; ``make deploy-prefect`` (``remote``) registers the same
deployments on the Prefect server of ``PREFECT_API_URL`` (what ``cd.yml`` runs).

Run: ``python -m pipelines.level2_cicd.deploy up|down|status|check|remote``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

import typer

from fraud_detection.errors import FraudError

POOL = "fraud-local"
ON_DEMAND = "continuous-training/ct-on-demand"
DEFAULT_PORT = 4200
SERVER_TIMEOUT_S = 120  # a local server is healthy after ~15-25 s on a laptop
WORKER_TIMEOUT_S = 90
RUN_TIMEOUT_S = 900
STOP_GRACE_S = 15
FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
WORKER_COMMAND = f"prefect worker start --pool {POOL}"

app = typer.Typer(
    help="Level 2: Prefect deployments of the level-1 flows (make deploy / stop / ...).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class DeployError(FraudError):
    """A deployment step failed; the message says which and what to do."""


# ------------------------------------------------------------------ where things are


@dataclass(frozen=True)
class Target:
    """The Prefect API to deploy to, and whether ``up`` may start a server for it."""

    api_url: str

    @property
    def host(self) -> str:
        return urlparse(self.api_url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlparse(self.api_url).port or DEFAULT_PORT

    @property
    def local(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "0.0.0.0")  # noqa: S104  (compared, not bound)

    @property
    def ui_url(self) -> str:
        return self.api_url.rstrip("/").removesuffix("/api")

    def run_url(self, flow_run_id: Any) -> str:
        return f"{self.ui_url}/runs/flow-run/{flow_run_id}"


def local_target() -> Target:
    """``$PREFECT_API_URL`` if set, else the profile's ``prefect.api_url`` (the production
    profile's server, which ``make prod-up`` starts), else
    ``http://127.0.0.1:$FRAUD_DEPLOY_PORT/api``."""
    if url := os.environ.get("PREFECT_API_URL"):
        return Target(api_url=url.rstrip("/"))
    from fraud_detection.config import load_profile

    if url := load_profile().prefect.api_url:
        return Target(api_url=url.rstrip("/"))
    port = os.environ.get("FRAUD_DEPLOY_PORT", str(DEFAULT_PORT))
    if not port.isdigit():
        raise DeployError(f"FRAUD_DEPLOY_PORT={port!r} is not a port number")
    return Target(api_url=f"http://127.0.0.1:{port}/api")


def _root() -> Path:
    from fraud_detection.config import project_dir

    return project_dir()


def _state() -> Path:
    from fraud_detection.config import load_profile

    return load_profile().state_dir


def _bin(name: str) -> str:
    """A console script of this environment (``prefect``), beside the running Python."""
    return str(Path(sys.executable).with_name(name))


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _environment(state: Path, target: Target, release: Release | None = None) -> dict[str, str]:
    """What the server, ``prefect deploy``, the worker and its flow runs see.

    Prefect's home (database, results, logs) is inside the state folder, as for
    ``fraud ct run``; every process talks to ``target``; flow runs use this state folder;
    ``prefect deploy`` pins ``release`` in the pull step (prefect.yaml's build steps).
    """
    from fraud_detection.orchestration.local import prefect_environment

    prefect_environment(state)
    env = dict(os.environ)
    env["PREFECT_API_URL"] = target.api_url
    env["FRAUD_PROFILE__STATE_DIR"] = str(state)
    if release is not None:
        env.update(release.environment())
    # Deployed runs log at INFO, so the Prefect UI shows each step of a run.
    env["PREFECT_LOGGING_LEVEL"] = "INFO"
    # A worker asks for work every 5 s (not 10) and reports every 10 s (not 30): a local
    # run starts sooner, and a dead worker shows as offline within ~30 s.
    env.setdefault("PREFECT_WORKER_QUERY_SECONDS", "5")
    env.setdefault("PREFECT_WORKER_HEARTBEAT_SECONDS", "10")
    os.environ.update({k: env[k] for k in ("PREFECT_API_URL", "FRAUD_PROFILE__STATE_DIR")})
    return env


# ------------------------------------------------------------------ what runs pull

SHA = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class Release:
    """The code deployed runs clone: a repository and one commit of it (prefect.yaml's
    ``git_clone`` pull step), and for a private repository the Prefect Secret block
    holding a token to clone it with."""

    repository: str
    commit: str
    token_block: str | None = None

    def environment(self) -> dict[str, str]:
        """What prefect.yaml's build steps read while ``prefect deploy`` runs."""
        token = f"{{{{ prefect.blocks.secret.{self.token_block} }}}}" if self.token_block else ""
        return {
            "FRAUD_DEPLOY_REPOSITORY": self.repository,
            "FRAUD_DEPLOY_COMMIT": self.commit,
            "FRAUD_DEPLOY_ACCESS_TOKEN": token,
        }

    def describe(self) -> str:
        via = f" (token: Prefect Secret block {self.token_block})" if self.token_block else ""
        return f"commit {self.commit[:12]} of {self.repository}{via}"


def _git(root: Path, *args: str) -> str | None:
    """``git -C root <args>``'s output, ``None`` when it fails or git is missing."""
    try:
        result = subprocess.run(  # noqa: S603  (git, our own arguments, no shell)
            ["git", "--no-optional-locks", "-C", str(root), *args],  # noqa: S607  (git on PATH)
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def release_from_environment(root: Path, *, local: bool) -> Release:
    """What runs will pull: ``$FRAUD_DEPLOY_REPOSITORY`` at ``$FRAUD_DEPLOY_REF`` (a sha,
    tag or branch, pinned to its commit sha here), with the Secret block named by
    ``$FRAUD_DEPLOY_GIT_TOKEN_BLOCK`` for a private repository.

    Unset, they default to this checkout: its ``origin`` remote (``local``: the checkout
    itself as a ``file://`` remote, for ``make deploy``) at its ``HEAD`` commit.
    Uncommitted changes are not in that commit: one line says so.
    """
    ref = os.environ.get("FRAUD_DEPLOY_REF", "").strip() or "HEAD"
    repository = os.environ.get("FRAUD_DEPLOY_REPOSITORY", "").strip()
    block = os.environ.get("FRAUD_DEPLOY_GIT_TOKEN_BLOCK", "").strip() or None
    if block is not None and not re.fullmatch(r"[a-z0-9][a-z0-9-]*", block):
        raise DeployError(
            f"FRAUD_DEPLOY_GIT_TOKEN_BLOCK={block!r} is not a Prefect block name "
            "(lowercase letters, digits and dashes)"
        )
    checkout = _git(root, "rev-parse", "--show-toplevel") is not None
    if not repository:
        if not checkout:
            raise DeployError(
                f"deployed runs clone the released commit, but {root} is not a git checkout: "
                "`git init` and commit, or set FRAUD_DEPLOY_REPOSITORY and FRAUD_DEPLOY_REF"
            )
        repository = (
            root.resolve().as_uri() if local else (_git(root, "remote", "get-url", "origin") or "")
        )
        if not repository:
            raise DeployError(
                f"{root} has no `origin` remote to pull from: set FRAUD_DEPLOY_REPOSITORY "
                "(cd.yml passes the GitHub repository's URL)"
            )
    commit = (
        _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}") if checkout else None
    )
    if commit is None:
        if not SHA.fullmatch(ref):
            raise DeployError(
                f"FRAUD_DEPLOY_REF={ref!r} is not a commit of {root}: give a full commit "
                "sha, or a tag or branch this checkout has"
            )
        commit = ref  # a full sha this (shallow) checkout lacks: the worker fetches it
    elif ref == "HEAD" and _git(root, "status", "--porcelain", "--untracked-files=no"):
        typer.echo(
            f"warning: {root} has uncommitted changes; runs use commit {commit[:12]}, "
            "without them (commit first to deploy them)",
            err=True,
        )
    return Release(repository=repository, commit=commit, token_block=block)


# ------------------------------------------------------------- recorded processes


def _records_path(state: Path) -> Path:
    return state / "deploy" / "pids.json"


def _load_records(state: Path) -> dict[str, Any]:
    path = _records_path(state)
    if not path.exists():
        return {"processes": {}}
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DeployError(f"{path} is not valid JSON ({exc}): delete it by hand") from exc
    loaded.setdefault("processes", {})
    return loaded


def _save_records(state: Path, records: Mapping[str, Any]) -> None:
    path = _records_path(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(records, indent=2) + "\n")
    tmp.replace(path)


def _proc_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), to tell a recorded process from a new
    one that reuses its id; ``None`` where there is no ``/proc``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19]  # field 22, "starttime", counted after the ")" of the name


def _alive(pid: int) -> bool:
    """``pid`` runs and is not a zombie (an exited child nobody reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _is_recorded(entry: Mapping[str, Any]) -> bool:
    """The recorded process is still the one we started (not a reused process id)."""
    pid = int(entry["pid"])
    if not _alive(pid):
        return False
    return entry.get("start") is None or _proc_start(pid) == entry["start"]


def _still_there(entry: Mapping[str, Any]) -> bool:
    """The recorded process runs, or processes of its group outlived it.

    The kernel does not hand out an id still used as a process group id, so once the
    recorded id belongs to some other process, the recorded group is empty.
    """
    if _is_recorded(entry):
        return True
    if _alive(int(entry["pid"])):
        return False  # reused by an unrelated process
    return bool(_family(int(entry["pgid"]))[0])


def _process_table() -> list[tuple[int, int, int]]:
    """(pid, parent pid, process group) of every live process (``ps``: Linux and macOS)."""
    out = subprocess.run(
        ["ps", "-eo", "pid=,ppid=,pgid=,stat="],  # noqa: S607  (ps on PATH, fixed arguments)
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and not parts[3].startswith("Z"):
            rows.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return rows


def _family(pgid: int) -> tuple[set[int], set[int]]:
    """The processes of group ``pgid`` and all their descendants, and their groups.

    A worker starts each flow run in a session of its own: killing the worker's group
    alone would leave a run's process behind.
    """
    table = _process_table()
    pids = {pid for pid, _, group in table if group == pgid}
    grew = True
    while grew:
        more = {pid for pid, ppid, _ in table if ppid in pids and pid not in pids}
        pids |= more
        grew = bool(more)
    groups = {group for pid, _, group in table if pid in pids}
    return pids, groups


def _spawn(name: str, command: list[str], env: Mapping[str, str], log: Path) -> dict[str, Any]:
    """Start ``command`` in the background, in a process group of its own, output to
    ``log``; return what ``down`` needs to end it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as handle:
        handle.write(f"\n==== {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC: starting\n".encode())
        handle.flush()
        process = subprocess.Popen(  # noqa: S603  (prefect's CLI, from the venv, no shell)
            command,
            cwd=_root(),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: `down` ends it and its children
        )
    return {
        "name": name,
        "pid": process.pid,
        "pgid": process.pid,
        "start": _proc_start(process.pid),
        "command": command,
        "log": str(log),
        "started_at": dt.datetime.now(dt.UTC).isoformat(),
    }


def _tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return "(no log)"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join("    " + line for line in text)


# ---------------------------------------------------------------------------- client


@contextmanager
def _client(target: Target) -> Iterator[Any]:
    """A synchronous Prefect client on ``target``."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(updates={PREFECT_API_URL: target.api_url}),
        get_client(sync_client=True) as client,
    ):
        yield client


def _healthy(target: Target) -> bool:
    import httpx

    try:
        return httpx.get(f"{target.api_url}/health", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_healthy(target: Target, server: dict[str, Any] | None, log: Path) -> float:
    started = time.monotonic()
    shown = 0
    while True:
        waited = time.monotonic() - started
        if _healthy(target):
            return waited
        if server is not None and not _alive(int(server["pid"])):
            raise DeployError(
                f"the Prefect server exited before answering; its log {_shown(log)} ends:\n"
                f"{_tail(log)}"
            )
        if waited > SERVER_TIMEOUT_S:
            raise DeployError(
                f"no answer from {target.api_url}/health after {SERVER_TIMEOUT_S} s: see "
                f"{_shown(log)} (`make stop` ends the server)"
            )
        if waited >= shown + 5:
            shown = int(waited)
            typer.echo(f"  waiting for {target.api_url}/health … {shown} s")
        time.sleep(1)


def _check_server_accepts_nulls(target: Target) -> None:
    """Prefect's own client sends ``"limit": null``; a server built on fastapi >= 0.151
    rejects it (422) on every list endpoint, so ``prefect deploy`` and workers fail."""
    import httpx

    response = httpx.post(
        f"{target.api_url}/work_pools/filter", json={"limit": None, "offset": 0}, timeout=10
    )
    if response.status_code == 422:
        from importlib.metadata import version

        raise DeployError(
            f"the Prefect server at {target.api_url} rejects null fields (422 on "
            f"/work_pools/filter): prefect {version('prefect')}'s server needs fastapi<0.151 "
            f"(installed: {version('fastapi')}); pin it in pyproject.toml, `uv lock`"
        )


# ----------------------------------------------------------------------- prefect.yaml


def load_prefect_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.exists():
        raise DeployError(f"{path} not found")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DeployError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(config, dict) or not isinstance(config.get("deployments"), list):
        raise DeployError(f"{path}: expected a mapping with a `deployments:` list")
    return config


def _schedule(spec: Mapping[str, Any]) -> Any:
    """The Prefect schedule model of one ``schedules:`` item (raises if invalid)."""
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule

    timezone = {"timezone": spec["timezone"]} if spec.get("timezone") else {}
    kinds = [key for key in ("cron", "interval", "rrule") if key in spec]
    if len(kinds) != 1:
        raise ValueError("needs exactly one of cron, interval, rrule")
    if "cron" in spec:
        return CronSchedule(cron=spec["cron"], **timezone)
    if "interval" in spec:
        interval = spec["interval"]
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        return IntervalSchedule(interval=dt.timedelta(seconds=interval), **timezone)
    return RRuleSchedule(rrule=spec["rrule"], **timezone)


def _describe_schedule(spec: Mapping[str, Any]) -> str:
    if "cron" in spec:
        return f"cron {spec['cron']} {spec.get('timezone', 'UTC')}"
    if "interval" in spec:
        interval = spec["interval"]
        seconds = interval.total_seconds() if isinstance(interval, dt.timedelta) else interval
        return f"every {seconds:.0f} s"
    return f"rrule {spec.get('rrule')}"


GIT_CLONE = "prefect.deployments.steps.git_clone"
TEMPLATE = re.compile(r"^\{\{\s*(.+?)\s*\}\}$")


def check_pull(config: Mapping[str, Any]) -> list[str]:
    """Problems of the ``pull:`` section: runs must clone one pinned commit.

    A ``git_clone`` step needs a ``repository`` and a ``commit_sha`` (a branch or tag
    moves; without either it clones the default branch as it is when the run starts).
    Each may be a literal or the output of a build step (run at deploy time), never
    ``{{ $VAR }}``: Prefect reads that on the worker when the run starts.
    """
    problems: list[str] = []
    pull = config.get("pull") or []
    for deployment in config.get("deployments") or []:
        if isinstance(deployment, dict) and "pull" in deployment:
            name = deployment.get("name") or "(unnamed)"
            problems.append(f"{name}: its own pull section replaces the pinned one; remove it")
    clones = [
        step[GIT_CLONE] or {} for step in pull if isinstance(step, dict) and GIT_CLONE in step
    ]
    if len(clones) != 1:
        found = ", ".join(next(iter(s)) for s in pull if isinstance(s, dict)) or "no steps"
        return [
            *problems,
            f"pull: expected one {GIT_CLONE} step pinned to a commit, found {found}: runs "
            "would not run the released commit",
        ]
    clone = clones[0]
    build_ids = {
        spec.get("id")
        for step in config.get("build") or []
        if isinstance(step, dict)
        for spec in step.values()
        if isinstance(spec, dict)
    }
    for key in ("repository", "commit_sha"):
        value = clone.get(key)
        if value in (None, ""):
            if key == "repository":
                problems.append("pull: git_clone has no repository: nothing to clone")
            else:
                what = (
                    f"branch {clone['branch']!r}" if clone.get("branch") else "the default branch"
                )
                problems.append(
                    f"pull: git_clone has no commit_sha: not pinned, runs would clone {what} "
                    "as it is when they start (a branch or tag can move)"
                )
            continue
        match = TEMPLATE.match(str(value).strip())
        if match is None:
            if key == "commit_sha" and not SHA.fullmatch(str(value)):
                problems.append(f"pull: commit_sha {value!r} is not a full 40-character sha")
            continue
        source = match.group(1)
        if source.startswith("$"):
            problems.append(
                f"pull: git_clone {key} {value!r} is read from the worker's environment when "
                "a run starts, not pinned at deploy time: use a build step's output"
            )
        elif source.split(".", 1)[0] not in build_ids:
            problems.append(f"pull: git_clone {key} {value!r} names no build step (its id)")
    return problems


def _templated(value: Any) -> bool:
    """A parameter an automation renders from its event (``{{ event.payload.id }}``)."""
    return isinstance(value, str) and "{{" in value


def _expected_event_known(pattern: str, known: tuple[str, ...]) -> bool:
    if pattern.endswith("*"):  # Prefect allows a trailing wildcard
        return any(event.startswith(pattern[:-1]) for event in known)
    return pattern in known


def check_triggers(name: str, deployment: Mapping[str, Any], flow: Any, function: str) -> list[str]:
    """Problems of a deployment's ``triggers:`` that ``prefect deploy`` would let through
    or only report after registering the deployments before it.

    Each trigger validates against Prefect's own deployment-trigger models (a bad
    ``type``, a negative ``within``, a ``threshold`` that is no number); a key those
    models do not know is an error (Prefect silently ignores it: a misspelt ``expect``
    would fire on every event); an event trigger expects an event that something here
    emits (:data:`fraud_detection.events.EVENTS`); its parameters are the flow's and, once
    merged over the deployment's, fit it (templated values are rendered from the event
    when the trigger fires, so only their names are checked).
    """
    from prefect.events import DeploymentTriggerTypes
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
    from prefect.exceptions import ParameterTypeError
    from pydantic import TypeAdapter, ValidationError

    from fraud_detection.events import EVENTS

    specs = deployment.get("triggers")
    if specs is None:
        return []
    if not isinstance(specs, list):
        return [f"{name}: triggers must be a list of triggers, got {type(specs).__name__}"]
    adapter: TypeAdapter[Any] = TypeAdapter(DeploymentTriggerTypes)
    known = set(flow.parameters.properties)
    defaults = {k: v for k, v in (deployment.get("parameters") or {}).items() if k in known}
    problems: list[str] = []
    for index, spec in enumerate(specs):
        where = f"{name}: triggers[{index}]"
        if not isinstance(spec, dict):
            problems.append(f"{where}: expected a mapping, got {spec!r}")
            continue
        try:
            trigger = adapter.validate_python(dict(spec))
        except ValidationError as exc:
            error = exc.errors()[0]
            at = ".".join(str(part) for part in error["loc"][1:]) or "trigger"
            problems.append(f"{where}: invalid trigger: {at}: {error['msg']}")
            continue
        unknown = sorted(set(spec) - set(type(trigger).model_fields))
        if unknown:
            problems.append(
                f"{where}: unknown key(s) {', '.join(map(repr, unknown))}: Prefect ignores "
                "them silently"
            )
        if isinstance(trigger, DeploymentEventTrigger):
            if not trigger.expect:
                problems.append(f"{where}: expects no event: it would fire on every event")
            for event in sorted(e for e in trigger.expect if not _expected_event_known(e, EVENTS)):
                problems.append(
                    f"{where}: expects event {event!r}, which nothing emits "
                    f"(emitted: {', '.join(EVENTS)})"
                )
        given = dict(trigger.parameters or {})
        for key in sorted(set(given) - known):
            problems.append(f"{where}: parameter {key!r} is not a parameter of {function}")
        literal = {k: v for k, v in given.items() if k in known and not _templated(v)}
        try:
            flow.validate_parameters({**defaults, **literal})
        except ParameterTypeError as exc:
            problems.append(
                f"{where}: parameters do not fit {function}: {str(exc).splitlines()[0]}"
            )
        problems.extend(_check_trigger_value(where, {**defaults, **literal}))
    return problems


def _check_trigger_value(where: str, parameters: Mapping[str, Any]) -> list[str]:
    """CT's ``trigger`` parameter names one of Google's triggers (it decides what a run does)."""
    from fraud_detection.training.ct import TRIGGERS

    value = parameters.get("trigger")
    if value is None or value in TRIGGERS:
        return []
    return [f"{where}: trigger {value!r} is not one of {', '.join(TRIGGERS)}"]


def check_prefect_yaml(path: Path, root: Path) -> list[str]:
    """Problems of ``path`` that ``prefect deploy`` or a run would only show later.

    Every entrypoint imports and names a Prefect flow, parameters (of the deployment and
    of each schedule) are the flow's and valid for it, every schedule parses, every
    trigger is valid and expects an event something emits (:func:`check_triggers`), every
    deployment names a work pool, and runs pull a pinned commit (:func:`check_pull`).
    """
    from prefect.exceptions import MissingFlowError, ParameterTypeError
    from prefect.flows import Flow, load_flow_from_entrypoint

    config = load_prefect_yaml(path)
    problems: list[str] = []
    problems.extend(check_pull(config))
    names = [d.get("name") for d in config["deployments"]]
    for name in sorted({n for n in names if names.count(n) > 1}, key=str):
        problems.append(f"{name}: more than one deployment has this name")
    flows: dict[str, Any] = {}
    for deployment in config["deployments"]:
        name = deployment.get("name") or "(unnamed)"
        entrypoint = deployment.get("entrypoint", "")
        if ":" not in entrypoint:
            problems.append(f"{name}: entrypoint {entrypoint!r} is not <file.py>:<flow function>")
            continue
        file, function = entrypoint.rsplit(":", 1)
        if not (root / file).is_file():
            problems.append(f"{name}: entrypoint file {file} does not exist")
            continue
        if entrypoint not in flows:
            try:
                flows[entrypoint] = load_flow_from_entrypoint(
                    f"{root / file}:{function}", use_placeholder_flow=False
                )
            except MissingFlowError:
                problems.append(f"{name}: {file} has no flow named {function!r}")
                flows[entrypoint] = None
            except Exception as exc:  # any import error is a problem to report
                why = str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__
                problems.append(f"{name}: cannot import {file}: {why}")
                flows[entrypoint] = None
        flow = flows[entrypoint]
        if flow is None:
            continue
        if not isinstance(flow, Flow):
            problems.append(f"{name}: {function} in {file} is not a Prefect flow (@flow)")
            continue
        if not (deployment.get("work_pool") or {}).get("name"):
            problems.append(f"{name}: no work_pool.name: no worker would ever run it")
        known = set(flow.parameters.properties)
        given = dict(deployment.get("parameters") or {})
        for key in sorted(set(given) - known):
            problems.append(
                f"{name}: parameter {key!r} is not a parameter of {function} "
                f"(it takes: {', '.join(sorted(known)) or 'none'})"
            )
        for index, spec in enumerate(deployment.get("schedules") or []):
            where = f"{name}: schedules[{index}]"
            try:
                _schedule(spec)
            except Exception as exc:
                why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                problems.append(f"{where}: invalid schedule {dict(spec)}: {why}")
            for key in sorted(set(spec.get("parameters") or {}) - known):
                problems.append(f"{where}: parameter {key!r} is not a parameter of {function}")
        problems.extend(check_triggers(name, deployment, flow, function))
        missing = set(flow.parameters.required or []) - set(given)
        for key in sorted(missing):
            problems.append(f"{name}: {function} needs parameter {key!r}; the deployment omits it")
        try:
            flow.validate_parameters({k: v for k, v in given.items() if k in known})
        except ParameterTypeError as exc:
            problems.append(f"{name}: parameters do not fit {function}: {str(exc).splitlines()[0]}")
        problems.extend(_check_trigger_value(name, given))
    return problems


# ------------------------------------------------------------------------- steps


def _prefect(
    args: list[str], env: Mapping[str, str], log: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``prefect --no-prompt <args>`` from the repository root."""
    result = subprocess.run(  # noqa: S603  (prefect from the venv, no shell)
        [_bin("prefect"), "--no-prompt", *args],
        cwd=_root(),
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
    )
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as handle:
            handle.write(
                f"\n$ prefect --no-prompt {' '.join(args)}\n{result.stdout}{result.stderr}"
            )
    return result


def ensure_pool(env: Mapping[str, str], target: Target, log: Path) -> None:
    """Create the process work pool if absent, running one flow run at a time."""
    from prefect.exceptions import ObjectNotFound

    with _client(target) as client:
        try:
            pool = client.read_work_pool(POOL)
        except ObjectNotFound:
            pool = None
    if pool is not None:
        limit = pool.concurrency_limit
        typer.echo(
            f"work pool {POOL} ({pool.type}) exists"
            + (f"; at most {limit} flow run(s) at a time" if limit else "")
        )
        return
    for args in (
        ["work-pool", "create", POOL, "--type", "process"],
        # One run at a time: a scheduled sensor run waits for a CT run instead of
        # training beside it on a laptop's few cores (the runs are safe together, only slower).
        ["work-pool", "set-concurrency-limit", POOL, "1"],
    ):
        result = _prefect(args, env, log)
        if result.returncode != 0:
            raise DeployError(
                f"`prefect {' '.join(args)}` failed (exit {result.returncode}): see {_shown(log)}"
            )
    typer.echo(f"work pool {POOL} (process) created; one flow run at a time")


def deploy_all(env: Mapping[str, str], target: Target, prefect_file: Path, log: Path) -> list[str]:
    """``prefect --no-prompt deploy --all``; return the deployments now registered."""
    config = load_prefect_yaml(prefect_file)
    wanted = [d["name"] for d in config["deployments"]]
    typer.echo(f"prefect deploy --all: {len(wanted)} deployments of {_shown(prefect_file)}…")
    args = ["deploy", "--all", "--prefect-file", str(prefect_file)]
    result = _prefect(args, env, log)
    if result.returncode != 0:
        tail = "\n".join(
            "    " + line for line in (result.stdout + result.stderr).strip().splitlines()[-12:]
        )
        raise DeployError(
            f"`prefect deploy --all` failed (exit {result.returncode}); full output in "
            f"{_shown(log)}; it ends:\n{tail}"
        )
    with _client(target) as client:
        registered = {d.name: d for d in client.read_deployments(limit=200)}
    missing = [name for name in wanted if name not in registered]
    if missing:
        raise DeployError(
            f"`prefect deploy --all` did not register {', '.join(missing)}: see {_shown(log)}"
        )
    for spec in config["deployments"]:
        starts = [_describe_schedule(s) for s in spec.get("schedules") or []]
        starts += [_describe_trigger(t) for t in spec.get("triggers") or []]
        typer.echo(f"  {spec['name']:<18} {', '.join(starts) or 'no schedule: on demand'}")
    return wanted


def _describe_trigger(spec: Mapping[str, Any]) -> str:
    events = ", ".join(sorted(spec.get("expect") or [])) or "any event"
    within = spec.get("within")
    return f"on event {events}" + (f" (at most one run per {within} s)" if within else "")


def _workers(target: Target) -> list[Any]:
    with _client(target) as client:
        return list(client.read_workers_for_work_pool(POOL, limit=100, offset=0))


def _polling(worker: Any, now: dt.datetime) -> bool:
    """ONLINE, with a heartbeat no older than three heartbeat intervals."""
    beat = worker.last_heartbeat_time
    interval = worker.heartbeat_interval_seconds or 30
    return bool(
        str(worker.status.value).upper() == "ONLINE"
        and beat is not None
        and (now - beat).total_seconds() <= 3 * interval
    )


def late_verdict(late: int, polling: int) -> tuple[str, bool]:
    """What ``late`` Late runs and ``polling`` polling workers mean, and whether it is
    the trap: runs that will never start because nobody polls the pool."""
    if late and not polling:
        return (
            f"{late} run(s) are Late because no worker is polling {POOL}: start one with "
            f"`{WORKER_COMMAND}` (or `make deploy`)",
            True,
        )
    if not polling:
        return f"no worker is polling {POOL}: the next scheduled run will go Late", False
    if late:
        return (
            f"{polling} worker(s) poll {POOL}; the pool runs one flow run at a time, so "
            f"{late} run(s) wait their turn",
            False,
        )
    return f"{polling} worker(s) poll {POOL}; nothing is waiting", False


def wait_for_worker(target: Target, entry: Mapping[str, Any]) -> Any:
    """Our worker, once the server has seen its heartbeat; else fail naming the trap."""
    log = Path(entry["log"])
    started = dt.datetime.fromisoformat(entry["started_at"])
    begin, shown = time.monotonic(), 0
    while True:
        now = dt.datetime.now(dt.UTC)
        for worker in _workers(target):
            if (
                worker.name == entry["name"]
                and _polling(worker, now)
                and worker.last_heartbeat_time >= started - dt.timedelta(seconds=5)
            ):
                return worker
        waited = time.monotonic() - begin
        if not _alive(int(entry["pid"])) or waited > WORKER_TIMEOUT_S:
            why = "exited" if not _alive(int(entry["pid"])) else f"silent for {WORKER_TIMEOUT_S} s"
            raise DeployError(
                f"no worker is polling {POOL} (ours {why}): runs would sit in Late; start one "
                f"with `{WORKER_COMMAND}` (worker log {_shown(log)}):\n{_tail(log, 8)}"
            )
        if waited >= shown + 5:
            shown = int(waited)
            typer.echo(f"  waiting for the worker's first heartbeat … {shown} s")
        time.sleep(1)


def run_on_demand(target: Target, state: Path, timeout: float) -> tuple[Any, float]:
    """Start the ``ct-on-demand`` deployment, print its state changes until it ends."""
    with _client(target) as client:
        deployment = client.read_deployment_by_name(ON_DEMAND)
        run = client.create_flow_run_from_deployment(
            deployment.id, parameters={"trigger": "on_demand", "state_dir": str(state)}
        )
        typer.echo(f"flow run {run.name} ({run.id}): {target.run_url(run.id)}")
        begin, last, warned, printed = time.monotonic(), "", False, 0.0
        while True:
            run = client.read_flow_run(run.id)
            waited = time.monotonic() - begin
            name = run.state.name if run.state else "?"
            if name != last or waited >= printed + 30:
                typer.echo(f"  {waited:5.0f} s  {name}" + (" …" if name == last else ""))
                last, printed = name, waited
            if run.state and run.state.type.value in FINAL_STATES:
                return run, waited
            if name == "Late" and not warned:
                warned = True
                busy = [w.name for w in _workers(target) if _polling(w, dt.datetime.now(dt.UTC))]
                typer.echo(
                    "  the run is Late: "
                    + (
                        f"{POOL} runs one flow run at a time and another one is running"
                        if busy
                        else f"no worker is polling {POOL}; start one with `{WORKER_COMMAND}`"
                    )
                )
            if waited > timeout:
                raise DeployError(
                    f"flow run {run.name} still {name} after {timeout:.0f} s: follow it at "
                    f"{target.run_url(run.id)}; `make stop` ends the server and the worker"
                )
            time.sleep(2)


def _tracking_uri() -> str:
    from fraud_detection.config import load_profile

    return str(load_profile().mlflow.tracking_uri or "")


def _stop_hint(processes: Mapping[str, Any]) -> str:
    """What `make stop` will end: the worker, and the server only if make deploy
    started it (the production profile's server is the stack's: make prod-down)."""
    if "server" in processes:
        return "`make stop` ends the server and the worker"
    return "`make stop` ends the worker (the Prefect server is not make deploy's: it keeps running)"


def _ct_record(state: Path, since: str) -> Any | None:
    """The CT run record the on-demand run appended (after ``since``)."""
    from fraud_detection.config import StatePaths
    from fraud_detection.registry.runs import read_records

    records = [
        r
        for r in read_records(StatePaths(root=state))
        if r.trigger == "on_demand" and r.started_at >= since
    ]
    return records[-1] if records else None


def cancel_stale_runs(target: Target, now: dt.datetime) -> list[str]:
    """Cancel the runs of :data:`POOL` that came due while no worker polled it.

    Runs scheduled while ``make deploy`` was stopped (the sensor's every 5 minutes, the
    nightly CT) sit Scheduled or Late; a new worker would work through every one of them
    before anything else (the pool runs one flow run at a time). Each run due before
    ``now`` is set Cancelled, with a message saying why; later ones stay. Returns one
    entry per deployment: ``<name> x<count>``.
    """
    from collections import Counter

    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
        WorkPoolFilter,
        WorkPoolFilterName,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled

    due = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
        expected_start_time=FlowRunFilterExpectedStartTime(before_=now),
    )
    pool = WorkPoolFilter(name=WorkPoolFilterName(any_=[POOL]))
    cancelled: Counter[str] = Counter()
    seen: set[Any] = set()
    with _client(target) as client:
        names = {d.id: d.name for d in client.read_deployments(limit=200)}
        while True:  # by pages: a server down for days holds hundreds of them
            runs = client.read_flow_runs(flow_run_filter=due, work_pool_filter=pool, limit=200)
            runs = [run for run in runs if run.id not in seen]  # one the server kept: once
            if not runs:
                break
            for run in runs:
                seen.add(run.id)
                client.set_flow_run_state(
                    run.id,
                    Cancelled(message="due while no worker polled the pool (make deploy skips it)"),
                    force=True,
                )
                cancelled[names.get(run.deployment_id, run.name)] += 1
    return [f"{name} x{count}" for name, count in sorted(cancelled.items())]


def scheduled_without_runs(target: Target, prefect_file: Path) -> list[str]:
    """Deployments with an active schedule but no upcoming run: the server's scheduler
    is not creating runs (so the nightly CT and the sensors would never start)."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    config = load_prefect_yaml(prefect_file)
    scheduled = {d["name"] for d in config["deployments"] if d.get("schedules")}
    missing = []
    with _client(target) as client:
        for deployment in client.read_deployments(limit=200):
            if deployment.name not in scheduled or deployment.paused:
                continue
            if not any(s.active for s in deployment.schedules):
                continue
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(
                            any_=[StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]
                        )
                    )
                ),
                limit=1,
            )
            if not runs:
                missing.append(deployment.name)
    return missing


# ------------------------------------------------------------------------ commands


PrefectFile = Annotated[
    Path, typer.Option(help="The deployments file (prefect deploy --prefect-file).")
]


@app.command()
def up(
    prefect_file: PrefectFile = Path("prefect.yaml"),
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the CT run to finish.")
    ] = RUN_TIMEOUT_S,
) -> None:
    """Server (if none answers), work pool, `prefect deploy --all`, worker, one CT run."""
    begin = time.monotonic()
    root, state, target = _root(), _state(), local_target()
    prefect_file = (root / prefect_file).resolve()
    folder = state / "deploy"
    release = release_from_environment(root, local=True)
    env = _environment(state, target, release)
    records = _load_records(state)
    # A recorded server or worker that died since (leaving children behind, or after a
    # reboot) is cleaned up and forgotten; a running one is reused.
    for key, entry in list(records["processes"].items()):
        if not _is_recorded(entry):
            if _still_there(entry):
                typer.echo(f"leftovers of a dead {key}: {_terminate(entry)[0]}")
            del records["processes"][key]
    processes: dict[str, Any] = records["processes"]

    typer.echo("== 1. Prefect server")
    server_log = folder / "server.log"
    if _healthy(target):
        own = "server" in processes
        typer.echo(
            f"a Prefect server answers at {target.api_url}"
            + (f" (started by make deploy, pid {processes['server']['pid']})" if own else "")
            + ": using it"
        )
    else:
        if not target.local:
            raise DeployError(
                f"no Prefect server answers at {target.api_url}, and it is not local: start "
                "it, or unset PREFECT_API_URL to let make deploy start one on this machine"
            )
        typer.echo(
            f"starting a Prefect server on {target.host}:{target.port} (SQLite in "
            f"{_shown(state / 'prefect' / 'prefect.db')}; log {_shown(server_log)})"
        )
        command = [
            _bin("prefect"),
            "server",
            "start",
            "--host",
            target.host,
            "--port",
            str(target.port),
            "--analytics-off",
        ]
        processes["server"] = _spawn("prefect-server", command, env, server_log)
        records["api_url"] = target.api_url
        _save_records(state, records)
        waited = _wait_healthy(target, processes["server"], server_log)
        typer.echo(f"  healthy after {waited:.0f} s: {target.ui_url}")
    _check_server_accepts_nulls(target)

    typer.echo(f"\n== 2. Work pool ({_shown(folder / 'deploy.log')})")
    ensure_pool(env, target, folder / "deploy.log")

    typer.echo(f"\n== 3. Worker on {POOL}")
    worker_log = folder / "worker.log"
    if "worker" in processes:
        typer.echo(f"the worker make deploy started is running (pid {processes['worker']['pid']})")
    else:
        # Runs that came due while no worker polled (make stop, then this): skipped, not
        # made up for, or the new worker would run each of them before the on-demand one.
        stale = cancel_stale_runs(target, dt.datetime.now(dt.UTC))
        if stale:
            typer.echo(
                f"cancelled the runs that came due while no worker polled {POOL}: "
                f"{', '.join(stale)} (the next ones run on schedule)"
            )
        name = f"{POOL}-worker-{os.getpid()}"
        command = [_bin("prefect"), "worker", "start", "--pool", POOL, "--name", name]
        processes["worker"] = _spawn(name, command, env, worker_log)
        _save_records(state, records)
        typer.echo(
            f"started worker {name} (pid {processes['worker']['pid']}; log {_shown(worker_log)})"
        )
    worker = wait_for_worker(target, processes["worker"])
    typer.echo(
        f"  {worker.name} polls {POOL} (heartbeat {worker.last_heartbeat_time:%H:%M:%S} UTC)"
    )

    # Deployed last, just before the on-demand run: the sensor's first scheduled run
    # (a minute after it is registered) then comes after the on-demand one in the pool.
    typer.echo(f"\n== 4. Deployments: runs clone {release.describe()}")
    deployments = deploy_all(env, target, prefect_file, folder / "deploy.log")

    typer.echo(f"\n== 5. A run of {ON_DEMAND}")
    since = dt.datetime.now(dt.UTC).isoformat()
    run, seconds = run_on_demand(target, state, timeout)
    record = _ct_record(state, since)
    final = run.state.name if run.state else "?"

    typer.echo(f"\n== Result: flow run {run.name} {final} in {seconds:.0f} s")
    typer.echo(f"  Prefect UI (this run): {target.run_url(run.id)}")
    if record is not None:
        champion = f"v{record.champion_version}" if record.champion_version else "none"
        typer.echo(f"  CT outcome:    {record.outcome}")
        typer.echo(f"  data gate:     {record.data_gate or '-'}")
        typer.echo(f"  model gate:    {record.model_gate or '-'}")
        for reason in record.reasons:
            typer.echo(f"    - {reason}")
        typer.echo(f"  champion:      {champion}")
        typer.echo(f"  code version:  {record.code_version or 'not recorded'}")
    else:
        typer.echo(f"  no CT record in {_shown(state / 'ct' / 'runs.jsonl')} for this run")
    typer.echo(f"  Prefect UI:    {target.ui_url} (Deployments, Flow Runs, Work Pools → {POOL})")
    tracking_uri = _tracking_uri()
    if tracking_uri.startswith(("http://", "https://")):  # a tracking server: its own UI
        typer.echo(f"  MLflow UI:     {tracking_uri}")
    else:
        mlflow_db = state / "mlflow" / "mlflow.db"
        typer.echo(
            "  MLflow UI:     `make mlflow-ui`"
            + ("" if state == root / "state" else f" (this state: sqlite:///{mlflow_db})")
        )
    typer.echo(f"  runs table:    fraud ct history --state-dir {_shown(state)}")

    lazy = scheduled_without_runs(target, prefect_file)
    typer.echo(
        f"\n{len(deployments)} deployments registered; the worker (pid "
        f"{processes['worker']['pid']}) keeps running their schedules. `make deploy-status` "
        f"shows them, {_stop_hint(processes)}. ({time.monotonic() - begin:.0f} s)"
    )
    if lazy:
        hint = ""
        if "bulk DML" in (server_log.read_text(errors="replace") if server_log.exists() else ""):
            hint = " (SQLAlchemy >= 2.1 breaks prefect 3.8's scheduler: pin sqlalchemy<2.1)"
        raise DeployError(
            f"the server scheduled no run for {', '.join(lazy)}: its scheduler is not "
            f"creating runs{hint}; see {_shown(server_log)}"
        )
    if run.state is None or run.state.type.value != "COMPLETED":
        raise DeployError(f"the CT run ended {final}: see {target.run_url(run.id)}")


def _terminate(entry: Mapping[str, Any]) -> tuple[str, bool]:
    """TERM the recorded process group and its descendants, KILL what is left after a
    grace period; return a description and whether everything is gone."""
    if not _still_there(entry):
        return f"{entry['name']} (pid {entry['pid']}): already gone", True
    pids, groups = _family(int(entry["pgid"]))

    def send(sig: signal.Signals) -> None:
        for group in groups:
            with suppress(ProcessLookupError):
                os.killpg(group, sig)

    def remaining() -> set[int]:
        return {pid for pid in pids if _alive(pid)}

    send(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while remaining() and time.monotonic() < deadline:
        time.sleep(0.3)
    how = "TERM"
    if remaining():
        send(signal.SIGKILL)
        how = "KILL after TERM"
        deadline = time.monotonic() + 5
        while remaining() and time.monotonic() < deadline:
            time.sleep(0.2)
    left = remaining()
    count = f"{len(pids)} process{'es' if len(pids) != 1 else ''}"
    if left:
        return f"{entry['name']} (pid {entry['pid']}): still running: {sorted(left)}", False
    return f"{entry['name']} (pid {entry['pid']}, {count}): stopped ({how})", True


@app.command()
def down() -> None:
    """End the server and worker that `make deploy` started (by their recorded ids)."""
    state = _state()
    path = _records_path(state)
    records = _load_records(state)
    processes = records["processes"]
    if not processes:
        typer.echo(f"nothing to stop: no processes recorded in {_shown(path)}")
        path.unlink(missing_ok=True)
        return
    results = [_terminate(processes[key]) for key in ("worker", "server") if key in processes]
    for line, _ in results:
        typer.echo(line)
    if not all(ok for _, ok in results):
        raise DeployError(f"some processes did not stop; records kept in {_shown(path)}")
    path.unlink()
    typer.echo(f"removed {_shown(path)}; logs stay in {_shown(path.parent)}")
    if "worker" in processes:
        typer.echo(
            "scheduled runs that come due while no worker polls are skipped: the next "
            "`make deploy` cancels them before its worker starts"
        )


@app.command()
def status(prefect_file: PrefectFile = Path("prefect.yaml")) -> None:
    """Server health, deployments, workers polling, late runs (the "Late" trap)."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateName,
    )

    state, target = _state(), local_target()
    _environment(state, target)
    processes = _load_records(state)["processes"]
    for key, entry in processes.items():
        alive = "running" if _is_recorded(entry) else "GONE"
        typer.echo(f"recorded {key}: pid {entry['pid']} {alive} (log {_shown(Path(entry['log']))})")
    if not _healthy(target):
        raise DeployError(
            f"no Prefect server answers at {target.api_url}: `make deploy` starts one"
        )
    typer.echo(f"server: {target.api_url} healthy; UI {target.ui_url}")
    now = dt.datetime.now(dt.UTC)
    with _client(target) as client:
        deployments = client.read_deployments(limit=200)
        late = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Late"]))
            ),
            limit=200,
        )
    typer.echo(f"deployments: {len(deployments)}")
    for deployment in sorted(deployments, key=lambda d: d.name):
        schedules = ", ".join(
            _describe_schedule(s.schedule.model_dump(exclude_none=True))
            + ("" if s.active else " (inactive)")
            for s in deployment.schedules
        )
        pool = deployment.work_pool_name or "-"
        typer.echo(f"  {deployment.name:<18} pool {pool:<12} {schedules or 'on demand'}")
    workers = _workers(target)
    polling = [w for w in workers if _polling(w, now)]
    for worker in workers:
        beat = worker.last_heartbeat_time
        ago = f"{(now - beat).total_seconds():.0f} s ago" if beat else "never"
        typer.echo(f"worker {worker.name}: {worker.status.value}, last heartbeat {ago}")
    if not workers:
        typer.echo(f"no worker has ever polled {POOL}")
    lazy = scheduled_without_runs(target, prefect_file)
    if lazy:
        typer.echo(f"scheduled but no upcoming run (scheduler not working?): {', '.join(lazy)}")
    typer.echo(f"late runs: {len(late)}")
    verdict, trapped = late_verdict(len(late), len(polling))
    if trapped:
        raise DeployError(verdict)
    typer.echo(verdict)


@app.command()
def check(prefect_file: PrefectFile = Path("prefect.yaml")) -> None:
    """Validate prefect.yaml without a server: entrypoints, parameters, schedules,
    triggers, pull."""
    root = _root()
    path = (root / prefect_file).resolve()
    config = load_prefect_yaml(path)
    problems = check_prefect_yaml(path, root)
    for problem in problems:
        typer.echo(f"  {problem}", err=True)
    if problems:
        raise DeployError(f"{len(problems)} problem(s) in {_shown(path)} (listed above)")
    typer.echo(
        f"{_shown(path)}: {len(config['deployments'])} deployments OK (entrypoints are flows, "
        "parameters fit, schedules and triggers parse, runs clone a pinned commit)"
    )


@app.command()
def remote(prefect_file: PrefectFile = Path("prefect.yaml")) -> None:
    """Register the deployments on the Prefect server of $PREFECT_API_URL (CD); fail
    unless a worker polls the pool there (else nothing would ever run them)."""
    url = os.environ.get("PREFECT_API_URL", "").strip()
    credentials = ("PREFECT_API_KEY", "PREFECT_API_AUTH_STRING")
    authenticated = any(os.environ.get(name, "").strip() for name in credentials)
    missing = [] if url else ["PREFECT_API_URL"]
    # A server on this machine (the tests) may run without credentials; a remote one not.
    if not authenticated and not (url and Target(api_url=url).local):
        missing.append("PREFECT_API_KEY")
    if missing:
        raise DeployError(
            f"{'; '.join(name + ' is not set' for name in missing)}: nothing deployed. In "
            "cd.yml they are secrets "
            "of the GitHub environment (Settings → Environments → staging / production; a "
            "self-hosted server with basic auth takes PREFECT_API_AUTH_STRING instead of the key)"
        )
    root, state, target = _root(), _state(), Target(api_url=url.rstrip("/"))
    release = release_from_environment(root, local=False)
    env = _environment(state, target, release)
    log = state / "deploy" / "remote.log"
    typer.echo(f"deploying to {target.ui_url}: runs clone {release.describe()}")
    ensure_pool(env, target, log)
    deploy_all(env, target, (root / prefect_file).resolve(), log)
    polling = [w.name for w in _workers(target) if _polling(w, dt.datetime.now(dt.UTC))]
    if not polling:
        raise DeployError(
            f"deployed, but no worker polls {POOL} on {target.ui_url}: nothing can run these "
            f"deployments; start one on the worker machine (`{WORKER_COMMAND}`) and deploy again"
        )
    typer.echo(f"done: {', '.join(polling)} poll(s) {POOL}; log {_shown(log)}")


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    try:
        app()
    except FraudError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

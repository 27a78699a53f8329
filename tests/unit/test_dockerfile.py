"""The serving Dockerfile. No Docker engine runs here, so: hadolint, and its contents.

What is checked is what an operator relies on: the image runs as a non-root user, installs
exactly uv.lock without the dev and test tools, answers a health check on /health,
starts a ``fraud`` command that exists, on the port it exposes, refuses to serve without
an API key, and builds on a base image pinned by digest.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import typer.main

from fraud_detection.cli import app

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
PIPELINE_DOCKERFILE = ROOT / "docker" / "Dockerfile.pipeline"


def _instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _all(keyword: str, path: Path = DOCKERFILE) -> list[str]:
    return [rest for key, rest in _instructions(path) if key == keyword]


def test_hadolint_passes() -> None:
    out = subprocess.run(
        [ROOT / ".venv" / "bin" / "hadolint", DOCKERFILE], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("path", [DOCKERFILE, PIPELINE_DOCKERFILE], ids=lambda p: p.name)
def test_base_image_is_python_311_slim_pinned_to_an_exact_tag_and_digest(path: Path) -> None:
    bases = [base.split()[0] for base in _all("FROM", path)]
    assert len(bases) == 2, bases  # build and runtime stages
    for image in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?@sha256:[0-9a-f]{64}", image), image
    # Both stages, and both images, on the same bytes: refreshed together.
    assert len(set(bases)) == 1
    assert set(bases) == {_all("FROM")[0].split()[0]}


def test_the_image_refuses_to_serve_without_an_api_key() -> None:
    from fraud_detection.serving.exposure import decide_exposure

    _program, *args = _cmd()
    host = args[args.index("--host") + 1]
    assert "--insecure-no-key" not in args
    # What `fraud serve` decides for the image's CMD with no FRAUD_API_KEY given: refuse.
    assert decide_exposure(host, key_set=False, insecure_no_key=False).refusal is not None
    # ...and the key stays required even if the CMD is changed to pass --insecure-no-key.
    env = " ".join(_all("ENV"))
    assert "FRAUD_PROFILE__SERVING__API_KEY_REQUIRED=true" in env
    assert "FRAUD_API_KEY" not in env.replace("FRAUD_PROFILE__SERVING__API_KEY_REQUIRED", "")


def test_uv_is_pinned_and_installs_exactly_the_lock_without_dev_tools() -> None:
    runs = " ".join(_all("RUN"))
    assert re.search(r"pip install --no-cache-dir uv==\d+\.\d+\.\d+", runs)
    syncs = re.findall(r"uv sync [^&]*", runs)
    assert syncs
    for sync in syncs:
        assert "--frozen" in sync  # uv.lock as is, never re-resolved
        # pyproject's default-groups would bring pytest and the linters in otherwise.
        assert "--no-default-groups" in sync
    assert any("uv.lock" in copy for copy in _all("COPY"))


def test_runs_as_a_non_root_user_with_a_state_volume() -> None:
    users = _all("USER")
    assert users, "no USER: the service would run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    # The last stage's final USER is what the container runs as.
    last_from = max(i for i, (k, _) in enumerate(_instructions()) if k == "FROM")
    assert any(k == "USER" for k, _ in _instructions()[last_from:])
    (volume,) = _all("VOLUME")
    state = json.loads(volume)[0]
    env = " ".join(_all("ENV"))
    assert f"FRAUD_PROFILE__STATE_DIR={state}" in env


def _cmd() -> list[str]:
    (cmd,) = _all("CMD")
    return list(json.loads(cmd))  # exec form: signals reach the server


def test_cmd_starts_a_real_fraud_command_on_the_exposed_port() -> None:
    program, *args = _cmd()
    assert program == "fraud"
    root = typer.main.get_command(app)
    command = getattr(root, "commands", {}).get(args[0])
    assert command is not None, f"`fraud {args[0]}` does not exist"
    options = {opt for param in command.params for opt in getattr(param, "opts", [])}
    flags = [a for a in args[1:] if a.startswith("--")]
    assert set(flags) <= options, f"`fraud {args[0]}` has no {set(flags) - options}"
    port = args[args.index("--port") + 1]
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert _all("EXPOSE") == [port]


def test_healthcheck_asks_the_service_for_health_on_its_port() -> None:
    (check,) = _all("HEALTHCHECK")
    port = _cmd()[_cmd().index("--port") + 1]
    assert f"127.0.0.1:{port}/health" in check
    assert "--interval=" in check
    assert "--timeout=" in check


def test_dockerignore_keeps_state_environments_and_secrets_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".env", "state", "tests"} <= ignored
    # ...but not what the build copies in.
    for copied in ("pyproject.toml", "uv.lock", "README.md", "src", "configs", "feature_repo"):
        assert copied not in ignored

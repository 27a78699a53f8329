"""The shift-left security targets (docs/level2.md), run as ci.yml's `security` and
`image smoke test` jobs run them.

``make security`` (every offline check) and ``make sbom`` run in full. What needs what this
machine lacks stops with one clear line, fast: pip-audit without the vulnerability service
(the network), the image smoke test without a Docker daemon. What the smoke test asserts
of the container, a service on an empty state answering ``/ready`` 503 "no model loaded",
is checked here on ``fraud serve`` itself, started as the image's CMD starts it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.e2e.test_ci_targets import ROOT, _docker_answers, make

pytestmark = pytest.mark.e2e

OSV = "https://api.osv.dev/v1/query"
FRAUD = ROOT / ".venv" / "bin" / "fraud"


def _own_lines(stderr: str) -> list[str]:
    """What the target printed, without make's own ``make: *** ... Error 2``."""
    return [line for line in stderr.splitlines() if not line.startswith("make:")]


def _osv_answers() -> bool:
    try:
        httpx.head(OSV, timeout=5)
    except httpx.HTTPError:
        return False
    return True


# ---------------------------------------------------------------- offline checks


def test_security_runs_every_offline_check(tmp_path: Path) -> None:
    sbom = tmp_path / "sbom.cdx.json"

    result = make("security", f"SBOM={sbom}")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "ruff S (flake8-bandit): clean" in result.stdout
    assert "detect-secrets: no secret in" in result.stdout
    assert "hadolint: Dockerfile clean" in result.stdout
    assert f"SBOM: {sbom}" in result.stdout
    assert json.loads(sbom.read_text())["bomFormat"] == "CycloneDX"


def test_sbom_lists_the_locked_runtime_packages(tmp_path: Path) -> None:
    first, second = tmp_path / "sbom.cdx.json", tmp_path / "again.cdx.json"

    result = make("sbom", f"SBOM={first}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert make("sbom", f"SBOM={second}").returncode == 0

    bom = json.loads(first.read_text())
    assert bom["bomFormat"] == "CycloneDX"
    assert bom["metadata"]["component"]["name"] == "fraud-detection-mlops"
    shipped = {c["name"].lower(): c.get("version") for c in bom["components"]}
    locked = {
        p["name"]: p.get("version")
        for p in tomllib.loads((ROOT / "uv.lock").read_text())["package"]
    }
    # The runtime packages at the versions uv.lock pins ...
    for name in ("fastapi", "mlflow", "prefect", "scikit-learn", "feast", "sqlalchemy"):
        assert shipped[name] == locked[name], name
    # ... and not the dev and test tools, which the image does not ship either (mypy is
    # shipped: Feast requires sqlalchemy[mypy])
    for name in ("pytest", "ruff", "hypothesis", "detect-secrets", "pip-audit"):
        assert name not in shipped, name
    assert all(c.get("purl", "").startswith("pkg:pypi/") for c in bom["components"])
    # The same lock, the same bytes (no timestamp, no random serial number)
    assert first.read_bytes() == second.read_bytes()


# ------------------------------------------------------- needs what is missing here


@pytest.mark.skipif(_osv_answers(), reason="the vulnerability service answers: make audit audits")
def test_audit_without_the_network_says_so_in_one_line() -> None:
    started = time.monotonic()

    result = make("audit")

    assert result.returncode == 2, result.stdout + result.stderr
    assert _own_lines(result.stderr) == [
        f"error: pip-audit needs the network: {OSV} did not answer within 5 s "
        "(ci.yml runs it on GitHub's runners)"
    ]
    assert time.monotonic() - started < 30


@pytest.fixture
def silent_service() -> Iterator[str]:
    """A loopback port that accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"http://127.0.0.1:{server.getsockname()[1]}/v1/query"


def test_audit_gives_up_on_a_service_that_does_not_answer(silent_service: str) -> None:
    started = time.monotonic()

    result = make("audit", f"AUDIT_SERVICE_URL={silent_service}", "AUDIT_TIMEOUT=2")

    assert result.returncode == 2, result.stdout + result.stderr
    assert "pip-audit needs the network" in result.stderr
    assert time.monotonic() - started < 20


@pytest.mark.skipif(_docker_answers(), reason="a Docker daemon answers: make image-smoke runs")
def test_image_smoke_without_docker_says_so_in_one_line() -> None:
    result = make("image-smoke")

    assert result.returncode == 2
    assert _own_lines(result.stderr) == [
        "error: no Docker daemon answers (docker info failed): start Docker, "
        "or let ci.yml run the image smoke test"
    ]


# ------------------------------- what the image smoke test expects, on fraud serve itself


def _serve_env(state: Path, key: str | None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FRAUD_", "MLFLOW_", "PREFECT_")) and k != "MAKEFLAGS"
    }
    # As the image's ENV: an empty state folder, the API key required
    env |= {
        "FRAUD_PROFILE__STATE_DIR": str(state),
        "FRAUD_PROFILE__SERVING__API_KEY_REQUIRED": "true",  # pragma: allowlist secret
    }
    if key is not None:
        env["FRAUD_API_KEY"] = key
    return env


def test_without_an_api_key_the_service_refuses_to_start(tmp_path: Path) -> None:
    # The image's CMD binds 0.0.0.0
    result = subprocess.run(
        [FRAUD, "serve", "--host", "0.0.0.0", "--port", "8000"],
        cwd=ROOT,
        env=_serve_env(tmp_path / "state", key=None),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "FRAUD_API_KEY" in result.stderr


def test_on_an_empty_state_the_service_is_alive_but_not_ready(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    key = "empty-state-test-key"  # pragma: allowlist secret
    service = subprocess.Popen(
        [FRAUD, "serve", "--port", str(port)],
        cwd=ROOT,
        env=_serve_env(tmp_path / "state", key=key),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert service.poll() is None, service.stderr.read() if service.stderr else ""
            try:
                health = httpx.get(f"{base}/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "fraud serve did not answer in 120 s"
                time.sleep(0.5)

        # Alive ...
        assert health.status_code == 200
        # ... not ready, and a probe without the key learns why in words: no model yet
        ready = httpx.get(f"{base}/ready", timeout=10)
        assert ready.status_code == 503, ready.text
        assert ready.json()["ready"] is False
        assert "no model loaded" in ready.json()["reason"]
        # ... and closed to a request without the key
        answer = httpx.post(f"{base}/predict", json={}, timeout=10)
        assert answer.status_code == 401, answer.text
    finally:
        service.terminate()
        try:
            service.wait(timeout=30)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()

"""``fraud serve`` beyond loopback: the API key is required, or it refuses in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fraud_detection.serving.exposure import decide_exposure, is_loopback

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_needs_nothing_the_profile_does_not_ask_for(host: str) -> None:
    assert is_loopback(host)
    decision = decide_exposure(host, key_set=False, insecure_no_key=False)
    assert decision.refusal is None
    assert decision.warning is None
    assert not decision.require_key


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "serving.example.org", ""])
def test_beyond_loopback_without_a_key_is_refused_in_one_line_naming_the_fixes(
    host: str,
) -> None:
    assert not is_loopback(host)
    refusal = decide_exposure(host, key_set=False, insecure_no_key=False).refusal
    assert refusal is not None
    assert "\n" not in refusal
    assert "FRAUD_API_KEY" in refusal
    assert "--insecure-no-key" in refusal


def test_beyond_loopback_with_a_key_requires_it() -> None:
    decision = decide_exposure("0.0.0.0", key_set=True, insecure_no_key=False)
    assert decision.require_key
    assert decision.refusal is None


def test_insecure_flag_serves_without_a_key_but_warns() -> None:
    decision = decide_exposure("0.0.0.0", key_set=False, insecure_no_key=True)
    assert decision.refusal is None
    assert not decision.require_key
    assert decision.warning is not None
    assert "WITHOUT an API key" in decision.warning


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"FRAUD_API_KEY", "FRAUD_PROFILE"}}
    return {**env, **extra}


def test_fraud_serve_on_all_interfaces_without_a_key_exits_with_one_line(
    tmp_path: Path,
) -> None:
    # Given no API key in the environment, when the service is told to listen on 0.0.0.0
    out = subprocess.run(
        [sys.executable, "-m", "fraud_detection.cli", "serve", "--host", "0.0.0.0"],
        cwd=ROOT,
        env=_env(FRAUD_PROFILE__STATE_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    # then it does not start: exit 2, one line naming the fix, no traceback
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: refusing to serve on 0.0.0.0 without an API key")
    assert "FRAUD_API_KEY" in lines[0]
    assert "Traceback" not in out.stderr
    assert "serving " not in out.stdout


def test_fraud_serve_on_all_interfaces_with_a_key_requires_it_in_the_local_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    from fraud_detection.cli import app

    started: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda served, **kw: started.update(app=served, **kw))
    monkeypatch.delenv("FRAUD_PROFILE", raising=False)
    monkeypatch.setenv("FRAUD_PROFILE__STATE_DIR", str(tmp_path))
    monkeypatch.setenv("FRAUD_API_KEY", "s3cret")
    # Given the local profile (no key required) and a key set, when bound to 0.0.0.0
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--port", "18999"])
    # then it starts, and the API asks for the key
    assert result.exit_code == 0, result.output
    assert started["host"] == "0.0.0.0"
    assert "API key:         required" in result.output
    schemes = started["app"].openapi()["components"]["securitySchemes"]
    assert schemes["APIKeyHeader"]["name"] == "X-API-Key"

"""Shift-left security configuration: the secret scan's baseline holds no unaudited secret and
the scan catches a new one; ruff's S rules are on, and every exception says why.

``make security`` itself runs in tests/e2e/test_security_targets.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
BASELINE = ROOT / ".secrets.baseline"


def test_the_baseline_holds_no_unaudited_or_real_secret() -> None:
    baseline = json.loads(BASELINE.read_text())
    assert baseline["plugins_used"], "no detector enabled"
    for path, findings in baseline["results"].items():
        for finding in findings:
            # Audited (`detect-secrets audit .secrets.baseline`) and judged not a secret
            assert finding.get("is_secret") is False, f"{path}:{finding['line_number']}"
    # Left out: the lock files (package hashes) and the API key's header name, nothing else
    excluded = {
        f["path"].rsplit(".", 1)[1]: f["pattern"]
        for f in baseline["filters_used"]
        if f["path"].startswith("detect_secrets.filters.regex.should_exclude")
    }
    assert excluded == {
        "should_exclude_file": [r"^(uv\.lock|dvc\.lock)$"],
        "should_exclude_secret": ["^X-API-Key$"],
    }


def test_the_scan_stops_a_new_secret(tmp_path: Path) -> None:
    # Given: a file with a credential in it (built here so that this file holds none)
    leaked = tmp_path / "settings.py"
    key_id = "AKIA" + "Z7Q4LX2MNB6TVW3P"
    leaked.write_text(f'AWS_ACCESS_KEY_ID = "{key_id}"\nDEBUG = False\n')
    baseline = tmp_path / ".secrets.baseline"
    shutil.copy(BASELINE, baseline)

    # When: the pre-commit hook (and make secrets) scans it
    result = subprocess.run(
        [BIN / "detect-secrets-hook", "--baseline", baseline, leaked],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )

    # Then: it fails, naming the file, the line and the kind of secret
    assert result.returncode == 1, result.stdout + result.stderr
    assert "AWS Access Key" in result.stdout
    assert f"Location:    {leaked}:1" in result.stdout


def test_ruff_runs_the_bandit_rules_and_every_exception_says_why() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    lint = tomllib.loads(text)["tool"]["ruff"]["lint"]
    assert "S" in lint["select"]
    # A per-file exception to an S rule carries its reason on its line
    section = text.split("[tool.ruff.lint.per-file-ignores]", 1)[1].split("\n[", 1)[0]
    for line in section.splitlines():
        if re.search(r'"S\d{3}"', line):
            assert "#" in line, f"pyproject.toml: no reason for {line.strip()}"
    # ... and so does every noqa comment of an S rule in the code, the reason in brackets
    unexplained = []
    for path in [*ROOT.glob("src/**/*.py"), *ROOT.glob("pipelines/**/*.py")]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            exempt = re.search(r"noqa:[^#]*\bS\d{3}", line)
            if exempt and not re.search(r"noqa: [A-Z0-9, ]+ +\(.+\)", line):
                unexplained.append(f"{path.relative_to(ROOT)}:{number}")
    assert not unexplained, unexplained

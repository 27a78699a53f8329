"""DVC on a clean copy of the repository: the committed lock matches the code, and data
makes the round trip through a remote.

Both run ``dvc`` in a copy of the files git tracks (as they are in the working tree, so a
change not yet committed counts), never in the repository itself: its ``state/`` and
``.dvc/cache`` are left alone.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DVC = ROOT / ".venv" / "bin" / "dvc"
REFRESH = "make repro && git add dvc.lock"
# The shell of a developer or a runner may point the commands elsewhere.
LEAKY = ("FRAUD_PROJECT_DIR", "FRAUD_PROFILE", "FRAUD_PROFILE__STATE_DIR", "PREFECT_API_URL")


def copy_tracked(target: Path) -> Path:
    """The files git tracks, copied to ``target`` (a git repository of its own)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a file deleted in the working tree is not copied
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    subprocess.run(["git", "init", "-q"], cwd=target, check=True)
    return target


def dvc(
    copy: Path, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in LEAKY}
    return subprocess.run(
        [str(DVC), *args],
        cwd=copy,
        env={
            **clean,
            "DVC_NO_ANALYTICS": "1",
            "DVC_SITE_CACHE_DIR": str(copy / "state" / "dvc-site-cache"),
            "PATH": f"{DVC.parent}{os.pathsep}{clean.get('PATH', '')}",
            # The copy's code, not the repository's editable install.
            "PYTHONPATH": str(copy / "src"),
            "PYTHONDONTWRITEBYTECODE": "1",
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )


def stale_inputs(status: Mapping[str, list[object]], outs: set[str]) -> dict[str, list[str]]:
    """From ``dvc status --json``: per stage, what differs from the lock other than the
    outputs of stages, which a fresh clone does not have (they show as deleted)."""
    stale: dict[str, list[str]] = {}
    for stage, items in status.items():
        for item in items:
            if isinstance(item, str):  # "changed command", "always changed"
                stale.setdefault(stage, []).append(item)
                continue
            assert isinstance(item, dict)
            for kind, changes in item.items():
                if kind == "changed outs":
                    continue
                for path, change in changes.items():
                    if kind == "changed deps" and any(
                        path == out or path.startswith(out + "/") for out in outs
                    ):
                        continue
                    stale.setdefault(stage, []).append(f"{path}: {change}")
    return stale


def declared_outs() -> set[str]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    outs: set[str] = set()
    for stage in stages.values():
        for entry in [*stage.get("outs", []), *stage.get("metrics", []), *stage.get("plots", [])]:
            outs.update(entry if isinstance(entry, dict) else [entry])
    return outs


def test_stale_inputs_ignores_missing_outputs_only() -> None:
    status = {
        "features": [
            {"changed deps": {"state/data": "deleted", "src/a.py": "modified"}},
            {"changed outs": {"state/features": "not in cache"}},
        ],
        "train": [
            {"changed deps": {"configs/train.yaml": {"model": "modified"}}},
            "changed command",
        ],
        "simulate": [{"changed outs": {"state/data": "deleted"}}],
    }
    assert stale_inputs(status, {"state/data", "state/features"}) == {
        "features": ["src/a.py: modified"],
        "train": ["configs/train.yaml: {'model': 'modified'}", "changed command"],
    }


def test_dvc_lock_matches_the_code_and_params(tmp_path: Path) -> None:
    # Given a fresh copy of the repository (no state/, no cache)
    copy = copy_tracked(tmp_path / "repo")
    # When DVC compares dvc.lock with the code, configs and commands of each stage
    result = dvc(copy, "status", "--json")
    assert result.returncode == 0, result.stderr
    stale = stale_inputs(json.loads(result.stdout or "{}"), declared_outs())
    # Then only the outputs are missing: the lock was made from this code and these params
    assert not stale, (
        "dvc.lock is stale for the code and params: "
        + "; ".join(f"stage {s}: {', '.join(c)}" for s, c in sorted(stale.items()))
        + f". Refresh it: {REFRESH}"
    )


def test_dvc_remote_round_trip(tmp_path: Path) -> None:
    # Given the simulate stage run on a tiny world in a copy, and a remote of the test's own
    copy = copy_tracked(tmp_path / "repo")
    remote = tmp_path / "remote"
    tiny = {
        "FRAUD_SIMULATE__DAYS": "2",
        "FRAUD_SIMULATE__ROWS_PER_DAY": "200",
        "FRAUD_SIMULATE__CARDS": "50",
        "FRAUD_SIMULATE__MERCHANTS": "10",
        "FRAUD_SIMULATE__LABEL_DELAY_DAYS": "1",
    }
    ran = dvc(copy, "repro", "--single-item", "simulate", env=tiny)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    produced = copy / "state" / "data"
    original = tmp_path / "original"
    shutil.copytree(produced, original)
    files = sorted(p.relative_to(original) for p in original.rglob("*") if p.is_file())
    assert len(files) >= 4  # two days of transactions and of labels
    # (--local: .dvc/config.local, so the committed default remote is not touched)
    added = dvc(copy, "remote", "add", "--local", "roundtrip", str(remote))
    assert added.returncode == 0, added.stderr

    # When the data is pushed, the cache and the outputs deleted, and the data pulled back
    pushed = dvc(copy, "push", "--remote", "roundtrip", "simulate")
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert any(p.is_file() for p in remote.rglob("*"))
    shutil.rmtree(copy / ".dvc" / "cache")
    shutil.rmtree(produced)
    pulled = dvc(copy, "pull", "--remote", "roundtrip", "simulate")
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr

    # Then every file is back, byte for byte, and the committed config still names its own
    # remote as the default
    back = sorted(p.relative_to(produced) for p in produced.rglob("*") if p.is_file())
    assert back == files
    _, mismatch, errors = filecmp.cmpfiles(original, produced, [str(f) for f in files], False)
    assert not mismatch, f"files differ after the round trip: {mismatch}"
    assert not errors
    assert (copy / ".dvc" / "config").read_text() == (ROOT / ".dvc" / "config").read_text()
    status = dvc(copy, "status", "simulate")
    assert "up to date" in status.stdout, status.stdout + status.stderr

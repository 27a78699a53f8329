"""DVC's stages are the state switch's one exception, and say so: they run on ``state/``.

DVC tracks outputs inside the repository only (DVC 3 removed external outputs) and
``dvc.yaml`` reads no environment variable, so its stages cannot follow
``FRAUD_PROFILE__STATE_DIR``. Instead every stage is pinned to ``state/``: its command
says ``--state-dir state`` (so the profile, the environment or ``.env`` cannot send the
command elsewhere than where its outputs are declared), and every data path it names is
under ``state/``.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
CODE = ("src/", "configs/", "feature_repo")


def _paths(entries: list[object]) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else str(e) for e in entries]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_stage_command_is_pinned_to_state(name: str) -> None:
    words = shlex.split(STAGES[name]["cmd"])
    assert words[0] == "fraud"
    assert "--state-dir" in words, f"stage {name}: its command needs --state-dir state"
    assert words[words.index("--state-dir") + 1] == "state"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_data_path_of_a_stage_is_under_state(name: str) -> None:
    stage = STAGES[name]
    data = [p for p in _paths(stage.get("deps", [])) if not p.startswith(CODE)]
    for key in ("outs", "metrics", "plots"):
        data += _paths(stage.get(key, []))
    words = shlex.split(stage["cmd"])
    data += [words[i + 1] for i, w in enumerate(words) if w in ("--out", "--training-set")]
    outside = [p for p in data if p != "state" and not p.startswith("state/")]
    assert not outside, f"stage {name}: data paths outside state/: {outside}"


def test_the_makefile_says_dvc_runs_on_state() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nrepro:", 1)[1].split("\n\n", 1)[0]
    assert "DVC's stages run on $(CURDIR)/state" in recipe

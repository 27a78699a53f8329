"""One state switch: ``FRAUD_PROFILE__STATE_DIR`` (``make <target> STATE_DIR=...``) moves
the state folder for every command and make target; ``fraud clean`` deletes only it.

``fraud info --path`` is how the Makefile asks where the state folder is; ``fraud clean``
(``make clean``) deletes that folder and refuses one that holds the project or a
repository; no make recipe names ``state/`` itself, except DVC's (dvc.yaml's stages run
on ``state/``: tests/unit/test_dvc_state.py).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fraud_detection.cli import app
from fraud_detection.config import removable_state_dir
from fraud_detection.errors import PathError

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "elsewhere"
    monkeypatch.setenv("FRAUD_PROJECT_DIR", str(ROOT))
    monkeypatch.setenv("FRAUD_PROFILE", "local")
    monkeypatch.setenv("FRAUD_PROFILE__STATE_DIR", str(folder))
    return folder


def test_info_path_prints_the_state_folder_only(state: Path) -> None:
    result = CliRunner().invoke(app, ["info", "--path"])
    assert result.exit_code == 0, result.output
    assert result.output == f"{state}\n"


def test_clean_deletes_the_state_folder_it_names_and_nothing_else(state: Path) -> None:
    # Given a state folder and a file beside it
    (state / "ct").mkdir(parents=True)
    (state / "ct" / "runs.jsonl").write_text("{}\n")
    beside = state.parent / "keep.txt"
    beside.write_text("keep")
    # When it is cleaned
    result = CliRunner().invoke(app, ["clean"])
    # Then the folder is gone, the file beside it is not, and it says which folder
    assert result.exit_code == 0, result.output
    assert f"deleted the state folder {state}" in result.output
    assert not state.exists()
    assert beside.read_text() == "keep"
    # And a second clean has nothing to do
    again = CliRunner().invoke(app, ["clean"])
    assert f"nothing to clean: {state} does not exist" in again.output


@pytest.mark.parametrize("what", ["project", "parent", "repository", "home"])
def test_clean_refuses_a_folder_that_is_not_only_state(
    what: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    repo = tmp_path / "other"
    (repo / ".git").mkdir(parents=True)
    folder = {
        "project": project,
        "parent": tmp_path,
        "repository": repo,
        "home": tmp_path / "home",
    }[what]
    with pytest.raises(PathError, match="not deleting") as refused:
        removable_state_dir(folder, root=project)
    assert "\n" not in str(refused.value)
    assert folder.exists()


def test_make_recipes_name_no_state_folder_but_dvcs() -> None:
    # Recipe lines only (after a tab), comments and help texts aside.
    recipes = [
        line
        for line in (ROOT / "Makefile").read_text().splitlines()
        if line.startswith("\t") and not line.strip().startswith("#")
    ]
    path = re.compile(r"(?<![\w$.-])state/|rm -r\w* +\"?state\b")
    hard_coded = [line for line in recipes if path.search(line)]
    # repro-sample works in a throwaway copy of the repository, as DVC does: its state/.
    allowed = [line for line in hard_coded if "DVC_SITE_CACHE_DIR" in line]
    assert hard_coded == allowed, hard_coded


@pytest.mark.parametrize("how", ["command line", "environment"])
def test_make_follows_the_state_folder_given_either_way(how: str, tmp_path: Path) -> None:
    # make -n prints the recipes with the state folder as make resolved it.
    folder = tmp_path / "moved"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    args = ["make", "--no-print-directory", "-n", "repro", "ct-new-data"]
    if how == "command line":
        args.append(f"STATE_DIR={folder}")
    else:
        env["FRAUD_PROFILE__STATE_DIR"] = str(folder)
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert f"not on the profile's state folder {folder}" in done.stdout
    assert f'--state-dir "{folder}"' in done.stdout  # ct-new-data: CT_STATE_DIR's default

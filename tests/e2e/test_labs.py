"""Every workshop lab, as a participant who falls behind meets it (docs/workshop/).

For each lab, through the make targets: ``make lab-start LAB=n`` builds its state from
nothing; ``make lab-check`` then fails with one hint line (``fraud lab check`` exits 1, which
make reports as its own exit code 2); ``make lab-solve`` applies the reference solution;
``make lab-check`` exits 0. Both check lines are the ones the lab's page quotes under "What
you should see" (measured figures aside). The labs live in a temporary LABS_DIR, so the
repository's own state/ is never touched.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from fraud_detection.labs.catalog import LABS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
# What the issue asks of a lab's start on 2 cores, with room for a loaded CI machine.
START_BUDGET_S = 240
DECIMAL = re.compile(r"\d+\.\d+")
USER = re.compile(r"\bby \S+@\S+")


def essential(line: str, labs_dir: Path) -> str:
    """A check line as a lab's page quotes it: the labs folder as a participant has it
    (state/labs), the measured figures (decimals: a PR-AUC, a rate) and the user masked."""
    line = line.strip().replace(str(labs_dir), "state/labs")
    return DECIMAL.sub("<x>", USER.sub("by <user>", line))


def quoted(lab: int, prefix: str, labs_dir: Path) -> list[str]:
    """The lines of docs/workshop/lab-<lab>.md that start with ``prefix``, essential."""
    page = (ROOT / "docs" / "workshop" / f"lab-{lab}.md").read_text()
    return [essential(line, labs_dir) for line in page.splitlines() if line.startswith(prefix)]


def make(target: str, lab: int, labs_dir: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FRAUD_", "PREFECT_")) and k != "PYTHONPATH"
    }
    started = time.perf_counter()
    result = subprocess.run(
        ["make", "--no-print-directory", target, f"LAB={lab}", f"LABS_DIR={labs_dir}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return result, time.perf_counter() - started


@pytest.mark.parametrize("lab", sorted(LABS))
def test_a_lab_fails_its_check_until_solved(lab: int, tmp_path: Path) -> None:
    # Given a lab started from nothing
    started, seconds = make("lab-start", lab, tmp_path)
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"lab {lab} ready in" in started.stdout
    assert seconds < START_BUDGET_S, f"lab-start {lab} took {seconds:.0f} s"
    print(f"lab {lab}: lab-start {seconds:.0f} s")

    # When it is checked before anything was done, then it is not done, in one hint line
    before, _ = make("lab-check", lab, tmp_path)
    assert before.returncode == 2, before.stdout + before.stderr  # make's code for exit 1
    lines = before.stdout.strip().splitlines()
    assert len(lines) == 1, before.stdout
    assert lines[0].startswith(f"lab {lab} not done: "), lines[0]
    assert "Traceback" not in before.stderr
    # ... the line the lab's page shows
    page = f"docs/workshop/lab-{lab}.md"
    assert essential(lines[0], tmp_path) in quoted(lab, f"lab {lab} not done: ", tmp_path), (
        f"{page} does not quote the check's line: {lines[0]}"
    )

    # When its reference solution is applied, then the check passes
    solved, seconds = make("lab-solve", lab, tmp_path)
    assert solved.returncode == 0, solved.stdout + solved.stderr
    print(f"lab {lab}: lab-solve {seconds:.0f} s")
    after, _ = make("lab-check", lab, tmp_path)
    assert after.returncode == 0, after.stdout + after.stderr
    assert after.stdout.strip().splitlines() == [after.stdout.strip()]
    assert after.stdout.startswith(f"lab {lab} done: ")
    assert quoted(lab, f"lab {lab} done: ", tmp_path) == [essential(after.stdout, tmp_path)], (
        f"{page} does not quote the check's line: {after.stdout.strip()}"
    )


def test_a_lab_never_empties_a_folder_it_did_not_make(tmp_path: Path) -> None:
    # Given a lab folder that holds someone's files
    folder = tmp_path / "lab-8"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    # When the lab is started there, then it refuses in one line and the file stays
    started, _ = make("lab-start", 8, tmp_path)
    assert started.returncode != 0
    assert "not deleting it" in started.stderr
    assert (folder / "notes.txt").read_text() == "mine"


def test_a_lab_not_started_says_how_to_start_it(tmp_path: Path) -> None:
    checked = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "fraud"), "lab", "check", "3", "--labs-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 1
    assert checked.stdout.strip() == "lab 3 not done: it is not started: make lab-start LAB=3"

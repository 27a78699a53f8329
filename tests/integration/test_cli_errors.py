"""Every ``fraud`` command, given a broken input, fails in one line with its exit code.

The commands are enumerated from the typer app, so a command added later is covered
without editing this file. Each runs in a subprocess through the installed ``fraud``
entry point (``fraud_detection.cli:main``), with each broken input: a misspelt
``FRAUD_*`` variable, config files that are not UTF-8, a state folder that is a file,
a state folder that cannot be written, and out-of-range ids where a command takes one.
Every input fails before the command does any work, so the whole set runs in seconds.
The exit codes are the table of ``fraud_detection/errors.py`` (docs/reliability.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer

from fraud_detection.cli import app
from fraud_detection.errors import EXIT_CONFIG, EXIT_PATH, EXIT_USAGE

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
FRAUD = Path(sys.executable).with_name("fraud")
MAX_LINES = 3  # of output in all, for a command that fails on its input

# Arguments a command needs to get past its own checks of its arguments (which come
# before it reads a config file), or to stay harmless if an input did not stop it
# (write-suites would regenerate the repository's suite files).
EXTRA_ARGS = {
    "score": ["--latest"],
    "validate raw": ["--new"],
    "validate write-suites": ["--check"],
}
# Commands that read no config file and no state folder: those inputs cannot break them.
READS_NO_CONFIG_OR_STATE = {
    "validate write-suites": "builds the suites from code",
    "lab list": "prints the lab catalogue from code",
}
OUT_OF_RANGE_IDS = ("99999999999999999999", "-1")


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]
    params: dict[str, bool] = field(default_factory=dict)  # name -> required
    options: dict[str, str] = field(default_factory=dict)  # name -> its flag
    numbers: frozenset[str] = frozenset()  # arguments that take an integer

    @property
    def name(self) -> str:
        return " ".join(self.words)

    def required_args(self, a_file: Path) -> list[str]:
        """A placeholder for each required option ("1") or argument (an integer argument
        "1", any other a Parquet file), so that the command reaches the input under test."""
        args: list[str] = []
        for name, required in self.params.items():
            if not required:
                continue
            if name in self.options:
                args += [self.options[name], "1"]
            else:
                args += ["1"] if name in self.numbers else [str(a_file)]
        return args


def _annotation(param: object) -> object:
    """The Python type a parameter was declared with (typer keeps it on the parameter)."""
    return getattr(getattr(param, "type_descriptor", None), "annotation", None)


def _commands() -> list[Command]:
    found = []

    def walk(command: object, words: tuple[str, ...]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands is not None:
            for name, sub in subcommands.items():
                walk(sub, (*words, name))
            return
        params = getattr(command, "params", [])
        found.append(
            Command(
                words,
                {p.name: bool(p.required) for p in params},
                {p.name: p.opts[0] for p in params if p.opts and p.opts[0].startswith("--")},
                frozenset(p.name for p in params if _annotation(p) is int),
            )
        )

    walk(typer.main.get_command(app), ())
    return found


@dataclass(frozen=True)
class Case:
    command: Command
    broken: str  # what is broken, for the report
    args: tuple[str, ...]
    env: dict[str, str]
    code: int
    says: str  # the line must contain this


@dataclass(frozen=True)
class Outcome:
    case: Case
    code: int
    output: str


def _unwritable_folder(tmp_path: Path) -> Path | None:
    """A folder no file can be created in (as root, permission bits do not stop it)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys")):
        try:
            with tempfile.TemporaryFile(dir=candidate):
                pass
        except OSError:
            return candidate
    return None


def _non_utf8_project(tmp_path: Path) -> Path:
    """A project whose every config file starts with a byte that is not UTF-8."""
    project = tmp_path / "project"
    shutil.copytree(REPO / "configs", project / "configs")
    for path in (project / "configs").rglob("*.yaml"):
        path.write_bytes(b"\xff" + path.read_bytes())
    return project


def _cases(tmp_path: Path) -> list[Case]:
    import pandas as pd

    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder\n")
    a_frame = tmp_path / "frame.parquet"
    pd.DataFrame({"amount": [1.0]}).to_parquet(a_frame)
    unwritable = _unwritable_folder(tmp_path)
    broken_project = _non_utf8_project(tmp_path)
    cases = []
    for command in _commands():
        base = (
            *command.words,
            *command.required_args(a_frame),
            *EXTRA_ARGS.get(command.name, []),
        )

        def case(broken: str, code: int, says: str, args: tuple[str, ...] = (), **env: str) -> None:
            cases.append(Case(command, broken, (*base, *args), env, code, says))  # noqa: B023

        case(
            "misspelt variable",
            EXIT_CONFIG,
            "FRAUD_SIMULATE__ROWS_PER_DAY",
            FRAUD_SIMULATE__ROWZ_PER_DAY="5",
        )
        for name in command.params:
            if name.endswith("_id"):
                flag = command.options[name]
                for value in OUT_OF_RANGE_IDS:
                    case(f"{flag} {value}", EXIT_USAGE, flag, (flag, value))
        if command.name in READS_NO_CONFIG_OR_STATE:
            continue
        case("config not UTF-8", EXIT_CONFIG, "not UTF-8", FRAUD_PROJECT_DIR=str(broken_project))
        if "state_dir" in command.params:
            case("--state-dir a file", EXIT_PATH, str(a_file), ("--state-dir", str(a_file)))
            if unwritable is not None:
                target = str(unwritable / "state")
                case("--state-dir unwritable", EXIT_PATH, target, ("--state-dir", target))
        else:
            case(
                "profile state_dir a file",
                EXIT_PATH,
                str(a_file),
                FRAUD_PROFILE__STATE_DIR=str(a_file),
            )
    return cases


def _run(case: Case, cwd: Path, base_env: dict[str, str]) -> Outcome:
    try:
        done = subprocess.run(
            [str(FRAUD), *case.args],
            cwd=cwd,
            env={**base_env, **case.env},
            capture_output=True,
            text=True,
            timeout=60,  # a command the input did not stop (a server) is killed
        )
    except subprocess.TimeoutExpired:
        return Outcome(case, -1, "(still running after 60 s: the input did not stop it)")
    return Outcome(case, done.returncode, done.stdout + done.stderr)


def _problems(outcome: Outcome) -> list[str]:
    case, output = outcome.case, outcome.output
    lines = [line for line in output.splitlines() if line.strip()]
    problems = []
    if "Traceback" in output:
        problems.append("a traceback")
    if len(lines) > MAX_LINES:
        problems.append(f"{len(lines)} lines")
    if outcome.code != case.code:
        problems.append(f"exit {outcome.code}, expected {case.code}")
    if case.says not in output:
        problems.append(f"no mention of {case.says!r}")
    return problems


def test_every_command_fails_on_a_broken_input_in_one_line_with_its_exit_code(
    tmp_path: Path,
) -> None:
    # Given: every command, each broken input, a clean environment and working folder
    cases = _cases(tmp_path)
    base_env = {k: v for k, v in os.environ.items() if not k.upper().startswith("FRAUD_")}
    base_env |= {
        "FRAUD_PROJECT_DIR": str(REPO),
        "FRAUD_PROFILE__STATE_DIR": str(tmp_path / "state"),  # never the repository's
        "COLUMNS": "100",
    }
    cwd = tmp_path / "cwd"  # no .env here
    cwd.mkdir()

    # When: each runs (a few at a time: most of a run is starting Python)
    with ThreadPoolExecutor(max_workers=max(2, (os.cpu_count() or 2))) as pool:
        outcomes = list(pool.map(lambda c: _run(c, cwd, base_env), cases))

    # Then: one line (or two), no traceback, the exit code of the kind of error
    failures = [
        f"fraud {' '.join(o.case.args)} [{o.case.broken}]: {', '.join(p)}\n    "
        + "\n    ".join(o.output.strip().splitlines()[-6:])
        for o in outcomes
        if (p := _problems(o))
    ]
    commands = {o.case.command.name for o in outcomes}
    assert len(commands) >= 25, sorted(commands)
    assert not failures, f"{len(failures)} of {len(outcomes)} runs:\n" + "\n".join(failures)


def test_an_unreadable_mlflow_database_fails_in_a_second_not_after_minutes(
    tmp_path: Path,
) -> None:
    # Given: the profile's SQLite store is a folder, then a file that is not SQLite
    # (MLflow itself retries opening such a store for about 100 s, then raises)
    import time

    from fraud_detection.config import load_profile
    from fraud_detection.errors import EXIT_UNAVAILABLE, ServiceUnavailableError
    from fraud_detection.registry import tracking

    profile = load_profile().model_copy(update={"state_dir": tmp_path})
    store = tmp_path / "mlflow" / "mlflow.db"
    for garbage, why in ((False, "not a file"), (True, "not an SQLite")):
        if garbage:
            store.rmdir()
            store.write_bytes(b"\x00garbage" * 100)
        else:
            store.mkdir(parents=True)
        started = time.perf_counter()
        # When: MLflow is set up on it
        with pytest.raises(ServiceUnavailableError, match=why) as caught:
            tracking.setup_mlflow(profile)
        # Then: one error naming the file, at once, exit code 5
        assert time.perf_counter() - started < 5
        assert str(store) in str(caught.value)
        assert caught.value.exit_code == EXIT_UNAVAILABLE

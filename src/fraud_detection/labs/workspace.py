"""What every lab shares: its folder, its environment, and the steps that build its state.

A lab's folder is its state folder (``FRAUD_PROFILE__STATE_DIR``) and holds ``lab.env``,
the variables a participant sources to work in it. Labs that change code work on a copy
of the repository's tracked files inside that folder (``repo/``), never on the
participant's own files: ``lab.env`` points ``fraud`` at the copy (``PYTHONPATH``,
``FRAUD_PROJECT_DIR``).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fraud_detection.config import StatePaths, project_dir
from fraud_detection.errors import FraudError

# Written into a lab's folder by ``start``: only a folder carrying it is ever emptied.
MARKER = ".fraud-lab"
ENV_FILE = "lab.env"
REPO = "repo"
# The labs' simulated world: small enough that a CT run takes seconds on 2 cores.
START_DATE = dt.date(2026, 1, 1)
WORLD: dict[str, Any] = {
    "seed": 42,
    "start_date": START_DATE,
    "rows_per_day": 1_500,
    "cards": 300,
    "merchants": 60,
    "label_delay_days": 1,
}
# The repository's folders a lab copy holds (no Makefile: nobody builds a second .venv).
COPIED = ("configs", "feature_repo", "pipelines", "src", "tests", "pyproject.toml")


# Variables that would point a lab's commands at another state, project or server.
def _foreign(name: str) -> bool:
    return (name.startswith("FRAUD_") and name != "FRAUD_DEBUG") or name.startswith(
        ("PREFECT_", "PYTHONPATH")
    )


Progress = Callable[[str], None]


def day(index: int) -> dt.date:
    """The date of the world's day ``index`` (0-based, as configs/simulate.yaml counts)."""
    return START_DATE + dt.timedelta(days=index)


def world_env(**overrides: Any) -> dict[str, str]:
    """The world as ``FRAUD_SIMULATE__*`` variables, so `fraud simulate` in the lab's
    shell extends the same world (earlier days come out identical)."""
    values = {**WORLD, **overrides}
    return {f"FRAUD_SIMULATE__{key.upper()}": str(value) for key, value in values.items()}


@dataclass
class Workspace:
    """Lab ``number``'s folder under ``labs_dir`` and the variables of its ``lab.env``."""

    number: int
    labs_dir: Path
    progress: Progress = print
    env: dict[str, str] = field(default_factory=dict)
    _started: float = field(default_factory=time.perf_counter)

    @property
    def root(self) -> Path:
        return (self.labs_dir / f"lab-{self.number}").resolve()

    @property
    def paths(self) -> StatePaths:
        return StatePaths(root=self.root)

    @property
    def repo(self) -> Path:
        return self.root / REPO

    @property
    def project(self) -> Path:
        return project_dir()

    def shown(self, path: Path) -> str:
        """``path`` relative to the project when it is inside it (what people type)."""
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    def say(self, message: str) -> None:
        self.progress(f"  [{time.perf_counter() - self._started:5.1f} s] {message}")

    # ---------------------------------------------------------------- the folder

    def reset(self) -> None:
        """An empty folder for the lab: an earlier lab's folder (it carries the marker) is
        emptied; a non-empty folder without it is refused, never deleted."""
        root = self.root
        if root.exists() and any(root.iterdir()):
            if not (root / MARKER).exists():
                raise FraudError(
                    f"{root} holds files no lab made (no {MARKER} in it): not deleting it; "
                    "move it away or pass another LABS_DIR"
                )
            shutil.rmtree(root)
            self.say(f"emptied the earlier lab folder {self.shown(root)}")
        root.mkdir(parents=True, exist_ok=True)
        (root / MARKER).write_text(f"lab {self.number}\n")
        self.enter()

    def started(self) -> bool:
        return (self.root / MARKER).exists()

    def require(self) -> None:
        """The lab was started (check, solve): else one line saying how to start it."""
        if not (self.root / MARKER).exists():
            raise FraudError(
                f"lab {self.number} is not started ({self.shown(self.root)} missing): "
                f"make lab-start LAB={self.number}"
            )
        self.env = read_env(self.root / ENV_FILE)
        self.enter()

    def enter(self) -> None:
        """This process works in the lab: its state folder, the local profile, no server."""
        for name in [k for k in os.environ if _foreign(k)]:
            del os.environ[name]
        os.environ["FRAUD_PROFILE"] = "local"
        os.environ["FRAUD_PROFILE__STATE_DIR"] = str(self.root)
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("FRAUD_SIMULATE__")})

    def write_env(self, **extra: str) -> Path:
        """``lab.env``: the state folder, the world, and ``extra`` (a lab's own settings)."""
        self.env = {
            "FRAUD_PROFILE": "local",
            "FRAUD_PROFILE__STATE_DIR": str(self.root),
            **world_env(),
            **self.env,
            **extra,
        }
        lines = [
            f"# Lab {self.number}: `source {self.shown(self.root / ENV_FILE)}` from the "
            "repository's root to work in the lab's state folder",
            *(f"export {key}={value}" for key, value in self.env.items()),
            f'export PATH="{Path(sys.executable).parent}:$PATH"',
        ]
        path = self.root / ENV_FILE
        path.write_text("\n".join(lines) + "\n")
        return path

    def set_env(self, key: str, value: str) -> None:
        """Change one variable of ``lab.env`` (a lab's reference solution does)."""
        self.env[key] = value
        self.write_env()

    # ---------------------------------------------------------------- commands

    def environment(self) -> dict[str, str]:
        """The environment of a command run in the lab, as after ``source lab.env``."""
        env = {k: v for k, v in os.environ.items() if not _foreign(k)}
        env.update(self.env)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def run(
        self, *command: str, cwd: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command of the project's .venv as a participant would, in the lab's
        environment; its output is kept (the last lines are shown when it fails)."""
        executable = Path(sys.executable).parent / command[0]
        argv = [str(executable) if executable.exists() else command[0], *command[1:]]
        result = subprocess.run(  # noqa: S603  (the .venv's own tools, an argument list)
            argv,
            cwd=cwd or self.project,
            env=self.environment(),
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            tail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-3:]
            raise FraudError(
                f"`{' '.join(command)}` failed in lab {self.number} (exit {result.returncode}): "
                + " | ".join(tail)
            )
        return result

    # ---------------------------------------------------------------- building state

    def simulate(self, days: int, **overrides: Any) -> None:
        """Simulate days ``0..days-1`` of the labs' world into the lab's state."""
        from fraud_detection.config import load_simulate_config
        from fraud_detection.data.simulator import write_simulation

        config = load_simulate_config(overrides={**WORLD, "days": days, **overrides})
        summary = write_simulation(config, self.paths)
        self.say(
            f"simulated {summary.rows:,} transactions over {summary.days} days "
            f"({day(0)} to {day(days - 1)})"
        )

    def ct(
        self, *, trigger: str = "on_demand", variant: str = "normal", force: bool = False
    ) -> Any:
        """One CT run (the Prefect flow, in this process: one temporary server for all)."""
        from fraud_detection.orchestration.local import load_flows, prefect_environment

        self.say(f"CT run ({trigger}, {variant}) starting: Prefect first (a temporary server)…")
        prefect_environment(self.root)
        flows = load_flows()
        record = flows.ct_flow(
            trigger=trigger, state_dir=str(self.root), variant=variant, force=force
        )
        champion = record["champion_version"]
        self.say(
            f"CT run ({trigger}, {variant}): {record['outcome']}; champion "
            f"{'v' + champion if champion else 'none'}"
        )
        return record

    def hold_back(self, days: Sequence[dt.date]) -> None:
        """Move the raw partitions of ``days`` out of the state: not arrived yet."""
        feed = self.root / "feed"
        feed.mkdir(exist_ok=True)
        for when in days:
            folder = self.paths.raw / f"date={when.isoformat()}"
            folder.rename(feed / folder.name)

    def arrive(self, days: Sequence[dt.date]) -> None:
        """Held-back days arrive and pass the data gate into feature tables (CT's own
        steps, without training)."""
        from fraud_detection.training import ct

        for when in days:
            name = f"date={when.isoformat()}"
            (self.root / "feed" / name).rename(self.paths.raw / name)
        outcomes = {when: ct.validate_partition(self.paths, when) for when in days}
        gate = ct.summarize_data_gate(outcomes)
        ct.update_features(self.paths, gate.accepted)
        self.say(f"data gate and feature tables for {len(days)} more day(s): {gate.summary()}")

    def copy_repository(self) -> Path:
        """The repository's files of :data:`COPIED` as they are in the working tree (git's
        ignored files left out) into ``repo/``, the lab's own copy to change, with a ``git``
        history of one commit to diff against."""
        listed = subprocess.run(  # noqa: S603  (git with a fixed argument list)
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *COPIED],  # noqa: S607  (git on PATH)
            cwd=self.project,
            capture_output=True,
            check=False,
        )
        files = [f for f in listed.stdout.decode().split("\0") if f]
        if listed.returncode != 0 or not files:
            # Not a git checkout (an unpacked archive): the folders as they are.
            files = [
                str(p.relative_to(self.project))
                for name in COPIED
                for p in ([self.project / name] if (self.project / name).is_file() else [])
                + sorted((self.project / name).rglob("*"))
                if p.is_file() and "__pycache__" not in p.parts
            ]
        for name in files:
            target = self.repo / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(self.project / name, target)
        git = ["git", "-c", "user.name=lab", "-c", "user.email=lab@localhost"]
        for step in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "the lab's start"]):
            subprocess.run(  # noqa: S603  (git with the lab's own arguments)
                [*git, *step], cwd=self.repo, capture_output=True, check=False
            )
        self.say(f"copied {len(files)} files of the repository into {self.shown(self.repo)}")
        return self.repo

    def use_repository_copy(self) -> None:
        """``fraud`` in the lab's environment runs the copy's code and configs."""
        self.env["FRAUD_PROJECT_DIR"] = str(self.repo)
        self.env["PYTHONPATH"] = str(self.repo / "src")


def read_env(path: Path) -> dict[str, str]:
    """The ``export KEY=VALUE`` lines of a ``lab.env`` (PATH left out)."""
    env: dict[str, str] = {}
    if not path.exists():
        return env
    for line in path.read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            key, value = line.removeprefix("export ").split("=", 1)
            if key != "PATH":
                env[key.strip()] = value.strip().strip('"')
    return env


def replace_in(path: Path, old: str, new: str) -> None:
    """Replace the one occurrence of ``old`` in ``path`` (a lab's edit of its copy)."""
    text = path.read_text()
    if text.count(old) != 1:
        raise FraudError(f"{path} no longer holds the text the lab edits: {old.strip()[:60]!r}")
    path.write_text(text.replace(old, new))


def json_file(path: Path) -> Mapping[str, Any] | None:
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None

"""``make doctor``: is this machine ready for the project? One line per check.

Checks the Python that ``make`` uses, the locked environment (``.venv``), the ports the
project's servers listen on (the MLflow UI, the Prefect server, the prediction API), the
cores and the free disk. Each line says ``ok``, ``warn`` or ``fail``, what was found and,
unless ok, what to do; the exit code is 1 when a check fails.

Standard library only: it runs with the system's ``python3`` before ``.venv`` exists
(``python3 src/fraud_detection/doctor.py``, as ``make doctor`` does).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

OK, WARN, FAIL = "ok", "warn", "fail"
SUPPORTED = ((3, 11), (3, 12))  # pyproject.toml: requires-python >=3.11,<3.13
MIN_CORES = 2  # the timings in docs/ are measured on 2 cores
# .venv takes about 1.7 GB, a day-by-day demo's state a few hundred MB.
MIN_FREE_GB = 3.0
WANT_FREE_GB = 6.0


@dataclass(frozen=True)
class Check:
    """One line of the report: the status, what was checked, what was found, what to do."""

    status: str
    name: str
    found: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<5} {self.name:<22} {self.found}"
        return f"{text}: {self.fix}" if self.fix and self.status != OK else text


def _version(info: Sequence[int]) -> str:
    return ".".join(str(part) for part in info[:3])


def check_python(version: Sequence[int], executable: str) -> Check:
    """The Python ``make`` runs (``PYTHON``, ``python3`` by default)."""
    found = f"{_version(version)} ({executable})"
    major_minor = (version[0], version[1])
    if major_minor in SUPPORTED:
        return Check(OK, "python", found)
    if major_minor > SUPPORTED[-1]:
        return Check(
            WARN,
            "python",
            found,
            "the project needs 3.11 or 3.12; uv picks (or downloads, with the network) one of "
            "those for .venv; or run make with PYTHON=python3.12",
        )
    return Check(
        FAIL,
        "python",
        found,
        "the project needs Python 3.11 or 3.12: install one and run make with PYTHON=python3.12",
    )


def _venv_python_version(python: Path) -> str | None:
    try:
        done = subprocess.run(  # noqa: S603  (the environment's own interpreter, no shell)
            [str(python), "-c", "import sys; print('.'.join(map(str, sys.version_info[:3])))"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def check_venv(root: Path, probe: Callable[[Path], str | None] = _venv_python_version) -> Check:
    """``.venv``: there, its Python runs, and installed from the current ``uv.lock``."""
    venv = root / ".venv"
    python = venv / "bin" / "python"
    if not venv.is_dir():
        return Check(
            WARN,
            "venv",
            f"no {venv}",
            "make install creates it from uv.lock (any make target does it first; needs the "
            "network once, or a package cache: docs/troubleshooting.md)",
        )
    version = probe(python)
    if version is None:
        return Check(
            FAIL,
            "venv",
            f"{python} does not run (made by another Python, since removed?)",
            "delete .venv and run make install",
        )
    synced = venv / ".synced"
    lock = root / "uv.lock"
    if not synced.is_file():
        return Check(
            WARN, "venv", f"{venv} (Python {version}), never completed", "run make install"
        )
    if lock.is_file() and lock.stat().st_mtime > synced.stat().st_mtime:
        return Check(
            WARN,
            "venv",
            f"{venv} (Python {version}) is older than uv.lock",
            "make install brings it up to date (the next make target does it too)",
        )
    return Check(OK, "venv", f"{venv} (Python {version}), in step with uv.lock")


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def check_port(
    name: str,
    port: int,
    variable: str,
    target: str = "<target>",
    free: Callable[[int], bool] = port_free,
) -> Check:
    """A port one of the project's servers listens on, the make variable that moves it and
    the make target that starts the server."""
    label = f"port {port}"
    if free(port):
        return Check(OK, f"port ({name})", f"{label} is free")
    return Check(
        WARN,
        f"port ({name})",
        f"{label} is in use",
        f"if it is the {name} already running (make {target}), fine; else move it: "
        f"make {target} {variable}={port + 1} (and make doctor {variable}={port + 1})",
    )


def check_cores(count: int | None) -> Check:
    found = f"{count or '?'} core(s)"
    if count is None or count < MIN_CORES:
        return Check(
            WARN,
            "cores",
            found,
            f"the timings in docs/ are for {MIN_CORES} cores: expect the demos to take longer",
        )
    return Check(OK, "cores", found)


def check_disk(free_bytes: int, where: Path) -> Check:
    free_gb = free_bytes / 1e9
    found = f"{free_gb:.1f} GB free at {where}"
    if free_gb < MIN_FREE_GB:
        return Check(
            FAIL,
            "disk",
            found,
            f".venv needs ~1.7 GB and a demo's state a few hundred MB: free at least "
            f"{MIN_FREE_GB:g} GB (make clean deletes the state folder)",
        )
    if free_gb < WANT_FREE_GB:
        return Check(
            WARN,
            "disk",
            found,
            f"enough to start; {WANT_FREE_GB:g} GB leaves room for several states and the "
            "DVC cache (make clean deletes the state folder)",
        )
    return Check(OK, "disk", found)


def _ports(specs: Sequence[str]) -> list[tuple[str, int, str, str]]:
    """``name=port=VARIABLE=target`` specs (``--port``)."""
    ports = []
    for spec in specs:
        parts = spec.split("=")
        if len(parts) != 4 or not parts[1].isdigit() or not 0 < int(parts[1]) < 65536:
            raise SystemExit(f"error: --port {spec!r}: give name=port=MAKE_VARIABLE=make-target")
        ports.append((parts[0], int(parts[1]), parts[2], parts[3]))
    return ports


def run_checks(root: Path, ports: Sequence[tuple[str, int, str, str]]) -> list[Check]:
    checks = [check_python(tuple(sys.version_info[:3]), sys.executable), check_venv(root)]
    checks += [check_port(name, port, variable, target) for name, port, variable, target in ports]
    checks.append(check_cores(os.cpu_count()))
    checks.append(check_disk(shutil.disk_usage(root).free, root))
    return checks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the repository")
    parser.add_argument(
        "--port",
        action="append",
        default=[],
        help="name=port=MAKE_VARIABLE=make-target: a port a server of the project listens on, "
        "the variable that moves it, the target that starts it (repeatable)",
    )
    args = parser.parse_args(argv)
    checks = run_checks(args.root.resolve(), _ports(args.port))
    for check in checks:
        print(check.line())
    counts = {status: sum(c.status == status for c in checks) for status in (OK, WARN, FAIL)}
    print(f"doctor: {counts[OK]} ok, {counts[WARN]} warn, {counts[FAIL]} fail")
    return 1 if counts[FAIL] else 0


if __name__ == "__main__":
    sys.exit(main())

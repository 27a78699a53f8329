"""``make doctor``: one line per check (ok / warn / fail, what was found, what to do),
exit 1 only when a check fails."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fraud_detection import doctor

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("version", "status"),
    [((3, 11, 7), "ok"), ((3, 12, 1), "ok"), ((3, 13, 0), "warn"), ((3, 10, 12), "fail")],
)
def test_python_versions(version: tuple[int, int, int], status: str) -> None:
    check = doctor.check_python(version, "/usr/bin/python3")
    assert check.status == status
    if status != "ok":
        assert "3.11 or 3.12" in check.line()


def _venv(root: Path, synced: bool = True) -> None:
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / "uv.lock").write_text("lock")
    if synced:
        (root / ".venv" / ".synced").touch()


def test_a_missing_venv_is_a_warning_saying_make_install(tmp_path: Path) -> None:
    check = doctor.check_venv(tmp_path, probe=lambda _: "3.11.7")
    assert check.status == "warn"
    assert "make install" in check.line()


def test_a_venv_in_step_with_the_lock_is_ok(tmp_path: Path) -> None:
    _venv(tmp_path)
    assert doctor.check_venv(tmp_path, probe=lambda _: "3.11.7").status == "ok"


def test_a_venv_older_than_the_lock_is_a_warning(tmp_path: Path) -> None:
    _venv(tmp_path)
    later = time.time() + 60
    os.utime(tmp_path / "uv.lock", (later, later))
    check = doctor.check_venv(tmp_path, probe=lambda _: "3.11.7")
    assert (check.status, "older than uv.lock" in check.found) == ("warn", True)


def test_a_venv_whose_python_does_not_run_fails(tmp_path: Path) -> None:
    _venv(tmp_path)
    check = doctor.check_venv(tmp_path, probe=lambda _: None)
    assert check.status == "fail"
    assert "make install" in check.fix


def test_a_port_in_use_is_named_with_the_variable_that_moves_it() -> None:
    # Given a port something listens on
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        check = doctor.check_port("MLflow UI", port, "MLFLOW_PORT", "mlflow-ui")
    # Then the line says so and how to move the project's server
    assert check.status == "warn"
    assert f"port {port} is in use" in check.line()
    assert f"make mlflow-ui MLFLOW_PORT={port + 1}" in check.line()


def test_a_free_port_is_ok() -> None:
    assert (
        doctor.check_port("x", 4200, "PREFECT_PORT", "deploy", free=lambda _: True).status == "ok"
    )


@pytest.mark.parametrize(("cores", "status"), [(1, "warn"), (None, "warn"), (2, "ok"), (8, "ok")])
def test_cores(cores: int | None, status: str) -> None:
    assert doctor.check_cores(cores).status == status


@pytest.mark.parametrize(("gb", "status"), [(1.0, "fail"), (4.0, "warn"), (50.0, "ok")])
def test_disk(gb: float, status: str) -> None:
    check = doctor.check_disk(int(gb * 1e9), Path("/work"))
    assert check.status == status
    assert check.line().startswith(f"{status:<5} disk ")


def test_the_script_runs_with_the_standard_library_only_and_exits_1_on_a_fail(
    tmp_path: Path,
) -> None:
    # Run as make doctor runs it: a file, by a Python without the project's packages.
    script = ROOT / "src" / "fraud_detection" / "doctor.py"
    done = subprocess.run(
        [
            sys.executable,
            "-S",
            str(script),
            "--root",
            str(ROOT),
            "--port",
            "x=4200=PREFECT_PORT=deploy",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = done.stdout.splitlines()
    assert done.returncode in (0, 1), done.stderr
    assert [line.split()[0] for line in lines[:-1]] == [
        c.status for c in doctor.run_checks(ROOT, [("x", 4200, "PREFECT_PORT", "deploy")])
    ]
    assert lines[-1].startswith("doctor: ")
    assert (done.returncode == 1) == ("fail" in [line.split()[0] for line in lines[:-1]])


def test_a_bad_port_spec_is_one_line() -> None:
    with pytest.raises(SystemExit, match="name=port=MAKE_VARIABLE=make-target"):
        doctor.main(["--port", "mlflow=abc"])

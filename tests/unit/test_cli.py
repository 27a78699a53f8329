"""The command line: every command has --help, and help does not import the heavy stack."""

import subprocess
import sys

import click
import pytest
import typer.main
from typer.testing import CliRunner

from fraud_detection.cli import app

pytestmark = pytest.mark.unit

HEAVY = ("pandas", "sklearn", "mlflow", "feast", "great_expectations", "prefect", "dvc")


def _command_paths() -> list[list[str]]:
    root = typer.main.get_command(app)
    paths: list[list[str]] = [[]]

    def walk(group: click.Command, prefix: list[str]) -> None:
        if isinstance(group, click.Group):
            for name, sub in group.commands.items():
                paths.append([*prefix, name])
                walk(sub, [*prefix, name])

    walk(root, [])
    return paths


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "fraud")
def test_every_command_has_help(path: list[str]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_help_imports_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "from fraud_detection.cli import app\n"
        "from typer.testing import CliRunner\n"
        "CliRunner().invoke(app, ['--help'])\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_info_prints_state_folder() -> None:
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert "state folder:" in result.output

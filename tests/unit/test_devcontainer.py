"""The devcontainer gives the locked environment: it runs ``make install`` once created,
``make doctor`` on attach, on a Python the project supports, forwarding the servers' ports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CONFIG = json.loads((ROOT / ".devcontainer" / "devcontainer.json").read_text())


def test_it_installs_the_locked_environment_and_checks_the_machine() -> None:
    assert CONFIG["postCreateCommand"] == "make install"
    assert CONFIG["postAttachCommand"] == "make doctor"


def test_its_python_is_one_the_project_supports() -> None:
    version = re.search(r"python:\d+-(3\.\d+)-", CONFIG["image"])
    assert version, CONFIG["image"]
    assert version.group(1) in ("3.11", "3.12")  # pyproject.toml: >=3.11,<3.13


def test_it_forwards_the_default_ports_of_the_makefile() -> None:
    makefile = (ROOT / "Makefile").read_text()
    defaults = {
        int(re.search(rf"^{name} \?= (?:\$\(or \$\(\w+\),)?(\d+)", makefile, re.M).group(1))  # type: ignore[union-attr]
        for name in ("MLFLOW_PORT", "PREFECT_PORT")
    }
    serving = re.search(r"^port: (\d+)", (ROOT / "configs" / "serving.yaml").read_text(), re.M)
    assert serving
    assert set(CONFIG["forwardPorts"]) == defaults | {int(serving.group(1))}

"""The package stands on its own: what the wheel (and the serving image) holds runs every
command, and every package ``src/`` imports is one ``pyproject.toml`` declares."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
# Folders beside src/ that the wheel does not ship: the package must never import them.
BESIDE_SRC = {"pipelines", "tests", "benchmarks", "labs", "tools", "loadtests"}
REACHING = re.compile(r"sys\.path\.(insert|append)|import_module\(\s*[\"']pipelines")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level module) of every absolute import in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def _sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_no_module_reaches_up_out_of_the_package() -> None:
    # Given every module of the package
    reaching = []
    for path in _sources():
        text = path.read_text()
        # Then none imports a folder beside src/ ...
        reaching += [
            f"{path.relative_to(ROOT)}:{line} imports {module}"
            for line, module in _imports(path)
            if module in BESIDE_SRC
        ]
        # ... nor bends the import path to reach one (importlib or sys.path)
        for match in REACHING.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            reaching.append(f"{path.relative_to(ROOT)}:{line} {match.group(0)}")
    assert not reaching, "\n".join(reaching)


def test_every_package_src_imports_is_declared() -> None:
    # Given the distributions pyproject.toml declares
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0].lower().replace("_", "-")
        for spec in project["dependencies"]
    }
    providers = packages_distributions()
    # When every third-party module src/ imports is mapped to the distribution providing it
    undeclared = {}
    for path in _sources():
        for line, module in _imports(path):
            if module in sys.stdlib_module_names or module == "fraud_detection":
                continue
            names = {name.lower().replace("_", "-") for name in providers.get(module, [module])}
            if not names & declared:
                undeclared.setdefault(module, f"{path.relative_to(ROOT)}:{line} ({sorted(names)})")
    # Then each is a declared dependency, not one that arrives by chance through another
    assert not undeclared, "imported, not declared in pyproject.toml:\n" + "\n".join(
        f"  {module}: {where}" for module, where in sorted(undeclared.items())
    )


def test_the_wheel_holds_and_runs_the_level1_flows(tmp_path: Path) -> None:
    # Given the package built as a wheel and unpacked outside the checkout
    built = subprocess.run(
        ["uv", "build", "--wheel", "--out-dir", str(tmp_path / "dist"), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    unpacked = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        assert "fraud_detection/orchestration/flows.py" in archive.namelist()
        archive.extractall(unpacked)
    # ... and a project folder without pipelines/ or src/ (configs only, as in the image)
    project = tmp_path / "project"
    project.mkdir()

    # When the CLI's flow loader runs from the wheel alone (the checkout off the path)
    script = f"""
import sys
sys.path[:] = [{str(unpacked)!r}] + [
    p for p in sys.path if p not in ("", {str(ROOT)!r}, {str(SRC)!r})
]
from prefect import Flow
from fraud_detection.orchestration.local import load_flows
flows = load_flows()
names = ["ct_flow", "new_data_sensor", "batch_scoring_flow", "monitoring_flow"]
assert all(isinstance(getattr(flows, name), Flow) for name in names), names
assert not any(m == "pipelines" or m.startswith("pipelines.") for m in sys.modules)
print(flows.__file__)
"""
    env = {**os.environ, "FRAUD_PROJECT_DIR": str(project)}
    env.pop("PYTHONPATH", None)
    ran = subprocess.run(
        [sys.executable, "-c", script],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    # Then the flows come from the wheel, and nothing was imported from pipelines/
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.strip() == str(unpacked / "fraud_detection" / "orchestration" / "flows.py")


def test_the_deployments_entry_file_names_the_packaged_flows() -> None:
    # prefect.yaml's entrypoints name pipelines/level1_continuous_training/flows.py; the
    # flows there are the package's own objects, not copies that could drift.
    import importlib.util

    from fraud_detection.orchestration import flows

    spec = importlib.util.spec_from_file_location(
        "_entry", ROOT / "pipelines" / "level1_continuous_training" / "flows.py"
    )
    assert spec is not None
    assert spec.loader is not None
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    for name in ("ct_flow", "new_data_sensor", "batch_scoring_flow", "monitoring_flow"):
        assert getattr(entry, name) is getattr(flows, name), name

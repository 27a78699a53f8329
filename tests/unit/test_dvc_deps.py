"""Every DVC stage lists the code and config its outputs depend on.

The set is derived, not written down: each stage's ``cmd`` is resolved to the function
behind the ``fraud`` command (through the Typer app), and from there the ``fraud_detection``
modules it imports are walked statically with ``ast``, transitively (module-level and lazy
imports inside functions alike; ``if TYPE_CHECKING:`` blocks and third-party packages left
out). Files those modules read by name are added: ``feature_repo/definitions.py`` (whose own
imports are walked too), ``feature_repo/feature_store.yaml``, the versioned GX suites, and
the job config behind each ``load_<job>_config`` they call. A stage passes when ``dvc.yaml``
lists each of them as a dep (or a folder holding it), config files as a dep or as params.
"""

from __future__ import annotations

import ast
import shlex
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PACKAGE = "fraud_detection"

# Files imported by every command that cannot change what a stage writes: the exception
# types and exit codes (a failing stage writes no outputs).
NOT_OUTPUT_CHANGING = {
    "src/fraud_detection/errors.py": "exception types and exit codes only",
}
# Functions of a command's module whose work happens after the outputs are written and
# cannot change them: not followed.
AFTER_THE_OUTPUTS = {
    "_announce_partitions": "Prefect events announcing the partitions fraud simulate wrote",
}
# Config files read by name. The profile says where state lives and which services run;
# DVC stages always run the local profile, whose outputs do not depend on it.
CONFIG_LOADERS = {
    "load_simulate_config": "configs/simulate.yaml",
    "load_validation_config": "configs/validation.yaml",
    "load_train_config": "configs/train.yaml",
    "load_monitoring_config": "configs/monitoring.yaml",
    "load_serving_config": "configs/serving.yaml",
}
# Data files a module reads by a name written in its source (the literal -> the files).
NAMED_FILES = {
    "definitions.py": ["feature_repo/definitions.py"],
    "feature_store.yaml": ["feature_repo/feature_store.yaml"],
    "suites": sorted(
        p.relative_to(ROOT).as_posix() for p in (SRC / PACKAGE / "validation" / "suites").iterdir()
    ),
}


@cache
def dvc_stages() -> dict[str, dict[str, object]]:
    stages: dict[str, dict[str, object]] = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return stages


def module_file(name: str) -> Path | None:
    """The source file of ``fraud_detection.x.y`` (a module or a package), if it is ours."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    base = SRC.joinpath(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def walk_runtime(node: ast.AST) -> Iterator[ast.AST]:
    """ast.walk without the ``if TYPE_CHECKING:`` blocks (imports for annotations only)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            yield from (n for stmt in child.orelse for n in [stmt, *walk_runtime(stmt)])
            continue
        yield child
        yield from walk_runtime(child)


def imported_modules(node: ast.AST, current: str) -> set[str]:
    """Our modules an import statement anywhere under ``node`` loads (with their parents)."""
    found: set[str] = set()
    for item in walk_runtime(node):
        names: list[str] = []
        if isinstance(item, ast.Import):
            names = [alias.name for alias in item.names]
        elif isinstance(item, ast.ImportFrom):
            base = item.module or ""
            if item.level:  # relative import
                anchor = current.split(".")[: len(current.split(".")) - item.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import mod` imports pkg.mod when it is a module, else a name of pkg.
            names = [
                f"{base}.{a.name}" if module_file(f"{base}.{a.name}") else base for a in item.names
            ]
        for name in names:
            parts = name.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {name for name in found if module_file(name)}


def read_by_name(tree: ast.AST) -> set[str]:
    """Files (relative to the root) a module reads by a name written in its source."""
    files: set[str] = set()
    for node in walk_runtime(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            files.update(NAMED_FILES.get(node.value, []))
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if called in CONFIG_LOADERS:
                files.add(CONFIG_LOADERS[called])
    return files


def entry_function(cmd: str) -> tuple[Path, str]:
    """The source file and function name behind a stage's ``fraud ...`` command."""
    import typer.main

    from fraud_detection.cli import app

    words = shlex.split(cmd)
    assert words[0] == "fraud", f"stage command {cmd!r} is not a fraud command"
    command = typer.main.get_command(app)
    for word in words[1:]:
        if word.startswith("-"):
            break
        command = command.commands[word]  # type: ignore[attr-defined]
    callback = command.callback
    callback = getattr(callback, "__wrapped__", callback)
    return SRC.joinpath(*callback.__module__.split(".")).with_suffix(".py"), callback.__name__


def entry_modules(path: Path, function: str) -> tuple[set[str], set[str]]:
    """What a command function needs from its own module: the imports it (and the module's
    functions it calls) makes, the module-level imports whose names it uses, and the files
    they read by name. The rest of its module (other commands) is not its dependency."""
    tree, current = parse(path), module_name(path)
    top_level = {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }
    imported_as: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                bound = (alias.asname or alias.name).split(".")[0]
                imported_as.setdefault(bound, set()).update(imported_modules(node, current))
    modules, files, seen, todo = set(), set(), set(), [function]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        node = top_level[name]
        modules |= imported_modules(node, current)
        files |= read_by_name(node)
        for item in walk_runtime(node):
            if isinstance(item, ast.Name):
                modules |= imported_as.get(item.id, set())
                if item.id in top_level and item.id not in AFTER_THE_OUTPUTS:
                    todo.append(item.id)
    return modules, files


def is_docstring_only(path: Path) -> bool:
    """A package ``__init__.py`` holding only its docstring runs no code."""
    body = parse(path).body
    return path.name == "__init__.py" and all(
        isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body
    )


def modules_named_in_yaml(path: Path) -> set[str]:
    """Our modules a YAML file names as a class path (Feast's ``offline_store: type:``)."""
    found: set[str] = set()

    def visit(value: object) -> None:
        if isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, list):
            for item in value:
                visit(item)
        elif isinstance(value, str) and value.startswith(PACKAGE + "."):
            parts = value.split(".")
            for i in range(len(parts), 0, -1):
                if module_file(".".join(parts[:i])):
                    found.add(".".join(parts[:i]))
                    break

    visit(yaml.safe_load(path.read_text()))
    return found


def stage_requirements(cmd: str) -> set[str]:
    """Every file (relative to the root) whose change can change the stage's outputs."""
    path, function = entry_function(cmd)
    modules, files = entry_modules(path, function)
    parents = module_name(path).split(".")
    modules |= {".".join(parents[:i]) for i in range(1, len(parents))}
    required = {path.relative_to(ROOT).as_posix()}
    seen_modules: set[str] = set()
    seen_files: set[str] = set()
    while modules or files:
        if modules:
            name = modules.pop()
            if name in seen_modules:
                continue
            seen_modules.add(name)
            source = module_file(name)
            assert source is not None
            if not is_docstring_only(source):
                required.add(source.relative_to(ROOT).as_posix())
            tree = parse(source)
            modules |= imported_modules(tree, name)
            files |= read_by_name(tree)
            continue
        file = files.pop()
        if file in seen_files:
            continue
        seen_files.add(file)
        required.add(file)
        # Files read by name can name more code: Feast imports definitions.py from its
        # path, and feature_store.yaml names the offline store's class.
        if file.endswith(".py"):
            modules |= imported_modules(parse(ROOT / file), "")
        elif file.endswith((".yaml", ".yml")):
            modules |= modules_named_in_yaml(ROOT / file)
    return required - set(NOT_OUTPUT_CHANGING)


def declared(stage: dict[str, object]) -> tuple[list[str], set[str]]:
    deps = [str(d) for d in stage.get("deps", [])]  # type: ignore[attr-defined]
    params: set[str] = set()
    for entry in stage.get("params", []):  # type: ignore[attr-defined]
        params.update(entry if isinstance(entry, dict) else ["params.yaml"])
    return deps, params


def covered(path: str, deps: list[str], params: set[str]) -> bool:
    return path in params or any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def test_every_stage_runs_a_fraud_command_that_resolves() -> None:
    for name, stage in dvc_stages().items():
        path, function = entry_function(str(stage["cmd"]))
        assert path.is_file(), f"stage {name}: {path} does not exist"
        assert function in {n.name for n in parse(path).body if hasattr(n, "name")}


@pytest.mark.parametrize("stage", sorted(dvc_stages()))
def test_stage_deps_list_the_code_and_config_it_reads(stage: str) -> None:
    # Given the files the stage's command imports and reads (derived from the code)
    spec = dvc_stages()[stage]
    required = stage_requirements(str(spec["cmd"]))
    deps, params = declared(spec)
    # Then dvc.yaml lists each of them, so editing one reruns the stage
    missing = sorted(path for path in required if not covered(path, deps, params))
    assert not missing, (
        f"dvc.yaml stage {stage!r} misses deps its command reads: {', '.join(missing)}; "
        "add them to its deps (or params), then refresh the lock: make repro && git add dvc.lock"
    )


def test_code_deps_are_not_broader_than_needed() -> None:
    # A folder dep is fine only when the stage needs most of it: otherwise every edit in
    # the folder reruns the stage. Each src/ folder listed must be mostly required.
    for name, spec in dvc_stages().items():
        required = stage_requirements(str(spec["cmd"]))
        deps, _ = declared(spec)
        for dep in deps:
            folder = ROOT / dep
            if not (dep.startswith("src/") and folder.is_dir()):
                continue
            inside = [
                p.relative_to(ROOT).as_posix()
                for p in folder.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts
            ]
            unused = sorted(set(inside) - required)
            assert len(unused) <= len(inside) // 2, (
                f"dvc.yaml stage {name!r} depends on all of {dep} but its command reads only "
                f"part of it (not: {', '.join(unused)}); list the files it needs instead"
            )


def test_the_walk_finds_what_it_should() -> None:
    # The derivation itself: the simulator stage reads the simulator and its config
    # through config.py; the features stage reaches feature_repo/definitions.py and the
    # pure feature code it imports.
    simulate = stage_requirements("fraud simulate")
    assert {
        "src/fraud_detection/cli.py",
        "src/fraud_detection/config.py",
        "src/fraud_detection/data/simulator.py",
        "configs/simulate.yaml",
    } <= simulate
    assert "src/fraud_detection/serving/app.py" not in simulate  # other commands' imports
    features = stage_requirements("fraud features build --rebuild")
    assert {
        "feature_repo/definitions.py",
        "src/fraud_detection/features/engineering.py",
        "src/fraud_detection/features/store.py",
    } <= features

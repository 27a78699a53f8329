"""The train step's code version: a hash of its source files, in its cache key.

The cache itself (a Prefect task result kept 30 days) is exercised in
``tests/integration/test_train_cache.py``; these are the pure parts.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fraud_detection.orchestration import flows
from fraud_detection.training import ct
from fraud_detection.training.settings import load_train_config

pytestmark = pytest.mark.unit

PACKAGE = Path(ct.__file__).resolve().parents[1]
# Package modules the train step imports that do not shape the fitted model (see TRAIN_CODE).
NOT_MODEL_CODE = {
    "fraud_detection.errors",
    "fraud_detection.config",
    "fraud_detection.registry.runs",
}


def _module_file(module: str) -> Path:
    return PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py")


def _package_imports(nodes: list[ast.AST]) -> set[str]:
    found = set()
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.ImportFrom) and (sub.module or "").startswith("fraud_detection"):
                module = str(sub.module)
                # `from fraud_detection.training import ct` names a module, not a name in one
                names = [f"{module}.{alias.name}" for alias in sub.names]
                found |= {n for n in names if _module_file(n).is_file()} or {module}
            elif isinstance(sub, ast.Import):
                found |= {a.name for a in sub.names if a.name.startswith("fraud_detection")}
    return found


def test_train_code_lists_every_module_the_train_step_imports() -> None:
    # Given: where the train step starts, ct.fit and features_for (and ct's own imports)
    tree = ast.parse((PACKAGE / "training" / "ct.py").read_text())
    start = [n for n in tree.body if isinstance(n, ast.ImportFrom | ast.Import)]
    start += [
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("fit", "features_for")
    ]
    seen = {"fraud_detection.training.ct"}
    todo = _package_imports(start) - seen
    # When: following the package imports of every module reached (whole files)
    while todo:
        module = todo.pop()
        seen.add(module)
        if module in NOT_MODEL_CODE:
            continue
        todo |= _package_imports([ast.parse(_module_file(module).read_text())]) - seen
    # Then: each one that shapes the model is hashed
    reached = {_module_file(m) for m in seen - NOT_MODEL_CODE}
    assert reached == set(ct.TRAIN_CODE), sorted(map(str, reached ^ set(ct.TRAIN_CODE)))


def test_code_hash_is_stable_and_follows_every_byte(tmp_path: Path) -> None:
    copies = []
    for path in ct.TRAIN_CODE:
        copy = tmp_path / path.relative_to(PACKAGE)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, copy)
        copies.append(copy)

    # The same bytes anywhere (a copy, no git): the same hash, 16 hex digits
    assert ct.code_hash(copies) == ct.code_hash() == ct.code_hash(ct.TRAIN_CODE)
    assert len(ct.code_hash()) == 16
    int(ct.code_hash(), 16)

    # One more space in the model code: another hash
    model = next(c for c in copies if c.name == "model.py")
    model.write_text(model.read_text() + " ")
    assert ct.code_hash(copies) != ct.code_hash()
    # Bytes moved from one file to the next are not the same code
    assert ct.code_hash([copies[0], copies[1]]) != ct.code_hash([copies[1], copies[0]])


def test_the_train_cache_key_holds_the_code_version(monkeypatch: pytest.MonkeyPatch) -> None:
    class Training:
        digest = "0123456789abcdef"

    ctx = SimpleNamespace(train=load_train_config())
    parameters: dict[str, Any] = {"ctx": ctx, "training": Training(), "variant": "normal"}
    key = flows._train_key(None, parameters)  # type: ignore[arg-type]
    assert ct.code_hash() in key
    assert key == flows._train_key(None, parameters)  # type: ignore[arg-type]

    monkeypatch.setattr(ct, "code_hash", lambda files=None: "changedcode00000")
    assert flows._train_key(None, parameters) != key  # type: ignore[arg-type]

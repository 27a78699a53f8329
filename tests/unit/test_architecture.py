"""docs/architecture.md draws the rooms of the package and what calls what: the drawing
is checked against the imports, and the rooms call each other one way only."""

from __future__ import annotations

import ast
import re
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "fraud_detection"
DOC = ROOT / "docs" / "architecture.md"
ENTRY = "cli"  # the commands: fraud_detection/cli.py and each room's *cli.py
NOT_DRAWN = {"config", "errors"}  # every room may use them (the page says so)
EDGE = re.compile(r"^\s*(\w+)\s*-->\s*(\w+)\s*$", re.MULTILINE)


def room_of(path: Path) -> str:
    """The room a source file belongs to: its top folder, or the top-level module's name;
    a command module (``cli.py``, ``quality_cli.py``) belongs to the entry layer."""
    parts = path.relative_to(PACKAGE).parts
    if parts[-1].endswith("cli.py"):
        return ENTRY
    return parts[0].removesuffix(".py")


def imported_file(module: str) -> Path | None:
    """The file of ``fraud_detection.x.y`` (a module, else its package's ``__init__``)."""
    base = PACKAGE.joinpath(*module.split(".")[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_module(name: str) -> bool:
    found = imported_file(name)
    return found is not None and found.name != "__init__.py"


def room_graph() -> dict[str, dict[str, str]]:
    """room -> {room it imports: the first import that does it (file:line)}."""
    graph: dict[str, dict[str, str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "__init__.py":
            continue  # the package's own docstring and version
        here = room_of(path)
        graph.setdefault(here, {})
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from pkg import mod` imports pkg.mod when that is a module
                modules = [
                    name if _is_module(name := f"{node.module}.{a.name}") else node.module
                    for a in node.names
                ]
            else:
                continue
            for module in modules:
                if module != "fraud_detection" and module.startswith("fraud_detection."):
                    target = imported_file(module)
                    there = room_of(target) if target else module.split(".")[1]
                    if there != here:
                        where = f"{path.relative_to(ROOT)}:{node.lineno} imports {module}"
                        graph[here].setdefault(there, where)
    return graph


def drawn_edges() -> set[tuple[str, str]]:
    blocks = re.findall(r"```mermaid\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert blocks, f"{DOC.relative_to(ROOT)} draws no Mermaid diagram"
    return set(EDGE.findall(blocks[0]))


def test_no_room_calls_back_into_a_room_that_calls_it() -> None:
    graph = room_graph()
    both_ways = sorted(
        f"{a} <-> {b}: {graph[a][b]}; {graph[b][a]}"
        for a in graph
        for b in graph[a]
        if a < b and a in graph.get(b, {})
    )
    assert not both_ways, "back-arrows between rooms:\n" + "\n".join(both_ways)
    try:
        order = list(TopologicalSorter({a: set(b) for a, b in graph.items()}).static_order())
    except CycleError as exc:
        cycle = exc.args[1]
        steps = [graph[a][b] for a, b in zip(cycle[1:], cycle, strict=False)]
        pytest.fail("a cycle of rooms: " + " <- ".join(cycle) + "\n" + "\n".join(steps))
    # The commands sit on top: nothing imports them back
    assert order[-1] == ENTRY or all(ENTRY not in targets for targets in graph.values())


def test_nothing_imports_the_commands() -> None:
    callers = [
        where
        for room, targets in room_graph().items()
        if room != ENTRY
        for there, where in targets.items()
        if there == ENTRY
    ]
    assert not callers, "the commands are the entry layer:\n" + "\n".join(callers)


def test_the_architecture_page_draws_every_arrow_the_code_has() -> None:
    graph = room_graph()
    actual = {
        (a, b) for a, targets in graph.items() if a != ENTRY for b in targets if b not in NOT_DRAWN
    }
    drawn = drawn_edges()
    missing = sorted(f"  {a} --> {b}   ({graph[a][b]})" for a, b in actual - drawn)
    extra = sorted(f"  {a} --> {b}" for a, b in drawn - actual)
    differ = ("drawn nowhere:\n" + "\n".join(missing) + "\n" if missing else "") + (
        "drawn, not in the code:\n" + "\n".join(extra) if extra else ""
    )
    assert not differ, f"{DOC.relative_to(ROOT)} and the imports differ.\n{differ}"


def test_the_architecture_page_names_every_room() -> None:
    text = DOC.read_text()
    rooms = {room for room in room_graph() if room != ENTRY}
    unnamed = sorted(
        room for room in rooms if f"`{room}/`" not in text and f"`{room}.py`" not in text
    )
    assert not unnamed, f"rooms {DOC.relative_to(ROOT)} does not describe: {unnamed}"

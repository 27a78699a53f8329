"""The level-1 demo's state folder: it empties only a folder an earlier demo made.

``make demo-level1`` starts from nothing each time, in ``<state>/level1-demo`` or the
folder it is given. A folder is emptied only when it carries the demo's marker; a folder
the demo did not make is refused in one line and left as it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.level1_continuous_training.demo import MARKER, DemoStateError, prepare_state

pytestmark = pytest.mark.unit


def test_a_new_folder_is_created_and_marked(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    assert prepare_state(state) == f"using {state} (empty)"
    assert (state / MARKER).is_file()


def test_an_earlier_demos_folder_is_emptied(tmp_path: Path) -> None:
    # Given the state an earlier demo left
    state = tmp_path / "demo"
    prepare_state(state)
    (state / "ct").mkdir()
    (state / "ct" / "runs.jsonl").write_text("{}\n")
    # When the demo starts again
    said = prepare_state(state)
    # Then it starts from nothing, and says so
    assert said == f"emptied {state} (an earlier demo's state)"
    assert sorted(p.name for p in state.iterdir()) == [MARKER]


def test_a_folder_the_demo_did_not_make_is_refused_and_left_alone(tmp_path: Path) -> None:
    # Given a folder holding someone's files
    state = tmp_path / "mine"
    state.mkdir()
    (state / "notes.txt").write_text("keep me")
    # When the demo is pointed at it, then it refuses in one line naming the folder
    with pytest.raises(DemoStateError, match="holds files the demo did not make") as refused:
        prepare_state(state)
    assert str(state) in str(refused.value)
    assert "\n" not in str(refused.value)
    # And nothing was deleted
    assert (state / "notes.txt").read_text() == "keep me"
    assert not (state / MARKER).exists()


def test_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a-file"
    path.write_text("x")
    with pytest.raises(DemoStateError, match="is a file"):
        prepare_state(path)
    assert path.read_text() == "x"

"""When a CT run has nothing to train ("skipped: nothing new"), and when it always trains.

A normal run on data the last normal training already saw is skipped; a degraded
variant (``fraud ct run --variant shuffled_labels``, docs/level1.md) is an experiment on
the data as it is and always trains, without ``--force``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fraud_detection.config import StatePaths
from fraud_detection.registry import runs
from fraud_detection.training import ct

pytestmark = pytest.mark.unit


def _trained(paths: StatePaths, as_of: str, variant: str = "normal") -> None:
    runs.append_record(
        paths,
        runs.RunRecord(
            trigger="on_demand",
            started_at=f"{as_of}T01:00:00+00:00",
            variant=variant,
            as_of=as_of,
            challenger_version="1",
            outcome="promoted" if variant == "normal" else "rejected",
        ),
    )


def test_a_normal_run_on_the_data_it_trained_on_is_skipped(tmp_path: Path) -> None:
    paths = StatePaths(root=tmp_path)
    _trained(paths, "2026-01-12")
    assert ct.nothing_new(paths, "2026-01-12", "normal")


def test_a_normal_run_with_a_new_day_trains(tmp_path: Path) -> None:
    paths = StatePaths(root=tmp_path)
    _trained(paths, "2026-01-12")
    assert not ct.nothing_new(paths, "2026-01-13", "normal")


def test_the_first_run_trains(tmp_path: Path) -> None:
    assert not ct.nothing_new(StatePaths(root=tmp_path), "2026-01-12", "normal")


@pytest.mark.parametrize("variant", ["shuffled_labels", "drop_key_features"])
def test_a_variant_on_the_same_data_is_an_experiment_and_trains(
    tmp_path: Path, variant: str
) -> None:
    # Given a champion trained on the data as it is
    paths = StatePaths(root=tmp_path)
    _trained(paths, "2026-01-12")
    # When a degraded challenger is asked for on the same data, then it is not skipped
    assert not ct.nothing_new(paths, "2026-01-12", variant)


def test_a_variant_run_does_not_count_as_the_last_training(tmp_path: Path) -> None:
    # Given a normal training as of day 12, then a shuffled-labels experiment as of day 13
    paths = StatePaths(root=tmp_path)
    _trained(paths, "2026-01-12")
    _trained(paths, "2026-01-13", variant="shuffled_labels")
    # Then a normal run as of day 13 still trains a real model on it
    assert not ct.nothing_new(paths, "2026-01-13", "normal")

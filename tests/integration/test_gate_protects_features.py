"""A partition rejected by the data gate leaves the feature tables and online store untouched."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fraud_detection.cli import app
from fraud_detection.config import StatePaths, load_simulate_config
from fraud_detection.data.ledger import accepted_days
from fraud_detection.data.simulator import write_simulation
from fraud_detection.features import store
from fraud_detection.validation.gate import validate_raw_partition
from tests.integration.test_feature_store import _online_dump, _tables_digest

pytestmark = pytest.mark.integration


def test_rejected_partition_changes_nothing_downstream(tmp_path: Path) -> None:
    # Given four clean days through the gate, into the feature tables and the online store
    cfg = load_simulate_config(
        overrides={
            "days": 5,
            "rows_per_day": 1200,
            "cards": 300,
            "merchants": 60,
            "label_delay_days": 1,
            "scenario": {"broken_feed": {"enabled": True, "day": 4, "corruption": "duplicate_ids"}},
        }
    )
    paths = StatePaths(root=tmp_path)
    write_simulation(cfg, paths)
    days = [cfg.start_date + dt.timedelta(days=k) for k in range(5)]
    for day in days[:4]:
        validate_raw_partition(paths, day).raise_for_failure()
    runner = CliRunner()
    state = ["--state-dir", str(tmp_path)]
    assert runner.invoke(app, ["features", "build", *state]).exit_code == 0
    assert runner.invoke(app, ["features", "materialize", *state]).exit_code == 0
    tables, online = _tables_digest(paths), _online_dump(paths)

    # When the broken fifth day arrives and the pipeline steps run again
    outcome = validate_raw_partition(paths, days[4])
    build = runner.invoke(app, ["features", "build", *state])
    materialize = runner.invoke(app, ["features", "materialize", *state])

    # Then the partition is rejected and named, and nothing downstream moved
    assert not outcome.success
    assert "transaction_id" in outcome.message()
    assert days[4] not in accepted_days(paths)
    assert build.exit_code == 0, build.output
    assert f"not used (not accepted by the data gate): {days[4]}" in build.output
    assert materialize.exit_code == 0, materialize.output
    assert _tables_digest(paths) == tables
    assert _online_dump(paths) == online
    assert not store.FeaturePaths(paths).day_file(store.CARD_TABLE, days[4]).exists()
    with pytest.raises(store.FeatureStoreError, match="has not been accepted"):
        store.build_day(paths, days[4])

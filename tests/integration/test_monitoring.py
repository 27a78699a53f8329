"""Batch scoring and monitoring on a served world, as a story (tests run in file order).

1. batch scoring writes a day in the prediction-log schema, one row per transaction, and
   a rerun replaces it; a day the data gate never accepted is refused;
2. monitoring over undrifted days writes the report, logs it to MLflow, emits nothing;
3. the spending and fraud pattern drift from day 12: monitoring over the drifted days
   names the drifted features in the report and emits a drift signal CT will see;
4. a second run while that signal is pending emits no duplicate;
5. the same steps as Prefect flows (one temporary Prefect server), and the CLI.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from fraud_detection.config import StatePaths
from fraud_detection.features import store
from fraud_detection.monitoring import monitor, served, signals
from fraud_detection.registry import tracking
from fraud_detection.serving import batch
from fraud_detection.training import ct
from tests.conftest import mlflow_isolated, prefect_client_of
from tests.worlds import START, served_world, simulate

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
]

FIRST_DAYS = 12  # days 0..11 undrifted; the champion is trained on the labelled ones
DRIFT_DAY = 12  # days 12..14: amounts up ~1.4x, more online, card-testing fraud


def _day(index: int) -> dt.date:
    return START + dt.timedelta(days=index)


@dataclass
class World:
    paths: StatePaths
    seen: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> str:
        return str(self.paths.root)

    def score(self, index: int) -> batch.BatchResult:
        return batch.score_day(_day(index), profile=ct.context(self.state).profile)

    def step(self, name: str) -> Any:
        if name not in self.seen:
            pytest.skip(f"needs the {name!r} step earlier in this module (run it in order)")
        return self.seen[name]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Twelve undrifted days, features, an online store and champion v1; MLflow and the
    environment restored after the module."""
    root = tmp_path_factory.mktemp("monitoring") / "state"
    root.mkdir()
    with mlflow_isolated(), pytest.MonkeyPatch.context() as patch:
        patch.setenv("FRAUD_PROFILE__STATE_DIR", str(root))
        yield World(served_world(root, days=FIRST_DAYS))


def _runs(world: World) -> pd.DataFrame:
    import mlflow

    tracking.setup_mlflow(ct.context(world.state).profile)
    return mlflow.search_runs(experiment_names=["fraud-monitoring"], order_by=["start_time"])


# ------------------------------------------------------------ 1. batch scoring


def test_batch_scoring_writes_one_row_per_transaction_in_the_log_schema(world: World) -> None:
    # Given: the champion v1 and the last four (unlabelled or fresh) days
    raw = store.read_transactions(world.paths, [_day(11)])

    # When: the newest day is scored (the others too, for monitoring below)
    for index in (8, 9, 10):
        world.score(index)
    result = world.score(11)

    # Then: one row per transaction of the day, in the prediction-log columns
    assert result.path == world.paths.root / "scores" / f"date={_day(11)}" / "scores.parquet"
    scores = pd.read_parquet(result.path)
    assert result.rows == len(raw) == len(scores)
    assert sorted(scores["transaction_id"]) == sorted(raw["transaction_id"])
    assert list(scores.columns) == [*served.PREDICTION_COLUMNS, *served.INPUT_COLUMNS]
    schema = pq.read_schema(result.path)
    assert str(schema.field("event_timestamp").type) == "timestamp[us, tz=UTC]"
    assert str(schema.field("logged_at").type) == "timestamp[us, tz=UTC]"
    assert str(schema.field("score").type) == "double"
    assert str(schema.field("decision").type) == "bool"
    assert set(scores["source"]) == {"batch"}
    assert set(scores["model_version"]) == {"1"}
    # ... with the champion's own threshold, and scores that are probabilities
    assert set(scores["threshold"]) == {result.threshold}
    assert scores["score"].between(0, 1).all()
    assert (scores["decision"] == (scores["score"] >= result.threshold)).all()
    assert result.alerts == int(scores["decision"].sum()) > 0
    world.seen["scored"] = result


def test_batch_scoring_rerun_replaces_the_day(world: World) -> None:
    first = world.step("scored")
    before = pd.read_parquet(first.path)

    again = world.score(11)

    after = pd.read_parquet(again.path)
    assert len(after) == len(before)
    assert after["logged_at"].iloc[0] > before["logged_at"].iloc[0]
    pd.testing.assert_series_equal(after["score"], before["score"])
    assert [p.name for p in again.path.parent.iterdir()] == ["scores.parquet"]  # no temp left


def test_a_day_without_an_accepted_partition_is_refused(world: World) -> None:
    with pytest.raises(batch.BatchScoringError, match=r"2026-02-01 .* the data gate"):
        batch.score_day(dt.date(2026, 2, 1), profile=ct.context(world.state).profile)


# ------------------------------------------------------------ 2. undrifted


def test_monitoring_undrifted_days_writes_report_and_emits_nothing(world: World) -> None:
    world.step("scored")

    result = monitor.run(world.state)

    assert not result.drift_detected, result.drifted
    assert not result.prediction_drift
    assert not result.degraded
    assert result.signals == []
    assert signals.pending(world.paths) == []
    # the report and its summary, and the latest copy beside them
    assert result.report.exists()
    summary = json.loads((result.report.parent / "summary.json").read_text())
    assert summary["champion_version"] == "1"
    assert summary["current"]["days"] == [str(_day(i)) for i in (9, 10, 11)]
    assert summary["current"]["sources"] == {"batch": summary["current"]["rows"]}
    assert len(summary["drift"]["features"]) == 18
    assert (result.report.parent.parent / "latest.html").read_text() == result.report.read_text()
    # ... logged to MLflow as a run of the monitoring experiment
    runs = _runs(world)
    assert len(runs) == 1
    assert runs.iloc[0]["run_id"] == result.run_id
    assert "metrics.psi.amount_log" in runs.columns
    assert "metrics.drift_share" in runs.columns
    from mlflow import MlflowClient

    assert {a.path for a in MlflowClient().list_artifacts(result.run_id)} == {
        "index.html",
        "summary.json",
    }
    world.seen["undrifted"] = result


# ------------------------------------------------------------ 3. drift


def test_monitoring_drifted_days_names_features_and_emits_a_signal(world: World) -> None:
    world.step("undrifted")
    # Given: three more days, drifted (earlier days come out identical), through the gate
    simulate(
        world.paths.root,
        days=DRIFT_DAY + 3,
        scenario={"drift": {"enabled": True, "start_day": DRIFT_DAY, "kind": "both"}},
    )
    new = ct.pending_partitions(world.paths)
    assert new == [_day(i) for i in range(DRIFT_DAY, DRIFT_DAY + 3)]
    for day in new:
        assert ct.validate_partition(world.paths, day).success
    for index in range(DRIFT_DAY, DRIFT_DAY + 3):
        world.score(index)

    # When: monitoring runs over the drifted days
    result = monitor.run(world.state)

    # Then: the amount features drifted, and the report names them
    assert result.drift_detected
    assert "amount_log" in result.drifted
    html = result.report.read_text()
    assert "amount_log" in html
    assert "DRIFTED" in html
    # ... and a drift signal is pending for the signal-trigger flow, naming them
    emitted = [s for s in result.signals if s["status"] == "emitted"]
    assert "drift" in {s["kind"] for s in emitted}
    pending = signals.pending(world.paths)
    drift = [s for s in pending if s.kind == "drift"]
    assert len(drift) == 1
    assert "amount_log" in drift[0].detail
    assert "amount_log" in drift[0].extra["features"]
    assert drift[0].extra["champion_version"] == "1"
    # ... and labels 2 days late: the first drifted day is labelled, PR-AUC has dropped
    assert result.degraded, result.performance
    (performance,) = [s for s in pending if s.kind == "performance"]
    assert performance.metric == "pr_auc"
    assert performance.value < performance.threshold
    assert str(_day(DRIFT_DAY)) in performance.extra["days"]
    assert len(_runs(world)) == 2
    world.seen["drifted"] = result


def test_no_duplicate_signal_while_one_is_pending(world: World) -> None:
    world.step("drifted")
    before = signals.pending(world.paths)

    result = monitor.run(world.state)

    assert result.drift_detected
    assert all("already pending" in s["status"] for s in result.signals), result.signals
    assert [s.id for s in signals.pending(world.paths)] == [s.id for s in before]


# ------------------------------------------------------------ 4. flows and CLI


@pytest.fixture(scope="module")
def flows(world: World, prefect_server: str) -> Iterator[Any]:
    """The level-1 flows module, run against the session's Prefect test server."""
    from fraud_detection.orchestration.local import load_flows

    with prefect_client_of(prefect_server, world.paths.root / "prefect"):
        yield load_flows()


def test_flows_score_and_monitor(world: World, flows: Any) -> None:
    world.step("drifted")

    scored = flows.batch_scoring_flow(day=None, state_dir=world.state)
    assert scored["day"] == str(_day(DRIFT_DAY + 2))  # the newest accepted partition
    assert scored["rows"] == len(pd.read_parquet(scored["path"]))

    result = flows.monitoring_flow(state_dir=world.state)
    assert result["drift_detected"]
    assert "amount_log" in result["drifted"]
    assert Path(result["report"]).exists()
    assert len(_runs(world)) == 4


def test_cli_prints_where_the_latest_report_is(world: World) -> None:
    from fraud_detection.cli import app

    world.step("drifted")
    out = CliRunner().invoke(app, ["monitor", "report", "--state-dir", world.state])
    assert out.exit_code == 0, out.output
    assert "data drift: DETECTED" in out.output
    assert "amount_log" in out.output
    assert str(world.paths.root / "reports" / "monitoring" / "latest.html") in out.output

    out = CliRunner().invoke(app, ["score", "--no-flow", "--state-dir", world.state])
    assert out.exit_code != 0  # neither --date nor --latest
    out = CliRunner().invoke(
        app, ["score", "--no-flow", "--date", str(_day(10)), "--state-dir", world.state]
    )
    assert out.exit_code == 0, out.output
    assert f"scores: {world.paths.root / 'scores' / f'date={_day(10)}'}" in out.output

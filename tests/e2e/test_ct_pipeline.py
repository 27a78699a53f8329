"""Level 1 end to end: continuous training reacting to simulated days, as a user sees it.

One simulated world and one Prefect test server for the whole module; the tests play
the story in order (pytest runs a module's tests in file order) and share its state:

1. the first run (on demand) promotes version 1, with lineage and evidence, tells serving
   and fills the online store;
2. a rerun with nothing new is skipped, quickly, and registers nothing;
3. degraded challengers (shuffled labels, then key features dropped) are registered but
   rejected at the model gate; the champion stays;
4. a partition from a broken feed is rejected at the data gate and never becomes features,
   while the accepted days that only the degraded challengers had seen are trained on;
5. a drift signal starts a run that retrains without a new partition and consumes the
   signal when it ends; a second run for the same signal (an event storm) does nothing;
   with none pending nothing happens;
6. the new-data sensor with nothing new starts nothing;
7. the run records and ``fraud ct history`` list every run with its trigger.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from fraud_detection.config import StatePaths, load_simulate_config
from fraud_detection.data.simulator import write_simulation
from fraud_detection.features import store
from fraud_detection.monitoring import signals
from fraud_detection.registry import lineage, runs, tracking
from fraud_detection.training import ct

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    # MLflow 3.x's SQL store still uses it; nothing to act on here.
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
]

# The world: small enough to retrain in seconds; the fraud pattern drifts from day 10 and
# the last day comes from a broken feed. 0-based day indexes, as in configs/simulate.yaml.
START = dt.date(2026, 1, 1)
FIRST_DAYS = 9  # history present when continuous training starts
DRIFT_DAY = 10
BROKEN_DAY = 11
WORLD: dict[str, Any] = {
    "seed": 42,
    "start_date": START,
    "rows_per_day": 4_000,
    "cards": 2_000,
    "merchants": 300,
    "label_delay_days": 3,
}
FIGURES = ("pr_curve", "calibration", "feature_importance")


@dataclass
class World:
    """The module's shared state: where it lives, the flows, and what earlier steps saw."""

    paths: StatePaths
    flows: Any
    days: int = 0
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def state_dir(self) -> str:
        return str(self.paths.root)

    @property
    def model_name(self) -> str:
        return ct.context(self.state_dir).model_name

    def play(self, days: int, *, broken_feed: bool = False) -> None:
        """Simulate days ``0..days-1``: the earlier days come out identical, so only the
        new day is a new partition. Drift is on once its day exists."""
        scenario = {
            "drift": {"enabled": days > DRIFT_DAY, "start_day": DRIFT_DAY, "kind": "fraud_pattern"},
            "broken_feed": {
                "enabled": broken_feed,
                "day": BROKEN_DAY,
                "corruption": "duplicate_ids",
            },
        }
        config = load_simulate_config(overrides={**WORLD, "days": days, "scenario": scenario})
        write_simulation(config, self.paths)
        self.days = days

    def step(self, name: str) -> dict[str, Any]:
        """The record an earlier step kept (skip if that step did not run)."""
        if name not in self.seen:
            pytest.skip(f"needs the {name!r} step earlier in this module (run it in order)")
        return self.seen[name]

    def records(self) -> list[runs.RunRecord]:
        return runs.read_records(self.paths)


def _day(index: int) -> dt.date:
    return START + dt.timedelta(days=index)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A fresh state folder with everything in it (MLflow, Feast, GX, Prefect's home and
    results), one Prefect test server, faster training; all restored after the module."""
    import mlflow
    from prefect.settings import PREFECT_HOME, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from fraud_detection.orchestration.local import load_flows

    root = tmp_path_factory.mktemp("ct_e2e") / "state"
    root.mkdir()
    prefect_home = root / "prefect"
    old_tracking, old_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    with pytest.MonkeyPatch.context() as patch:
        for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID"):
            patch.delenv(var, raising=False)
        patch.delenv("PREFECT_API_URL", raising=False)
        patch.setenv("FRAUD_PROFILE__STATE_DIR", str(root))
        patch.setenv("FRAUD_TRAIN__MODEL__MAX_ITER", "50")
        patch.setenv("PREFECT_HOME", str(prefect_home))
        patch.setenv("PREFECT_LOCAL_STORAGE_PATH", str(prefect_home / "storage"))
        patch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        patch.setenv("PREFECT_LOGGING_LEVEL", "WARNING")
        # Prefect may have read its settings already (imported earlier in the session).
        with (
            temporary_settings(
                updates={
                    PREFECT_HOME: prefect_home,
                    PREFECT_LOCAL_STORAGE_PATH: prefect_home / "storage",
                }
            ),
            prefect_test_harness(server_startup_timeout=120),
        ):
            state = World(paths=StatePaths(root=root), flows=load_flows())
            try:
                yield state
            finally:
                mlflow.set_tracking_uri(old_tracking)
                mlflow.set_registry_uri(old_registry)
                mlflow.tracking.fluent._active_experiment_id = None  # no public way to unset
                tracking._session = None


def _mlflow(world: World) -> Any:
    from mlflow import MlflowClient

    tracking.setup_mlflow(ct.context(world.state_dir).profile)
    return MlflowClient()


def _champion(world: World) -> str | None:
    _mlflow(world)
    current = tracking.champion(world.model_name)
    return None if current is None else str(current.version)


def _versions(world: World) -> list[str]:
    client = _mlflow(world)
    found = client.search_model_versions(f"name = '{world.model_name}'")
    return sorted((str(mv.version) for mv in found), key=int)


# ---------------------------------------------------------------- 1. first run


def test_1_first_run_promotes_version_1_with_lineage_and_evidence(world: World) -> None:
    # Given: nine days of history and no model yet
    world.play(FIRST_DAYS)

    # When: a CT run is started on demand
    record = world.flows.ct_flow(trigger="on_demand", state_dir=world.state_dir)
    world.seen["first"] = record

    # Then: every partition passed the data gate and version 1 is the champion
    assert record["outcome"] == "promoted", record
    assert record["trigger"] == "on_demand"
    assert record["data_gate"] == f"{FIRST_DAYS} accepted"
    assert record["training_gate"].startswith("accepted")
    assert record["challenger_version"] == "1"
    assert record["champion_version"] == "1"
    assert record["model_gate"] == "promoted v1"
    assert record["reasons"] == []
    assert _champion(world) == "1"

    # ... with its full lineage, the gate's verdict, and nothing left as challenger
    info = tracking.version_info(world.model_name, "1")
    tags = info["tags"]
    for tag in lineage.LINEAGE_TAGS:
        assert tags.get(tag, "").strip(), f"lineage tag {tag} missing: {tags}"
    assert tags[tracking.LINEAGE_COMPLETE] == "true"
    assert tags["lineage.feature_service"] == store.FEATURE_SERVICE
    assert tags["gate.promote"] == "true"
    assert tracking.PROMOTED_AT in tags
    assert info["aliases"] == [tracking.CHAMPION]

    # ... and the run's evidence: metrics, figures, the gate decision
    client = _mlflow(world)
    run = client.get_run(info["run_id"])
    assert run.data.metrics["pr_auc"] == pytest.approx(record["pr_auc"])
    assert {"roc_auc", "precision", "recall"} <= set(run.data.metrics)
    assert run.data.tags["trigger"] == "on_demand"
    assert run.data.tags[ct.CODE_HASH_TAG] == ct.code_hash()  # the train step's code version
    figures = {Path(a.path).name for a in client.list_artifacts(info["run_id"], "figures")}
    assert {f"{name}.png" for name in FIGURES} <= figures
    artifacts = {a.path for a in client.list_artifacts(info["run_id"])}
    assert tracking.GATE_DECISION_FILE in artifacts
    decision = json.loads(
        Path(client.download_artifacts(info["run_id"], tracking.GATE_DECISION_FILE)).read_text()
    )
    assert decision["promote"] is True

    # ... serving was told
    serving = json.loads((world.paths.root / "serving" / "champion.json").read_text())
    assert serving["version"] == "1"
    assert serving["changed"] is True
    assert serving["uri"] == f"models:/{world.model_name}@champion"

    # ... and the online store holds the features as of the newest day
    assert store.built_days(world.paths) == [_day(i) for i in range(FIRST_DAYS)]
    as_of = pd.Timestamp(record["as_of"])
    marker = store.materialized_marker(world.paths)
    assert pd.Timestamp(marker.read_text()) == as_of
    last_day = store.FeaturePaths(world.paths).day_file(store.CARD_TABLE, _day(FIRST_DAYS - 1))
    cards = pd.read_parquet(last_day)["card_id"].drop_duplicates().head(10).tolist()
    request = {"amount": 50.0, "channel": "online", "latitude": 41.9, "longitude": -87.6}
    rows = [
        {"card_id": int(c), "merchant_id": 1, "transaction_timestamp": as_of, **request}
        for c in cards
    ]
    online = store.online_features(store.open_online(world.paths), rows)
    assert len(online) == len(cards)
    # cards active on the newest day have transactions in their 7-day window at as_of
    assert (online["card_txn_count_7d"] > 0).all(), online


# ------------------------------------------------------- 2. nothing new: skipped


def test_2_rerun_without_new_data_is_skipped_quickly(world: World) -> None:
    first = world.step("first")
    versions_before = _versions(world)

    record = world.flows.ct_flow(trigger="on_demand", state_dir=world.state_dir)

    assert record["outcome"].startswith("skipped"), record
    assert record["data_gate"] == "no new partition"
    assert record["challenger_version"] is None
    assert record["champion_version"] == "1"
    assert _versions(world) == versions_before == ["1"]
    assert _champion(world) == "1"
    # Relative, not absolute: nothing was validated, built or trained.
    assert record["seconds"] < first["seconds"] / 2, (record["seconds"], first["seconds"])


# -------------------------------------------------- 3. degraded challengers


def test_3a_challenger_on_shuffled_labels_is_rejected_and_stays_challenger(
    world: World,
) -> None:
    world.step("first")
    # Given: one new day
    world.play(FIRST_DAYS + 1)

    # When: a data scientist tries a challenger trained on shuffled labels
    record = world.flows.ct_flow(
        trigger="on_demand", state_dir=world.state_dir, variant="shuffled_labels"
    )
    world.seen["shuffled"] = record

    # Then: registered as version 2 but not promoted: below the floor
    assert record["data_gate"] == "1 accepted"
    assert record["outcome"] == "kept champion", record
    assert record["challenger_version"] == "2"
    assert record["model_gate"] == "rejected v2"
    assert record["champion_version"] == "1"
    assert _champion(world) == "1"
    reasons = " ".join(record["reasons"])
    assert "floor" in reasons
    assert "pr_auc" in reasons
    info = tracking.version_info(world.model_name, "2")
    assert info["aliases"] == [tracking.CHALLENGER]
    assert info["tags"]["gate.promote"] == "false"
    assert info["tags"][tracking.LINEAGE_COMPLETE] == "true"
    serving = json.loads((world.paths.root / "serving" / "champion.json").read_text())
    assert serving["version"] == "1"
    assert serving["changed"] is False


def test_3b_challenger_without_key_features_is_rejected(world: World) -> None:
    world.step("shuffled")
    # Given: another new day (the fraud pattern drifts from this one on)
    world.play(DRIFT_DAY + 1)

    # When: a challenger without the strongest features is trained
    record = world.flows.ct_flow(
        trigger="on_demand", state_dir=world.state_dir, variant="drop_key_features"
    )
    world.seen["dropped"] = record

    # Then: registered, compared with the champion on the same holdout, not promoted
    assert record["data_gate"] == "1 accepted"
    assert record["outcome"] == "kept champion", record
    assert record["challenger_version"] == "3"
    assert record["champion_version"] == "1"
    assert record["champion_pr_auc"] is not None
    assert record["pr_auc"] < record["champion_pr_auc"]
    assert record["reasons"], record
    assert _champion(world) == "1"
    assert tracking.version_info(world.model_name, "3")["tags"]["gate.promote"] == "false"


# ------------------------------------------------------- 4. a broken partition


def test_4_broken_partition_is_rejected_by_the_data_gate(world: World) -> None:
    world.step("dropped")
    versions_before = _versions(world)
    runs_before = len(world.records())
    # Given: the next day arrives from a broken feed (duplicated transaction ids)
    world.play(BROKEN_DAY + 1, broken_feed=True)
    broken = _day(BROKEN_DAY)
    assert ct.pending_partitions(world.paths) == [broken]

    # When: the new-data sensor notices it
    record = world.flows.new_data_sensor(state_dir=world.state_dir)

    # Then: a CT run judged it and rejected it; it still trained a regular model on the
    # accepted days that only the degraded challengers of step 3 had seen
    assert record is not None
    assert record["trigger"] == "new_data"
    assert f"{broken} REJECTED" in record["data_gate"], record
    assert "accepted" not in record["data_gate"]
    assert record["outcome"] in ("promoted", "kept champion"), record
    assert record["as_of"] == world.step("dropped")["as_of"]
    assert len(world.records()) == runs_before + 1
    assert len(_versions(world)) == len(versions_before) + 1
    # ... and the rejected day never became features
    assert ct.pending_partitions(world.paths) == []
    assert broken not in store.built_days(world.paths)
    assert store.built_days(world.paths)[-1] == _day(BROKEN_DAY - 1)


# ------------------------------------------------------------- 5. signals


def test_5_drift_signal_retrains_without_new_data_once(world: World) -> None:
    world.step("first")
    runs_before = len(world.records())
    versions_before = _versions(world)
    last_trained = runs.last_trained_as_of(world.paths)

    # No signal pending: nothing happens
    assert world.flows.signal_trigger(state_dir=world.state_dir) is None
    assert len(world.records()) == runs_before

    # Given: monitoring raised a drift signal
    signal = signals.Signal(
        kind="drift",
        detail="PSI of amount 0.31 > 0.2",
        metric="psi.amount",
        value=0.31,
        threshold=0.2,
    )
    signals.emit(world.paths, signal)
    assert [s.id for s in signals.pending(world.paths)] == [signal.id]

    # When: the signal trigger runs
    record = world.flows.signal_trigger(state_dir=world.state_dir)

    # Then: one CT run, triggered by drift, that retrained on the latest window although
    # no partition arrived: a new challenger went through the model gate
    assert record is not None
    assert record["trigger"] == "drift"
    assert record["data_gate"] == "no new partition"
    assert record["as_of"] == last_trained
    assert record["outcome"] in ("promoted", "kept champion"), record
    assert record["challenger_version"] is not None
    assert len(_versions(world)) == len(versions_before) + 1
    records = world.records()
    assert len(records) == runs_before + 1
    assert records[-1].trigger == "drift"
    # ... and the signal was consumed when the run ended, with its outcome
    assert signals.pending(world.paths) == []
    (consumed,) = (world.paths.root / "signals" / "consumed").glob(f"*{signal.id}*.json")
    payload = json.loads(consumed.read_text())
    assert payload["kind"] == "drift"
    assert payload["outcome"] == record["outcome"]

    # A second run started for the same signal (another event of a storm) does nothing
    again = world.flows.ct_flow(trigger="drift", state_dir=world.state_dir, signal_id=signal.id)
    done = f"signal {signal.id} already consumed ({payload['outcome']})"
    assert again["outcome"] == f"skipped: {done}", again
    assert again["challenger_version"] is None
    assert len(_versions(world)) == len(versions_before) + 1

    # A second call finds nothing pending and does nothing
    assert world.flows.signal_trigger(state_dir=world.state_dir) is None
    assert len(world.records()) == runs_before + 2


# ------------------------------------------------------ 6. sensor, nothing new


def test_6_new_data_sensor_with_nothing_new_starts_nothing(world: World) -> None:
    world.step("first")
    runs_before = len(world.records())

    assert world.flows.new_data_sensor(state_dir=world.state_dir) is None

    assert len(world.records()) == runs_before


# -------------------------------------------------------------- 7. history


def test_7_records_and_history_list_every_run_with_its_trigger(world: World) -> None:
    from fraud_detection.cli import app

    world.step("first")
    records = world.records()

    assert [r.trigger for r in records] == [
        "on_demand",  # 1. first run
        "on_demand",  # 2. skipped
        "on_demand",  # 3a. shuffled labels
        "on_demand",  # 3b. key features dropped
        "new_data",  # 4. broken partition
        "drift",  # 5. signal: retrained
        "drift",  # 5. the same signal again: already consumed
    ]
    assert [r.outcome.split(":")[0] for r in records] == [
        "promoted",
        "skipped",
        "kept champion",
        "kept champion",
        records[4].outcome.split(":")[0],  # 4. trained: promoted or kept champion
        records[5].outcome.split(":")[0],  # 5. trained: promoted or kept champion
        "skipped",
    ]
    assert records[4].outcome in ("promoted", "kept champion")
    assert records[5].outcome in ("promoted", "kept champion")

    result = CliRunner().invoke(app, ["ct", "history", "--state-dir", world.state_dir])

    assert result.exit_code == 0, result.output
    header, rule, *rows = result.output.strip().splitlines()
    for column in ("as of", "trigger", "data gate", "model gate", "champion", "PR-AUC"):
        assert column in header
    assert set(rule.replace(" ", "")) == {"-"}
    assert len(rows) == len(records)
    for row, record in zip(rows, records, strict=True):
        assert record.trigger in row
        assert (record.as_of or "-")[:10] in row
    assert "promoted v1" in rows[0]
    assert "rejected v2" in rows[2]
    assert "REJECTED" in rows[4]

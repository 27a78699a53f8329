"""Staged release in CT: with ``serving.release.staged`` a version that passes the model
gate stays the ``challenger``; the champion does not move until it is delivered.

The CT flow runs under a Prefect test server on a small simulated world.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fraud_detection.registry import runs, tracking
from fraud_detection.training import ct
from tests.worlds import simulate

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
]


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    import mlflow
    from prefect.settings import PREFECT_HOME, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    root = tmp_path_factory.mktemp("staged") / "state"
    root.mkdir()
    simulate(root)
    prefect_home = root / "prefect"
    old_tracking, old_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    with pytest.MonkeyPatch.context() as patch:
        for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID"):
            patch.delenv(var, raising=False)
        patch.delenv("PREFECT_API_URL", raising=False)
        patch.setenv("FRAUD_PROFILE__STATE_DIR", str(root))
        patch.setenv("FRAUD_TRAIN__MODEL__MAX_ITER", "50")
        patch.setenv("FRAUD_SERVING__RELEASE__STAGED", "true")
        patch.setenv("PREFECT_HOME", str(prefect_home))
        patch.setenv("PREFECT_LOCAL_STORAGE_PATH", str(prefect_home / "storage"))
        patch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        patch.setenv("PREFECT_LOGGING_LEVEL", "WARNING")
        with (
            temporary_settings(
                updates={
                    PREFECT_HOME: prefect_home,
                    PREFECT_LOCAL_STORAGE_PATH: prefect_home / "storage",
                }
            ),
            prefect_test_harness(server_startup_timeout=120),
        ):
            try:
                yield root
            finally:
                mlflow.set_tracking_uri(old_tracking)
                mlflow.set_registry_uri(old_registry)
                mlflow.tracking.fluent._active_experiment_id = None  # no public way to unset
                tracking._session = None


def test_a_version_that_passes_the_gate_stays_challenger_until_released(state: Path) -> None:
    from fraud_detection.orchestration.local import load_flows

    # When CT runs with staged release on
    record = load_flows().ct_flow(trigger="on_demand", state_dir=str(state))

    # Then the gate passed, but the version is the challenger, not the champion
    assert record["model_gate"] == "challenger v1 (awaiting release)", record
    assert record["outcome"] == "challenger"
    assert record["champion_version"] is None
    tracking.setup_mlflow(ct.context(state).profile)
    assert tracking.champion("fraud-detector") is None
    challenger = tracking.challenger("fraud-detector")
    assert challenger is not None
    assert str(challenger.version) == "1"
    assert challenger.tags["gate.promote"] == "true"
    # and the run is no failed gate (a CI job stays green)
    assert runs.failed_gates(runs.read_records(ct.context(state).paths)[-1]) == []

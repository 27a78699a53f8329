"""prefect.yaml: every deployment points at a real flow; the triggers are scheduled."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _deployments() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return {d["name"]: d for d in config["deployments"]}


def test_every_entrypoint_is_a_flow() -> None:
    sys.path.insert(0, str(ROOT))
    for name, deployment in _deployments().items():
        path, function = deployment["entrypoint"].split(":")
        assert (ROOT / path).is_file(), name
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, function)
        assert type(flow).__name__ == "Flow", f"{name}: {function} is not a Prefect flow"
        for parameter in deployment.get("parameters", {}):
            assert parameter in flow.parameters.properties, f"{name}: unknown {parameter}"


def test_schedule_and_sensor_triggers_are_scheduled() -> None:
    from prefect.client.schemas.schedules import CronSchedule

    deployments = _deployments()
    nightly = deployments["ct-nightly"]
    assert nightly["parameters"]["trigger"] == "schedule"
    schedule = nightly["schedules"][0]
    # Prefect's own schedule model rejects an invalid cron expression.
    CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    assert deployments["new-data-sensor"]["schedules"][0]["interval"] <= 300
    assert "schedules" not in deployments["ct-on-demand"]


def test_runs_start_in_the_repository() -> None:
    # Without an explicit working directory, runs start wherever the worker was started.
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    steps = [next(iter(step)) for step in config["pull"]]
    assert "prefect.deployments.steps.set_working_directory" in steps

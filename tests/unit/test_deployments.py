"""prefect.yaml: every deployment points at a real flow; the triggers are scheduled.

And ``make check-deployments`` (``deploy check``), which CI runs without a server, names
each problem of a broken copy of prefect.yaml.
"""

from __future__ import annotations

import datetime as dt
import importlib
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipelines.level2_cicd import deploy  # noqa: E402  (pipelines/ sits beside src/)


def _config() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


def _deployments() -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in _config()["deployments"]}


def test_every_entrypoint_is_a_flow() -> None:
    for name, deployment in _deployments().items():
        path, function = deployment["entrypoint"].split(":")
        assert (ROOT / path).is_file(), name
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, function, None)
        assert flow is not None, f"{name}: {path} has no {function}"
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


def test_batch_scoring_then_monitoring_run_daily_after_nightly_ct() -> None:
    from prefect.client.schemas.schedules import CronSchedule

    deployments = _deployments()

    def daily_time(name: str) -> dt.time:
        (spec,) = deployments[name]["schedules"]
        CronSchedule(cron=spec["cron"], timezone=spec["timezone"])  # parses
        assert spec["timezone"] == "UTC", name
        minute, hour, *every_day = spec["cron"].split()
        assert every_day == ["*", "*", "*"], f"{name} is not daily: {spec['cron']}"
        return dt.time(int(hour), int(minute))

    assert deployments["batch-scoring"]["entrypoint"].endswith(":batch_scoring_flow")
    assert deployments["monitoring"]["entrypoint"].endswith(":monitoring_flow")
    # Each night: retrain, then score with the (possibly new) champion, then monitor it.
    assert daily_time("ct-nightly") < daily_time("batch-scoring") < daily_time("monitoring")


def test_runs_start_in_the_repository() -> None:
    # Without an explicit working directory, runs start wherever the worker was started.
    steps = [next(iter(step)) for step in _config()["pull"]]
    assert "prefect.deployments.steps.set_working_directory" in steps


def test_every_deployment_runs_on_the_local_pool() -> None:
    pools = {name: d["work_pool"]["name"] for name, d in _deployments().items()}
    assert set(pools.values()) == {deploy.POOL}, pools


# ------------------------------------------------------------- deploy check


def test_check_accepts_the_repository_prefect_yaml() -> None:
    assert deploy.check_prefect_yaml(ROOT / "prefect.yaml", ROOT) == []


def _broken_copy(tmp_path: Path) -> Path:
    """prefect.yaml with a missing flow, a bad cron, a misspelt parameter, a file that
    does not exist, and no pull step."""
    config = _config()
    by_name = {d["name"]: d for d in config["deployments"]}
    entry = by_name["ct-on-demand"]["entrypoint"]
    by_name["ct-on-demand"]["entrypoint"] = entry.rsplit(":", 1)[0] + ":no_such_flow"
    by_name["ct-nightly"]["schedules"][0]["cron"] = "61 2 * * *"
    by_name["ct-nightly"]["parameters"] = {"triger": "schedule"}
    by_name["signal-trigger"]["entrypoint"] = "pipelines/missing.py:signal_trigger"
    del config["pull"]
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_check_names_each_problem_of_a_broken_prefect_yaml(tmp_path: Path) -> None:
    problems = deploy.check_prefect_yaml(_broken_copy(tmp_path), ROOT)

    text = "\n".join(problems)
    assert len(problems) == 5, text
    assert "ct-on-demand: pipelines/level1_continuous_training/flows.py has no flow named " in text
    assert "'no_such_flow'" in text
    assert "ct-nightly: schedules[0]: invalid schedule" in text
    assert "61 2 * * *" in text
    assert "ct-nightly: parameter 'triger' is not a parameter of ct_flow" in text
    assert "signal-trigger: entrypoint file pipelines/missing.py does not exist" in text
    assert "set_working_directory" in text
    # The deployments that are fine are not mentioned.
    assert "new-data-sensor" not in text


def test_check_command_lists_the_problems_and_fails(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        deploy.app, ["check", "--prefect-file", str(_broken_copy(tmp_path))]
    )

    assert isinstance(result.exception, deploy.DeployError)
    assert "5 problem(s)" in str(result.exception)
    assert "no_such_flow" in result.output
    assert "invalid schedule" in result.output


def test_check_rejects_a_bad_interval_and_a_wrong_parameter_type(tmp_path: Path) -> None:
    config = _config()
    by_name = {d["name"]: d for d in config["deployments"]}
    by_name["new-data-sensor"]["schedules"] = [{"interval": -5}]
    by_name["ct-on-demand"]["parameters"] = {"force": "very"}
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump(config))

    problems = deploy.check_prefect_yaml(path, ROOT)

    assert any(p.startswith("new-data-sensor: schedules[0]") and "-5" in p for p in problems)
    assert any(p.startswith("ct-on-demand: parameters do not fit ct_flow") for p in problems)


# ----------------------------------------------------- the "Late" trap, stop, CD


def _worker(status: str, heartbeat_age_s: float | None, now: dt.datetime) -> Any:
    beat = None if heartbeat_age_s is None else now - dt.timedelta(seconds=heartbeat_age_s)
    return SimpleNamespace(
        status=SimpleNamespace(value=status),
        last_heartbeat_time=beat,
        heartbeat_interval_seconds=10,
    )


def test_only_a_worker_with_a_recent_heartbeat_counts_as_polling() -> None:
    now = dt.datetime.now(dt.UTC)
    assert deploy._polling(_worker("ONLINE", 5, now), now)
    # The server still says ONLINE for a while after a worker died: its heartbeat tells.
    assert not deploy._polling(_worker("ONLINE", 120, now), now)
    assert not deploy._polling(_worker("OFFLINE", 5, now), now)
    assert not deploy._polling(_worker("ONLINE", None, now), now)


def test_late_runs_without_a_worker_are_the_trap() -> None:
    message, trapped = deploy.late_verdict(late=3, polling=0)
    assert trapped
    assert "no worker is polling fraud-local" in message
    assert "prefect worker start --pool fraud-local" in message

    message, trapped = deploy.late_verdict(late=2, polling=1)
    assert not trapped
    assert "wait their turn" in message
    assert deploy.late_verdict(late=0, polling=0)[1] is False


def test_stop_with_nothing_recorded_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRAUD_PROFILE__STATE_DIR", str(tmp_path))

    result = CliRunner().invoke(deploy.app, ["down"])

    assert result.exit_code == 0, result.output
    assert "nothing to stop" in result.output


def test_deploying_to_a_remote_prefect_needs_its_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)

    result = CliRunner().invoke(deploy.app, ["remote"])

    assert isinstance(result.exception, deploy.DeployError)
    message = str(result.exception)
    assert message.startswith("PREFECT_API_URL is not set")
    assert "\n" not in message


def test_make_deploy_uses_the_production_profiles_prefect_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The local profile: a server of make deploy's own, on FRAUD_DEPLOY_PORT
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("FRAUD_PROFILE", raising=False)
    monkeypatch.setenv("FRAUD_DEPLOY_PORT", "4300")
    assert deploy.local_target().api_url == "http://127.0.0.1:4300/api"
    # The production profile: the stack's server (make prod-up), not a SQLite one
    monkeypatch.setenv("FRAUD_PROFILE", "production")
    assert deploy.local_target().api_url == "http://127.0.0.1:4200/api"
    # PREFECT_API_URL wins over both
    monkeypatch.setenv("PREFECT_API_URL", "http://prefect.example:4200/api/")
    assert deploy.local_target().api_url == "http://prefect.example:4200/api"
    # make stop ends only what make deploy started
    assert "server and the worker" in deploy._stop_hint({"server": {}, "worker": {}})
    assert "not make deploy's" in deploy._stop_hint({"worker": {}})

"""prefect.yaml: every deployment points at a real flow; CT starts on a schedule, by hand
and from events (deployment triggers).

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


def test_new_data_and_signals_start_ct_from_events() -> None:
    from prefect.events import DeploymentTriggerTypes
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
    from pydantic import TypeAdapter

    from fraud_detection import events

    deployments = _deployments()
    adapter: TypeAdapter[object] = TypeAdapter(DeploymentTriggerTypes)

    def triggers(name: str) -> dict[str, DeploymentEventTrigger]:
        assert deployments[name]["entrypoint"].endswith(":ct_flow"), name
        assert "schedules" not in deployments[name], name
        by_event: dict[str, DeploymentEventTrigger] = {}
        for spec in deployments[name]["triggers"]:
            trigger = adapter.validate_python(spec)
            assert isinstance(trigger, DeploymentEventTrigger), spec
            by_event |= dict.fromkeys(trigger.expect, trigger)
        return by_event

    # New data: the partition-landed event starts CT with trigger=new_data
    landed = triggers("ct-on-new-data")[events.PARTITION_LANDED]
    assert landed.parameters == {"trigger": "new_data"}
    # Signals: drift and performance, each with its trigger and the signal that started it
    on_signal = triggers("ct-on-signal")
    assert set(on_signal) == {"fraud.monitoring.drift", "fraud.monitoring.performance"}
    for event, trigger in on_signal.items():
        assert trigger.parameters == {
            "trigger": event.rsplit(".", 1)[1],
            "signal_id": "{{ event.payload.id }}",
        }
    # A burst of events starts one run: each trigger fires once per window
    for trigger in [landed, *on_signal.values()]:
        assert trigger.posture.value == "Reactive"
        assert trigger.threshold == 1
        assert trigger.within.total_seconds() >= 60
    # The polling sensor stays only as the fallback for a feed that emits no event
    assert deployments["new-data-sensor"]["schedules"][0]["interval"] >= 300
    assert "signal-trigger" not in deployments


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


def _release_env(monkeypatch: pytest.MonkeyPatch, release: deploy.Release) -> None:
    for name, value in release.environment().items():
        monkeypatch.setenv(name, value)


def _pinned_pull(config: dict[str, Any]) -> list[dict[str, Any]]:
    """What `prefect deploy` stores as the pull step: the build steps run (at deploy time),
    their outputs written into the pull section (prefect/cli/deploy/_core.py). The steps
    are called directly: Prefect's run_steps would start a temporary server."""
    from prefect.deployments.steps.utility import run_shell_script
    from prefect.utilities.asyncutils import run_coro_as_sync
    from prefect.utilities.templating import apply_values

    outputs: dict[str, Any] = {}
    for step in config["build"]:
        ((fqn, spec),) = step.items()
        assert fqn == "prefect.deployments.steps.run_shell_script", fqn
        inputs = dict(spec)
        step_id = inputs.pop("id")
        outputs[step_id] = run_coro_as_sync(run_shell_script(**inputs))
    return list(apply_values(config["pull"], outputs, remove_notset=False))


def test_runs_clone_the_commit_pinned_at_deploy_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given what deploy.py exports for a private repository's release
    sha = "0123456789abcdef0123456789abcdef01234567"  # pragma: allowlist secret
    release = deploy.Release("https://github.com/o/r.git", sha, token_block="fraud-git-token")
    _release_env(monkeypatch, release)

    (step,) = _pinned_pull(_config())

    # Then the stored pull step holds literal values: nothing is read on the worker,
    # except the Secret block, resolved when the run starts (the token is never stored)
    clone = step["prefect.deployments.steps.git_clone"]
    assert clone["repository"] == "https://github.com/o/r.git"
    assert clone["commit_sha"] == sha
    assert clone["access_token"] == "{{ prefect.blocks.secret.fraud-git-token }}"
    assert set(clone) == {"repository", "commit_sha", "access_token", "clone_directory_name"}


def test_a_public_release_clones_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    _release_env(monkeypatch, deploy.Release("file:///repo", "a" * 40))

    (step,) = _pinned_pull(_config())

    assert step["prefect.deployments.steps.git_clone"]["access_token"] == ""


def test_prefect_deploy_without_deploy_py_stops_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A bare `prefect deploy --all` (no make target) must not register an unpinned pull.
    for name in ("FRAUD_DEPLOY_REPOSITORY", "FRAUD_DEPLOY_COMMIT", "FRAUD_DEPLOY_ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)

    with pytest.raises(RuntimeError, match="run_shell_script") as raised:
        _pinned_pull(_config())
    why = "FRAUD_DEPLOY_REPOSITORY: is set by make deploy-prefect and make deploy"
    assert why in str(raised.value)


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
    by_name["ct-on-signal"]["entrypoint"] = "pipelines/missing.py:ct_flow"
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
    assert "ct-on-signal: entrypoint file pipelines/missing.py does not exist" in text
    assert "pull: expected one prefect.deployments.steps.git_clone step pinned" in text
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


# ------------------------------------------------------ deploy check: triggers


def _with_trigger(tmp_path: Path, **change: Any) -> list[str]:
    """The problems of prefect.yaml whose first drift trigger has ``change`` applied
    (a value None removes the key)."""
    config = _config()
    (deployment,) = [d for d in config["deployments"] if d["name"] == "ct-on-signal"]
    trigger = deployment["triggers"][0]
    for key, value in change.items():
        if value is None:
            trigger.pop(key, None)
        else:
            trigger[key] = value
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return deploy.check_prefect_yaml(path, ROOT)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"within": -5}, "ct-on-signal: triggers[0]: invalid trigger: within:"),
        ({"threshold": "many"}, "ct-on-signal: triggers[0]: invalid trigger: threshold:"),
        ({"type": "evnt"}, "ct-on-signal: triggers[0]: invalid trigger:"),
        (
            {"expect": ["fraud.monitoring.drfit"]},
            "triggers[0]: expects event 'fraud.monitoring.drfit', which nothing emits",
        ),
        # misspelt: Prefect would ignore it and fire on every event
        (
            {"expect": None, "expects": ["fraud.monitoring.drift"]},
            "triggers[0]: unknown key(s) 'expects': Prefect ignores them silently",
        ),
        (
            {"parameters": {"trigger": "drift", "signal": "{{ event.payload.id }}"}},
            "triggers[0]: parameter 'signal' is not a parameter of ct_flow",
        ),
        ({"parameters": {"trigger": "drfit"}}, "triggers[0]: trigger 'drfit' is not one of"),
        ({"parameters": {"force": "very"}}, "triggers[0]: parameters do not fit ct_flow"),
    ],
)
def test_check_rejects_a_malformed_trigger(
    tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    problems = _with_trigger(tmp_path, **change)

    assert any(expected in p for p in problems), problems


def test_check_accepts_a_wildcard_event_and_the_command_fails_on_a_bad_trigger(
    tmp_path: Path,
) -> None:
    assert _with_trigger(tmp_path, expect=["fraud.monitoring.*"]) == []

    _with_trigger(tmp_path, within=-5)
    result = CliRunner().invoke(
        deploy.app, ["check", "--prefect-file", str(tmp_path / "prefect.yaml")]
    )

    assert isinstance(result.exception, deploy.DeployError)
    assert "1 problem(s)" in str(result.exception)
    assert "ct-on-signal: triggers[0]: invalid trigger: within" in result.output


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


def test_a_fresh_fork_without_secrets_deploys_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # cd.yml passes the environment's secrets; on a fork they are empty strings.
    monkeypatch.setenv("PREFECT_API_URL", "")
    monkeypatch.setenv("PREFECT_API_KEY", "")
    monkeypatch.delenv("PREFECT_API_AUTH_STRING", raising=False)

    message = str(CliRunner().invoke(deploy.app, ["remote"]).exception)

    assert message.startswith("PREFECT_API_URL is not set; PREFECT_API_KEY is not set:")
    assert "nothing deployed" in message
    assert "\n" not in message
    # A remote server without credentials is refused too; one on this machine is not.
    monkeypatch.setenv("PREFECT_API_URL", "https://api.prefect.cloud/api/accounts/a/workspaces/w")
    message = str(CliRunner().invoke(deploy.app, ["remote"]).exception)
    assert message.startswith("PREFECT_API_KEY is not set:")


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


# ------------------------------------------------- the pull step must be pinned


def _with_pull(tmp_path: Path, pull: list[dict[str, Any]]) -> list[str]:
    config = _config()
    config["pull"] = pull
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return [p for p in deploy.check_prefect_yaml(path, ROOT) if p.startswith("pull:")]


def _clone(**spec: Any) -> list[dict[str, Any]]:
    return [{deploy.GIT_CLONE: spec}]


REPOSITORY = "https://github.com/o/r.git"


@pytest.mark.parametrize(
    ("pull", "expected"),
    [
        # the old pull step: whatever checkout the worker machine has at that path
        (
            [{"prefect.deployments.steps.set_working_directory": {"directory": "/srv/r"}}],
            "expected one prefect.deployments.steps.git_clone step pinned to a commit, found "
            "prefect.deployments.steps.set_working_directory",
        ),
        (_clone(repository=REPOSITORY), "no commit_sha: not pinned, runs would clone the default"),
        (_clone(repository=REPOSITORY, branch="main"), "clone branch 'main' as it is when"),
        (_clone(repository=REPOSITORY, branch="v1.4.0"), "(a branch or tag can move)"),
        (
            _clone(repository=REPOSITORY, commit_sha="{{ $FRAUD_DEPLOY_COMMIT }}"),
            "is read from the worker's environment when a run starts",
        ),
        (_clone(repository=REPOSITORY, commit_sha="abc123"), "not a full 40-character sha"),
        (
            _clone(repository=REPOSITORY, commit_sha="{{ no-such-step.stdout }}"),
            "names no build step",
        ),
        (_clone(commit_sha="a" * 40), "git_clone has no repository"),
    ],
)
def test_check_rejects_a_pull_without_a_pinned_commit(
    tmp_path: Path, pull: list[dict[str, Any]], expected: str
) -> None:
    problems = _with_pull(tmp_path, pull)

    assert len(problems) == 1, problems
    assert expected in problems[0]


def test_check_accepts_a_literal_pinned_commit(tmp_path: Path) -> None:
    assert _with_pull(tmp_path, _clone(repository=REPOSITORY, commit_sha="a" * 40)) == []


# ------------------------------------------------ what deploy.py pins (Release)


def _git(repo: Path, *args: str) -> str:
    import subprocess

    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("FRAUD_DEPLOY_REPOSITORY", "FRAUD_DEPLOY_REF", "FRAUD_DEPLOY_GIT_TOKEN_BLOCK"):
        monkeypatch.delenv(name, raising=False)
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "--quiet")
    (repo / "README.md").write_text("one\n")
    _git(repo, "add", "README.md")
    _git(repo, "commit", "--quiet", "-m", "one")
    _git(repo, "tag", "v1.0.0")
    return repo


def test_make_deploy_pins_the_checkout_itself_at_head(
    checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = deploy.release_from_environment(checkout, local=True)

    assert release.repository == checkout.resolve().as_uri()
    assert release.commit == _git(checkout, "rev-parse", "HEAD")
    assert "uncommitted" not in capsys.readouterr().err


def test_a_dirty_tree_is_deployed_without_its_changes_and_says_so(
    checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (checkout / "README.md").write_text("changed\n")

    release = deploy.release_from_environment(checkout, local=True)

    assert release.commit == _git(checkout, "rev-parse", "HEAD")
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "has uncommitted changes; runs use commit" in line


def test_cd_pins_its_origin_and_a_tag_to_the_tags_commit(
    checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tagged = _git(checkout, "rev-parse", "HEAD")
    (checkout / "README.md").write_text("two\n")
    _git(checkout, "commit", "--quiet", "-am", "two")
    _git(checkout, "remote", "add", "origin", REPOSITORY)
    monkeypatch.setenv("FRAUD_DEPLOY_REF", "v1.0.0")
    monkeypatch.setenv("FRAUD_DEPLOY_GIT_TOKEN_BLOCK", "fraud-git-token")

    release = deploy.release_from_environment(checkout, local=False)

    assert release == deploy.Release(REPOSITORY, tagged, "fraud-git-token")
    assert release.environment()["FRAUD_DEPLOY_COMMIT"] == tagged


def test_a_ref_that_is_no_commit_is_refused(
    checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRAUD_DEPLOY_REF", "v9.9.9")
    with pytest.raises(deploy.DeployError, match=r"FRAUD_DEPLOY_REF='v9\.9\.9' is not a commit"):
        deploy.release_from_environment(checkout, local=True)
    # A full sha a shallow CI checkout lacks is passed on: the worker fetches it.
    monkeypatch.setenv("FRAUD_DEPLOY_REF", "b" * 40)
    assert deploy.release_from_environment(checkout, local=True).commit == "b" * 40


def test_cd_without_a_remote_or_outside_git_is_refused(
    checkout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(deploy.DeployError, match="no `origin` remote"):
        deploy.release_from_environment(checkout, local=False)
    plain = tmp_path / "plain"
    plain.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    with pytest.raises(deploy.DeployError, match="is not a git checkout"):
        deploy.release_from_environment(plain, local=True)

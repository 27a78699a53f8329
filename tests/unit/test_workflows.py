"""The GitHub Actions workflows, kept honest without a runner.

No runner executes them here, so these tests check what can be checked: actionlint passes;
every ``run:`` step is ``make <target>`` with a target that exists, is listed by
``make help`` and is itself exercised (by ``.ci/run`` or by a named test); third-party
actions are pinned to commit SHAs and listed in docs/reference/level2.md; permissions are
least-privilege; and the CI, CD and CT workflows have the shape docs/level2.md describes.
"""

from __future__ import annotations

import ast
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ACTIONS = sorted((ROOT / ".github" / "actions").glob("*/action.yml"))
BIN = ROOT / ".venv" / "bin"
LEVELS = ("unit", "integration", "e2e")

# Every make target a workflow runs, and the test that runs it (targets in .ci/run need no
# entry). The test must exist and must name the target; test_every_workflow_target_is_exercised
# checks both, so an entry cannot point at nothing.
E2E = "tests/e2e/test_ci_targets.py::"
SECURITY = "tests/e2e/test_security_targets.py::"
EXERCISED: dict[str, str] = {
    "install": E2E + "test_make_install_is_a_no_op_when_synced",
    "simulate": E2E + "test_level0_manual_workflow_steps_hand_a_model_over",
    "level0": E2E + "test_level0_manual_workflow_steps_hand_a_model_over",
    "test-data": E2E + "test_test_data_selects_the_data_contract_tests",
    "test-notebook": E2E + "test_test_notebook_selects_the_notebook_test",
    "smoke": E2E + "test_smoke_trains_and_promotes_a_champion",
    "ct-ci": E2E + "test_ct_ci_fails_visibly_when_the_model_gate_rejects",
    "ct-new-data": E2E + "test_ct_new_data_adds_one_day_per_run",
    "repro-sample": E2E + "test_repro_sample_runs_every_stage_in_a_copy",
    "wheel": E2E + "test_wheel_ships_the_package_and_the_cli",
    "image": E2E + "test_image_without_docker_fails_with_one_clear_line",
    "deps-fresh": E2E + "test_deps_fresh_dry_run_leaves_the_lock_alone",
    "check-deployments": E2E + "test_check_deployments_accepts_prefect_yaml",
    "deploy-prefect": E2E + "test_deploy_prefect_without_an_api_url_fails",
    "delivery-check": E2E + "test_delivery_check_passes",
    "test-services": E2E + "test_test_services_selects_the_services_tests",
    "health-report": "tests/integration/test_operations.py::"
    "test_make_health_report_writes_the_page_and_appends_the_job_summary",
    "security": SECURITY + "test_security_runs_every_offline_check",
    "sbom": SECURITY + "test_sbom_lists_the_locked_runtime_packages",
    "audit": SECURITY + "test_audit_without_the_network_says_so_in_one_line",
    "image-smoke": SECURITY + "test_image_smoke_without_docker_says_so_in_one_line",
}


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True.
    if True in data:
        data["on"] = data.pop(True)
    return data


@cache
def _composite_steps(uses: str) -> list[dict[str, Any]]:
    return list(_load(ROOT / uses.removeprefix("./") / "action.yml")["runs"]["steps"])


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    """A job's steps with local composite actions (``uses: ./...``) expanded in place."""
    steps = []
    for step in job.get("steps", []):
        steps.append(step)
        if str(step.get("uses", "")).startswith("./"):
            steps.extend(_composite_steps(step["uses"]))
    return steps


def _workflow(name: str) -> dict[str, Any]:
    return _load(ROOT / ".github" / "workflows" / name)


def _run_lines() -> list[tuple[str, str]]:
    """Every ``run:`` of every workflow and local action, with where it is."""
    found = []
    for path in [*WORKFLOWS, *ACTIONS]:
        data = _load(path)
        jobs = data.get("jobs", {"(composite)": {"steps": data.get("runs", {}).get("steps", [])}})
        for job_id, job in jobs.items():
            for step in job.get("steps", []):
                if "run" in step:
                    found.append((f"{path.name}:{job_id}:{step.get('name', '?')}", step["run"]))
    return found


def _targets_of(command: str) -> list[str]:
    return command.split()[1:]


def _workflow_targets() -> set[str]:
    return {t for _, command in _run_lines() for t in _targets_of(command)}


def _makefile_recipe(target: str) -> str:
    """A Makefile target's line and recipe (up to the next blank line)."""
    text = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:.*?(?=\n\n|\Z)", text, flags=re.M | re.S)
    assert match, f"no make target {target}"
    return match[0]


def _makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-zA-Z0-9_-]+):(?!=)", text, flags=re.MULTILINE))


def _ci_run_targets() -> set[str]:
    """Targets ``.ci/run`` runs; ``make test`` (the whole suite) stands for the three
    per-level targets CI's jobs run, since every test module carries one of their markers
    (checked below)."""
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    targets = {t for line in lines if line.startswith("make ") for t in _targets_of(line)}
    if "test" in targets:
        targets |= {f"test-{level}" for level in LEVELS}
    return targets


def test_there_is_a_workflow_per_level_and_for_dependencies() -> None:
    names = {p.name for p in WORKFLOWS}
    assert {"ci.yml", "cd.yml", "ct.yml", "level0-manual.yml", "dependencies.yml"} <= names


def test_actionlint_passes_on_every_workflow() -> None:
    out = subprocess.run(
        [BIN / "actionlint", "-no-color", *WORKFLOWS], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    # The linter really reads the files: a job needing a job that does not exist is an error.
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(
        "on: push\npermissions: {}\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
        "    needs: nowhere\n    steps:\n      - run: make lint\n"
    )
    out = subprocess.run(
        [BIN / "actionlint", "-no-color", broken], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 1
    assert "nowhere" in out.stdout


def test_every_run_step_is_one_make_target_that_exists() -> None:
    targets = _makefile_targets()
    lines = _run_lines()
    assert len(lines) >= 15
    for where, command in lines:
        # No logic in YAML: one line, `make` and target names, nothing else.
        assert re.fullmatch(r"make( [a-z0-9][a-z0-9-]*)+", command.strip()), where
        missing = [t for t in _targets_of(command) if t not in targets]
        assert not missing, f"{where}: no make target {missing}"


def test_make_help_lists_every_target_the_workflows_use() -> None:
    out = subprocess.run(["make", "--no-print-directory", "help"], capture_output=True, text=True)
    listed = {line.split()[0] for line in re.sub(r"\x1b\[[0-9;]*m", "", out.stdout).splitlines()}
    assert not _workflow_targets() - listed


def _strings_run_by(node_id: str) -> set[str] | None:
    """The string constants of a test function and of the fixtures (same file) it takes;
    None if there is no such test."""
    file, name = node_id.split("::")
    path = ROOT / file
    if not path.is_file():
        return None
    functions = {
        node.name: node
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef)
    }
    if name not in functions:
        return None
    nodes = [functions[name]]
    nodes += [functions[a.arg] for a in functions[name].args.args if a.arg in functions]
    return {
        n.value
        for node in nodes
        for n in ast.walk(node)
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def test_every_workflow_target_is_exercised() -> None:
    for target in sorted(_workflow_targets() - _ci_run_targets()):
        assert target in EXERCISED, f"make {target}: in a workflow, run by no test nor .ci/run"
        strings = _strings_run_by(EXERCISED[target])
        assert strings is not None, f"make {target}: {EXERCISED[target]} does not exist"
        assert target in strings, f"{EXERCISED[target]} never runs make {target}"


def test_ci_run_covers_the_whole_suite_and_ci_jobs_split_it_by_level() -> None:
    # .ci/run runs the whole suite (make test); ci.yml's jobs run test-unit, test-integration
    # and test-e2e, so a test module carrying none of the three markers would run in no job.
    assert "test" in _ci_run_targets()
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        text = path.read_text()
        levels = {level for level in LEVELS if f"pytest.mark.{level}" in text}
        assert levels, f"{path.relative_to(ROOT)}: no unit, integration or e2e marker"


# ------------------------------------------------------------------------- actions


PIN = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>[^\s#]+)(?:\s+#\s*(?P<version>\S+))?\s*$")


def _pinned_actions() -> dict[str, set[str]]:
    """``owner/repo@sha`` → the version comments it carries, over workflows and actions."""
    found: dict[str, set[str]] = {}
    for path in [*WORKFLOWS, *ACTIONS]:
        for line in path.read_text().splitlines():
            match = PIN.match(line)
            if match and not match["ref"].startswith("./"):
                found.setdefault(match["ref"], set()).add(match["version"] or "")
    return found


def test_third_party_actions_are_pinned_to_a_commit_sha_with_its_version() -> None:
    actions = _pinned_actions()
    assert len(actions) >= 5
    for ref, versions in actions.items():
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref), f"{ref}: not a full SHA"
        assert len(versions) == 1, f"{ref}: several version comments {versions}"
        (version,) = versions
        assert re.fullmatch(r"v\d+\.\d+\.\d+", version), f"{ref}: comment '# vX.Y.Z' missing"


def test_one_pin_per_action_and_all_listed_in_the_docs() -> None:
    actions = _pinned_actions()
    names = [ref.split("@")[0] for ref in actions]
    assert len(names) == len(set(names)), "an action is pinned to two different commits"
    docs = (ROOT / "docs" / "reference" / "level2.md").read_text()
    for ref, versions in actions.items():
        assert f"{ref} # {next(iter(versions))}" in docs, (
            f"docs/reference/level2.md does not list {ref}"
        )


# --------------------------------------------------------------------- permissions


def _writes(permissions: Any) -> list[str]:
    if isinstance(permissions, str):  # read-all / write-all
        return [permissions] if "write" in permissions else []
    return [scope for scope, level in (permissions or {}).items() if level == "write"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_workflow_and_job_declares_least_privilege_permissions(path: Path) -> None:
    data = _load(path)
    assert "permissions" in data, f"{path.name}: no top-level permissions"
    assert data["permissions"] in ({}, {"contents": "read"}), path.name
    for job_id, job in data["jobs"].items():
        assert "permissions" in job, f"{path.name}:{job_id}: no permissions"
        # No job needs to write with the workflow token: deployments use their own secrets.
        assert not _writes(job["permissions"]), f"{path.name}:{job_id}: {job['permissions']}"


# ------------------------------------------------------------------- the workflows


def test_ci_runs_every_check_on_pull_requests_and_cancels_superseded_runs() -> None:
    ci = _workflow("ci.yml")
    assert "pull_request" in ci["on"]
    assert ci["on"]["push"]["branches"] == ["main"]
    assert ci["concurrency"]["cancel-in-progress"] is True
    assert "github.ref" in ci["concurrency"]["group"]
    targets = {
        t
        for job in ci["jobs"].values()
        for s in _steps(job)
        for t in _targets_of(s.get("run", "x"))
    }
    expected = {
        "lint",
        "typecheck",
        "test-unit",
        "test-integration",
        "test-data",
        "test-notebook",
        "smoke",
        "repro-sample",
        "check-deployments",
        "lint-workflows",
        "lint-docker",
        "test-services",
        "security",
        "audit",
        "image-smoke",
    }
    assert expected <= targets


def test_ci_runs_the_security_checks_and_cd_ships_the_sbom() -> None:
    ci = _workflow("ci.yml")["jobs"]
    # Shift-left: the offline checks (ruff S, secret scan, hadolint, SBOM), then pip-audit.
    runs = [s.get("run") for s in ci["security"]["steps"] if "run" in s]
    assert runs == ["make security", "make audit"]
    security = _makefile_recipe("security")
    for part in ("lint-security", "secrets", "lint-docker", "sbom"):
        assert part in security, f"make security does not run {part}"
    assert "detect-secrets-hook --baseline .secrets.baseline" in _makefile_recipe("secrets")
    assert "--select S" in _makefile_recipe("lint-security")
    assert "pip-audit" in _makefile_recipe("audit")
    # The serving image is built, started and probed.
    assert [s.get("run") for s in ci["image"]["steps"] if "run" in s] == ["make image-smoke"]
    smoke = _makefile_recipe("image-smoke")
    assert "FRAUD_API_KEY" in smoke
    assert "/ready" in smoke
    # The SBOM of the locked environment is uploaded next to the wheel.
    build = _workflow("cd.yml")["jobs"]["build"]["steps"]
    assert "make sbom" in [s.get("run") for s in build]
    uploads = {
        s["with"]["name"]: s["with"]["path"]
        for s in build
        if s.get("uses", "").startswith("actions/upload-artifact@")
    }
    assert uploads == {"wheel": "dist/*.whl", "sbom": "dist/sbom.cdx.json"}


def test_ci_runs_the_services_tests_against_postgres_and_redis_containers() -> None:
    job = _workflow("ci.yml")["jobs"]["services"]
    containers = job["services"]
    assert containers["postgres"]["image"] == "postgres:16"
    assert containers["redis"]["image"] == "redis:7"
    # The production profile's addresses, where the services tests look.
    assert containers["postgres"]["ports"] == ["5432:5432"]
    assert containers["redis"]["ports"] == ["6379:6379"]
    for name, container in containers.items():
        # The job's steps start once the container reports healthy.
        assert "--health-cmd" in container["options"], f"{name}: no health check"
    (step,) = [s for s in job["steps"] if "run" in s]
    assert step["run"] == "make test-services"
    # A services test that cannot reach its service fails instead of skipping.
    assert step["env"] == {"FRAUD_REQUIRE_SERVICES": "1"}


def test_every_job_sets_up_uv_with_its_cache_keyed_on_the_lock() -> None:
    for path in WORKFLOWS:
        for job_id, job in _load(path)["jobs"].items():
            uv = [s for s in _steps(job) if s.get("uses", "").startswith("astral-sh/setup-uv@")]
            assert uv, f"{path.name}:{job_id}: no setup-uv"
            assert uv[0]["with"]["enable-cache"] is True
            assert uv[0]["with"]["cache-dependency-glob"] == "uv.lock"


def test_cd_deploys_to_staging_then_production_behind_its_environment() -> None:
    cd = _workflow("cd.yml")
    assert cd["on"]["push"]["branches"] == ["main"]
    assert cd["on"]["push"]["tags"] == ["v*"]
    assert cd["concurrency"]["cancel-in-progress"] is False
    jobs = cd["jobs"]
    staging, production = jobs["staging"], jobs["production"]
    assert staging["environment"] == "staging"
    assert set(staging["needs"]) == {"build", "delivery"}
    assert production["environment"] == "production"
    assert production["needs"] == "staging"
    assert "refs/tags/v" in production["if"]
    for job in (staging, production):
        (deploy,) = [s for s in job["steps"] if s.get("run") == "make deploy-prefect"]
        assert deploy["env"] == {
            "PREFECT_API_URL": "${{ secrets.PREFECT_API_URL }}",
            "PREFECT_API_KEY": "${{ secrets.PREFECT_API_KEY }}",
            # Runs clone this repository at the released commit (prefect.yaml's pull step)...
            "FRAUD_DEPLOY_REPOSITORY": "${{ github.server_url }}/${{ github.repository }}.git",
            "FRAUD_DEPLOY_REF": "${{ github.sha }}",
            # ... with a token from a Prefect Secret block, named, never passed, here.
            "FRAUD_DEPLOY_GIT_TOKEN_BLOCK": "${{ vars.FRAUD_DEPLOY_GIT_TOKEN_BLOCK }}",
        }
        # A deployment that failed (no secrets on a fork, no worker polling) fails the job.
        assert "continue-on-error" not in job
        assert all("continue-on-error" not in step for step in job["steps"])
        assert all("|| true" not in step.get("run", "") for step in job["steps"])
        # The released commit is checked out: deploy.py resolves FRAUD_DEPLOY_REF in it.
        assert job["steps"][0]["uses"].startswith("actions/checkout@")
    build_runs = [s.get("run") for s in jobs["build"]["steps"]]
    assert {"make wheel", "make image", "make lint-docker"} <= set(build_runs)
    assert [s.get("run") for s in jobs["delivery"]["steps"]][-1] == "make delivery-check"


def test_ct_runs_on_schedule_by_hand_and_on_new_data_keeping_its_state() -> None:
    ct = _workflow("ct.yml")
    assert ct["on"]["schedule"][0]["cron"]
    assert "workflow_dispatch" in ct["on"]
    assert ct["on"]["repository_dispatch"]["types"] == ["new-data"]
    assert ct["concurrency"] == {"group": "ct", "cancel-in-progress": False}
    steps = ct["jobs"]["ct"]["steps"]
    runs = [s.get("run") for s in steps if "run" in s]
    assert runs == ["make ct-new-data", "make ct-ci"]
    uses = [s.get("uses", "").split("@")[0] for s in steps]
    restore, save = uses.index("actions/cache/restore"), uses.index("actions/cache/save")
    assert restore < steps.index(next(s for s in steps if s.get("run") == "make ct-ci")) < save
    # The state is saved even when a gate failed the job, so the rejection stays on record.
    assert steps[save]["if"] == "always()"
    assert steps[save]["with"]["path"] == steps[restore]["with"]["path"] == "state"


def test_dependencies_reresolve_weekly_and_upload_the_lock() -> None:
    deps = _workflow("dependencies.yml")
    cron = deps["on"]["schedule"][0]["cron"]
    assert cron.split()[2:4] == ["*", "*"]
    assert cron.split()[4] != "*"
    assert "workflow_dispatch" in deps["on"]
    steps = deps["jobs"]["fresh"]["steps"]
    assert "make deps-fresh" in [s.get("run") for s in steps]
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["with"]["path"] == "uv.lock"
    assert upload["if"] == "always()"


def test_health_report_is_published_weekly_from_the_ct_state_read_only() -> None:
    report = _workflow("health-report.yml")
    cron = report["on"]["schedule"][0]["cron"]
    assert cron.split()[2:4] == ["*", "*"]
    assert cron.split()[4] != "*"  # weekly
    assert "workflow_dispatch" in report["on"]
    job = report["jobs"]["health"]
    steps = job["steps"]
    assert [s.get("run") for s in steps if "run" in s] == ["make health-report"]
    uses = [s.get("uses", "").split("@")[0] for s in steps]
    # The state ct.yml keeps, restored before the report and never saved back.
    restore = steps[uses.index("actions/cache/restore")]
    assert restore["with"]["path"] == "state"
    assert restore["with"]["restore-keys"] == "ct-state-"
    assert "actions/cache/save" not in uses
    ct_save = next(
        s
        for s in _workflow("ct.yml")["jobs"]["ct"]["steps"]
        if s.get("uses", "").startswith("actions/cache/save@")
    )
    assert ct_save["with"]["key"].startswith(restore["with"]["restore-keys"])
    # The page is uploaded even when the report step failed.
    upload = steps[uses.index("actions/upload-artifact")]
    assert upload["if"] == "always()"
    assert "state/reports/health.html" in upload["with"]["path"]
    assert uses.index("actions/cache/restore") < uses.index("actions/upload-artifact")
    # Reading the last CI results needs read access to Actions, nothing more.
    assert job["permissions"] == {"contents": "read", "actions": "read"}


# ------------------------------------------------------------------ team hygiene


def test_pre_commit_config_is_valid_and_runs_the_ci_linters_offline() -> None:
    config = ROOT / ".pre-commit-config.yaml"
    out = subprocess.run(
        [BIN / "pre-commit", "validate-config", config], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (repo,) = yaml.safe_load(config.read_text())["repos"]
    assert repo["repo"] == "local"
    hooks = {hook["id"]: hook for hook in repo["hooks"]}
    assert set(hooks) == {
        "ruff-check",
        "ruff-format",
        "mypy",
        "actionlint",
        "hadolint",
        "detect-secrets",
    }
    for hook in hooks.values():
        assert hook["language"] == "system"
        assert hook["entry"].startswith(".venv/bin/"), hook["id"]


def test_codeowners_lines_name_a_path_and_an_owner() -> None:
    lines = [
        line.split()
        for line in (ROOT / ".github" / "CODEOWNERS").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0][0] == "*"
    for path, *owners in lines:
        assert owners, path
        assert all(o.startswith("@") for o in owners), path
        assert path == "*" or (ROOT / path.strip("/")).exists(), f"CODEOWNERS: no {path}"


def test_branch_protection_in_the_docs_requires_every_ci_job() -> None:
    docs = (ROOT / "docs" / "level2.md").read_text()
    section = docs.split("## Branch protection", 1)[1].split("\n## ", 1)[0]
    for job in _workflow("ci.yml")["jobs"].values():
        assert f"`{job['name']}`" in section, f"docs/level2.md: required check {job['name']}"

"""The make targets the GitHub workflows run, run here as a workflow step runs them.

tests/unit/test_workflows.py maps each workflow target to one of these tests. Targets that
cannot fully run on this machine are run as far as they can: the image build without a
Docker daemon must fail with one clear line; deps-fresh re-resolves in dry-run mode (the
full run re-tests the suite, which is the suite itself); deploy-prefect without a Prefect
API URL must refuse rather than deploy somewhere else.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import zipfile
from collections.abc import Mapping
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
# Variables a developer's or runner's shell may carry that would point these runs elsewhere.
LEAKY = (
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    "PREFECT_HOME",
    "FRAUD_PROFILE",
    "FRAUD_PROFILE__STATE_DIR",
    "GITHUB_STEP_SUMMARY",
    "GITHUB_EVENT_NAME",
    "MAKEFLAGS",
    "MAKELEVEL",
)


def make(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``make <args>`` in the repository, as a workflow step runs it."""
    clean = {k: v for k, v in os.environ.items() if k not in LEAKY}
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# -------------------------------------------------------------- cheap targets


def test_make_install_is_a_no_op_when_synced() -> None:
    result = make("install")
    assert result.returncode == 0, result.stderr
    synced = ROOT / ".venv" / ".synced"
    assert synced.stat().st_mtime >= (ROOT / "uv.lock").stat().st_mtime


def test_test_data_selects_the_data_contract_tests() -> None:
    # Collect only: the tests themselves run in the unit and integration levels.
    result = make("test-data", "PYTEST_ARGS=--collect-only -q")
    assert result.returncode == 0, result.stdout + result.stderr
    # The versioned suite files match the code that generates them.
    assert re.search(r"unchanged .*raw_transactions\.json", result.stdout)
    assert re.search(r"unchanged .*training_set\.json", result.stdout)
    collected = int(re.search(r"(\d+) tests? collected", result.stdout)[1])  # type: ignore[index]
    assert collected >= 20
    assert "test_data_gate.py::" in result.stdout
    assert "test_validation_suites.py::" in result.stdout


def test_test_notebook_selects_the_notebook_test() -> None:
    result = make("test-notebook", "PYTEST_ARGS=--collect-only -q")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test_level0_notebook.py::test_notebook_hands_over_a_model" in result.stdout


def test_test_services_selects_the_services_tests() -> None:
    # Collect only: ci.yml's `services tests` job runs them against service containers.
    result = make("test-services", "PYTEST_ARGS=--collect-only -q")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test_online_state.py::" in result.stdout
    assert "test_replay_equality.py::" in result.stdout
    # Only the tests marked `services`: the rest of the suite is deselected.
    assert re.search(r"\d+/\d+ tests collected \(\d+ deselected\)", result.stdout), result.stdout


def test_ct_new_data_adds_one_day_per_run(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = make("ct-new-data", f"CT_STATE_DIR={state}", "CT_FIRST_DAYS=2")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "0 day(s)" in first.stdout
    second = make("ct-new-data", f"CT_STATE_DIR={state}", "CT_FIRST_DAYS=2")
    assert second.returncode == 0, second.stderr
    assert "2 day(s)" in second.stdout
    days = sorted(p.name for p in (state / "data" / "raw").iterdir())
    assert days == ["date=2026-01-01", "date=2026-01-02", "date=2026-01-03"]


def test_wheel_ships_the_package_and_the_cli(tmp_path: Path) -> None:
    result = make("wheel", f"WHEEL_DIR={tmp_path}", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = tmp_path.glob("fraud_detection_mlops-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    assert "fraud_detection/cli.py" in names
    assert "fraud_detection/validation/suites/raw_transactions.json" in names
    assert "fraud = fraud_detection.cli:main" in scripts


def _docker_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(_docker_answers(), reason="a Docker daemon answers: make image would build")
def test_image_without_docker_fails_with_one_clear_line() -> None:
    result = make("image")
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if not line.startswith("make:")]
    assert ours == [
        "error: no Docker daemon answers (docker info failed): start Docker, "
        "or let cd.yml build the image"
    ]


def test_deps_fresh_dry_run_leaves_the_lock_alone() -> None:
    # The weekly workflow re-resolves for real and runs the suite; here only the
    # resolution runs (it reads the package index), and uv.lock must not change.
    before = _md5(ROOT / "uv.lock")
    result = make("deps-fresh", "DEPS_DRY_RUN=1", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Resolved \d+ packages", result.stdout + result.stderr)
    assert _md5(ROOT / "uv.lock") == before


def test_check_deployments_accepts_prefect_yaml() -> None:
    result = make("check-deployments", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_deploy_prefect_without_an_api_url_fails() -> None:
    # cd.yml sets PREFECT_API_URL from the environment's secrets; without it the target
    # must refuse instead of deploying to some local server.
    result = make("deploy-prefect", timeout=300)
    assert result.returncode != 0
    assert "PREFECT_API_URL is not set" in result.stderr


# ------------------------------------------------------- the level-0 workflow


@pytest.mark.slow
def test_level0_manual_workflow_steps_hand_a_model_over(tmp_path: Path) -> None:
    # level0-manual.yml's steps, on a small world in a throwaway state folder.
    world = {
        "FRAUD_PROFILE__STATE_DIR": str(tmp_path),
        "FRAUD_SIMULATE__DAYS": "6",
        "FRAUD_SIMULATE__ROWS_PER_DAY": "1500",
        "FRAUD_SIMULATE__CARDS": "300",
        "FRAUD_SIMULATE__MERCHANTS": "60",
        "FRAUD_SIMULATE__LABEL_DELAY_DAYS": "1",
    }
    simulated = make("simulate", env=world)
    assert simulated.returncode == 0, simulated.stderr
    assert "over 6 days" in simulated.stdout
    result = make("level0", env=world)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"PR-AUC on the last days: 0\.\d{3}", result.stdout)
    assert {"model.joblib", "metrics.json"} <= {p.name for p in (tmp_path / "level0").iterdir()}


# ---------------------------------------------- CT: smoke, ct-ci, failed gates


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """``make smoke`` once, keeping its state (SMOKE_DIR) and job summary for the tests."""
    folder = tmp_path_factory.mktemp("smoke")
    state, summary = folder / "state", folder / "summary.md"
    result = make("smoke", f"SMOKE_DIR={state}", env={"GITHUB_STEP_SUMMARY": str(summary)})
    return {"result": result, "state": state, "summary": summary}


@pytest.mark.slow
def test_smoke_trains_and_promotes_a_champion(smoke: dict[str, object]) -> None:
    result = smoke["result"]
    assert isinstance(result, subprocess.CompletedProcess)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "simulated" in result.stdout
    assert "over 6 days" in result.stdout
    assert "model gate:     promoted v1" in result.stdout
    # Its own Prefect home and SQLite MLflow, inside the throwaway folder.
    state = Path(str(smoke["state"]))
    assert (state / "prefect").is_dir()
    assert (state / "mlflow" / "mlflow.db").is_file()
    summary = Path(str(smoke["summary"])).read_text()
    assert summary.startswith("### Continuous training (on_demand): passed")
    assert "| as of | trigger | data gate | model gate | champion |" in summary
    assert re.search(r"\| on_demand \| 6 accepted \| promoted v1 \| v1 \| 0\.\d{3} \|", summary)


@pytest.mark.slow
def test_ct_ci_fails_visibly_when_the_model_gate_rejects(
    smoke: dict[str, object], tmp_path: Path
) -> None:
    # A degraded challenger (shuffled labels) on the smoke test's state: the model gate
    # rejects it, the job fails, the summary shows it and the champion stays v1.
    summary = tmp_path / "summary.md"
    result = make(
        "ct-ci",
        f"CT_STATE_DIR={smoke['state']}",
        "CT_ARGS=--variant shuffled_labels --force",
        env={"GITHUB_STEP_SUMMARY": str(summary), "GITHUB_EVENT_NAME": "schedule"},
    )
    assert result.returncode != 0
    assert "gate failed: model gate: rejected v2" in result.stderr
    text = summary.read_text()
    assert text.startswith("### Continuous training (schedule): FAILED")
    last_row = text.strip().splitlines()[-1]
    assert re.match(r"\| \S+ \| schedule \| no new partition \| rejected v2 \| v1 \|", last_row)


@pytest.mark.slow
def test_repro_sample_runs_every_stage_in_a_copy() -> None:
    lock, state_lock = ROOT / "dvc.lock", ROOT / "state" / "dvc" / "metrics.json"
    before = (_md5(lock), state_lock.stat().st_mtime if state_lock.exists() else None)
    result = make("repro-sample", timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for stage in ("simulate", "validate_raw", "features", "training_set", "train"):
        assert f"Running stage '{stage}'" in result.stdout
    assert "Data and pipelines are up to date." in result.stdout  # dvc status afterwards
    # dvc metrics show: a header row of metric names, then the metrics file's row.
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if "pr_auc" in line.split())
    row = dict(zip(lines[header].split(), lines[header + 1].split(), strict=True))
    assert row["Path"] == "state/dvc/metrics.json"
    assert 0.0 < float(row["pr_auc"]) <= 1.0
    # The repository's own lock file and state are untouched.
    after = (_md5(lock), state_lock.stat().st_mtime if state_lock.exists() else None)
    assert after == before


@pytest.mark.slow
def test_delivery_check_passes(smoke: dict[str, object]) -> None:
    # cd.yml's `model delivery checks` job: make smoke leaves a champion in SMOKE_DIR, then
    # make delivery-check checks it with the state folder from the environment.
    result = make("delivery-check", env={"FRAUD_PROFILE__STATE_DIR": str(smoke["state"])})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "v1" in result.stdout
    report = Path(str(smoke["state"])) / "serving" / "delivery" / "v1.json"
    assert report.is_file()

"""The level-1 demo end to end, as ``make demo-level1`` runs it on the local profile.

Given the demo's world (21 days; drift from day 16, a broken feed on day 18), when the
demo plays it day by day in a state folder of its own, then it tells its story: the first
run promotes v1; the shuffled-labels challenger is rejected at the model gate; the broken
partition is rejected at the data gate, named; monitoring sees the drift and its signal
starts CT; the service scores every day without a failed request and picks up each
promotion live; a retrained challenger goes through a shadow period (staged release) and
becomes champion on its agreement; the newest champion is rolled back live. One demo run
for the module (it takes minutes), read by every test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from fraud_detection.config import StatePaths, project_dir
from fraud_detection.registry.runs import RunRecord, read_records

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

DAYS = range(13, 22)  # the days played after the first 12 (1-based, as the demo says)
BROKEN_PARTITION = "2026-01-18"


@dataclass(frozen=True)
class Demo:
    output: str
    records: list[RunRecord]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    state = tmp_path_factory.mktemp("level1-demo")
    # The local profile, whatever the shell running the tests points at.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("FRAUD_", "PREFECT_API", "MLFLOW_TRACKING"))
    }
    env["FRAUD_PROFILE"] = "local"
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.level1_continuous_training.demo", "--state-dir", state],
        cwd=project_dir(),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # Prefect logs the rejected partition on stderr
        text=True,
        timeout=1700,
        check=False,
    )
    assert done.returncode == 0, f"the demo failed:\n{done.stdout[-6000:]}"
    return Demo(done.stdout, read_records(StatePaths(root=state)))


def test_it_says_where_it_runs(demo: Demo) -> None:
    assert "profile 'local': no servers" in demo.output
    assert "starting Prefect (a temporary local server" in demo.output


def test_the_first_run_promotes_v1(demo: Demo) -> None:
    first = demo.records[0]
    assert (first.trigger, first.model_gate, first.champion_version) == (
        "on_demand",
        "promoted v1",
        "1",
    )


def test_the_shuffled_labels_challenger_is_rejected_and_the_champion_stays(demo: Demo) -> None:
    index = next(i for i, r in enumerate(demo.records) if r.variant == "shuffled_labels")
    shuffled, before = demo.records[index], demo.records[index - 1]
    assert shuffled.model_gate.startswith("rejected")
    assert shuffled.champion_version == before.champion_version


def test_the_broken_partition_is_rejected_at_the_data_gate(demo: Demo) -> None:
    gates = [r.data_gate for r in demo.records]
    assert any(f"{BROKEN_PARTITION} REJECTED (transaction_id" in gate for gate in gates), gates
    assert f"partition {BROKEN_PARTITION} rejected by the data gate" in demo.output


def test_drift_is_detected_and_its_signal_starts_ct(demo: Demo) -> None:
    assert "data drift: yes" in demo.output
    assert "the signal started CT" in demo.output
    assert [r.trigger for r in demo.records if r.trigger in ("drift", "performance")]


def test_the_service_scores_every_day_and_follows_every_promotion(demo: Demo) -> None:
    for day in DAYS:
        scored = re.search(
            rf"day {day}: the service scored the day's ([\d,]+) transactions", demo.output
        )
        assert scored, f"day {day}: the service scored nothing"
        assert int(scored[1].replace(",", "")) > 0, f"day {day}: no transaction answered"
    promoted_while_serving = {
        r.champion_version for r in demo.records[1:] if r.model_gate.startswith("promoted")
    }
    followed = set(re.findall(r"to the new champion v(\d+) live", demo.output))
    assert promoted_while_serving
    assert followed == promoted_while_serving
    assert "did NOT pick up" not in demo.output
    failed = re.findall(r"\((\d+) failed requests so far\)", demo.output)
    assert failed
    assert failed[-1] == "0"


def test_a_challenger_goes_through_a_shadow_period_then_becomes_champion(demo: Demo) -> None:
    shadow = "\n".join(line for line in demo.output.splitlines() if line.startswith("shadow:"))
    # The staged release delivers the retrained challenger into shadow ...
    entered = re.search(r"v(\d+) is now in shadow beside v(\d+)", shadow)
    assert entered, shadow or demo.output[-3000:]
    challenger, champion = entered[1], entered[2]
    # ... the live service answers with the champion and scores with both, none failing ...
    scored = re.search(
        r"the service answered ([\d,]+) transactions with v(\d+) and scored each with "
        r"v(\d+) too, logging both \((\d+) shadow failures\)",
        shadow,
    )
    assert scored, shadow
    assert int(scored[1].replace(",", "")) >= 1_000
    assert (scored[2], scored[3], scored[4]) == (champion, challenger, "0")
    # ... and the shadow check promotes it on its agreement (level 1: no approval)
    assert re.search(
        rf"shadow-check`: promoted: version {challenger} is the champion \(shadow agreement "
        r"[\d.]+ over [\d,]+ requests",
        shadow,
    ), shadow
    assert re.search(rf"the service followed within [\d.]+ s to v{challenger} \(0 failed", shadow)


def test_the_newest_champion_is_rolled_back_live(demo: Demo) -> None:
    rolled = re.search(
        r"rollback: `fraud model rollback` made v(\d+) the champion again \(was v(\d+)\).*"
        r"the service followed within [\d.]+ s \((\d+) failed requests so far\)",
        demo.output,
    )
    assert rolled, demo.output[-3000:]
    assert int(rolled[1]) < int(rolled[2])
    assert rolled[3] == "0"


def test_it_ends_with_the_runs_table(demo: Demo) -> None:
    assert re.search(r"as of\s+trigger\s+data gate\s+model gate\s+champion", demo.output)
    assert Path(demo.output.split("run records:")[1].split()[0]).exists()

"""The labs, one small definition each: how its state is built, what shows it is done, the
reference solution. The workshop pages (docs/workshop/lab-N.md) tell the same story.

A check looks where a participant would look and returns ``(done, line)``: when not done,
``line`` is the one hint; when done, what was seen.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fraud_detection.labs.workspace import Workspace, day, json_file, replace_in

Verdict = tuple[bool, str]


@dataclass(frozen=True)
class Lab:
    number: int
    title: str
    block: str  # the agenda's block (docs/workshop/index.md)
    task: str  # what the participant does, one line
    start: Callable[[Workspace], None]
    check: Callable[[Workspace], Verdict]
    solve: Callable[[Workspace], None]


# --------------------------------------------------------------------------- helpers

FIRST_DAYS = 6  # the history a lab's first CT run trains on


def _champion_world(ws: Workspace, days: int = FIRST_DAYS) -> None:
    """The common start of level-1 labs: a few days, one CT run, champion v1."""
    ws.simulate(days)
    ws.ct()


def _champion(ws: Workspace) -> str | None:
    from fraud_detection.registry import tracking
    from fraud_detection.training import ct

    ctx = ct.context(ws.root)
    tracking.setup_mlflow(ctx.profile)
    current = tracking.champion(ctx.model_name)
    return None if current is None else str(current.version)


def _records(ws: Workspace) -> list[dict[str, Any]]:
    """Every record of the run ledger (runs and rollbacks), as `fraud ct history` reads it."""
    from fraud_detection.config import StatePaths
    from fraud_detection.registry.runs import read_all

    return read_all(StatePaths(root=ws.root))


def _ct_runs(ws: Workspace) -> list[dict[str, Any]]:
    return [r for r in _records(ws) if r.get("kind", "ct_run") == "ct_run"]


# --------------------------------------------------------------------------- lab 1


def start_level0(ws: Workspace) -> None:
    ws.simulate(FIRST_DAYS)


def check_level0(ws: Workspace) -> Verdict:
    metrics = json_file(ws.paths.level0 / "metrics.json")
    model = ws.paths.level0 / "model.joblib"
    if metrics is None or not model.exists():
        return False, (
            f"no model handed over in {ws.shown(ws.paths.level0)}: run the notebook with "
            "`make level0` (after `source lab.env`)"
        )
    test_days = metrics.get("test_days") or ["?"]
    return True, (
        f"the notebook handed over {ws.shown(model)}: PR-AUC {metrics['pr_auc']:.3f} on "
        f"{len(test_days)} test days ({test_days[0]} to {test_days[-1]})"
    )


def solve_level0(ws: Workspace) -> None:
    ws.run("fraud", "level0")
    ws.say("ran the level-0 notebook (fraud level0)")


# --------------------------------------------------------------------------- lab 2

BROKEN_DAY = FIRST_DAYS  # 0-based: the 7th day, simulate prints it as "day 7/7"
LAND_BROKEN = (
    f"fraud simulate --days {BROKEN_DAY + 1} --scenario broken_feed "
    f"--broken-day {BROKEN_DAY} --corruption duplicate_ids"
)


def check_data_gate(ws: Workspace) -> Verdict:
    broken = day(BROKEN_DAY)
    record = json_file(ws.root / "validation" / "raw" / f"{broken}.json")
    if record is None:
        return False, (
            f"{broken} has not reached the data gate: land it from the broken feed with "
            f"`{LAND_BROKEN}`, then `make ct`"
        )
    if record.get("success"):
        return False, (
            f"the data gate accepted {broken}: it came from a healthy feed; land it broken "
            f"(`{LAND_BROKEN}`), then `make ct`"
        )
    features = list((ws.root / "features").rglob(f"*{broken}*"))
    if features:
        return False, f"{broken} was rejected but has feature tables: {ws.shown(features[0])}"
    failures = record.get("failures") or [{}]
    first = failures[0] if isinstance(failures, list) and failures else {}
    return True, (
        f"the data gate rejected {broken} ({first.get('column')}: {first.get('expectation')}); "
        f"no feature table for it; champion v{_champion(ws)}"
    )


def solve_data_gate(ws: Workspace) -> None:
    ws.run(*LAND_BROKEN.split())
    ws.run("fraud", "ct", "run")
    ws.say(f"landed {day(BROKEN_DAY)} from a broken feed and ran CT")


# --------------------------------------------------------------------------- lab 3


def check_model_gate(ws: Workspace) -> Verdict:
    worse = [r for r in _ct_runs(ws) if r.get("variant") != "normal"]
    if not worse:
        return False, (
            "no degraded challenger has met the model gate yet: train one with "
            "`fraud ct run --variant shuffled_labels`"
        )
    last = worse[-1]
    if last.get("outcome") == "promoted":
        return False, f"the {last['variant']} challenger was promoted: the gate let it through"
    champion = _champion(ws)
    reasons = [str(reason) for reason in last.get("reasons") or []] or ["no reason recorded"]
    more = f", and {len(reasons) - 1} more reason(s)" if len(reasons) > 1 else ""
    return True, (
        f"the model gate rejected the {last['variant']} challenger "
        f"v{last.get('challenger_version')} ({reasons[0]}{more}); champion still v{champion}"
    )


def solve_model_gate(ws: Workspace) -> None:
    ws.run("fraud", "ct", "run", "--variant", "shuffled_labels")
    ws.say("trained a challenger on shuffled labels (fraud ct run --variant shuffled_labels)")


# --------------------------------------------------------------------------- lab 4


def start_rollback(ws: Workspace) -> None:
    _champion_world(ws)
    ws.simulate(FIRST_DAYS + 1)
    record = ws.ct()
    if record["champion_version"] != "2":
        # The gate kept v1 (a noisy holdout on a tiny world): promote v2 as a release would.
        from fraud_detection.registry import tracking
        from fraud_detection.training import ct

        ctx = ct.context(ws.root)
        tracking.setup_mlflow(ctx.profile)
        tracking.promote(
            ctx.model_name,
            "2",
            expected_champion="1",
            decision={"promote": True, "reasons": ["lab 4: promoted by hand"]},
        )
        ct.notify_serving(ctx, "2", True)
        ws.say("promoted v2 by hand (the gate had kept v1)")


def check_rollback(ws: Workspace) -> Verdict:
    champion = _champion(ws)
    rollbacks = [r for r in _records(ws) if r.get("kind") == "rollback"]
    if not rollbacks or champion != "1":
        return False, (
            f"the champion is v{champion}: take it back to v1 with "
            '`fraud model rollback --reason "false alerts since v2"`'
        )
    last = rollbacks[-1]
    served = json_file(ws.root / "serving" / "champion.json") or {}
    return True, (
        f"champion v1 again, audited: {last.get('reason')!r} by {last.get('by')}; "
        f"serving/champion.json names v{served.get('version', '?')}"
    )


def solve_rollback(ws: Workspace) -> None:
    ws.run("fraud", "model", "rollback", "--reason", "false alerts since v2")
    ws.say("rolled the champion back (fraud model rollback)")


# --------------------------------------------------------------------------- lab 5

BUDGET = "FRAUD_SERVING__DELIVERY__MIN_QPS"


def start_delivery(ws: Workspace) -> None:
    _champion_world(ws)
    # A typo in the throughput budget (three zeros too many), and a shorter load test.
    ws.env.update({BUDGET: "100000", "FRAUD_SERVING__DELIVERY__DURATION_S": "3"})


def check_delivery(ws: Workspace) -> Verdict:
    champion = _champion(ws)
    report = json_file(ws.root / "serving" / "delivery" / f"v{champion}.json")
    if report is None:
        return False, f"champion v{champion} has no delivery check yet: run `fraud delivery-check`"
    checks = report.get("checks") or []
    failed = [c for c in checks if isinstance(c, dict) and not c.get("passed")]
    if failed:
        return False, (
            f"v{champion}'s delivery check failed: {failed[0].get('detail')}; fix the budget "
            f"in {ws.shown(ws.root / 'lab.env')} ({BUDGET}), source it, run `fraud delivery-check`"
        )
    return True, f"champion v{champion} is delivered: {len(checks)} checks passed"


def solve_delivery(ws: Workspace) -> None:
    # What this laptop's service must sustain: 20 req/s, p99 within a second (loaded CI).
    ws.env.update({BUDGET: "20", "FRAUD_SERVING__DELIVERY__MAX_P99_MS": "1000"})
    ws.write_env()
    ws.run("fraud", "delivery-check")
    ws.say(f"set {BUDGET}=20 in lab.env and ran the delivery check")


# --------------------------------------------------------------------------- lab 6

DRIFT_FROM = FIRST_DAYS  # 0-based: the first drifted day
DRIFT_DAYS = 10


def start_drift(ws: Workspace) -> None:
    from fraud_detection.config import load_profile
    from fraud_detection.serving import batch

    drift = {"drift": {"enabled": True, "start_day": DRIFT_FROM, "kind": "both"}}
    ws.simulate(DRIFT_DAYS, rows_per_day=2_000, scenario=drift)
    later = [day(i) for i in range(DRIFT_FROM, DRIFT_DAYS)]
    ws.hold_back(later)
    ws.ct()
    ws.arrive(later)
    profile = load_profile()
    for when in later:
        batch.score_day(when, profile=profile)
    ws.say(f"scored {later[0]} to {later[-1]} with the champion (batch): the served traffic")
    ws.env.update({"FRAUD_SIMULATE__ROWS_PER_DAY": "2000"})


def check_drift(ws: Workspace) -> Verdict:
    from fraud_detection.monitoring import signals

    done = [s for s in signals.consumed(ws.paths) if s.kind == "drift"]
    runs = [r for r in _ct_runs(ws) if r.get("trigger") in ("drift", "performance")]
    if done and runs:
        last = runs[-1]
        return True, (
            f"monitoring's drift signal ({done[-1].detail.split(' (')[0]}) started a CT run "
            f"(trigger {last['trigger']}): {last.get('outcome')}, champion "
            f"v{last.get('champion_version')}"
        )
    if any(s.kind == "drift" for s in signals.pending(ws.paths)):
        return False, (
            f"a drift signal waits in {ws.shown(ws.root / 'signals' / 'pending')}: start CT "
            "for it with `fraud ct signals`"
        )
    return False, (
        "no drift signal yet: run monitoring on the served days with `fraud monitor run`"
    )


def solve_drift(ws: Workspace) -> None:
    ws.run("fraud", "monitor", "run", "--no-flow")
    ws.run("fraud", "ct", "signals")
    ws.say("ran monitoring, then CT for its signal (fraud monitor run; fraud ct signals)")


# --------------------------------------------------------------------------- lab 7

ENGINEERING = Path("src/fraud_detection/features/engineering.py")
CORRECT_HI = 'hi[rows] = r0 + np.searchsorted(key, q_key, side="left")'
BROKEN_HI = 'hi[rows] = r0 + np.searchsorted(key, q_key, side="right")'
FEATURE_TESTS = "tests/unit/test_features.py"


def start_failing_test(ws: Workspace) -> None:
    repo = ws.copy_repository()
    replace_in(repo / ENGINEERING, CORRECT_HI, BROKEN_HI)
    diff = ws.run("git", "diff", cwd=repo).stdout
    (ws.root / "pull-request.diff").write_text(
        "# Pull request: card windows count the transaction being scored too\n" + diff
    )
    ws.use_repository_copy()
    ws.say(f"applied the pull request ({ws.shown(ws.root / 'pull-request.diff')}) to the copy")


def _feature_tests(ws: Workspace) -> tuple[int, str]:
    result = ws.run(
        "pytest", "-q", "-x", "--no-header", "-p", "no:randomly", FEATURE_TESTS,
        cwd=ws.repo, check=False,
    )  # fmt: skip
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    # The test's id only: pytest appends " - <message>" where CI is set (no truncation)
    test_id = failed[0].removeprefix("FAILED ").split(" - ", 1)[0] if failed else ""
    return result.returncode, test_id


def check_failing_test(ws: Workspace) -> Verdict:
    code, failed = _feature_tests(ws)
    if code != 0:
        return False, (
            f"CI's unit tests fail on the pull request: {failed or FEATURE_TESTS} "
            f"(fix {ws.shown(ws.repo / ENGINEERING)})"
        )
    return True, f"{FEATURE_TESTS} passes on the pull request's code in {ws.shown(ws.repo)}"


def solve_failing_test(ws: Workspace) -> None:
    replace_in(ws.repo / ENGINEERING, BROKEN_HI, CORRECT_HI)
    ws.say(f"reverted the pull request's change to {ENGINEERING} in the copy")


# --------------------------------------------------------------------------- lab 8

PREFECT_FILE = "prefect.yaml"
GOOD_ENTRYPOINT = "entrypoint: pipelines/level1_continuous_training/flows.py:batch_scoring_flow"
BAD_ENTRYPOINT = "entrypoint: pipelines/level1_continuous_training/flows.py:batch_score_flow"
GOOD_CRON = 'cron: "0 4 * * *"'
BAD_CRON = 'cron: "0 28 * * *"'


def start_deployments(ws: Workspace) -> None:
    target = ws.root / PREFECT_FILE
    shutil.copyfile(ws.project / PREFECT_FILE, target)
    replace_in(target, GOOD_ENTRYPOINT, BAD_ENTRYPOINT)
    replace_in(target, GOOD_CRON, BAD_CRON)
    ws.say(f"wrote a pull request's {PREFECT_FILE} to {ws.shown(target)}")


def check_deployments(ws: Workspace) -> Verdict:
    result = ws.run(
        "python", "-m", "pipelines.level2_cicd.deploy", "check",
        "--prefect-file", str(ws.root / PREFECT_FILE), check=False,
    )  # fmt: skip
    if result.returncode != 0:
        problems = [line.strip() for line in result.stderr.splitlines() if line.startswith("  ")]
        return False, (
            f"CI's `deployment config` job fails: {problems[0] if problems else 'see below'} "
            f"({len(problems)} problem(s); `make check-deployments "
            f"PREFECT_FILE={ws.shown(ws.root / PREFECT_FILE)}`)"
        )
    return True, f"{ws.shown(ws.root / PREFECT_FILE)} passes CI's deployment check"


def solve_deployments(ws: Workspace) -> None:
    target = ws.root / PREFECT_FILE
    replace_in(target, BAD_ENTRYPOINT, GOOD_ENTRYPOINT)
    replace_in(target, BAD_CRON, GOOD_CRON)
    ws.say(f"fixed the entrypoint and the cron of batch-scoring in {ws.shown(target)}")


# --------------------------------------------------------------------------- lab 9

NEW_FEATURE = "card_amount_mean_24h"
DEFINITIONS = Path("feature_repo/definitions.py")
FEATURE_EDITS: tuple[tuple[Path, str, str], ...] = (
    (
        ENGINEERING,
        '    "card_new_merchants_24h",\n)',
        f'    "card_new_merchants_24h",\n    "{NEW_FEATURE}",\n)',
    ),
    (
        ENGINEERING,
        '        "card_new_merchants_24h": first_sums[hi] - first_sums[lo_24h],\n',
        '        "card_new_merchants_24h": first_sums[hi] - first_sums[lo_24h],\n'
        f'        "{NEW_FEATURE}": np.divide(\n'
        "            window_sum(lo_24h), hi - lo_24h, out=np.full(n_q, np.nan), where=hi > lo_24h\n"
        "        ),\n",
    ),
    (
        DEFINITIONS,
        '        Field(name="card_new_merchants_24h", dtype=Int64),\n',
        '        Field(name="card_new_merchants_24h", dtype=Int64),\n'
        f'        Field(name="{NEW_FEATURE}", dtype=Float64),\n',
    ),
)
# The pipeline after the change, as the lab's page lists it.
FEATURE_PIPELINE = (
    ("fraud", "validate", "write-suites"),
    ("fraud", "features", "build", "--rebuild"),
    ("fraud", "ct", "run", "--force"),
)


def start_new_feature(ws: Workspace) -> None:
    _champion_world(ws)
    ws.copy_repository()
    ws.use_repository_copy()


def _newest_version_inputs(ws: Workspace) -> tuple[str | None, list[str]]:
    import mlflow

    from fraud_detection.registry import tracking
    from fraud_detection.training import ct

    ctx = ct.context(ws.root)
    tracking.setup_mlflow(ctx.profile)
    versions = mlflow.MlflowClient().search_model_versions(f"name='{ctx.model_name}'")
    if not versions:
        return None, []
    newest = max(versions, key=lambda v: int(v.version))
    info = mlflow.models.get_model_info(f"models:/{ctx.model_name}/{newest.version}")
    inputs = info.signature.inputs.input_names() if info.signature else []
    return str(newest.version), [str(name) for name in inputs]


def check_new_feature(ws: Workspace) -> Verdict:
    code = (ws.repo / ENGINEERING).read_text()
    if f'"{NEW_FEATURE}"' not in code:
        return False, (
            f"{NEW_FEATURE} is not a feature yet: add it to CARD_FEATURES and compute it in "
            f"card_window_arrays in {ws.shown(ws.repo / ENGINEERING)}"
        )
    if NEW_FEATURE not in (ws.repo / DEFINITIONS).read_text():
        return (
            False,
            f"Feast does not know {NEW_FEATURE}: add its Field to "
            f"{ws.shown(ws.repo / DEFINITIONS)}",
        )
    version, inputs = _newest_version_inputs(ws)
    if NEW_FEATURE not in inputs:
        steps = " && ".join(" ".join(step) for step in FEATURE_PIPELINE)
        return False, (
            f"the newest model (v{version}) was trained without {NEW_FEATURE}: run `{steps}` "
            "(after `source lab.env`)"
        )
    champion = _champion(ws)
    verdict = (
        "champion" if champion == version else f"rejected by the model gate (champion v{champion})"
    )
    return True, f"v{version} was trained with {NEW_FEATURE} ({len(inputs)} inputs): {verdict}"


def solve_new_feature(ws: Workspace) -> None:
    for file, old, new in FEATURE_EDITS:
        replace_in(ws.repo / file, old, new)
    ws.say(f"added {NEW_FEATURE} to {ENGINEERING} and {DEFINITIONS} in the copy")
    for step in FEATURE_PIPELINE:
        ws.run(*step)
        ws.say(" ".join(step))


# --------------------------------------------------------------------------- the labs

LABS: dict[int, Lab] = {
    lab.number: lab
    for lab in (
        Lab(
            1, "Level 0: run the notebook, hand a model over", "level 0",
            "run the level-0 notebook and find what it hands over",
            start_level0, check_level0, solve_level0,
        ),
        Lab(
            2, "A broken feed stopped by the data gate", "level 1: data gate and feature store",
            f"land day {BROKEN_DAY + 1} from a broken feed, run CT, see the gate reject it",
            _champion_world, check_data_gate, solve_data_gate,
        ),
        Lab(
            3, "A worse challenger rejected by the model gate", "level 1: CT, registry, serving",
            "train a challenger on shuffled labels and see the gate keep the champion",
            _champion_world, check_model_gate, solve_model_gate,
        ),
        Lab(
            4, "Roll the champion back", "level 1: CT, registry, serving",
            "take the champion back from v2 to v1 with one audited command",
            start_rollback, check_rollback, solve_rollback,
        ),
        Lab(
            5, "A failing delivery budget", "level 1: CT, registry, serving",
            "run the delivery check, find the budget that fails, fix it",
            start_delivery, check_delivery, solve_delivery,
        ),
        Lab(
            6, "Drift triggers retraining", "level 1: monitoring and triggers",
            "run monitoring on drifted traffic; let its signal start CT",
            start_drift, check_drift, solve_drift,
        ),
        Lab(
            7, "A failing test in a pull request", "level 2",
            "find why CI's unit tests fail on a pull request, fix the code",
            start_failing_test, check_failing_test, solve_failing_test,
        ),
        Lab(
            8, "A broken prefect.yaml caught by CI", "level 2",
            "make a pull request's prefect.yaml pass CI's deployment check",
            start_deployments, check_deployments, solve_deployments,
        ),
        Lab(
            9, "Add a feature end to end", "level 2",
            f"add {NEW_FEATURE} to the feature code and Feast, and train a model on it",
            start_new_feature, check_new_feature, solve_new_feature,
        ),
    )
}  # fmt: skip

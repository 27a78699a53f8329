"""Level-1 demo: play simulated days one by one and let continuous training react.

Each new day lands as a raw partition; the new-data sensor starts the CT flow. Along the
way: the first run promotes a champion, a degraded challenger is rejected at the model
gate, a broken partition is rejected at the data gate, and the fraud pattern drifts.
At the end a table shows every run. Everything goes to a fresh state folder
(``state/level1-demo`` by default), so the demo starts from nothing each time.

Run: ``make demo-level1`` (or ``python -m pipelines.level1_continuous_training.demo``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path
from typing import Any

from fraud_detection.config import StatePaths, load_simulate_config, project_dir

# The demo world: small enough to retrain in seconds, a 3-day label delay so that
# drifted labels arrive within the demo, drift and a broken feed on fixed days.
WORLD: dict[str, Any] = {
    "days": 21,
    "rows_per_day": 5_000,
    "cards": 2_500,
    "merchants": 300,
    "label_delay_days": 3,
    "scenario": {
        "drift": {"enabled": True, "start_day": 15, "kind": "fraud_pattern"},
        "broken_feed": {"enabled": True, "day": 17, "corruption": "duplicate_ids"},
    },
}
FIRST_DAYS = 12  # history present before continuous training starts


def _simulate(paths: StatePaths, days: int) -> None:
    from fraud_detection.data.simulator import write_simulation

    # Simulating more days reproduces the earlier ones exactly (one random stream per
    # day), so "one more day" is a new partition and nothing else changes.
    # A scenario is switched on once the simulated days reach it (its day must exist).
    drift, broken = WORLD["scenario"]["drift"], WORLD["scenario"]["broken_feed"]
    scenario = {
        "drift": {**drift, "enabled": drift["start_day"] < days},
        "broken_feed": {**broken, "enabled": broken["day"] < days},
    }
    config = load_simulate_config(overrides={**WORLD, "days": days, "scenario": scenario})
    write_simulation(config, paths)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=project_dir() / "state" / "level1-demo")
    parser.add_argument("--days", type=int, default=WORLD["days"], help="last day to play")
    args = parser.parse_args(argv)
    state = args.state_dir.resolve()
    shutil.rmtree(state, ignore_errors=True)
    os.environ["FRAUD_PROFILE__STATE_DIR"] = str(state)  # MLflow, Feast, Prefect: all in here

    from fraud_detection.training.cli import prefect_environment

    prefect_environment(state)
    from fraud_detection.training.ct import read_records, records_table
    from pipelines.level1_continuous_training import flows

    paths = StatePaths(root=state)
    started = time.perf_counter()
    print(f"simulating the first {FIRST_DAYS} days into {state}")
    _simulate(paths, FIRST_DAYS)
    print("starting Prefect (a temporary local server, ~20 s)…")
    flows.ct_flow(trigger="on_demand", state_dir=str(state))
    print(f"day {FIRST_DAYS}: first CT run (on demand) done")

    for day in range(FIRST_DAYS + 1, args.days + 1):
        _simulate(paths, day)
        note = {
            WORLD["scenario"]["drift"]["start_day"] + 1: " (the fraud pattern drifts from today)",
            WORLD["scenario"]["broken_feed"]["day"] + 1: " (from a broken feed)",
        }.get(day, "")
        print(f"day {day}: a new partition landed{note}; the new-data sensor starts CT")
        flows.new_data_sensor(state_dir=str(state))
        if day == FIRST_DAYS + 2:
            print(f"day {day}: a data scientist tries a challenger trained on shuffled labels")
            flows.ct_flow(
                trigger="on_demand", state_dir=str(state), variant="shuffled_labels", force=True
            )

    print()
    print(records_table(read_records(paths)))
    print()
    print(f"done in {time.perf_counter() - started:.0f} s. Where to look:")
    print(f"  run records:  {state / 'ct' / 'runs.jsonl'}  (fraud ct history --state-dir {state})")
    print(f"  MLflow UI:    mlflow ui --backend-store-uri sqlite:///{state}/mlflow/mlflow.db")
    print(f"  Data Docs:    {state / 'gx' / 'data_docs' / 'index.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Level-1 demo: play simulated days one by one and let continuous training react.

Each new day lands as a raw partition; the new-data sensor starts the CT flow. Along the
way: the first run promotes a champion, a degraded challenger is rejected at the model
gate, a broken partition is rejected at the data gate, and the fraud pattern drifts.
The prediction service runs from the first champion on: every day's transactions go
through its API (and into its prediction log), each promotion is picked up live, and
once the drifted days' labels have arrived, monitoring compares served traffic with the
champion's data and its signal starts CT. At the end a table shows every run.
Everything goes to a fresh state folder (``state/level1-demo`` by default), so the demo
starts from nothing each time.

Run: ``make demo-level1`` (or ``python -m pipelines.level1_continuous_training.demo``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import time
from pathlib import Path
from typing import Any

from fraud_detection.config import StatePaths, load_simulate_config, project_dir

# The demo world: small enough to retrain in seconds, a 3-day label delay so that
# drifted labels arrive within the demo, drift and a broken feed on fixed days.
WORLD_START = dt.date(2026, 1, 1)
WORLD: dict[str, Any] = {
    "start_date": WORLD_START,
    "days": 21,
    "rows_per_day": 5_000,
    "cards": 2_500,
    "merchants": 300,
    "label_delay_days": 3,
    "scenario": {
        "drift": {"enabled": True, "start_day": 15, "kind": "both"},
        "broken_feed": {"enabled": True, "day": 17, "corruption": "duplicate_ids"},
    },
}
FIRST_DAYS = 12  # history present before continuous training starts
# Monitoring runs once the drifted days' labels can have arrived (0-based drift day + 1 is
# the first drifted day played; its labels land label_delay_days later).
MONITOR_FROM = WORLD["scenario"]["drift"]["start_day"] + 1 + WORLD["label_delay_days"]
NOTES = {
    WORLD["scenario"]["drift"]["start_day"] + 1: " (spending and fraud pattern drift from today)",
    WORLD["scenario"]["broken_feed"]["day"] + 1: " (from a broken feed)",
}
BATCH = 500  # transactions per POST /predict/batch when replaying a day


class LiveService:
    """A client of the running ``fraud serve`` (started by :func:`_start_service`)."""

    def __init__(self, url: str, log: Path) -> None:
        import httpx

        self.url, self.log = url, log
        self.client = httpx.Client(base_url=url, timeout=30.0)
        self.errors = 0

    def version(self) -> str:
        return str(self.client.get("/metadata").json()["model_version"])

    def predict(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.client.post("/predict", json=body).json())

    def state_writes(self) -> int:
        """Card-state writes so far: each scored transaction joins its card's online state."""
        updates = self.client.get("/ready").json()["online_store"].get("state_updates") or {}
        return int(updates.get("written", 0))

    def replay(self, bodies: list[dict[str, Any]]) -> tuple[int, int]:
        """Send transactions through /predict/batch; (answered, flagged as fraud)."""
        answered = flagged = 0
        for start in range(0, len(bodies), BATCH):
            response = self.client.post(
                "/predict/batch", json={"transactions": bodies[start : start + BATCH]}
            )
            if response.status_code != 200:
                self.errors += 1
                continue
            predictions = response.json()["predictions"]
            answered += len(predictions)
            flagged += sum(bool(p["decision"]) for p in predictions)
        return answered, flagged

    def follow(self, version: str, timeout: float = 30.0) -> float | None:
        """Keep calling /predict until the service answers with ``version``; seconds taken."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.version() == version:
                return time.monotonic() - started
            time.sleep(0.2)
        return None


def _day_requests(paths: StatePaths, day_index: int, shift_days: int = 0) -> list[dict[str, Any]]:
    """The day's raw transactions as /predict bodies; ``shift_days`` moves them later
    (to stand for transactions arriving after the latest features)."""
    import pandas as pd

    from fraud_detection.serving.schemas import requests_from_raw

    day = WORLD_START + dt.timedelta(days=day_index)
    frame = pd.read_parquet(paths.raw / f"date={day:%Y-%m-%d}" / "transactions.parquet")
    frame["event_timestamp"] += pd.Timedelta(days=shift_days)
    bodies: list[dict[str, Any]] = requests_from_raw(frame)
    return bodies


def _show(answer: dict[str, Any]) -> str:
    flags = [name for name in ("unknown_card", "unknown_merchant") if answer.get(name)]
    age = answer.get("feature_age_seconds")
    return (
        f"score {answer['score']:.3f} → {'FRAUD' if answer['decision'] else 'ok'}"
        f" (threshold {answer['threshold']:.2f}, model v{answer['model_version']}"
        f", features {'-' if age is None else f'{age / 3600:.0f} h'} old"
        f"{', ' + ', '.join(flags) if flags else ''})"
    )


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
    parser.add_argument(
        "--no-serving", action="store_true", help="CT only: no prediction service, no monitoring"
    )
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

    monitoring: list[dict[str, Any]] = []
    triggered = False  # monitoring runs daily until one of its signals has started CT
    with contextlib.ExitStack() as stack:  # stops the service, whatever happens
        service = None if args.no_serving else _start_service(state, paths, stack)
        for day in range(FIRST_DAYS + 1, args.days + 1):
            _simulate(paths, day)
            note = NOTES.get(day, "")
            trained_today = False  # a monitoring signal may start CT before the sensor does
            if service is not None:
                writes = service.state_writes()
                answered, flagged = service.replay(_day_requests(paths, day - 1))
                print(
                    f"day {day}: the service scored the day's {answered:,} transactions, "
                    f"{flagged} flagged as fraud; {service.state_writes() - writes:,} card-state "
                    "writes, so each card's next transaction saw the ones before it"
                )
            if service is not None and day >= MONITOR_FROM and not triggered:
                print(f"day {day}: monitoring compares the served traffic with the champion's data")
                result = flows.monitoring_flow(state_dir=str(state))
                monitoring.append(result)
                _print_monitoring(result)
                if flows.signal_trigger(state_dir=str(state)) is not None:
                    triggered = trained_today = True
                    print(
                        f"day {day}: the signal started CT on the new partition{note} "
                        "(trigger: drift or performance in the table)"
                    )
            serving_before = None if service is None else service.version()
            if not trained_today:
                print(f"day {day}: a new partition landed{note}; the new-data sensor starts CT")
                flows.new_data_sensor(state_dir=str(state))
            if day == FIRST_DAYS + 2:
                print(f"day {day}: a data scientist tries a challenger trained on shuffled labels")
                flows.ct_flow(
                    trigger="on_demand", state_dir=str(state), variant="shuffled_labels", force=True
                )
            if service is not None and serving_before is not None:
                _follow_promotion(service, paths, day, serving_before)

    print()
    print(records_table(read_records(paths)))
    print()
    print(f"done in {time.perf_counter() - started:.0f} s. Where to look:")
    print(f"  run records:  {state / 'ct' / 'runs.jsonl'}  (fraud ct history --state-dir {state})")
    print(f"  MLflow UI:    mlflow ui --backend-store-uri sqlite:///{state}/mlflow/mlflow.db")
    print(f"  Data Docs:    {state / 'gx' / 'data_docs' / 'index.html'}")
    if service is not None:
        print(f"  predictions:  {state / 'serving' / 'predictions'}  (the service's log)")
        print(f"  service log:  {service.log}  (start it again: fraud serve --state-dir {state})")
    if monitoring:
        print(f"  monitoring:   {monitoring[-1].get('report')}")
    return 0


def _start_service(state: Path, paths: StatePaths, stack: contextlib.ExitStack) -> LiveService:
    """``fraud serve`` on a free port (as the delivery checks start it), until ``stack`` ends."""
    from fraud_detection.serving.delivery import started_service

    print("starting the prediction service (fraud serve) on the champion…")
    log = state / "serving" / "demo-service.log"
    service = LiveService(stack.enter_context(started_service(state, log, 120.0, print)), log)
    stack.callback(service.client.close)
    ready = service.client.get("/ready").json()
    print(f"service ready at {service.url} (API docs: {service.url}/docs): {ready}")
    for body in _day_requests(paths, FIRST_DAYS - 1, shift_days=1)[:3]:
        print(
            f"  POST /predict card {body['card_id']}, {body['amount']:.2f} at merchant "
            f"{body['merchant_id']}: {_show(service.predict(body))}"
        )
    return service


def _follow_promotion(service: LiveService, paths: StatePaths, day: int, before: str) -> None:
    """Report the service switching to a champion promoted since it served ``before``."""
    import json

    handover = paths.root / "serving" / "champion.json"
    champion = str(json.loads(handover.read_text()).get("version"))
    if champion == before:
        return
    taken = service.follow(champion)
    if taken is None:
        print(f"day {day}: the service did NOT pick up v{champion} within 30 s; see {service.log}")
        return
    since = time.time() - handover.stat().st_mtime
    print(
        f"day {day}: the service switched from v{before} to the new champion v{champion} "
        f"live, within {since:.1f} s of the promotion, without a restart "
        f"({service.errors} failed requests so far)"
    )


def _print_monitoring(result: dict[str, Any]) -> None:
    drifted = list(result.get("drifted") or [])
    shown = ", ".join(map(str, drifted[:5])) + (", …" if len(drifted) > 5 else "")
    print(
        f"  data drift: {'yes' if result.get('drift_detected') else 'no'}"
        f"{f' ({len(drifted)} feature(s): {shown})' if drifted else ''}; "
        f"prediction drift: {'yes' if result.get('prediction_drift') else 'no'}; "
        f"performance: {result.get('performance')}"
    )
    for signal in result.get("signals") or []:
        print(f"  signal {signal.get('kind')}: {signal.get('status')}")


if __name__ == "__main__":
    raise SystemExit(main())

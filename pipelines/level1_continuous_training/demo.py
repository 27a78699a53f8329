"""Level-1 demo: play simulated days one by one and let continuous training react.

Each new day lands as a raw partition; the new-data sensor starts the CT flow. Along the
way: the first run promotes a champion, a degraded challenger is rejected at the model
gate, a broken partition is rejected at the data gate, and the fraud pattern drifts.
The prediction service runs from the first champion on: every day's transactions go
through its API (and into its prediction log), each promotion is picked up live, and
once the drifted days' labels have arrived, monitoring compares served traffic with the
champion's data and its signal starts CT. At the end a table shows every run.
Everything goes to a state folder of its own (``<state folder>/level1-demo`` by default:
``level1-demo`` inside the profile's ``state_dir``), so the demo starts from nothing each
time: it empties that folder only if an earlier demo made it (:func:`prepare_state`); a
folder named with ``--state-dir`` that holds anything else is refused, never deleted.

On a profile whose MLflow, Feast registry or online store are servers shared between
runs (``FRAUD_PROFILE=production``, after ``make prod-up``), the demo uses names of its
own there (``DEMO_NAMES``: a registered model, experiments and a Feast project) and
resets them first, so it starts from nothing there too; its flows show in the Prefect
server's UI and its service asks for an API key (``FRAUD_API_KEY``, generated when unset).

Run: ``make demo-level1`` (or ``python -m pipelines.level1_continuous_training.demo``);
``FRAUD_PROFILE=production make demo-level1`` on the production stack.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import secrets
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from fraud_detection.config import (
    Profile,
    Secrets,
    StatePaths,
    load_profile,
    load_simulate_config,
)

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
# Written into the demo's state folder: a folder carrying it was made by the demo, so the
# next demo may empty it; any other non-empty folder is left alone.
MARKER = ".level1-demo"


class DemoStateError(Exception):
    """The demo's state folder holds something the demo did not make."""


def prepare_state(state: Path) -> str:
    """Make ``state`` an empty folder for the demo and say what was done, in one line.

    A missing or empty folder is used as it is; a folder an earlier demo made (it holds
    :data:`MARKER`) is emptied. Any other folder is refused (:class:`DemoStateError`):
    the demo never deletes what it did not write. The marker is written either way.
    """
    if state.exists() and not state.is_dir():
        raise DemoStateError(f"{state} is a file: name a folder with --state-dir")
    if state.is_dir() and any(state.iterdir()):
        if not (state / MARKER).is_file():
            raise DemoStateError(
                f"{state} holds files the demo did not make: it is left as it is; name an "
                "empty or new folder (make demo-level1 DEMO_STATE_DIR=<folder>, or "
                "--state-dir <folder>)"
            )
        shutil.rmtree(state)
        how = f"emptied {state} (an earlier demo's state)"
    else:
        how = f"using {state} (empty)"
    state.mkdir(parents=True, exist_ok=True)
    (state / MARKER).write_text("made by pipelines.level1_continuous_training.demo\n")
    return how


# The demo's own names on servers that keep state between runs (MLflow, Feast's registry,
# Redis): reset at the start, so production's model, runs and features are never touched.
DEMO_NAMES = {
    "FRAUD_PROFILE__MLFLOW__MODEL_NAME": "fraud-detector-demo",
    "FRAUD_PROFILE__MLFLOW__EXPERIMENT": "fraud-detection-demo",
    "FRAUD_MONITORING__EXPERIMENT": "fraud-monitoring-demo",
    "FRAUD_PROFILE__FEAST__PROJECT": "fraud_detection_demo",
}


class LiveService:
    """A client of the running ``fraud serve`` (started by :func:`_start_service`)."""

    def __init__(self, url: str, log: Path, api_key: str | None = None) -> None:
        import httpx

        from fraud_detection.serving.app import API_KEY_HEADER

        self.url, self.log = url, log
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        self.client = httpx.Client(base_url=url, timeout=30.0, headers=headers)
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


def _uses_shared_servers(profile: Profile) -> bool:
    """Whether the profile keeps MLflow or Feast state on servers that outlive the state
    folder (the production stack): then the demo needs names of its own there."""
    from fraud_detection import stack

    return (
        bool(stack.servers(profile))
        or profile.mlflow_tracking_uri.startswith(("http://", "https://"))
        or bool(profile.feast.registry_url)
        or profile.feast.online_store == "redis"
    )


def _prefect_ui(api_url: str) -> str:
    """The Prefect UI's address for its API's (``http://host:4200/api`` → ``…:4200``)."""
    return api_url.rstrip("/").removesuffix("/api")


def _print_setup(profile: Profile, state: Path, shared: bool) -> None:
    """Which profile and which servers the demo uses, to watch it in their UIs."""
    if not shared:
        print(
            f"profile {profile.name!r}: no servers; MLflow (SQLite), Feast (SQLite) and the "
            f"run records all under {state}, Prefect a temporary local server"
        )
        return
    from fraud_detection import stack

    print(f"profile {profile.name!r}: servers shared between runs, the demo under its own names")
    for line in stack.describe(profile):
        print(f"  {line}")
    print(
        f"  the demo's names: MLflow model {profile.mlflow.model_name!r}, experiments "
        f"{profile.mlflow.experiment!r} and {DEMO_NAMES['FRAUD_MONITORING__EXPERIMENT']!r}; "
        f"Feast project {profile.feast.project!r}"
    )
    watch = []
    if (tracking := profile.mlflow_tracking_uri).startswith(("http://", "https://")):
        watch.append(f"MLflow {tracking.rstrip('/')}/#/models/{profile.mlflow.model_name}")
    if api := os.environ.get("PREFECT_API_URL") or profile.prefect.api_url:
        watch.append(f"Prefect {_prefect_ui(api)}/runs")
    if watch:
        print(f"  watch it in the UIs: {', '.join(watch)}")


def _reset_shared(profile: Profile, paths: StatePaths) -> None:
    """Start from nothing on the shared servers, within the demo's names only: its
    registered model (every version), the runs of its experiments (the experiments stay:
    MLflow cannot re-create a deleted experiment's name until it is purged), and its
    Feast project's online rows and registry entries."""
    from mlflow import MlflowClient

    uri = profile.mlflow_tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = profile.mlflow.model_name
    found = client.search_registered_models(filter_string=f"name = '{name}'")
    if found:
        versions = len(client.search_model_versions(f"name = '{name}'"))
        client.delete_registered_model(name)
        print(f"reset: deleted MLflow model {name!r} and its {versions} version(s)")
    runs = 0
    for experiment in (profile.mlflow.experiment, DEMO_NAMES["FRAUD_MONITORING__EXPERIMENT"]):
        if (found_experiment := client.get_experiment_by_name(experiment)) is None:
            continue
        token = None
        while True:
            page = client.search_runs(
                [found_experiment.experiment_id], max_results=1000, page_token=token
            )
            for run in page:
                client.delete_run(run.info.run_id)
            runs += len(page)
            if not (token := page.token):
                break
    if runs:
        print(f"reset: deleted the {runs} run(s) earlier demos left in the demo's experiments")
    _reset_feast_project(profile, paths)


def _reset_feast_project(profile: Profile, paths: StatePaths) -> None:
    """Delete the demo's Feast project: its online rows, then its registry entries.

    Scoped to the project by hand because Feast 0.67 is not: ``FeatureStore.teardown()``
    deletes *every* project of the registry (production's too), and ``delete_project``
    keeps the project's feature-view version history, so applying the same views again
    fails (duplicate version 0); ``delete_feature_view`` removes a view's history with it.
    The definitions are applied first, so every view's online rows are found even when
    the registry lost them.
    """
    from fraud_detection.features.store import open_store

    store = open_store(paths, apply=True, feast_settings=profile.feast)
    views = store.list_feature_views()
    store.provider.teardown_infra(store.project, views, store.list_entities())
    for view in [*views, *store.list_on_demand_feature_views()]:
        store.delete_feature_view(view.name)
    store.registry.delete_project(store.project)
    print(
        f"reset: deleted Feast project {store.project!r}: the online rows of its "
        f"{len(views)} feature views, then its registry entries"
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
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="the demo's state folder (default: level1-demo in the profile's state folder); "
        "emptied only if an earlier demo made it",
    )
    parser.add_argument("--days", type=int, default=WORLD["days"], help="last day to play")
    parser.add_argument(
        "--no-serving", action="store_true", help="CT only: no prediction service, no monitoring"
    )
    args = parser.parse_args(argv)
    state = (args.state_dir or load_profile().state_dir / "level1-demo").resolve()
    # Before the demo's profile is loaded: its state folder, and on shared servers the
    # demo's own names there (every later load_profile() in this process and its
    # children, the service included, sees them).
    os.environ["FRAUD_PROFILE__STATE_DIR"] = str(state)  # partitions, features, reports
    shared = _uses_shared_servers(load_profile())
    if shared:
        os.environ.update(DEMO_NAMES)
        # MLflow prints two links per run to a tracking server; the UIs are named above.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    profile = load_profile()
    _print_setup(profile, state, shared)
    try:
        print(prepare_state(state))
    except DemoStateError as exc:
        print(f"error: {exc}")
        return 2

    from fraud_detection import stack
    from fraud_detection.orchestration.local import prefect_environment

    paths = StatePaths(root=state)
    started = time.perf_counter()
    if shared:
        try:
            stack.preflight(profile)  # a server that does not answer: one line, now
        except stack.StackError as exc:
            print(f"error: {exc}")
            return 1
        # Importing Feast turns on every library's DeprecationWarnings process-wide (a
        # warnings filter at import); the filters are put back after the reset.
        with warnings.catch_warnings():
            _reset_shared(profile, paths)
    prefect_environment(state)
    from fraud_detection.orchestration import flows
    from fraud_detection.registry.runs import read_records, records_table

    print(f"simulating the first {FIRST_DAYS} days into {state}")
    _simulate(paths, FIRST_DAYS)
    if api := os.environ.get("PREFECT_API_URL"):
        print(f"flows report to the Prefect server at {api} (UI: {_prefect_ui(api)})")
    else:
        print("starting Prefect (a temporary local server, ~20 s)…")
    flows.ct_flow(trigger="on_demand", state_dir=str(state))
    print(f"day {FIRST_DAYS}: first CT run (on demand) done")

    monitoring: list[dict[str, Any]] = []
    triggered = False  # monitoring runs daily until one of its signals has started CT
    with contextlib.ExitStack() as cleanup:  # stops the service, whatever happens
        service = None if args.no_serving else _start_service(state, paths, cleanup, profile)
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
            # The champion served before today's runs (a signal's run may promote too).
            serving_before = None if service is None else service.version()
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
        if service is not None:
            _show_shadow(service, state, paths, args.days)
            _show_rollback(service, state)

    print()
    print(records_table(read_records(paths)))
    print()
    print(f"done in {time.perf_counter() - started:.0f} s. Where to look:")
    print(f"  run records:  {state / 'ct' / 'runs.jsonl'}  (fraud ct history --state-dir {state})")
    tracking = profile.mlflow_tracking_uri
    if tracking.startswith(("http://", "https://")):
        print(f"  MLflow UI:    {tracking}  (model {profile.mlflow.model_name})")
    else:
        print(f"  MLflow UI:    FRAUD_PROFILE__STATE_DIR={state} make mlflow-ui")
    if api := os.environ.get("PREFECT_API_URL"):
        print(f"  Prefect UI:   {_prefect_ui(api)}  (flow runs)")
    print(f"  Data Docs:    {state / 'gx' / 'data_docs' / 'index.html'}")
    if service is not None:
        print(f"  predictions:  {state / 'serving' / 'predictions'}  (the service's log)")
        print(f"  service log:  {service.log}  (start it again: fraud serve --state-dir {state})")
    if monitoring:
        print(f"  monitoring:   {monitoring[-1].get('report')}")
    return 0


def _start_service(
    state: Path, paths: StatePaths, cleanup: contextlib.ExitStack, profile: Profile
) -> LiveService:
    """``fraud serve`` on a free port (as the delivery checks start it), until ``cleanup``
    ends. A profile that requires an API key gets ``FRAUD_API_KEY``, or one made up for
    this service (its process inherits the environment) when it is not set."""
    from fraud_detection.release.delivery import started_service

    api_key = _api_key(profile)
    print("starting the prediction service (fraud serve) on the champion…")
    log = state / "serving" / "demo-service.log"
    # Staged release on in the service only (CT in this process still promotes at once):
    # it scores a delivered challenger in shadow, which the demo's last step shows.
    url = cleanup.enter_context(started_service(state, log, 120.0, print, env={STAGED: "true"}))
    service = LiveService(url, log, api_key)
    cleanup.callback(service.client.close)
    ready = service.client.get("/ready").json()
    print(f"service ready at {service.url} (API docs: {service.url}/docs): {ready}")
    for body in _day_requests(paths, FIRST_DAYS - 1, shift_days=1)[:3]:
        print(
            f"  POST /predict card {body['card_id']}, {body['amount']:.2f} at merchant "
            f"{body['merchant_id']}: {_show(service.predict(body))}"
        )
    return service


def _api_key(profile: Profile) -> str | None:
    """The key the service requires (``None``: it requires none): ``FRAUD_API_KEY``, else
    one made up for the demo's service, set in the environment its process inherits."""
    if not profile.serving.api_key_required:
        return None
    secret = Secrets().api_key
    if secret is not None and secret.get_secret_value():
        return str(secret.get_secret_value())
    key = secrets.token_urlsafe(24)
    os.environ["FRAUD_API_KEY"] = key
    print(
        f"profile {profile.name!r} requires an API key and FRAUD_API_KEY is not set: the demo "
        "made one up for its service; its client sends it in the X-API-Key header"
    )
    return key


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


STAGED = "FRAUD_SERVING__RELEASE__STAGED"
SHADOW_REQUESTS = 1_500  # transactions replayed during the shadow period


def _show_shadow(service: LiveService, state: Path, paths: StatePaths, day: int) -> None:
    """A short shadow period, live: CT retrains with the staged release on, so the
    approved version stays the challenger; ``fraud model release`` delivers it into
    shadow; the service scores the day's transactions with both models, answering with
    the champion; ``fraud model shadow-check`` promotes it on their agreement (level 1:
    no approval)."""
    from fraud_detection.errors import FraudError
    from fraud_detection.orchestration import flows
    from fraud_detection.registry import tracking
    from fraud_detection.release.challenger import release_challenger
    from fraud_detection.release.promotion import shadow_check
    from fraud_detection.serving.settings import load_serving_config
    from fraud_detection.training.ct import context

    before, began = service.version(), time.perf_counter()
    print(
        "shadow: a data scientist retrains on the latest data with the staged release on "
        "(serving.release.staged: true)"
    )
    os.environ[STAGED] = "true"
    try:
        record = flows.ct_flow(trigger="on_demand", state_dir=str(state), force=True)
        gate = str(record.get("model_gate", ""))
        if not gate.startswith("challenger"):
            print(f"shadow: not shown (the CT run ended {gate!r})")
            return
        ctx = context(state)
        # Short load test: the budgets are the configured ones, the measuring is brief.
        budgets = load_serving_config().delivery.model_copy(
            update={"duration_s": 3.0, "warmup_s": 1.0}
        )
        released = release_challenger(ctx, budgets=budgets)
    except FraudError as exc:
        print(f"shadow: not shown ({exc})")
        return
    finally:
        os.environ.pop(STAGED, None)
    version = released.version
    if not released.shadow:
        print(f"shadow: not shown (fraud model release: {released.reason})")
        return
    print(
        f"shadow: {gate}; `fraud model release` ran the delivery checks on v{version} in a "
        f"service of its own ({released.report.summary()}); v{version} is now in shadow "
        f"beside v{before}"
    )
    deadline = time.monotonic() + 30
    while (service.client.get("/ready").json().get("shadow") or {}).get("model_version") != version:
        if time.monotonic() > deadline:
            print(f"shadow: the service did NOT load v{version} in shadow within 30 s")
            return
        time.sleep(0.2)
    bodies = _day_requests(paths, day - 1)[:SHADOW_REQUESTS]  # retried: state counted once
    answered, _ = service.replay(bodies)
    ready = service.client.get("/ready").json()
    counters = ready["shadow"]["counters"]
    print(
        f"shadow: the service answered {answered:,} transactions with v{service.version()} "
        f"and scored each with v{version} too, logging both ({counters['failed']} shadow "
        "failures)"
    )
    while (service.client.get("/ready").json()["prediction_log"] or {}).get("pending"):
        if time.monotonic() > deadline + 30:
            break
        time.sleep(0.5)  # the log's writer flushes every few seconds
    time.sleep(0.5)
    tracking.setup_mlflow(ctx.profile)
    try:
        checked = shadow_check(ctx)
    except FraudError as exc:
        print(f"shadow: `fraud model shadow-check` refused: {exc}")
        return
    print(f"shadow: `fraud model shadow-check`: {checked.outcome}: {checked.message}")
    if checked.outcome == "promoted":
        taken = service.follow(version)
        shown = "did NOT follow within 30 s" if taken is None else f"followed within {taken:.1f} s"
        print(
            f"shadow: the service {shown} to v{version} ({service.errors} failed requests "
            f"so far); the shadow period took {time.perf_counter() - began:.0f} s, retraining "
            "and delivery checks included"
        )


def _show_rollback(service: LiveService, state: Path) -> None:
    """An operator takes the newest champion back (``fraud model rollback``), live."""
    from fraud_detection.errors import FraudError
    from fraud_detection.release.rollback import rollback
    from fraud_detection.training.ct import context

    before = service.version()
    try:
        done = rollback(context(state), reason="demo: the operator takes the newest champion back")
    except FraudError as exc:  # nothing to go back to (one champion only)
        print(f"rollback: not shown ({exc})")
        return
    taken = service.follow(done.to_version)
    shown = "did NOT follow within 30 s" if taken is None else f"followed within {taken:.1f} s"
    print(
        f"rollback: `fraud model rollback` made v{done.to_version} the champion again (was "
        f"v{before}), audited on the version and in the run records; the service {shown} "
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

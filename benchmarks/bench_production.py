"""A CT run on the production stack against the same run on the local profile:
``python benchmarks/bench_production.py`` (part of ``make bench``).

One simulated world of 100k transactions (10 days x 10,000 rows, 5,000 cards, 500
merchants, labels 3 days late) is written once and copied into two state folders:

- **local**: the default profile (SQLite MLflow store, file registry, Feast's file
  registry and SQLite online store, a temporary Prefect server per command);
- **production**: the production profile on a private stack started for the run
  (``tests/stack.py``: ``mlflow server`` and ``prefect server`` on PostgreSQL, Feast's
  SQL registry on PostgreSQL and its Redis online store; databases and a Redis database
  of its own, removed afterwards).

Each profile first runs ``fraud ct run`` on the 10 days (the data gate on every
partition, features, the first champion; reported, not compared). Then, in rounds, a
new day lands in both folders and each runs ``fraud ct run`` on it as a user would (new
partition through the gate, features, training set, fit, evaluation, registration,
model gate, materialization): the same data, a real fit each time. The order alternates
(local first in odd rounds, production first in even ones) and every run sets
``OMP_NUM_THREADS=1``. The compared figure is the flow's own duration from the run
record (``<state>/ct/runs.jsonl``): it excludes the command's start and the local
profile's temporary Prefect server (15-25 s, a cost production does not have), which
are reported beside it as wall time. Goal: production / local <= 1.5 in every round.
Writes ``benchmarks/results/production.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "production.json"
GOAL_RATIO = 1.5
WORLD = {
    "rows_per_day": 10_000,
    "cards": 5_000,
    "merchants": 500,
    "label_delay_days": 3,
    "seed": 42,
}
FIRST_DAYS = 10
ROUNDS = 2


def _progress(message: str) -> None:
    print(f"... {message}", flush=True)


def _fraud(args: list[str], env: dict[str, str], timeout: float = 1800) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "fraud_detection.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(
            f"fraud {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        )
    return seconds, done.stdout


def _simulate(state: Path, days: int, env: dict[str, str]) -> None:
    args = ["simulate", "--days", str(days)]
    for key, value in WORLD.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    _fraud(args, env)


def _copy_data(source: Path, dest: Path) -> None:
    shutil.copytree(source / "data", dest / "data", dirs_exist_ok=True)


def _record(state: Path) -> dict[str, Any]:
    lines = (state / "ct" / "runs.jsonl").read_text().splitlines()
    return dict(json.loads(lines[-1]))


def _run(state: Path, env: dict[str, str]) -> dict[str, Any]:
    wall, _ = _fraud(["ct", "run"], env)
    record = _record(state)
    return {
        "flow_seconds": record["seconds"],
        "wall_seconds": round(wall, 1),
        "outcome": record["outcome"],
        "training_rows": record.get("training_rows"),
        "model_gate": record.get("model_gate"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--output", type=Path, default=RESULT)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.stack import private_stack

    base = {
        **os.environ,
        "FRAUD_PROJECT_DIR": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "FEAST_USAGE": "False",
        "GX_ANALYTICS_ENABLED": "False",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for key in [k for k in base if k.startswith("FRAUD_PROFILE") or k == "PREFECT_API_URL"]:
        base.pop(key)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "production",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "world": {**WORLD, "first_days": FIRST_DAYS, "rows": FIRST_DAYS * WORLD["rows_per_day"]},
    }
    with tempfile.TemporaryDirectory(prefix="bench-production-") as tmp:
        world = Path(tmp) / "world"
        local, prod = Path(tmp) / "local", Path(tmp) / "production" / "state"
        _progress(f"simulating {FIRST_DAYS} days x {WORLD['rows_per_day']:,} rows")
        _simulate(world, FIRST_DAYS, {**base, "FRAUD_PROFILE__STATE_DIR": str(world)})
        for state in (local, prod):
            _copy_data(world, state)
        local_env = {**base, "FRAUD_PROFILE": "local", "FRAUD_PROFILE__STATE_DIR": str(local)}
        _progress("starting a private production stack (MLflow, Prefect, PostgreSQL, Redis)")
        stack_started = time.perf_counter()
        with private_stack(prod) as stack:
            result["stack_up_seconds"] = round(time.perf_counter() - stack_started, 1)
            prod_env = {**base, **stack.env}
            envs = {"local": (local, local_env), "production": (prod, prod_env)}
            first = {}
            for name, (state, env) in envs.items():
                _progress(f"first CT run, {name} ({FIRST_DAYS} partitions through the gate)")
                first[name] = _run(state, env)
                print(f"    {name}: {first[name]}", flush=True)
            result["first_runs"] = first
            rounds = []
            for r in range(1, args.rounds + 1):
                day = FIRST_DAYS + r
                _simulate(world, day, {**base, "FRAUD_PROFILE__STATE_DIR": str(world)})
                for state in (local, prod):
                    _copy_data(world, state)
                order = ["local", "production"] if r % 2 else ["production", "local"]
                row: dict[str, Any] = {"round": r, "day": day, "order": order}
                for name in order:
                    state, env = envs[name]
                    _progress(f"round {r}: day {day} lands; CT run, {name}")
                    row[name] = _run(state, env)
                    print(f"    {name}: {row[name]}", flush=True)
                row["ratio"] = round(
                    row["production"]["flow_seconds"] / row["local"]["flow_seconds"], 3
                )
                rounds.append(row)
            result["rounds"] = rounds
    ratios = [r["ratio"] for r in rounds]
    met = all(x <= GOAL_RATIO for x in ratios)
    none = not any(x <= GOAL_RATIO for x in ratios)
    result["goals"] = [
        {
            "goal": f"CT run, production stack <= {GOAL_RATIO}x the local profile (100k rows)",
            "verdict": "met" if met else "not met" if none else "inconclusive",
            "value": round(statistics.median(ratios), 3),
            "detail": "production/local flow seconds by round: "
            + ", ".join(
                f"{r['production']['flow_seconds']:.1f}/{r['local']['flow_seconds']:.1f}"
                for r in rounds
            ),
            "rounds": ratios,
        }
    ]
    result["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print()
    for goal in result["goals"]:
        print(f"goal: {goal['goal']}: {goal['verdict']} ({goal['value']}; {goal['detail']})")
    print(f"wrote {args.output}")
    return 1 if any(g["verdict"] == "not met" for g in result["goals"]) else 0


if __name__ == "__main__":
    sys.exit(main())

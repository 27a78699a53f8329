"""Prefect CT flow against the same steps as plain calls: ``python benchmarks/bench_ct.py``.

For 100k transactions (10 days x 10,000 rows, 5,000 cards, 500 merchants) and 1M
(20 days x 50,000 rows, 50,000 cards, 5,000 merchants), labels 3 days late, one
simulation (``write_simulation``) is copied into two fresh state folders and, side by
side in one process:

1. **plain**: the steps of ``_run`` in ``pipelines/level1_continuous_training/flows.py``
   called directly in the same order (``fraud_detection.training.ct``: pending partitions,
   the data gate per day, update features, as of, MLflow setup and champion lookup, build
   and validate the training set, fit, evaluate, figures + log and register, model gate,
   promote, materialize, notify serving, the run record), each step timed, in folder A;
2. **flow**: ``ct_flow(trigger="on_demand", state_dir=B)`` timed end to end, against the
   temporary Prefect server started beforehand (its start is a one-off per process and
   is reported apart, with the cost of an empty flow run);
3. **no-op rerun**: ``ct_flow`` again on B with nothing new (it skips), and the plain
   check (``pending_partitions`` + ``as_of`` + ``last_trained_as_of``) on B.

Overhead = (flow - plain) / plain; orchestration = flow - sum of the plain steps;
tracking = the MLflow steps of the plain run (setup, champion lookup, log + register, model
gate with its pyfunc reload, promote). The step functions are timed by wrappers in both
paths, so the flow's own cost is also taken within one run (flow - its steps, and the
part outside the flow body): on a shared machine the plain and flow runs see different
load, and that same-run figure is the one the noise hardly moves. Goal: overhead under
15 % at 1M rows (reported, not enforced: exit code 0).

Warm-up: GX, Feast, MLflow, scikit-learn, matplotlib, Prefect and the flows module are
imported (timed) before anything is measured, the Prefect server is started with an
empty flow, and both paths run once on a tiny world (not counted). At 100k each
measurement runs twice, the second time in the opposite order (plain then flow, then flow
then plain), and the best is kept; the two repeats use different seeds, so the flow's
``train`` task (cached on the training set's content) never hits its cache. At 1M each
runs once (plain first). Writes ``benchmarks/results/ct.json`` for a full run; ``--rows N``
runs one size (N transactions over 10 days, twice) instead of both and writes only with
``--output``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import textwrap
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "ct.json"
GOAL_OVERHEAD = 0.15
LABEL_DELAY_DAYS = 3
SEED = 42
TRIGGER = "on_demand"
# The plain run's MLflow steps: what "tracking" sums (figures are plotting, not MLflow;
# evaluate's champion lookup is one query).
TRACKING_STEPS = ("setup_mlflow", "champion_lookup", "log_and_register", "model_gate", "promote")


@dataclass(frozen=True)
class Size:
    label: str
    days: int
    rows_per_day: int
    cards: int
    merchants: int
    repeats: int

    @property
    def rows(self) -> int:
        return self.days * self.rows_per_day


SIZES = (
    Size("100k", days=10, rows_per_day=10_000, cards=5_000, merchants=500, repeats=2),
    Size("1M", days=20, rows_per_day=50_000, cards=50_000, merchants=5_000, repeats=1),
)
GOAL_SIZE = "1M"
# A tiny world run through both paths before measuring: the first call of GX, Feast,
# DuckDB, MLflow's store and Prefect's task engine in a process costs seconds.
WARMUP = Size("warm-up", days=8, rows_per_day=1_500, cards=1_000, merchants=100, repeats=1)


def quick_size(rows: int) -> Size:
    cards = max(1_000, rows // 20)
    return Size(
        f"{rows:,}", days=10, rows_per_day=rows // 10, cards=cards, merchants=cards // 10, repeats=2
    )


def _progress(message: str) -> None:
    print(f"... {message}", flush=True)


def _error(exc: BaseException) -> dict[str, str]:
    lines = traceback.format_exception(exc)
    return {"type": type(exc).__name__, "message": str(exc), "traceback_tail": "".join(lines[-6:])}


# ------------------------------------------------------------------------- clocks


def process_cpu() -> float:
    """CPU seconds of this process (every thread) and of its finished children (git, ...)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def server_cpu() -> float:
    """CPU seconds so far of the live child processes: the temporary Prefect server."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with the environment
        return 0.0
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


class Clock:
    """Wall time, this process's CPU time and the Prefect server's CPU time of a block."""

    def __init__(self) -> None:
        self.load = os.getloadavg()[0]
        self.wall, self.cpu, self.server = time.perf_counter(), process_cpu(), server_cpu()

    def read(self) -> dict[str, float]:
        return {
            "seconds": round(time.perf_counter() - self.wall, 2),
            "cpu_seconds": round(process_cpu() - self.cpu, 2),
            "server_cpu_seconds": round(server_cpu() - self.server, 2),
            "load_average_1m_at_start": round(self.load, 2),
        }


# ---------------------------------------------------------------------------- setup


def quiet_warnings() -> None:
    """Ignore SQLAlchemy deprecations from MLflow's store and Prefect's types (nothing to act
    on). Put first again after each import: one of them puts a "once" filter first."""
    warnings.filterwarnings("ignore", message=r"(?s).*(noload|OperatorClass)")


def import_heavy() -> dict[str, float]:
    """Import what both paths use, timed: no measured run pays a first import."""
    import importlib

    from fraud_detection.training.cli import load_flows

    timings = {}
    for name in (
        "great_expectations",
        "feast",
        "mlflow",
        "mlflow.sklearn",
        "mlflow.pyfunc",
        "mlflow.store.tracking.sqlalchemy_store",
        "sklearn.ensemble",
        "sklearn.inspection",
        "matplotlib.pyplot",
        "prefect",
    ):
        quiet_warnings()
        started = time.perf_counter()
        importlib.import_module(name)
        timings[name] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    load_flows()
    timings["pipelines...flows"] = round(time.perf_counter() - started, 2)
    for module in (
        "fraud_detection.validation.gate",
        "fraud_detection.features.store",
        "fraud_detection.registry.tracking",
        "fraud_detection.training.evaluation",
        "fraud_detection.training.model",
        "fraud_detection.training.gate",
    ):
        importlib.import_module(module)
    return timings


def start_prefect() -> dict[str, Any]:
    """Start the temporary Prefect server with an empty flow; then time one more empty run."""
    from prefect import flow

    @flow(name="bench-empty")
    def empty() -> int:
        return 1

    started = time.perf_counter()
    empty()
    first = time.perf_counter() - started
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        empty()
        runs.append(time.perf_counter() - started)
    api_url = os.environ.get("PREFECT_API_URL")
    return {
        "server": api_url or "temporary local server (started by the first flow run)",
        "first_empty_flow_seconds": round(first, 2),
        "empty_flow_seconds": round(min(runs), 3),
        "start_seconds": round(first - min(runs), 2),
    }


def simulate(root: Path, size: Size, seed: int) -> dict[str, Any]:
    from fraud_detection.config import StatePaths, load_simulate_config
    from fraud_detection.data.simulator import write_simulation

    config = load_simulate_config(
        overrides={
            "seed": seed,
            "days": size.days,
            "rows_per_day": size.rows_per_day,
            "cards": size.cards,
            "merchants": size.merchants,
            "label_delay_days": LABEL_DELAY_DAYS,
            "scenario": {"drift": {"enabled": False}, "broken_feed": {"enabled": False}},
        }
    )
    started = time.perf_counter()
    summary = write_simulation(config, StatePaths(root=root))
    return {
        "transactions": summary.rows,
        "days": config.days,
        "rows_per_day": config.rows_per_day,
        "cards": config.cards,
        "merchants": config.merchants,
        "label_delay_days": config.label_delay_days,
        "seed": seed,
        "fraud_rate": round(summary.fraud_rate, 4),
        "simulate_seconds": round(time.perf_counter() - started, 2),
    }


# ---------------------------------------------------------------------- the runs


class StepTimer:
    """Times the CT step functions wherever they are called: the plain code or a Prefect task.

    The functions of ``fraud_detection.training.ct`` (and ``tracking.setup_mlflow`` and
    ``tracking.champion``, which ``_run`` calls itself) are replaced on their modules by
    timing wrappers, which both paths look up at call time. Only the outermost timed call
    counts (``log_and_register`` calls ``setup_mlflow`` itself). The cost is two
    ``perf_counter`` calls per step. The flow's time outside these steps is Prefect's own:
    flow and task runs, state changes, the API calls, result persistence.
    """

    CT_STEPS = (
        "context",
        "pending_partitions",
        "validate_partition",
        "summarize_data_gate",
        "as_of",
        "last_trained_as_of",
        "update_features",
        "build_training_set",
        "validate_training_set",
        "fit",
        "evaluate",
        "figures",
        "log_and_register",
        "model_gate",
        "promote",
        "materialize",
        "notify_serving",
        "append_record",
    )
    TRACKING_STEPS = (("setup_mlflow", "setup_mlflow"), ("champion", "champion_lookup"))

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._depth = 0
        self._originals: list[tuple[Any, str, Any]] = []

    def install(self) -> None:
        from fraud_detection.registry import tracking
        from fraud_detection.training import ct

        targets = [(ct, name, name) for name in self.CT_STEPS]
        targets += [(tracking, name, label) for name, label in self.TRACKING_STEPS]
        for module, name, label in targets:
            original = getattr(module, name)
            self._originals.append((module, name, original))
            setattr(module, name, self._wrap(original, label))

    def uninstall(self) -> None:
        for module, name, original in reversed(self._originals):
            setattr(module, name, original)
        self._originals.clear()

    def _wrap(self, fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return fn(*args, **kwargs)
            self._depth += 1
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                self._depth -= 1
                self.seconds[label] = self.seconds.get(label, 0.0) + elapsed

        return timed

    def take(self) -> dict[str, float]:
        """The steps timed since the last call, and start afresh."""
        out, self.seconds = self.seconds, {}
        return out


TIMER = StepTimer()


def _steps(seconds: dict[str, float]) -> dict[str, Any]:
    return {
        "steps": {k: round(v, 3) for k, v in seconds.items()},
        "steps_sum_seconds": round(sum(seconds.values()), 2),
    }


def plain_run(state: Path) -> dict[str, Any]:
    """``_run`` of flows.py (and ``ct_flow``'s record keeping) as direct calls, in ``state``."""
    from fraud_detection.registry import tracking
    from fraud_detection.training import ct

    os.environ["FRAUD_PROFILE__STATE_DIR"] = str(state)
    TIMER.take()
    clock = Clock()
    started = time.perf_counter()
    ctx = ct.context(str(state))
    record = ct.RunRecord(trigger=TRIGGER, started_at=dt.datetime.now(dt.UTC).isoformat())
    try:
        pending = ct.pending_partitions(ctx.paths)
        outcomes = {day: ct.validate_partition(ctx.paths, day) for day in pending}
        gate = ct.summarize_data_gate(outcomes)
        record.data_gate = gate.summary()
        when = ct.as_of(ctx.paths)
        record.as_of = when.isoformat()
        tracking.setup_mlflow(ctx.profile)
        current = tracking.champion(ctx.model_name)
        record.champion_version = None if current is None else str(current.version)
        if ct.last_trained_as_of(ctx.paths) == record.as_of:
            raise RuntimeError("a fresh state folder was already trained: cannot happen")
        ct.update_features(ctx.paths, gate.accepted)
        path = ct.build_training_set(ctx, when)
        training = ct.validate_training_set(ctx, path)
        record.training_gate = f"accepted ({training.rows:,} rows)"
        record.training_rows = training.rows
        model = ct.fit(ctx, training, "normal")
        evals = ct.evaluate(ctx, model, training)
        record.pr_auc = evals.challenger.pr_auc
        record.champion_pr_auc = evals.champion.pr_auc if evals.champion else None
        plots = ct.figures(model, training, ctx, evals)
        registered = ct.log_and_register(
            ctx,
            model,
            training,
            evals,
            plots,
            trigger=TRIGGER,
            variant="normal",
            validation_ids=[training.validation_id],
        )
        record.challenger_version = registered.version
        decision = ct.model_gate(ctx, model, evals, registered, training)
        promoted, champion, reason = False, record.champion_version, decision.summary
        if decision.promote:
            promoted, champion, reason = ct.promote(ctx, registered, evals, decision)
        record.champion_version = champion
        record.outcome = "promoted" if promoted else "kept champion"
        record.model_gate = (
            f"promoted v{registered.version}" if promoted else f"rejected v{registered.version}"
        )
        record.reasons = [] if promoted else ([reason] if decision.promote else decision.reasons)
        ct.materialize(ctx)
        ct.notify_serving(ctx, champion, promoted)
    except Exception as exc:
        record.outcome = "failed"
        record.reasons = [f"{type(exc).__name__}: {exc}".splitlines()[0]]
        ct.append_record(ctx.paths, record.finish(started))
        return {**clock.read(), **_steps(TIMER.take()), "outcome": "failed", "error": _error(exc)}
    ct.append_record(ctx.paths, record.finish(started))
    return {
        **clock.read(),
        **_steps(TIMER.take()),
        "partitions": len(pending),
        "training_rows": training.rows,
        "pr_auc": round(evals.challenger.pr_auc, 4),
        "outcome": record.outcome,
        "model_gate": record.model_gate,
        "reasons": record.reasons,
    }


def flow_run(flows: Any, state: Path) -> dict[str, Any]:
    """``ct_flow`` on ``state``, end to end; a failure is kept with its exact error."""
    os.environ["FRAUD_PROFILE__STATE_DIR"] = str(state)
    TIMER.take()
    clock = Clock()
    try:
        record = flows.ct_flow(trigger=TRIGGER, state_dir=str(state))
    except Exception as exc:
        return {**clock.read(), **_steps(TIMER.take()), "outcome": "failed", "error": _error(exc)}
    out = {**clock.read(), **_steps(TIMER.take())}
    return {
        **out,
        # The flow function's own body (record.seconds, rounded to 0.1 s by the flow).
        "body_seconds": record["seconds"],
        # Prefect's own time in this same run: everything but the CT steps.
        "prefect_seconds": round(out["seconds"] - out["steps_sum_seconds"], 2),
        "training_rows": record["training_rows"],
        "pr_auc": None if record["pr_auc"] is None else round(record["pr_auc"], 4),
        "outcome": record["outcome"],
        "model_gate": record["model_gate"],
        "reasons": record["reasons"],
    }


def noop_check(state: Path) -> tuple[float, bool]:
    """The plain "anything new?" check: pending partitions, as of, last trained as of."""
    from fraud_detection.training import ct

    started = time.perf_counter()
    ctx = ct.context(str(state))
    pending = ct.pending_partitions(ctx.paths)
    when = ct.as_of(ctx.paths)
    nothing_new = not pending and ct.last_trained_as_of(ctx.paths) == when.isoformat()
    seconds = time.perf_counter() - started
    TIMER.take()
    return seconds, nothing_new


def measure(flows: Any, tmp: Path, size: Size, repeat: int) -> dict[str, Any]:
    """One repeat: simulate, copy to A and B, plain on A and flow on B (order alternates)."""
    seed = SEED + repeat
    source, a, b = (tmp / f"{size.label}-{repeat}-{name}" for name in ("source", "A", "B"))
    _progress(f"{size.label} repeat {repeat + 1}: simulating {size.rows:,} transactions")
    data = simulate(source, size, seed)
    shutil.copytree(source, a)
    shutil.copytree(source, b)
    shutil.rmtree(source)
    order = ("plain", "flow") if repeat % 2 == 0 else ("flow", "plain")
    out: dict[str, Any] = {"repeat": repeat + 1, "order": list(order), "data": data}
    for which in order:
        _progress(f"{size.label} repeat {repeat + 1}: {which} run")
        out[which] = plain_run(a) if which == "plain" else flow_run(flows, b)
        print(
            f"    {which}: {out[which]['seconds']:.1f} s, {out[which]['outcome']}"
            + (f" ({out[which]['error']['type']})" if "error" in out[which] else ""),
            flush=True,
        )
    if out["flow"]["outcome"] != "failed":
        _progress(f"{size.label} repeat {repeat + 1}: no-op rerun")
        noop = flow_run(flows, b)
        check_s, nothing_new = noop_check(b)
        noop["plain_check_seconds"] = round(check_s, 3)
        noop["plain_check_nothing_new"] = nothing_new
        out["noop"] = noop
    shutil.rmtree(a, ignore_errors=True)
    shutil.rmtree(b, ignore_errors=True)
    return out


def warm_up(flows: Any, tmp: Path) -> dict[str, Any]:
    """Both paths once on a tiny world; not counted (a failure is reported, not fatal)."""
    source, a, b = (tmp / f"warm-up-{name}" for name in ("source", "A", "B"))
    simulate(source, WARMUP, SEED)
    shutil.copytree(source, a)
    shutil.copytree(source, b)
    out = {}
    for which in ("plain", "flow"):
        run = plain_run(a) if which == "plain" else flow_run(flows, b)
        out[which] = {"seconds": run["seconds"], "outcome": run["outcome"]}
        if "error" in run:
            out[which]["error"] = f"{run['error']['type']}: {run['error']['message']}"
    for folder in (source, a, b):
        shutil.rmtree(folder, ignore_errors=True)
    return out


def summarize(size: Size, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Best (fastest) of the repeats; orchestration and tracking from the best runs."""
    plains = [r["plain"] for r in runs if r["plain"]["outcome"] != "failed"]
    flows_ok = [r["flow"] for r in runs if r["flow"]["outcome"] != "failed"]
    noops = [r["noop"] for r in runs if "noop" in r and r["noop"]["outcome"] != "failed"]
    best: dict[str, Any] = {"plain_seconds": None, "flow_seconds": None}
    plain = min(plains, key=lambda p: p["seconds"]) if plains else None
    flow = min(flows_ok, key=lambda f: f["seconds"]) if flows_ok else None
    if plain is not None:
        tracking = sum(plain["steps"].get(name, 0.0) for name in TRACKING_STEPS)
        best |= {
            "plain_seconds": plain["seconds"],
            "plain_steps_sum_seconds": plain["steps_sum_seconds"],
            "tracking_seconds": round(tracking, 2),
            "tracking_share_pct": round(100 * tracking / plain["seconds"], 1),
            "plain_cpu_seconds": plain["cpu_seconds"],
        }
    if flow is not None:
        work = flow["steps_sum_seconds"]
        best |= {
            "flow_seconds": flow["seconds"],
            "flow_body_seconds": flow["body_seconds"],
            "flow_steps_sum_seconds": work,
            # Same run, so the machine's noise in the steps cancels out.
            "prefect_seconds": flow["prefect_seconds"],
            "prefect_pct_of_steps": round(100 * flow["prefect_seconds"] / work, 1),
            "prefect_flow_run_seconds": round(flow["seconds"] - flow["body_seconds"], 2),
            "flow_cpu_seconds": flow["cpu_seconds"],
            "flow_server_cpu_seconds": flow["server_cpu_seconds"],
        }
    if plain is not None and flow is not None:
        best |= {
            "overhead_pct": round(100 * (flow["seconds"] - plain["seconds"]) / plain["seconds"], 1),
            "orchestration_seconds": round(flow["seconds"] - plain["steps_sum_seconds"], 2),
        }
        # Step by step, the fastest flow run against the plain run of the same repeat (the
        # same data): the same functions, so a difference is the machine's.
        pair = next(r for r in runs if r["flow"] is flow)
        if pair["plain"]["outcome"] != "failed":
            twin = pair["plain"]["steps"]
            best["steps_repeat"] = pair["repeat"]
            best["steps"] = {
                name: {"plain": twin.get(name), "flow": flow["steps"].get(name)}
                for name in dict.fromkeys([*twin, *flow["steps"]])
            }
    if noops:
        best |= {
            "noop_flow_seconds": min(n["seconds"] for n in noops),
            "noop_outcome": noops[0]["outcome"],
            "noop_plain_check_seconds": min(n["plain_check_seconds"] for n in noops),
        }
    return {
        "size": size.label,
        "transactions": runs[0]["data"]["transactions"],
        "config": {
            "days": size.days,
            "rows_per_day": size.rows_per_day,
            "cards": size.cards,
            "merchants": size.merchants,
            "label_delay_days": LABEL_DELAY_DAYS,
            "repeats": size.repeats,
        },
        "runs": runs,
        "best": best,
        "errors": [
            {"repeat": r["repeat"], "path": which, **r[which]["error"]}
            for r in runs
            for which in ("plain", "flow")
            if "error" in r[which]
        ],
    }


# -------------------------------------------------------------------------- report


def _f(value: float | None, fmt: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, fmt) + suffix


def _print_report(result: dict[str, Any]) -> None:
    print()
    imports = result["imports_seconds"]
    print(
        "imports before measuring (one-off per process): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in imports.items())
    )
    server = result["prefect"]
    print(
        f"Prefect: {server['server']}; start {server['start_seconds']:.1f} s (first empty flow "
        f"{server['first_empty_flow_seconds']:.1f} s), then an empty flow run "
        f"{server['empty_flow_seconds']:.2f} s"
    )
    warmup = result["warm_up"]
    print(
        f"warm-up (not counted), {warmup['transactions']:,} transactions: "
        + ", ".join(
            f"{w} {warmup[w]['seconds']:.1f} s ({warmup[w].get('error', warmup[w]['outcome'])})"
            for w in ("plain", "flow")
        )
    )
    print()
    head = (
        f"{'size':>5} {'rows':>10} {'plain s':>8} {'flow s':>7} {'overhead':>9} "
        f"{'orch. s':>8} {'Prefect s (same run)':>21} {'tracking s':>11} "
        f"{'no-op flow s':>13} {'no-op plain s':>14}"
    )
    print(head)
    print("-" * len(head))
    for size in result["sizes"]:
        b = size["best"]
        tracking = (
            f"{b['tracking_seconds']:.1f} ({b['tracking_share_pct']:.0f}%)"
            if "tracking_seconds" in b
            else "-"
        )
        same_run = (
            f"{b['prefect_seconds']:.1f} ({b['prefect_pct_of_steps']:+.1f}%)"
            if "prefect_seconds" in b
            else "-"
        )
        print(
            f"{size['size']:>5} {size['transactions']:>10,} "
            f"{_f(b['plain_seconds'], '.1f'):>8} {_f(b['flow_seconds'], '.1f'):>7} "
            f"{_f(b.get('overhead_pct'), '+.1f', ' %'):>9} "
            f"{_f(b.get('orchestration_seconds'), '.1f'):>8} {same_run:>21} {tracking:>11} "
            f"{_f(b.get('noop_flow_seconds'), '.1f'):>13} "
            f"{_f(b.get('noop_plain_check_seconds'), '.3f'):>14}"
        )
    print(
        "overhead = (flow - plain) / plain; orch. = flow - sum of the plain steps; Prefect "
        "s (same run) = flow - sum of the same steps timed inside that flow run (% of them); "
        "tracking = MLflow steps of the plain run (% of it)"
    )
    for size in result["sizes"]:
        _print_size(size)
    print()
    for note in result["notes"]:
        print(textwrap.fill(note, width=100, initial_indent="note: ", subsequent_indent="  "))
    goals = result["goals"]
    if goals["overhead_pct"] is None:
        print(f"goal: overhead < {GOAL_OVERHEAD:.0%} at {goals['at']}: not measured")
    else:
        mark = "pass" if goals["ok"] else "MISSED"
        same = goals["prefect_pct_of_steps"]
        print(
            f"goal: overhead < {GOAL_OVERHEAD:.0%} at {goals['at']}: flow vs plain "
            f"{goals['overhead_pct']:+.1f} % -> {mark}; Prefect's own time in the same run "
            f"{same:+.1f} % of its steps -> {'pass' if goals['ok_same_run'] else 'MISSED'}"
        )


def _print_size(size: dict[str, Any]) -> None:
    b = size["best"]
    label = size["size"]
    print()
    for run in size["runs"]:
        parts = []
        for which in run["order"]:
            r = run[which]
            server = f" + server {r['server_cpu_seconds']:.1f}" if which == "flow" else ""
            parts.append(
                f"{which} {r['seconds']:.1f} s (CPU {r['cpu_seconds']:.1f}{server} s, "
                f"load {r['load_average_1m_at_start']:.1f}, {r['outcome']})"
            )
        if "noop" in run:
            parts.append(f"no-op {run['noop']['seconds']:.1f} s ({run['noop']['outcome']})")
        print(f"{label} repeat {run['repeat']}: " + ", ".join(parts))
    if "orchestration_seconds" in b:
        print(
            f"{label} flow {b['flow_seconds']:.1f} s = steps {b['flow_steps_sum_seconds']:.1f} s "
            f"+ Prefect {b['prefect_seconds']:.1f} s (of it {b['prefect_flow_run_seconds']:.1f} s "
            f"outside the flow body); plain {b['plain_seconds']:.1f} s = steps "
            f"{b['plain_steps_sum_seconds']:.1f} s + glue"
        )
    if "steps" in b:
        shown = {k: v for k, v in b["steps"].items() if max(v["plain"] or 0, v["flow"] or 0) >= 0.1}
        print(
            f"{label} steps of repeat {b['steps_repeat']}, s (plain / in the flow): "
            + ", ".join(
                f"{k} {_f(v['plain'], '.1f')}/{_f(v['flow'], '.1f')}" for k, v in shown.items()
            )
        )
    for err in size["errors"]:
        print(f"{label} repeat {err['repeat']} {err['path']} FAILED: {err['type']}:")
        print(textwrap_indent(err["message"]))


def textwrap_indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines()[:20])


def swing_notes(results: list[dict[str, Any]]) -> list[str]:
    """Per size, the step whose time differs most between the paths, when it matters.

    The same function on the same data: the difference is the machine, not Prefect.
    """
    notes = []
    for size_result in results:
        best = size_result["best"]
        if "steps" not in best:
            continue
        name, times = max(
            best["steps"].items(),
            key=lambda item: abs((item[1]["plain"] or 0) - (item[1]["flow"] or 0)),
        )
        gap = (times["plain"] or 0) - (times["flow"] or 0)
        if abs(gap) > 0.1 * best["plain_seconds"]:
            notes.append(
                f"{size_result['size']}: {name} took {times['plain'] or 0:.1f} s in the plain "
                f"run and {times['flow'] or 0:.1f} s inside the flow (same function, same "
                f"data): that {abs(gap):.0f} s swing, not Prefect, decides the flow-vs-plain "
                f"overhead of {best['overhead_pct']:+.1f} %; Prefect's own time in the flow "
                f"run was {best['prefect_seconds']:.1f} s ({best['prefect_pct_of_steps']:+.1f} % "
                "of its steps)."
            )
    return notes


def _machine() -> dict[str, Any]:
    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    packages = ("prefect", "mlflow", "feast", "great-expectations", "scikit-learn", "pandas")
    return {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        **{name: version(name) for name in packages},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--rows",
        type=int,
        default=None,
        help="run one size of about N transactions over 10 days instead of 100k and 1M",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"result JSON (default {RESULT.relative_to(ROOT)} for a full run; "
        "a --rows run writes nothing unless given)",
    )
    args = parser.parse_args(argv)
    if args.rows is not None and args.rows < 20_000:
        parser.error("--rows must be at least 20000 (the training-set gate needs 1,000 rows)")
    sizes = SIZES if args.rows is None else (quick_size(args.rows),)
    notes = [
        "GX, Feast, MLflow, scikit-learn, matplotlib, Prefect and the flows module are "
        "imported before anything is timed; the Prefect server is started by an empty flow "
        f"first; then both paths run once on a tiny world ({WARMUP.rows:,} transactions, "
        "not counted), so neither pays a first call.",
        "Each size is simulated once per repeat and copied into two fresh state folders "
        "(plain: A, flow: B); MLflow, Feast, GX and the run records live in each folder.",
        "100k: two repeats, plain then flow, then flow then plain (different seeds, so the "
        "flow's cached train task never hits); best of each kept. 1M: one run each, "
        "plain first, after the 100k runs warmed both paths.",
        "Steps are timed by wrappers put on the ct functions (and tracking.setup_mlflow and "
        "tracking.champion), so the same functions are timed in the plain run and inside "
        "the flow's tasks; the flow's time outside them is Prefect's own.",
    ]
    if args.rows is not None:
        notes.append(f"--rows given: only {args.rows:,} transactions measured, 1M skipped.")
    started = time.perf_counter()
    os.environ.setdefault("FRAUD_PROJECT_DIR", str(ROOT))
    with tempfile.TemporaryDirectory(prefix="bench-ct-") as name:
        tmp = Path(name)
        from fraud_detection.training.cli import prefect_environment

        # Prefect's home, database and results for the whole process (one server).
        prefect_environment(tmp)
        _progress("importing GX, Feast, MLflow, scikit-learn, Prefect and the flows")
        imports = import_heavy()
        quiet_warnings()
        TIMER.install()
        from fraud_detection.training.cli import load_flows

        flows = load_flows()
        _progress("starting the temporary Prefect server (an empty flow)")
        prefect = start_prefect()
        print(f"    server start {prefect['start_seconds']:.1f} s", flush=True)
        _progress(f"warm-up: both paths on {WARMUP.rows:,} transactions (not counted)")
        warmup = warm_up(flows, tmp)
        print(
            f"    plain {warmup['plain']['seconds']:.1f} s, flow {warmup['flow']['seconds']:.1f} s",
            flush=True,
        )
        results = []
        for size in sizes:
            runs = [measure(flows, tmp, size, repeat) for repeat in range(size.repeats)]
            results.append(summarize(size, runs))
        TIMER.uninstall()
    loads = [
        run[which]["load_average_1m_at_start"]
        for size_result in results
        for run in size_result["runs"]
        for which in ("plain", "flow")
    ]
    cores = os.cpu_count() or 1
    if max(loads) > cores:
        notes.append(
            f"The machine was busy (1-minute load average up to {max(loads):.1f} on {cores} "
            "cores at the start of a run): plain and flow ran at different times, so their "
            "wall times carry that noise; Prefect's own time, taken within one flow run, is "
            "far less exposed to it (it leaves out any slowing of the steps by the Prefect "
            "server's CPU use, shown per flow run as 'server')."
        )
    notes += swing_notes(results)
    at = GOAL_SIZE if args.rows is None else sizes[-1].label
    goal_best = next(s["best"] for s in results if s["size"] == at)
    overhead = goal_best.get("overhead_pct")
    same_run = goal_best.get("prefect_pct_of_steps")
    result: dict[str, Any] = {
        "benchmark": "ct",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "imports_seconds": imports,
        "prefect": prefect,
        "warm_up": {"transactions": WARMUP.rows, **warmup},
        "sizes": results,
        "goals": {
            "overhead_pct_lt": 100 * GOAL_OVERHEAD,
            "at": at,
            "overhead_pct": overhead,
            "ok": overhead is not None and overhead < 100 * GOAL_OVERHEAD,
            "prefect_pct_of_steps": same_run,
            "ok_same_run": same_run is not None and same_run < 100 * GOAL_OVERHEAD,
            "enforced": False,
        },
        "notes": notes,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    _print_report(result)
    print(f"run time {result['total_seconds']:.0f} s")
    output = args.output or (RESULT if args.rows is None else None)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Prefect CT flow against the same steps as plain calls: ``python benchmarks/bench_ct.py``.

For 100k transactions (10 days x 10,000 rows, 5,000 cards, 500 merchants) and 1M
(20 days x 50,000 rows, 50,000 cards, 5,000 merchants), labels 3 days late, each repeat
simulates one world (``write_simulation``) and copies it into two fresh state folders:

1. **plain**: the steps of ``_run`` in ``fraud_detection.orchestration.flows``
   called directly in the same order (``fraud_detection.training.ct``: pending partitions,
   the data gate per day, update features, as of, MLflow setup and champion lookup, build
   and validate the training set, fit, evaluate, figures + log and register, model gate,
   promote, materialize, notify serving, the run record), each step timed, in folder A;
2. **flow**: ``ct_flow(trigger="on_demand", state_dir=B)`` timed end to end, against the
   temporary Prefect server its worker started beforehand (a one-off, reported apart);
3. **no-op rerun**: ``ct_flow`` again on B with nothing new (it skips), and the plain
   check (``pending_partitions`` + ``as_of`` + ``last_trained_as_of``) on B.

Each path runs in its own worker process (``--worker``), both started with the same
environment, the OpenMP/BLAS thread counts pinned (``--threads``, default the cores):
left uncontrolled, the same fit once took 64 s in one path and 28 s in the other. Both
workers import everything and run their path once on a tiny world before anything is
timed. The order alternates from repeat to repeat (``--repeats``, default 3; seeds differ,
so the flow's cached train task never hits).

Overhead = (flow - plain) / plain, as the median over the repeats with bounds from their
spread (slowest flow / fastest plain, and the reverse); Prefect's own time = the flow run
minus the same step functions timed inside it (same run, so the machine's noise hardly
moves it); tracking = the MLflow steps of the plain run. Goal: overhead under 10 % at
100k and at 1M rows: **met** when the upper bound is under 10 %, **not met** when the
lower bound is not, **inconclusive** otherwise (the reason is kept). Exit 1 when a goal is
not met. Writes ``benchmarks/results/ct.json`` for a full run; ``--rows N`` runs one size
(N transactions over 10 days) instead of both and writes only with ``--output``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import json
import os
import platform
import resource
import shutil
import statistics
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
GOAL_OVERHEAD = 0.10
MIN_REPEATS = 3
# Both workers get the same values: uncontrolled OpenMP threads made the same fit take
# 64 s in one path and 28 s in the other.
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)
RESULT_MARK = "BENCH-RESULT "
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
GOAL_SIZES = ("100k", "1M")
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

    from fraud_detection.orchestration.local import load_flows

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
    timings["fraud_detection.orchestration.flows"] = round(time.perf_counter() - started, 2)
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
    from fraud_detection.registry import runs, tracking
    from fraud_detection.training import ct

    os.environ["FRAUD_PROFILE__STATE_DIR"] = str(state)
    TIMER.take()
    clock = Clock()
    started = time.perf_counter()
    ctx = ct.context(str(state))
    record = runs.RunRecord(trigger=TRIGGER, started_at=dt.datetime.now(dt.UTC).isoformat())
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
        if runs.last_trained_as_of(ctx.paths) == record.as_of:
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
        runs.append_record(ctx.paths, record.finish(started))
        return {**clock.read(), **_steps(TIMER.take()), "outcome": "failed", "error": _error(exc)}
    runs.append_record(ctx.paths, record.finish(started))
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
    from fraud_detection.registry import runs
    from fraud_detection.training import ct

    started = time.perf_counter()
    ctx = ct.context(str(state))
    pending = ct.pending_partitions(ctx.paths)
    when = ct.as_of(ctx.paths)
    nothing_new = not pending and runs.last_trained_as_of(ctx.paths) == when.isoformat()
    seconds = time.perf_counter() - started
    TIMER.take()
    return seconds, nothing_new


# ------------------------------------------------------------------- the workers


def worker_main(kind: str, tmp: Path) -> int:
    """One path's process: imports, (flow: the Prefect server), then requests from stdin.

    Each request is a JSON line ``{"op": ..., "state": ...}``; each answer one line on
    stdout after :data:`RESULT_MARK` (libraries may print other lines; progress goes to
    stderr).
    """
    import contextlib

    os.environ.setdefault("FRAUD_PROJECT_DIR", str(ROOT))
    from fraud_detection.orchestration.local import prefect_environment

    prefect_environment(tmp)  # Prefect's home, database and results for this process
    ready: dict[str, Any] = {"threads": {k: os.environ.get(k) for k in THREAD_VARS}}
    with contextlib.redirect_stdout(sys.stderr):
        ready["imports_seconds"] = import_heavy()
        quiet_warnings()
        TIMER.install()
        from fraud_detection.orchestration.local import load_flows

        flows = load_flows()
        if kind == "flow":
            ready["prefect"] = start_prefect()
    print(RESULT_MARK + json.dumps(ready), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        state = Path(request["state"])
        with contextlib.redirect_stdout(sys.stderr):
            if request["op"] == "run":
                out = plain_run(state) if kind == "plain" else flow_run(flows, state)
            elif request["op"] == "noop" and kind == "flow":
                out = flow_run(flows, state)
            else:  # the plain "anything new?" check
                seconds, nothing_new = noop_check(state)
                out = {"seconds": round(seconds, 3), "nothing_new": nothing_new}
        print(RESULT_MARK + json.dumps(out, default=str), flush=True)
    return 0


class Worker:
    """A path's worker process (``--worker plain|flow``), all with the same environment."""

    def __init__(self, kind: str, tmp: Path, env: dict[str, str]) -> None:
        import subprocess

        home = tmp / f"worker-{kind}"
        home.mkdir()
        self.kind = kind
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", kind, str(home)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=ROOT,
            text=True,
        )
        self.ready = self._answer()

    def _answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(RESULT_MARK):
                answer: dict[str, Any] = json.loads(line[len(RESULT_MARK) :])
                return answer
        raise RuntimeError(f"the {self.kind} worker ended (exit {self.proc.wait()})")

    def ask(self, op: str, state: Path) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, "state": str(state)}) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def close(self) -> None:
        import subprocess

        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # a stuck worker is ended; the results are kept
            self.proc.kill()


def measure(workers: dict[str, Worker], tmp: Path, size: Size, repeat: int) -> dict[str, Any]:
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
        out[which] = workers[which].ask("run", a if which == "plain" else b)
        print(
            f"    {which}: {out[which]['seconds']:.1f} s, {out[which]['outcome']}"
            + (f" ({out[which]['error']['type']})" if "error" in out[which] else ""),
            flush=True,
        )
    if out["flow"]["outcome"] != "failed":
        _progress(f"{size.label} repeat {repeat + 1}: no-op rerun")
        noop = workers["flow"].ask("noop", b)
        check = workers["plain"].ask("check", b)
        noop["plain_check_seconds"] = check["seconds"]
        noop["plain_check_nothing_new"] = check["nothing_new"]
        out["noop"] = noop
    shutil.rmtree(a, ignore_errors=True)
    shutil.rmtree(b, ignore_errors=True)
    return out


def warm_up(workers: dict[str, Worker], tmp: Path) -> dict[str, Any]:
    """Both paths once on a tiny world; not counted (a failure is reported, not fatal)."""
    source, a, b = (tmp / f"warm-up-{name}" for name in ("source", "A", "B"))
    simulate(source, WARMUP, SEED)
    shutil.copytree(source, a)
    shutil.copytree(source, b)
    out = {}
    for which in ("plain", "flow"):
        run = workers[which].ask("run", a if which == "plain" else b)
        out[which] = {"seconds": run["seconds"], "outcome": run["outcome"]}
        if "error" in run:
            out[which]["error"] = f"{run['error']['type']}: {run['error']['message']}"
    for folder in (source, a, b):
        shutil.rmtree(folder, ignore_errors=True)
    return out


# ---------------------------------------------------------------------- summary


def spread(values: list[float]) -> dict[str, float] | None:
    """Median and range of the repeats (None without any)."""
    if not values:
        return None
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def verdict(overhead: dict[str, Any] | None, repeats: int) -> tuple[str, str]:
    """Met when even the least favourable pairing of the runs (slowest flow against the
    fastest plain run) is under the goal; not met when even the most favourable is not;
    inconclusive otherwise, with the reason."""
    goal = 100 * GOAL_OVERHEAD
    if overhead is None:
        return "inconclusive", "not measured: a path failed in every repeat"
    low, high = overhead["lower_bound_pct"], overhead["upper_bound_pct"]
    if repeats < MIN_REPEATS:
        return "inconclusive", f"{repeats} repeat(s): at least {MIN_REPEATS} are needed"
    if high < goal:
        return "met", f"upper bound {high:+.1f} % < {goal:.0f} %"
    if low >= goal:
        return "not met", f"lower bound {low:+.1f} % >= {goal:.0f} %"
    return "inconclusive", (
        f"the runs' spread allows {low:+.1f} to {high:+.1f} %, which straddles {goal:.0f} %: "
        "more repeats or a quieter machine"
    )


def summarize(size: Size, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians and ranges over the repeats; the overhead and its bounds from them."""
    ok = [r for r in runs if r["plain"]["outcome"] != "failed" and r["flow"]["outcome"] != "failed"]
    plain = [r["plain"]["seconds"] for r in ok]
    flow = [r["flow"]["seconds"] for r in ok]
    summary: dict[str, Any] = {
        "repeats_ok": len(ok),
        "plain_seconds": spread(plain),
        "flow_seconds": spread(flow),
        # Prefect's own time, taken within each flow run: the flow minus its timed steps.
        "prefect_seconds": spread([r["flow"]["prefect_seconds"] for r in ok]),
        "prefect_pct_of_steps": spread(
            [100 * r["flow"]["prefect_seconds"] / r["flow"]["steps_sum_seconds"] for r in ok]
        ),
        # The flow run's own cost outside its body (create the run, states, the API).
        "prefect_flow_run_seconds": spread(
            [r["flow"]["seconds"] - r["flow"]["body_seconds"] for r in ok]
        ),
        "tracking_seconds": spread(
            [sum(r["plain"]["steps"].get(n, 0.0) for n in TRACKING_STEPS) for r in ok]
        ),
        "overhead": None,
    }
    if ok:
        pairs = [100 * (f - p) / p for p, f in zip(plain, flow, strict=True)]
        summary["overhead"] = {
            "median_pct": round(100 * (statistics.median(flow) / statistics.median(plain) - 1), 1),
            "paired_pct": [round(x, 1) for x in pairs],
            "lower_bound_pct": round(100 * (min(flow) / max(plain) - 1), 1),
            "upper_bound_pct": round(100 * (max(flow) / min(plain) - 1), 1),
        }
        # The step whose time differs most between the paths (same functions, same data).
        steps = {
            name: (
                statistics.median(r["plain"]["steps"].get(name, 0.0) for r in ok),
                statistics.median(r["flow"]["steps"].get(name, 0.0) for r in ok),
            )
            for name in dict.fromkeys(n for r in ok for n in r["plain"]["steps"])
        }
        summary["steps_median"] = {k: [round(p, 2), round(f, 2)] for k, (p, f) in steps.items()}
    noops = [r["noop"] for r in runs if "noop" in r and r["noop"]["outcome"] != "failed"]
    if noops:
        summary["noop_flow_seconds"] = spread([n["seconds"] for n in noops])
        summary["noop_outcome"] = noops[0]["outcome"]
        summary["noop_plain_check_seconds"] = spread([n["plain_check_seconds"] for n in noops])
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
        "summary": summary,
        "errors": [
            {"repeat": r["repeat"], "path": which, **r[which]["error"]}
            for r in runs
            for which in ("plain", "flow")
            if "error" in r[which]
        ],
    }


# -------------------------------------------------------------------------- report


def _range(s: dict[str, float] | None, fmt: str = ".1f") -> str:
    if s is None:
        return "-"
    return f"{s['median']:{fmt}} ({s['min']:{fmt}}..{s['max']:{fmt}})"


def _print_report(result: dict[str, Any]) -> None:
    print()
    print(f"threads (same for both paths): {result['threads']}")
    server = result["prefect"]
    print(
        f"Prefect: {server['server']}; start {server['start_seconds']:.1f} s, then an empty "
        f"flow run {server['empty_flow_seconds']:.2f} s"
    )
    warm = result["warm_up"]
    print(
        f"warm-up (not counted), {warm['transactions']:,} transactions: "
        + ", ".join(
            f"{w} {warm[w]['seconds']:.1f} s ({warm[w]['outcome']})" for w in ("plain", "flow")
        )
    )
    for size in result["sizes"]:
        s = size["summary"]
        print()
        for run in size["runs"]:
            parts = [
                f"{w} {run[w]['seconds']:.1f} s ({run[w]['outcome']}, load "
                f"{run[w]['load_average_1m_at_start']:.1f})"
                for w in run["order"]
            ]
            print(f"{size['size']} repeat {run['repeat']}: " + ", ".join(parts))
        print(
            f"{size['size']} ({size['transactions']:,} rows, {s['repeats_ok']} repeats), "
            f"median (min..max): plain {_range(s['plain_seconds'])} s, flow "
            f"{_range(s['flow_seconds'])} s, Prefect's own time "
            f"{_range(s['prefect_seconds'], '.2f')} s "
            f"({_range(s['prefect_pct_of_steps'])} % of the steps; flow run outside its body "
            f"{_range(s['prefect_flow_run_seconds'], '.2f')} s), MLflow steps "
            f"{_range(s['tracking_seconds'])} s"
        )
        if s["overhead"]:
            o = s["overhead"]
            print(
                f"{size['size']} overhead (flow - plain) / plain: median {o['median_pct']:+.1f} %, "
                f"per repeat {', '.join(f'{x:+.1f}' for x in o['paired_pct'])} %, bounds "
                f"{o['lower_bound_pct']:+.1f}..{o['upper_bound_pct']:+.1f} %"
            )
        if "noop_flow_seconds" in s:
            print(
                f"{size['size']} no-op rerun: flow {_range(s['noop_flow_seconds'], '.2f')} s "
                f"({s['noop_outcome']}), plain check "
                f"{_range(s['noop_plain_check_seconds'], '.3f')} s"
            )
        for err in size["errors"]:
            print(f"{size['size']} repeat {err['repeat']} {err['path']} FAILED: {err['type']}:")
            print("\n".join("    " + line for line in err["message"].splitlines()[:20]))
    print()
    for note in result["notes"]:
        print(textwrap.fill(note, width=100, initial_indent="note: ", subsequent_indent="  "))
    for goal in result["goals"]:
        print(f"goal: {goal['goal']}: {goal['verdict']} ({goal['detail']})")


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
        "--repeats", type=int, default=MIN_REPEATS, help=f"repeats per size (default {MIN_REPEATS})"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="OpenMP/BLAS threads of both paths (default: the cores)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"result JSON (default {RESULT.relative_to(ROOT)} for a full run; "
        "a --rows run writes nothing unless given)",
    )
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "HOME"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker[0], Path(args.worker[1]))
    if args.rows is not None and args.rows < 20_000:
        parser.error("--rows must be at least 20000 (the training-set gate needs 1,000 rows)")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    base = SIZES if args.rows is None else (quick_size(args.rows),)
    sizes = [dataclasses.replace(s, repeats=args.repeats) for s in base]
    threads = {name: str(args.threads) for name in THREAD_VARS}
    notes = [
        "Each path runs in its own worker process started with the same environment "
        f"({', '.join(f'{k}={v}' for k, v in threads.items())}); the workers import GX, "
        "Feast, MLflow, scikit-learn, matplotlib, Prefect and the flows before anything is "
        "timed, the flow worker starts the Prefect server with an empty flow, and both run "
        f"once on a tiny world ({WARMUP.rows:,} transactions, not counted).",
        "Each repeat simulates its world once (seed 42 + repeat, so the flow's cached train "
        "task never hits) and copies it into two fresh state folders (plain: A, flow: B); "
        "the order alternates: plain first in odd repeats, flow first in even ones.",
        "Figures are medians over the repeats with their range. The overhead's bounds pair "
        "the slowest flow run with the fastest plain run (upper) and the reverse (lower); "
        f"the goal (< {GOAL_OVERHEAD:.0%}) is met only when the upper bound is under it.",
        "Steps are timed by wrappers put on the ct functions (and tracking.setup_mlflow and "
        "tracking.champion) in both workers; Prefect's own time is the flow run minus its "
        "steps, within one run.",
    ]
    if args.rows is not None:
        notes.append(f"--rows given: only {args.rows:,} transactions measured, 1M skipped.")
    started = time.perf_counter()
    env = {**os.environ, **threads}
    env.setdefault("FRAUD_PROJECT_DIR", str(ROOT))
    with tempfile.TemporaryDirectory(prefix="bench-ct-") as name:
        tmp = Path(name)
        os.environ.setdefault("FRAUD_PROJECT_DIR", str(ROOT))
        _progress("starting the plain and flow workers (imports; the flow's Prefect server)")
        workers = {kind: Worker(kind, tmp, env) for kind in ("plain", "flow")}
        try:
            prefect = workers["flow"].ready["prefect"]
            print(f"    Prefect server start {prefect['start_seconds']:.1f} s", flush=True)
            _progress(f"warm-up: both paths on {WARMUP.rows:,} transactions (not counted)")
            warmup = warm_up(workers, tmp)
            print(
                f"    plain {warmup['plain']['seconds']:.1f} s, flow "
                f"{warmup['flow']['seconds']:.1f} s",
                flush=True,
            )
            results = []
            for size in sizes:
                runs = [measure(workers, tmp, size, repeat) for repeat in range(size.repeats)]
                results.append(summarize(size, runs))
        finally:
            for worker in workers.values():
                worker.close()
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
            "cores at the start of a run): the spread of the runs carries that noise."
        )
    goals = []
    for size_result in results:
        if args.rows is None and size_result["size"] not in GOAL_SIZES:
            continue
        s = size_result["summary"]
        mark, reason = verdict(s["overhead"], s["repeats_ok"])
        goals.append(
            {
                "goal": f"Prefect + MLflow flow overhead < {GOAL_OVERHEAD:.0%} over plain calls "
                f"at {size_result['size']} rows",
                "verdict": mark,
                "value": s["overhead"]["median_pct"] if s["overhead"] else None,
                "detail": reason,
                "overhead": s["overhead"],
                "prefect_seconds": s["prefect_seconds"],
            }
        )
    result: dict[str, Any] = {
        "benchmark": "ct",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "threads": threads,
        "imports_seconds": {k: w.ready["imports_seconds"] for k, w in workers.items()},
        "prefect": prefect,
        "warm_up": {"transactions": WARMUP.rows, **warmup},
        "sizes": results,
        "goals": goals,
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
    return 1 if any(g["verdict"] == "not met" for g in goals) else 0


if __name__ == "__main__":
    sys.exit(main())

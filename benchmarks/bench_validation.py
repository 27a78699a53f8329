"""Raw data gate on a 1M-row partition: ``python benchmarks/bench_validation.py [--rows N]``.

Times :func:`validate_raw_partition` on one simulated day (GX context, the whole
``raw_transactions`` suite in one checkpoint run with the default result format, Data
Docs, the record; the SUMMARY format is timed too, for reference), best of 3, with
``import great_expectations`` done beforehand and reported apart. The baseline is the
same checks as plain pandas (dtype compare, ``isna().any()``, ``between``, ``is_unique``,
``isin``), timed the same way in the same process. Goal: under 3 s for 1M rows.
Writes ``benchmarks/results/validation.json`` for a full-size run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "validation.json"
DEFAULT_ROWS = 1_000_000
GOAL_SECONDS = 3.0
REPEATS = 3


def pandas_checks(df: pd.DataFrame, parameters: dict[str, Any]) -> bool:
    """The raw suite's checks written directly in pandas (the floor GX is compared to)."""
    from fraud_detection.data.schema import CHANNELS, MERCHANT_CATEGORIES, TRANSACTION_COLUMNS
    from fraud_detection.validation.suites import MAX_AMOUNT

    ok = set(df.columns) == set(TRANSACTION_COLUMNS)
    ok &= all(str(df[c].dtype) == dtype for c, dtype in TRANSACTION_COLUMNS.items())
    rows = len(df)
    ok &= rows >= parameters["min_rows"] and (
        parameters["max_rows"] is None or rows <= parameters["max_rows"]
    )
    ok &= not df.isna().any().any()
    ok &= df["transaction_id"].is_unique
    ts = df["event_timestamp"]
    start, end = pd.Timestamp(parameters["day_start"]), pd.Timestamp(parameters["day_end"])
    ok &= bool(ts.between(start, end).all()) and bool((ts <= pd.Timestamp(parameters["now"])).all())
    amount = df["amount"]
    ok &= bool(((amount > 0) & (amount <= MAX_AMOUNT)).all())
    ok &= bool(df["latitude"].between(-90, 90).all() and df["longitude"].between(-180, 180).all())
    ok &= bool(df["merchant_category"].isin(MERCHANT_CATEGORIES).all())
    ok &= bool(df["channel"].isin(CHANNELS).all())
    return bool(ok)


def _best(fn: Callable[[], object], repeats: int = REPEATS) -> tuple[float, list[float], float]:
    """Best wall time, every wall time, and the best CPU time of this process.

    CPU time is reported too because the wall time swings with whatever else the machine
    runs; both GX and pandas do this work on one thread.
    """
    times, cpu = [], []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return min(times), times, min(cpu)


def run(rows: int) -> dict[str, Any]:
    from fraud_detection.config import SimulateConfig, StatePaths
    from fraud_detection.data.simulator import build_world, simulate_day

    # A Friday: its weekday factor (1.03) puts the day just above ``rows`` transactions.
    cfg = SimulateConfig(
        seed=42, start_date=dt.date(2026, 1, 2), days=1, rows_per_day=rows, cards=50_000,
        merchants=5_000,
    )  # fmt: skip
    started = time.perf_counter()
    df, _ = simulate_day(build_world(cfg), cfg, 0)
    simulate_s = time.perf_counter() - started

    started = time.perf_counter()
    import great_expectations  # noqa: F401  (timed apart: a one-off cost per process)

    import_s = time.perf_counter() - started

    from fraud_detection.validation.gate import validate_raw_partition
    from fraud_detection.validation.settings import ValidationConfig

    config = ValidationConfig()
    day = cfg.start_date
    with tempfile.TemporaryDirectory(prefix="bench-validation-") as tmp:
        paths = StatePaths(root=Path(tmp))
        outcomes = []
        gx_s, gx_runs, gx_cpu = _best(
            lambda: outcomes.append(validate_raw_partition(paths, day, df, config=config))
        )
        outcome = outcomes[-1]
        if not outcome.success:
            sys.exit(f"the clean partition was rejected:\n{outcome.message()}")
        parameters = dict(outcome.parameters)
        evaluated = outcome.evaluated
        # The richer result format, for the record (configs/validation.yaml: result_format).
        summary = config.model_copy(update={"result_format": "SUMMARY"})
        summary_s, _, _ = _best(lambda: validate_raw_partition(paths, day, df, config=summary))
    verdicts: list[bool] = []
    pandas_s, pandas_runs, pandas_cpu = _best(
        lambda: verdicts.append(pandas_checks(df, parameters))
    )
    if not all(verdicts):
        sys.exit("the pandas baseline rejected the clean partition")
    return {
        "rows": len(df),
        "columns": df.shape[1],
        "expectations": evaluated,
        "simulate_seconds": round(simulate_s, 2),
        "import_great_expectations_seconds": round(import_s, 2),
        "gx_seconds": round(gx_s, 3),
        "gx_runs": [round(t, 3) for t in gx_runs],
        "gx_cpu_seconds": round(gx_cpu, 3),
        "result_format": config.result_format,
        "gx_summary_format_seconds": round(summary_s, 3),
        "pandas_seconds": round(pandas_s, 3),
        "pandas_runs": [round(t, 3) for t in pandas_runs],
        "pandas_cpu_seconds": round(pandas_cpu, 3),
        "gx_over_pandas": round(gx_s / pandas_s, 1),
        "gx_over_pandas_cpu": round(gx_cpu / pandas_cpu, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="rows in the partition")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"result JSON (default {RESULT.relative_to(ROOT)} for a full-size run)",
    )
    args = parser.parse_args(argv)
    if args.rows <= 0:
        parser.error("--rows must be positive")

    figures = run(args.rows)
    limit = GOAL_SECONDS * max(args.rows / DEFAULT_ROWS, 1.0)
    goals = {"gx_seconds_lt": round(limit, 1), "time_ok": figures["gx_seconds"] < limit}
    goals["verdict"] = "met" if goals["time_ok"] else "not met"
    result = {
        "benchmark": "validation",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "figures": figures,
        "goals": goals,
    }
    mark = "pass" if goals["time_ok"] else "FAIL"
    print(
        f"raw gate, {figures['rows']:,} rows x {figures['columns']} columns, "
        f"{figures['expectations']} expectations (best of {REPEATS}):"
    )
    rows = [
        (
            f"Great Expectations, {figures['result_format']} (context + checkpoint + Data Docs)",
            f"{figures['gx_seconds']:.2f} s   goal < {limit:.0f} s: {mark}",
        ),
        ("  the same with result_format SUMMARY", f"{figures['gx_summary_format_seconds']:.2f} s"),
        ("plain pandas, the same checks", f"{figures['pandas_seconds']:.2f} s"),
        (
            "CPU time of this process, GX / pandas",
            f"{figures['gx_cpu_seconds']:.2f} s / {figures['pandas_cpu_seconds']:.2f} s",
        ),
        (
            "GX / pandas, wall (CPU)",
            f"{figures['gx_over_pandas']:.1f}x ({figures['gx_over_pandas_cpu']:.1f}x)",
        ),
    ]
    for label, value in rows:
        print(f"  {label:<66} {value}")
    print(
        f"  (not timed above: import great_expectations "
        f"{figures['import_great_expectations_seconds']:.1f} s, "
        f"simulating the day {figures['simulate_seconds']:.1f} s)"
    )
    output = args.output or (RESULT if args.rows == DEFAULT_ROWS else None)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {output}")
    return 0 if goals["time_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

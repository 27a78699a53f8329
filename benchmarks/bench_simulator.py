"""Simulator throughput and peak memory: ``python benchmarks/bench_simulator.py [--rows N]``.

Runs ``fraud simulate`` in a child process (so the peak RSS is the child's own), times
it and writes the figures to ``benchmarks/results/simulator.json``. Goals: 1M
transactions in under 20 s with a peak RSS under 2 GB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "simulator.json"
DEFAULT_ROWS = 1_000_000
DAYS = 20
GOAL_SECONDS = 20.0
GOAL_PEAK_MB = 2048.0


def run(rows: int, days: int = DAYS) -> dict[str, Any]:
    """Simulate about ``rows`` transactions over ``days`` days in a child process."""
    rows_per_day = max(1, rows // days)
    cards = max(1_000, rows // 20)  # 50,000 cards for 1M rows
    merchants = max(100, cards // 10)
    with tempfile.TemporaryDirectory(prefix="bench-simulator-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "fraud_detection.cli",
            "simulate",
            "--config",
            str(ROOT / "configs" / "simulate.yaml"),
            "--state-dir",
            tmp,
            "--days",
            str(days),
            "--rows-per-day",
            str(rows_per_day),
            "--cards",
            str(cards),
            "--merchants",
            str(merchants),
            "--seed",
            "42",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_SIMULATE__")}
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            sys.exit(f"fraud simulate failed ({proc.returncode}):\n{proc.stderr or proc.stdout}")
        written = sum(1 for _ in Path(tmp).rglob("*.parquet"))
        size_mb = sum(p.stat().st_size for p in Path(tmp).rglob("*.parquet")) / 2**20
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    summary = proc.stdout.strip().splitlines()
    simulated = next((line for line in summary if line.startswith("simulated ")), "")
    actual_rows = int(simulated.split()[1].replace(",", "")) if simulated else rows
    return {
        "rows": actual_rows,
        "days": days,
        "rows_per_day": rows_per_day,
        "cards": cards,
        "merchants": merchants,
        "seconds": round(seconds, 2),
        "rows_per_second": round(actual_rows / seconds),
        "peak_rss_mb": round(peak_mb, 1),
        "parquet_files": written,
        "parquet_mb": round(size_mb, 1),
        "cli_summary": simulated,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="total transactions")
    parser.add_argument("--days", type=int, default=DAYS, help="daily partitions")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"result JSON (default {RESULT.relative_to(ROOT)} for a full-size run; "
        "a smaller --rows run writes nothing unless given)",
    )
    args = parser.parse_args(argv)
    if args.rows <= 0 or args.days <= 0:
        parser.error("--rows and --days must be positive")

    figures = run(args.rows, args.days)
    # The goals are stated for 1M rows: a smaller run is held to the same limits, a
    # larger one to a time limit in proportion.
    time_limit = GOAL_SECONDS * max(args.rows / DEFAULT_ROWS, 1.0)
    goals = {
        "seconds_lt": round(time_limit, 1),
        "peak_rss_mb_lt": GOAL_PEAK_MB,
        "time_ok": figures["seconds"] < time_limit,
        "memory_ok": figures["peak_rss_mb"] < GOAL_PEAK_MB,
    }
    goals |= {
        "time_verdict": "met" if goals["time_ok"] else "not met",
        "memory_verdict": "met" if goals["memory_ok"] else "not met",
    }
    result = {
        "benchmark": "simulator",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "figures": figures,
        "goals": goals,
    }

    def mark(ok: bool) -> str:
        return "pass" if ok else "FAIL"

    print(
        f"{'rows':>10} {'seconds':>8} {'rows/s':>10} {'peak MB':>8}  "
        f"{f'goal <{time_limit:.0f} s':<12}goal <2 GB"
    )
    print(
        f"{figures['rows']:>10,} {figures['seconds']:>8.2f} {figures['rows_per_second']:>10,} "
        f"{figures['peak_rss_mb']:>8.0f}  {mark(goals['time_ok']):<12}{mark(goals['memory_ok'])}"
    )
    output = args.output or (RESULT if args.rows == DEFAULT_ROWS else None)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {output}")
    return 0 if goals["time_ok"] and goals["memory_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

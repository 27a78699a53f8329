"""A no-op ``dvc repro``: how long DVC takes to find that nothing changed.

``python benchmarks/bench_repro.py`` copies the files git tracks into a temporary folder
(a repository of its own), runs the whole pipeline there once on a small world (the
``simulate`` stage's settings as ``FRAUD_SIMULATE__*`` overrides, as ``make repro-sample``
does; ``--rows-per-day`` and ``--days`` size it), then times ``dvc repro`` with nothing
changed, ``--repeats`` times (the first one after the real run is reported apart: DVC's
state database of file hashes is warm by then, as it is for a developer). It also times
``dvc status``. Goal: a no-op ``dvc repro`` in at most 5 s (every run: met; none: not met;
otherwise inconclusive). The time is DVC's own (hashing the deps' files, checking the
outputs, reading the lock and params), not the pipeline's: a no-op runs no stage.

Writes ``benchmarks/results/repro.json`` (``--output`` elsewhere). Exit 1 when the goal
is not met.
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
RESULT = ROOT / "benchmarks" / "results" / "repro.json"
DVC = Path(sys.executable).parent / "dvc"
GOAL_SECONDS = 5.0
LEAKY = ("FRAUD_PROJECT_DIR", "FRAUD_PROFILE", "FRAUD_PROFILE__STATE_DIR", "PREFECT_API_URL")


def copy_tracked(target: Path) -> None:
    """The files git tracks (as in the working tree) copied to ``target``, a git repo."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    subprocess.run(["git", "init", "-q"], cwd=target, check=True)


def environment(copy: Path, days: int, rows_per_day: int) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in LEAKY}
    return {
        **clean,
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(copy / "state" / "dvc-site-cache"),
        "FEAST_USAGE": "False",
        "GX_ANALYTICS_ENABLED": "False",
        "PATH": f"{DVC.parent}{os.pathsep}{clean.get('PATH', '')}",
        "PYTHONPATH": str(copy / "src"),  # the copy's code
        "PYTHONDONTWRITEBYTECODE": "1",
        "FRAUD_SIMULATE__DAYS": str(days),
        "FRAUD_SIMULATE__ROWS_PER_DAY": str(rows_per_day),
        "FRAUD_SIMULATE__CARDS": str(max(300, rows_per_day // 5)),
        "FRAUD_SIMULATE__MERCHANTS": str(max(60, rows_per_day // 25)),
        "FRAUD_SIMULATE__LABEL_DELAY_DAYS": "1",
    }


def timed(copy: Path, env: dict[str, str], *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(
        [str(DVC), *args], cwd=copy, env=env, capture_output=True, text=True, timeout=3_600
    )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return seconds, proc.stdout


def verdict(runs: list[float]) -> str:
    met = [s <= GOAL_SECONDS for s in runs]
    return "met" if all(met) else "not met" if not any(met) else "inconclusive"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--days", type=int, default=6, help="days of the world (default 6)")
    parser.add_argument(
        "--rows-per-day", type=int, default=1_500, help="transactions a day (default 1500)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="no-op runs timed (default 5)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-repro-") as name:
        copy = Path(name) / "repo"
        copy_tracked(copy)
        env = environment(copy, args.days, args.rows_per_day)
        print(f"... dvc repro of every stage on {args.days} x {args.rows_per_day:,} rows")
        full, out = timed(copy, env, "repro")
        ran = [line for line in out.splitlines() if line.startswith("Running stage")]
        print(f"    {full:.1f} s, {len(ran)} stages run")
        first, out = timed(copy, env, "repro")
        print(f"... no-op dvc repro: first {first:.2f} s ({out.strip().splitlines()[-1]})")
        noops = []
        for _ in range(args.repeats):
            seconds, out = timed(copy, env, "repro")
            if "Running stage" in out:
                raise SystemExit(f"a stage ran in what should be a no-op:\n{out}")
            noops.append(seconds)
        status = [timed(copy, env, "status")[0] for _ in range(args.repeats)]
        files = sum(1 for p in (copy / "src").rglob("*.py"))
    runs = [first, *noops]
    result: dict[str, Any] = {
        "benchmark": "repro",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "dvc": subprocess.run(
                [str(DVC), "--version"], capture_output=True, text=True
            ).stdout.strip(),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        },
        "world": {"days": args.days, "rows_per_day": args.rows_per_day},
        "full_repro_seconds": round(full, 1),
        "stages_run": len(ran),
        "source_files": files,
        "noop_repro_seconds": {
            "first": round(first, 2),
            "runs": [round(s, 2) for s in noops],
            "median": round(statistics.median(noops), 2),
            "min": round(min(noops), 2),
            "max": round(max(noops), 2),
        },
        "status_seconds": {
            "median": round(statistics.median(status), 2),
            "min": round(min(status), 2),
            "max": round(max(status), 2),
        },
        "goals": [
            {
                "goal": f"no-op dvc repro <= {GOAL_SECONDS:.0f} s",
                "verdict": verdict(runs),
                "value": round(statistics.median(runs), 2),
                "detail": f"{len(runs)} runs, {min(runs):.2f}..{max(runs):.2f} s "
                "(met: every run; not met: none)",
            }
        ],
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    goal = result["goals"][0]
    print(
        f"no-op dvc repro: median {goal['value']:.2f} s ({goal['detail']}); "
        f"dvc status median {result['status_seconds']['median']:.2f} s"
    )
    print(f"goal: {goal['goal']}: {goal['verdict']}")
    output = args.output or RESULT
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}")
    return 1 if goal["verdict"] == "not met" else 0


if __name__ == "__main__":
    sys.exit(main())

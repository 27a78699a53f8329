"""Locust against ``fraud loadtest`` on one service: ``python benchmarks/bench_loadgen.py``.

The delivery checks and the serving bench load the service with a small client of the
project's own (``release.loadtest``: one asyncio loop, requests encoded once, a minimal
HTTP reader). The standard tool is Locust (``loadtests/locustfile.py``, ``FastHttpUser``,
its cheapest client). On a 2-core machine the load generator shares the cores with the
service, so what matters is whether it can still load the service: the requests per second
the service answers while each generator drives it, and the generator's own CPU time per
request.

One run: the serving bench's world (``bench_serving.build_world``: the default simulation
and the full-size model; ``--keep`` reuses a folder), one ``fraud serve`` on SQLite, then
at concurrency 1 and 16 (users for Locust, keep-alive clients for ours, both closed loops
with no wait), ``--rounds`` rounds (default 3) in which the two generators alternate, the
first one swapping from round to round. Each test counts ``--seconds`` (default 10)
after a 2 s warm-up: ours skips it itself; for Locust (``--reset-stats`` once its users
are up, ``--csv-full-history``) the requests per second and its CPU time per request come
from the seconds of its history after the warm-up, its CPU time read from ``/proc`` every
0.25 s (so its start-up, the imports and reading the bodies, is not counted), ours from
its client thread. Every request carries a transaction id of its own (a new event for
its card: none is a retry).

Reported, not a goal: the ratio of the service's throughput under Locust to under ours
at each concurrency (median over the rounds, with the range), the generators' CPU per
request, and the latencies each measured (Locust rounds its percentiles to whole ms). The
decision it records: Locust is the load tester when it loads the service to at least
``KEEP_RATIO`` of ours at concurrency 16 in every round; otherwise the small client stays
for the delivery checks and the benches, and this figure is why. Writes
``benchmarks/results/loadgen.json`` (``--output`` elsewhere).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_serving as bs  # noqa: E402  (the serving bench's world, server and bodies)

RESULT = ROOT / "benchmarks" / "results" / "loadgen.json"
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
LOCUST = Path(sys.executable).parent / "locust"
CONCURRENCIES = (1, 16)
ROUNDS = 3
SECONDS = 10.0
WARMUP_SECONDS = 2.0
KEEP_RATIO = 0.9


def _progress(message: str) -> None:
    print(f"... {message}", flush=True)


def run_ours(server: Any, base: str, bodies: list[dict[str, Any]], users: int) -> dict[str, Any]:
    from fraud_detection.release.loadtest import run_loadtest

    cpu = server.cpu_seconds()
    result = run_loadtest(
        f"{base}/predict", bodies, concurrency=users, duration_s=SECONDS, warmup_s=WARMUP_SECONDS
    )
    server_cpu = server.cpu_seconds() - cpu
    lat = result.latency_ms
    return {
        "generator": "fraud loadtest",
        "users": users,
        "requests": result.requests,
        "failures": result.requests - result.ok,
        "requests_per_second": round(result.requests_per_second, 1),
        "p50_ms": round(lat["p50"], 2),
        "p99_ms": round(lat["p99"], 2),
        "generator_cpu_us_per_request": round(result.client_cpu_us_per_request, 1),
        "server_cpu_ms_per_request": round(1000 * server_cpu / max(1, result.ok), 3),
    }


def run_locust(
    server: Any, base: str, state: Path, users: int, folder: Path, tag: str
) -> dict[str, Any]:
    prefix = folder / f"locust-{tag}"
    env = {
        **bs._environment(state),
        "FRAUD_LOADTEST_ROWS": str(bs.REQUEST_ROWS),
        # Locust's own check of its CPU warns above 90 %; keep its output to the summary.
        "PYTHONWARNINGS": "ignore",
    }
    cmd = [
        str(LOCUST),
        "-f",
        str(LOCUSTFILE),
        "--host",
        base,
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        str(users),
        "--run-time",
        f"{SECONDS + WARMUP_SECONDS + 1:g}s",
        "--csv",
        str(prefix),
        "--json-file",
        str(prefix),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    cmd += ["--reset-stats", "--csv-full-history"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    polls: list[tuple[float, float, float]] = []  # (unix time, locust CPU s, server CPU s)
    while proc.poll() is None:
        polls.append((time.time(), _process_cpu(proc.pid), server.cpu_seconds()))
        time.sleep(0.25)
    _, stderr = proc.communicate()
    if proc.returncode not in (0, 1):  # 1: some requests failed (counted below)
        raise RuntimeError(f"locust exited {proc.returncode}: {stderr.strip()[-800:]}")
    (stats,) = json.loads(Path(f"{prefix}.json").read_text())  # the one endpoint
    # The steady state: from WARMUP_SECONDS after the first request to the last second
    # recorded (Locust's history holds the total count, second by second).
    with open(f"{prefix}_stats_history.csv", newline="") as handle:
        history = [
            (float(r["Timestamp"]), int(r["Total Request Count"]))
            for r in csv.DictReader(handle)
            if r["Name"] == "Aggregated" and int(r["Total Request Count"]) > 0
        ]
    t0 = history[0][0] + WARMUP_SECONDS
    window = [h for h in history if h[0] >= t0]
    (t_a, n_a), (t_b, n_b) = window[0], window[-1]
    counted = max(1, n_b - n_a)
    cpu_a, server_a = _at(polls, t_a)
    cpu_b, server_b = _at(polls, t_b)
    return {
        "generator": "locust (FastHttpUser)",
        "users": users,
        "requests": int(stats["num_requests"]),
        "failures": int(stats["num_failures"]),
        "requests_per_second": round(counted / max(1e-9, t_b - t_a), 1),
        "p50_ms": _percentile(stats["response_times"], 0.50),
        "p99_ms": _percentile(stats["response_times"], 0.99),
        "generator_cpu_us_per_request": round(1e6 * (cpu_b - cpu_a) / counted, 1),
        "window_seconds": round(t_b - t_a, 1),
        "server_cpu_ms_per_request": round(1000 * (server_b - server_a) / counted, 3),
    }


def _percentile(histogram: dict[str, int], q: float) -> float:
    """A percentile of Locust's response-time histogram (ms, Locust's rounded buckets)."""
    times = sorted((float(ms), n) for ms, n in histogram.items())
    rank, seen = q * sum(n for _, n in times), 0
    for ms, n in times:
        seen += n
        if seen >= rank:
            return ms
    return times[-1][0] if times else float("nan")


def _process_cpu(pid: int) -> float:
    """A live process's user + system CPU seconds (/proc), 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _at(polls: list[tuple[float, float, float]], when: float) -> tuple[float, float]:
    """The (locust, server) CPU seconds at ``when``, from the nearest polls (linear)."""
    before = max((p for p in polls if p[0] <= when), default=polls[0], key=lambda p: p[0])
    after = min((p for p in polls if p[0] >= when), default=polls[-1], key=lambda p: p[0])
    if after[0] == before[0]:
        return before[1], before[2]
    f = (when - before[0]) / (after[0] - before[0])
    return (
        before[1] + f * (after[1] - before[1]),
        before[2] + f * (after[2] - before[2]),
    )


def _spread(values: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for users in CONCURRENCIES:
        pairs = [(r["ours"], r["locust"]) for r in rows if r["users"] == users and "locust" in r]
        ratios = [lo["requests_per_second"] / o["requests_per_second"] for o, lo in pairs]
        out[str(users)] = {
            "throughput_locust_over_ours": _spread(ratios),
            "ours_requests_per_second": _spread([o["requests_per_second"] for o, _ in pairs]),
            "locust_requests_per_second": _spread([lo["requests_per_second"] for _, lo in pairs]),
            "ours_cpu_us_per_request": _spread(
                [o["generator_cpu_us_per_request"] for o, _ in pairs]
            ),
            "locust_cpu_us_per_request": _spread(
                [lo["generator_cpu_us_per_request"] for _, lo in pairs]
            ),
            "ours_p50_p99_ms": [[o["p50_ms"], o["p99_ms"]] for o, _ in pairs],
            "locust_p50_p99_ms": [[lo["p50_ms"], lo["p99_ms"]] for _, lo in pairs],
            "failures": sum(o["failures"] + lo["failures"] for o, lo in pairs),
        }
    return out


def decide(summary: dict[str, Any]) -> dict[str, Any]:
    at16 = summary["16"]["throughput_locust_over_ours"]
    if summary["16"]["failures"]:
        verdict, why = "inconclusive", "requests failed during the load tests"
    elif at16["min"] >= KEEP_RATIO:
        verdict = "locust"
        why = (
            f"Locust loads the service to {at16['median']:.2f}x of fraud loadtest's "
            f"throughput at 16 users (every round >= {KEEP_RATIO:g})"
        )
    elif at16["max"] < KEEP_RATIO:
        verdict = "keep fraud loadtest"
        why = (
            f"under Locust the service answers {at16['median']:.2f}x "
            f"({at16['min']:.2f}..{at16['max']:.2f}) of the requests per second it answers "
            f"under fraud loadtest at 16 users: Locust takes "
            f"{summary['16']['locust_cpu_us_per_request']['median']:.0f} us of CPU per request "
            f"against {summary['16']['ours_cpu_us_per_request']['median']:.0f} us, CPU the "
            "service needs on 2 cores"
        )
    else:
        verdict, why = "inconclusive", "the rounds disagree"
    return {"decision": verdict, "keep_ratio": KEEP_RATIO, "why": why}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--output", type=Path, default=RESULT)
    parser.add_argument("--keep", type=Path, default=None, help="build or reuse the world here")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args(argv)
    os.environ.setdefault("FRAUD_PROJECT_DIR", str(ROOT))
    os.environ.setdefault("FEAST_USAGE", "False")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-loadgen-") as tmp:
        folder = Path(tmp)
        state = args.keep.resolve() if args.keep else folder / "state"
        kept = state / "bench-world.json"  # the serving bench's, when it kept this world
        if kept.exists():
            world = json.loads(kept.read_text())
            _progress(f"reusing the world in {state}")
        else:
            _progress("building the served world (simulate, CT with the default model)")
            world = bs.build_world(state)
            kept.parent.mkdir(parents=True, exist_ok=True)
            kept.write_text(json.dumps(world, default=str))
        base_bodies = bs.request_bodies(state)
        rows: list[dict[str, Any]] = []
        with bs.our_server(state, folder, "sqlite") as (server, base):
            for round_no in range(args.rounds):
                for users in CONCURRENCIES:
                    order = ["ours", "locust"] if round_no % 2 == 0 else ["locust", "ours"]
                    row: dict[str, Any] = {"round": round_no + 1, "users": users, "order": order}
                    for which in order:
                        tag = f"r{round_no}-u{users}"
                        if which == "ours":
                            bodies = bs.predict_bodies(base_bodies, f"lg-{tag}")
                            row["ours"] = run_ours(server, base, bodies, users)
                        else:
                            row["locust"] = run_locust(server, base, state, users, folder, tag)
                        got = row[which]
                        print(
                            f"    round {round_no + 1} {got['generator']:<22} u={users:<2} "
                            f"{got['requests_per_second']:>6,.0f} req/s  p50 {got['p50_ms']:6.2f} "
                            f"ms  p99 {got['p99_ms']:6.2f} ms  generator CPU "
                            f"{got['generator_cpu_us_per_request']:5.0f} us/request  "
                            f"failures {got['failures']}",
                            flush=True,
                        )
                    rows.append(row)
    summary = summarize(rows)
    decision = decide(summary)
    import locust

    result = {
        "benchmark": "loadgen",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "locust": locust.__version__,
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        },
        "world": world,
        "settings": {
            "concurrencies": list(CONCURRENCIES),
            "rounds": args.rounds,
            "seconds": SECONDS,
            "warmup_seconds": WARMUP_SECONDS,
        },
        "rounds": rows,
        "summary": summary,
        "decision": decision,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, default=str) + "\n")
    for users in CONCURRENCIES:
        s = summary[str(users)]["throughput_locust_over_ours"]
        print(
            f"users {users:>2}: service throughput under Locust / under fraud loadtest "
            f"{s['median']:.2f} ({s['min']:.2f}..{s['max']:.2f})"
        )
    print(f"decision: {decision['decision']}: {decision['why']}")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

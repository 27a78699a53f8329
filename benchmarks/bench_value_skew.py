"""Raw gate with its value-skew stage: ``python benchmarks/bench_value_skew.py [--rows N]``.

Seven accepted days of ``rows`` transactions are validated first (the history; not timed),
then the eighth day is validated, best of 3: the whole gate (:func:`validate_raw_partition`
with the schema suite, the value-skew stage against the seven days' profiles, Data Docs
and the record), alternated run by run with the same gate on the standard path (pandas'
default ``string[python]`` text columns instead of :func:`.gate.read_partition`'s Arrow
strings, and GX's own frame fingerprint on: the two savings the gate makes, each recorded
with its figure), and the value-skew stage's parts alone (reading the reference tables,
hashing the ids, the profile, the reference checks, and ``history_checks``: the pure
version of every history check; the gate runs most of them as suite expectations, so
their cost in the gate is inside the whole gate's time). ``import
great_expectations`` is done beforehand. The floor is the same statistics in plain pandas
(``quantile``, ``mean``, ``value_counts``, ``isin`` against the reference tables and
against the seven days' full id sets, a merge for the distance from home), timed the same
way. Goal: the whole gate under 3 s for 1M rows. Writes
``benchmarks/results/value_skew.json`` for a full-size run.
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

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "value_skew.json"
DEFAULT_ROWS = 1_000_000
GOAL_SECONDS = 3.0
REPEATS = 3
HISTORY = 7


def _best(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def _alternated(
    fn: Callable[[], object], other: Callable[[], object], repeats: int = REPEATS
) -> tuple[float, float]:
    """Best of ``repeats`` of each, run in turn (``fn`` first, then ``other``, ...)."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for i, f in enumerate((fn, other)):
            started = time.perf_counter()
            f()
            times[i].append(time.perf_counter() - started)
    return min(times[0]), min(times[1])


def pandas_statistics(
    df: pd.DataFrame, cards: pd.DataFrame, merchants: pd.DataFrame, seen: list[pd.Series]
) -> dict[str, Any]:
    """The value stage's statistics written directly in pandas (the floor)."""
    out: dict[str, Any] = {}
    for column in ("amount", "latitude", "longitude"):
        s = df[column]
        out[column] = {
            "quantiles": s.quantile([0.05, 0.25, 0.5, 0.75, 0.95]).tolist(),
            "mean": s.mean(),
            "zero_share": (s == 0).mean(),
            "top_share": s.value_counts(normalize=True).iloc[0],
        }
    for column in ("card_id", "merchant_id"):
        out[column] = df[column].value_counts(normalize=True).iloc[0]
    for column in ("merchant_category", "channel"):
        out[column] = df[column].value_counts(normalize=True).to_dict()
    out["hours"] = df["event_timestamp"].dt.hour.value_counts(normalize=True).to_dict()
    out["unknown_cards"] = (~df["card_id"].isin(cards["card_id"])).mean()
    out["unknown_merchants"] = (~df["merchant_id"].isin(merchants["merchant_id"])).mean()
    home = df[["card_id", "latitude", "longitude"]].merge(cards, on="card_id", how="left")
    lat1, lat2 = np.radians(home["home_latitude"]), np.radians(home["latitude"])
    dlon = np.radians(home["longitude"] - home["home_longitude"])
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin(dlon / 2) ** 2
    out["far"] = (12_742.0 * np.arcsin(np.sqrt(a.clip(0, 1))) > 500).mean()
    out["replayed"] = [df["transaction_id"].isin(ids).mean() for ids in seen]
    return out


def run(rows: int) -> dict[str, Any]:
    from fraud_detection.config import SimulateConfig, StatePaths
    from fraud_detection.data.simulator import write_simulation

    cfg = SimulateConfig(
        seed=42, start_date=dt.date(2026, 1, 2), days=HISTORY + 1, rows_per_day=rows,
        cards=50_000, merchants=5_000,
    )  # fmt: skip
    started = time.perf_counter()
    import great_expectations  # noqa: F401  (a one-off cost per process, not timed)

    import_s = time.perf_counter() - started

    from fraud_detection.data.ledger import partition_path
    from fraud_detection.validation import gate as gate_module
    from fraud_detection.validation.gate import read_partition, validate_raw_partition
    from fraud_detection.validation.settings import ValidationConfig
    from fraud_detection.validation.values import (
        id_hashes,
        partition_profile,
        reference_findings,
        value_findings,
    )

    config = ValidationConfig()
    settings = config.raw.values
    days = [cfg.start_date + dt.timedelta(days=i) for i in range(cfg.days)]
    with tempfile.TemporaryDirectory(prefix="bench-value-skew-") as tmp:
        paths = StatePaths(root=Path(tmp))
        started = time.perf_counter()
        write_simulation(cfg, paths)
        history = [validate_raw_partition(paths, day, config=config) for day in days[:-1]]
        setup_s = time.perf_counter() - started
        if not all(o.success for o in history):
            sys.exit("a history day was rejected")
        day = days[-1]
        df = read_partition(partition_path(paths, day))
        outcomes = []
        standard = config.model_copy(update={"gx_frame_fingerprint": True})

        def gate() -> None:
            outcomes.append(validate_raw_partition(paths, day, config=config))

        def gate_standard() -> None:  # pandas' default text dtype, GX's frame fingerprint on
            with_arrow = gate_module.read_partition
            gate_module.read_partition = pd.read_parquet
            try:
                validate_raw_partition(paths, day, config=standard)
            finally:
                gate_module.read_partition = with_arrow

        gate_s, standard_s = _alternated(gate, gate_standard)
        outcome = outcomes[-1]
        if not outcome.success or (outcome.values or {}).get("skipped"):
            sys.exit(f"the clean day was rejected or not value-checked:\n{outcome.message()}")
        profiles = [
            (d, json.loads((paths.root / f"validation/raw/{d}.json").read_text())["profile"])
            for d in days[:-1]
        ]

        def read_references() -> tuple[pd.DataFrame, pd.DataFrame]:
            return (
                pd.read_parquet(paths.reference / "cards.parquet"),
                pd.read_parquet(paths.reference / "merchants.parquet"),
            )

        cards, merchants = read_references()
        references = {
            "card_id": ("cards", pd.Index(cards["card_id"])),
            "merchant_id": ("merchants", pd.Index(merchants["merchant_id"])),
        }
        from great_expectations.execution_engine.pandas_execution_engine import (
            hash_pandas_dataframe,
        )

        gx_fingerprint_s = _best(lambda: hash_pandas_dataframe(df))
        hashes = id_hashes(df["transaction_id"])
        profile = partition_profile(df, cards, hashes=hashes)
        parts = {
            "read_reference_tables": _best(read_references),
            "hash_ids": _best(lambda: id_hashes(df["transaction_id"])),
            "profile": _best(lambda: partition_profile(df, cards, hashes=hashes)),
            "reference_checks": _best(lambda: reference_findings(df, references, settings)),
            "history_checks": _best(lambda: value_findings(profile, profiles, settings, hashes)),
        }
        # pandas' own reading (``string[python]`` ids: ``isin`` between Arrow strings is
        # far slower in pandas 2.3, so the floor keeps the default dtypes)
        plain = pd.read_parquet(partition_path(paths, day))
        seen = [pd.read_parquet(partition_path(paths, d))["transaction_id"] for d in days[:-1]]
        pandas_s = _best(lambda: pandas_statistics(plain, cards, merchants, seen))
    value_s = sum(parts.values())
    return {
        "rows": len(df),
        "history_days": HISTORY,
        "setup_seconds": round(setup_s, 1),
        "import_great_expectations_seconds": round(import_s, 2),
        "gate_seconds": round(gate_s, 3),
        "gate_seconds_standard_path": round(standard_s, 3),
        "standard_over_gate": round(standard_s / gate_s, 2),
        "gx_frame_fingerprint_seconds": round(gx_fingerprint_s, 3),
        "value_stage_seconds": round(value_s, 3),
        "value_stage_parts_seconds": {k: round(v, 4) for k, v in parts.items()},
        "schema_and_records_seconds": round(gate_s - value_s, 3),
        "pandas_floor_seconds": round(pandas_s, 3),
        "value_stage_over_pandas": round(value_s / pandas_s, 2),
        "profile_bytes": len(json.dumps(profile)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="rows per partition")
    parser.add_argument("--output", type=Path, default=None, help="result JSON")
    args = parser.parse_args(argv)
    if args.rows <= 0:
        parser.error("--rows must be positive")
    figures = run(args.rows)
    limit = GOAL_SECONDS * max(args.rows / DEFAULT_ROWS, 1.0)
    goals = {"gate_seconds_lt": round(limit, 1), "time_ok": figures["gate_seconds"] < limit}
    goals["verdict"] = "met" if goals["time_ok"] else "not met"
    result = {
        "benchmark": "value_skew",
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
    print(f"raw gate with value checks, {figures['rows']:,} rows, {HISTORY} days of history:")
    print(f"  whole gate (schema suite + value stage + Data Docs + record)   "
          f"{figures['gate_seconds']:.2f} s   goal < {limit:.0f} s: {mark}")  # fmt: skip
    print(f"  the same gate on the standard path (pandas' text dtype, GX's frame "
          f"fingerprint on) {figures['gate_seconds_standard_path']:.2f} s "
          f"({figures['standard_over_gate']:.2f}x; the fingerprint alone "
          f"{figures['gx_frame_fingerprint_seconds']:.2f} s)")  # fmt: skip
    print(f"  value stage                                                    "
          f"{figures['value_stage_seconds']:.3f} s")  # fmt: skip
    for name, seconds in figures["value_stage_parts_seconds"].items():
        print(f"    {name:<60} {seconds:.4f} s")
    print(f"  plain pandas, the same statistics (full id sets)               "
          f"{figures['pandas_floor_seconds']:.3f} s "
          f"(value stage / pandas {figures['value_stage_over_pandas']:.2f}x)")  # fmt: skip
    output = args.output or (RESULT if args.rows == DEFAULT_ROWS else None)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {output}")
    return 0 if goals["time_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Monitoring's window ends at the data's clock, not at the newest-looking log rows.

Found: three requests dated year 9999 in the prediction log made them "the last N days
with predictions", the window dropped to 3 rows, drift was skipped and the CLI printed
"data drift none".
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraud_detection.config import load_profile, state_paths
from fraud_detection.features.engineering import CATEGORICAL_FEATURES, MODEL_FEATURES
from fraud_detection.monitoring import monitor, served
from fraud_detection.monitoring.cli import _print_monitoring
from fraud_detection.monitoring.settings import load_monitoring_config

pytestmark = pytest.mark.unit

FIRST = dt.date(2026, 1, 1)
DAYS = 12  # raw partitions 2026-01-01 .. 01-12: the data's today ends 2026-01-13 00:00
ROWS_PER_DAY = 600


def _rows(day: dt.date, n: int, rng: np.random.Generator, prefix: str) -> pd.DataFrame:
    start = pd.Timestamp(day).tz_localize("UTC").as_unit("us")
    seconds = pd.to_timedelta(rng.integers(0, 86_399, n), unit="s").as_unit("us")
    frame = pd.DataFrame(
        {
            "request_id": [f"{prefix}{i}" for i in range(n)],
            "event_timestamp": start + seconds,
            "transaction_id": [f"{prefix}{i}" for i in range(n)],
            "card_id": rng.integers(1, 500, n),
            "merchant_id": rng.integers(1, 50, n),
            "model_version": "1",
            "score": rng.random(n),
            "threshold": 0.5,
            "source": "api",
            **{f: rng.normal(size=n) for f in MODEL_FEATURES},
            **{f: rng.choice(["a", "b"], n) for f in CATEGORICAL_FEATURES},
        }
    )
    frame["logged_at"] = frame["event_timestamp"]
    frame["decision"] = frame["score"] >= 0.5
    return served.conform(frame)


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> monitor.MonitorContext:
    """Twelve days of partitions and served traffic, plus 3 requests dated 9999."""
    profile = load_profile().model_copy(update={"state_dir": tmp_path})
    paths = state_paths(profile)
    rng = np.random.default_rng(7)
    log = tmp_path / "serving" / "predictions"
    for i in range(DAYS):
        day = FIRST + dt.timedelta(days=i)
        (paths.raw / f"date={day}").mkdir(parents=True)
        (log / f"date={day}").mkdir(parents=True)
        _rows(day, ROWS_PER_DAY, rng, f"T{i}-").to_parquet(log / f"date={day}" / "part-0.parquet")
    future = dt.date(9999, 12, 30)
    (log / f"date={future}").mkdir(parents=True)
    _rows(future, 3, rng, "F-").to_parquet(log / f"date={future}" / "part-0.parquet")
    # The accepted partitions' clock (training.ct.as_of) without running the data gate.
    monkeypatch.setattr(monitor, "clock", lambda _ctx: pd.Timestamp("2026-01-13", tz="UTC"))
    return monitor.MonitorContext(profile, paths, load_monitoring_config())


def test_future_dated_rows_neither_move_the_window_nor_silence_drift(
    ctx: monitor.MonitorContext, capsys: pytest.CaptureFixture[str]
) -> None:
    # When monitoring selects its current traffic
    current = monitor.current_traffic(ctx)
    end = monitor.window_end(ctx)

    # then the window is the 3 days before the data's clock, the 9999 rows left out
    assert end == pd.Timestamp("2026-01-13", tz="UTC")
    days = sorted(current["event_timestamp"].dt.date.unique())
    assert days == [dt.date(2026, 1, d) for d in (10, 11, 12)]
    assert len(current) == 3 * ROWS_PER_DAY
    assert monitor.future_rows(ctx, end) == 3

    # ... drift is judged on those rows (enough of them), not skipped
    rng = np.random.default_rng(11)
    reference = monitor.Reference(
        model_name="fraud-detector",
        version="1",
        run_id="r",
        threshold=0.5,
        pr_auc=0.8,
        kind="holdout",
        training_set=ctx.paths.root / "training" / "training_set_2026-01-10.parquet",
        frame=_rows(FIRST, 2_000, rng, "R-")[[*MODEL_FEATURES, *CATEGORICAL_FEATURES]],
        window=("2026-01-01", "2026-01-09"),
        holdout_scores=rng.random(2_000),
    )
    findings = monitor.measure_drift(ctx, reference, current)
    assert findings.data.skipped is None
    assert findings.data.current_rows == len(current)
    performance = monitor.measure_performance(ctx, reference, monitor.clock(ctx))
    result = monitor.finish(
        ctx,
        reference,
        current,
        findings,
        performance,
        monitor.clock(ctx),
        time.perf_counter(),
        log_to_mlflow=False,
    )
    assert result.ignored_future_rows == 3
    assert result.drift_skipped is None

    # ... and what the CLI prints names the 3 ignored rows in one line
    _print_monitoring(result.to_dict())
    out = capsys.readouterr().out
    (warning,) = [line for line in out.splitlines() if "ignored" in line]
    assert warning.startswith("warning: ignored 3 served row(s) dated on or after 2026-01-13")
    assert "data drift NOT JUDGED" not in out


def test_drift_on_too_few_rows_says_not_judged_rather_than_none(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = monitor.MonitoringResult(
        report=Path("r.html"),
        run_id=None,
        drift_detected=False,
        drifted=[],
        prediction_drift=False,
        degraded=False,
        performance="no verdict",
        drift_skipped="not enough rows (reference 2,000, current 3 < min 500)",
    )
    _print_monitoring(result.to_dict())
    out = capsys.readouterr().out
    assert "data drift NOT JUDGED: not enough rows (reference 2,000, current 3 < min 500)" in out
    assert "data drift none" not in out

"""Monitoring's pure logic: PSI and the drift rules, performance on delayed labels,
the signals the verdicts call for, the report page, the prediction-log reader."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraud_detection.config import ConfigError, StatePaths, load_yaml_model
from fraud_detection.features.engineering import CATEGORICAL_FEATURES, MODEL_FEATURES
from fraud_detection.monitoring import drift, performance, served, signals
from fraud_detection.monitoring.settings import (
    DriftSettings,
    MonitoringConfig,
    PerformanceSettings,
    load_monitoring_config,
)

pytestmark = pytest.mark.unit

CFG = DriftSettings()
N = 20_000


def _frame(rng: np.random.Generator, n: int = N, amount_scale: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "amount_log": rng.normal(3.5, 1.0, n) + math.log(amount_scale),
            "hour_of_day": rng.integers(0, 24, n),
            "is_online": (rng.random(n) < 0.3).astype("int64"),
            "distance_from_home_km": rng.exponential(20, n),
            "channel": rng.choice(["in_store", "online", "contactless"], n, p=[0.4, 0.3, 0.3]),
        }
    )


NUMERIC = ["amount_log", "hour_of_day", "is_online", "distance_from_home_km"]


# ------------------------------------------------------------------ PSI


def test_psi_equals_the_textbook_formula_on_a_hand_computed_case() -> None:
    expected = [0.25, 0.25, 0.25, 0.25]
    actual = [0.10, 0.20, 0.30, 0.40]
    # sum((a - e) * ln(a / e)), by hand:
    by_hand = (
        (0.10 - 0.25) * math.log(0.10 / 0.25)
        + (0.20 - 0.25) * math.log(0.20 / 0.25)
        + (0.30 - 0.25) * math.log(0.30 / 0.25)
        + (0.40 - 0.25) * math.log(0.40 / 0.25)
    )
    assert by_hand == pytest.approx(0.2282, abs=1e-4)
    assert drift.psi(expected, actual) == pytest.approx(by_hand, rel=1e-12)
    # Counts and shares give the same; swapping the sides changes nothing (symmetric).
    assert drift.psi([25, 25, 25, 25], [10, 20, 30, 40]) == pytest.approx(by_hand, rel=1e-12)
    assert drift.psi(actual, expected) == pytest.approx(by_hand, rel=1e-12)


def test_psi_of_an_empty_bin_is_finite_thanks_to_epsilon() -> None:
    value = drift.psi([50, 50, 0], [40, 40, 20], epsilon=1e-4)
    assert math.isfinite(value)
    assert value > 0.25  # a whole new bin of 20 %: clearly shifted


def test_psi_rejects_mismatched_bins() -> None:
    with pytest.raises(ValueError, match="same length"):
        drift.psi([1, 2], [1, 2, 3])


def test_quantile_edges_collapse_for_a_flag() -> None:
    flags = np.array([0.0] * 700 + [1.0] * 300)
    assert len(drift.quantile_edges(flags, 10)) <= 2


# ------------------------------------------------------------------ drift rules


def test_identical_distributions_do_not_drift() -> None:
    rng = np.random.default_rng(1)
    result = drift.dataset_drift(_frame(rng), _frame(rng), NUMERIC, ["channel"], CFG)
    assert result.drifted == []
    assert result.detected is False
    assert all(f.psi < CFG.psi_warn for f in result.features)
    assert {f.feature for f in result.features} == {*NUMERIC, "channel"}


def test_a_shifted_feature_drifts_and_is_named() -> None:
    rng = np.random.default_rng(2)
    reference, current = _frame(rng), _frame(rng, amount_scale=2.0)
    result = drift.dataset_drift(reference, current, NUMERIC, ["channel"], CFG)
    assert result.drifted == ["amount_log"]
    amount = result.feature("amount_log")
    assert amount is not None
    assert amount.level == "alert"
    assert amount.psi >= CFG.psi_alert
    assert amount.p_value < CFG.p_value
    # one of five features: below the data-set share (0.25)
    assert result.share == pytest.approx(0.2)
    assert result.detected is False


def test_dataset_drift_when_enough_features_drift() -> None:
    rng = np.random.default_rng(3)
    reference = _frame(rng)
    current = _frame(rng, amount_scale=2.0)
    current["channel"] = rng.choice(["in_store", "online", "contactless"], N, p=[0.2, 0.6, 0.2])
    current["is_online"] = (current["channel"] == "online").astype("int64")
    result = drift.dataset_drift(reference, current, NUMERIC, ["channel"], CFG)
    assert set(result.drifted) == {"amount_log", "channel", "is_online"}
    assert result.detected is True
    channel = result.feature("channel")
    assert channel is not None
    assert channel.test == "chi2"
    assert channel.statistic >= 0.1


def test_a_significant_but_tiny_shift_is_not_drift() -> None:
    # 200k rows: a shift of 0.03 standard deviations is "significant" but negligible.
    rng = np.random.default_rng(4)
    reference = pd.DataFrame({"x": rng.normal(0, 1, 200_000)})
    current = pd.DataFrame({"x": rng.normal(0.03, 1, 200_000)})
    result = drift.dataset_drift(reference, current, ["x"], [], CFG)
    x = result.feature("x")
    assert x is not None
    assert x.p_value < CFG.p_value  # the test alone would call it drift
    assert x.drifted is False


def test_missing_values_count_as_their_own_bin() -> None:
    rng = np.random.default_rng(5)
    reference = pd.DataFrame({"x": rng.normal(0, 1, N)})
    current = reference.copy()
    current.loc[: N // 2, "x"] = np.nan  # half the values go missing (a broken join)
    x = drift.dataset_drift(reference, current, ["x"], [], CFG).feature("x")
    assert x is not None
    assert x.drifted
    assert x.current_missing == pytest.approx(0.5, abs=0.01)


def test_a_new_category_drifts() -> None:
    reference = pd.DataFrame({"c": ["a", "b"] * 5_000})
    current = pd.DataFrame({"c": ["a", "b", "new"] * 3_000})
    c = drift.dataset_drift(reference, current, [], ["c"], CFG).feature("c")
    assert c is not None
    assert c.drifted
    assert c.psi > CFG.psi_alert


def test_too_few_rows_gives_no_verdict() -> None:
    rng = np.random.default_rng(6)
    result = drift.dataset_drift(_frame(rng, 100), _frame(rng, 100), NUMERIC, [], CFG, 500)
    assert result.skipped is not None
    assert "not enough rows" in result.skipped
    assert result.detected is False
    assert result.features == ()


def test_prediction_drift_on_scores() -> None:
    rng = np.random.default_rng(7)
    reference = rng.beta(0.5, 30, N)
    assert not drift.prediction_drift(reference, rng.beta(0.5, 30, N), CFG).drifted
    shifted = drift.prediction_drift(reference, rng.beta(0.9, 20, N), CFG)
    assert shifted.drifted
    assert shifted.feature == "score"


# ------------------------------------------------------------------ performance

NOW = pd.Timestamp("2026-01-10", tz="UTC")


def _served(days: list[str], rng: np.random.Generator, quality: float) -> pd.DataFrame:
    """Scored transactions: ``quality`` 1 separates frauds perfectly, 0 is noise."""
    rows = []
    for day in days:
        n = 1_000
        fraud = rng.random(n) < 0.03
        score = np.clip(rng.random(n) * (1 - quality) + fraud * quality, 0, 1)
        stamps = pd.Timestamp(day, tz="UTC") + pd.to_timedelta((np.arange(n) + 1) * 60, unit="s")
        rows.append(
            pd.DataFrame(
                {
                    "transaction_id": [f"T{day}-{i}" for i in range(n)],
                    "event_timestamp": stamps,
                    "score": score,
                    "decision": score >= 0.5,
                    "_fraud": fraud.astype("int8"),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def _labels(frame: pd.DataFrame, delay: pd.Timedelta) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": frame["transaction_id"],
            "event_timestamp": frame["event_timestamp"],
            "label_timestamp": frame["event_timestamp"] + delay,
            "is_fraud": frame["_fraud"],
        }
    )


def test_labels_not_yet_arrived_are_excluded() -> None:
    rng = np.random.default_rng(8)
    frame = _served(["2026-01-06", "2026-01-07", "2026-01-08", "2026-01-09"], rng, 0.9)
    # chargebacks arrive 2 days later: by NOW (Jan 10, 00:00) only Jan 6 and 7 are known
    joined = performance.with_arrived_labels(
        frame.drop(columns="_fraud"), _labels(frame, pd.Timedelta(days=2)), NOW
    )
    assert len(joined) == len(frame)
    by_day = {d.day: d for d in performance.daily(joined)}
    assert by_day["2026-01-06"].coverage == 1.0
    assert by_day["2026-01-07"].coverage == 1.0
    assert by_day["2026-01-08"].labelled == 0
    assert by_day["2026-01-08"].pr_auc is None
    assert by_day["2026-01-09"].coverage == 0.0
    # the verdict pools only fully labelled days
    result = performance.assess(joined, 0.8, PerformanceSettings(recent_days=3))
    assert result.recent_days == ("2026-01-06", "2026-01-07")
    assert result.labelled == 2_000


def test_degradation_rule_champion_tolerance_and_floor() -> None:
    rng = np.random.default_rng(9)
    frame = _served(["2026-01-07", "2026-01-08"], rng, 0.3)
    joined = performance.with_arrived_labels(
        frame.drop(columns="_fraud"), _labels(frame, pd.Timedelta(hours=1)), NOW
    )
    cfg = PerformanceSettings(tolerance=0.1, floor=0.2, min_positives=20)
    weak = performance.assess(joined, reference_pr_auc=0.9, cfg=cfg)
    assert weak.pr_auc is not None
    assert weak.pr_auc < 0.8
    assert weak.degraded
    assert weak.limit == pytest.approx(0.8)
    assert "< 0.800" in weak.verdict
    assert "champion's holdout 0.900" in weak.verdict
    # the same PR-AUC against a weak champion: not degraded...
    assert not performance.assess(joined, reference_pr_auc=weak.pr_auc + 0.05, cfg=cfg).degraded
    # ...unless it is under the floor whatever the champion
    floor = PerformanceSettings(tolerance=0.1, floor=0.99, min_positives=20)
    below = performance.assess(joined, reference_pr_auc=0.1, cfg=floor)
    assert below.degraded
    assert below.limit == pytest.approx(0.99)


def test_no_verdict_with_too_few_labelled_frauds() -> None:
    rng = np.random.default_rng(10)
    frame = _served(["2026-01-08"], rng, 0.0)
    joined = performance.with_arrived_labels(
        frame.drop(columns="_fraud"), _labels(frame, pd.Timedelta(hours=1)), NOW
    )
    result = performance.assess(joined, 0.9, PerformanceSettings(min_positives=1_000))
    assert not result.degraded
    assert result.verdict.startswith("no verdict")


# ------------------------------------------------------------------ signals


def _findings(detected: bool) -> object:
    from fraud_detection.monitoring.monitor import DriftFindings

    rng = np.random.default_rng(11)
    reference = _frame(rng)
    current = _frame(rng, amount_scale=2.0 if detected else 1.0)
    if detected:
        current["channel"] = rng.choice(["in_store", "online", "contactless"], N, p=[0.2, 0.6, 0.2])
    data = drift.dataset_drift(reference, current, NUMERIC, ["channel"], CFG)
    return DriftFindings(data, None)


def _no_performance() -> performance.PerformanceResult:
    empty = pd.DataFrame(
        {
            "transaction_id": pd.Series(dtype="string"),
            "event_timestamp": pd.Series(dtype="datetime64[us, UTC]"),
            "score": pd.Series(dtype="float64"),
            "decision": pd.Series(dtype="bool"),
            "is_fraud": pd.Series(dtype="Int64"),
        }
    )
    return performance.assess(empty, 0.6, PerformanceSettings())


def test_signals_follow_the_verdicts() -> None:
    from fraud_detection.monitoring.monitor import proposed_signals

    assert proposed_signals(_findings(False), _no_performance(), "3") == []  # type: ignore[arg-type]
    (signal,) = proposed_signals(_findings(True), _no_performance(), "3")  # type: ignore[arg-type]
    assert signal.kind == "drift"
    assert "amount_log" in signal.detail
    assert "channel" in signal.detail
    assert signal.metric == "drift_share"
    assert signal.value >= signal.threshold


def test_no_duplicate_while_pending_and_cooldown(tmp_path: Path) -> None:
    from fraud_detection.monitoring.monitor import MonitorContext, emit_signals

    paths = StatePaths(root=tmp_path)
    cfg = load_monitoring_config(overrides={"signals": {"cooldown_minutes": 60}})
    ctx = MonitorContext(profile=None, paths=paths, cfg=cfg)  # type: ignore[arg-type]
    first = signals.Signal(kind="drift", detail="x", metric="m", value=1.0, threshold=0.5)
    (out,) = emit_signals(ctx, [first])
    assert out.status == "emitted"
    (again,) = emit_signals(ctx, [first])
    assert again.status.startswith("not emitted: a drift signal is already pending")
    assert len(signals.pending(paths)) == 1
    # CT consumed it: within the cooldown still nothing new; after it, a new signal
    signals.consume(paths, signals.pending(paths)[0], "promoted")
    (cooling,) = emit_signals(ctx, [first])
    assert "cooldown" in cooling.status
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=61)
    (fresh,) = emit_signals(ctx, [first], now=later)
    assert fresh.status == "emitted"
    assert len(signals.pending(paths)) == 1


# ------------------------------------------------------------------ report


def test_report_is_one_self_contained_page(tmp_path: Path) -> None:
    from fraud_detection.monitoring import report

    findings = _findings(True)
    summary = {
        "generated_at": "2026-01-10T00:00:00+00:00",
        "now": "2026-01-10T00:00:00+00:00",
        "model": "fraud-detector",
        "champion_version": "3",
        "current": {"days": ["2026-01-09"], "rows": N, "sources": {"batch": N}},
        "reference": {"kind": "holdout", "rows": N, "window": ["a", "b"], "training_set": "t"},
        "thresholds": CFG.model_dump(),
        "drift": findings.data.to_dict(),  # type: ignore[attr-defined]
        "prediction": None,
        "alert_rate": {"reference": 0.01, "current": 0.02},
        "performance": _no_performance().to_dict(),
        "signals": [{"kind": "drift", "status": "emitted", "detail": "d", "path": "p"}],
    }
    drifted = findings.data.feature("amount_log")  # type: ignore[attr-defined]
    fig = report.feature_histogram(drifted, np.ones(10), np.ones(10) * 2)
    page = report.write_report(
        tmp_path / "run", summary, {"features": [report.to_png(fig)], "scores": None}
    )
    html = page.read_text()
    assert "amount_log" in html
    assert "DRIFTED" in html
    assert "data:image/png;base64," in html
    assert "<script" not in html
    assert "http://" not in html
    assert "https://" not in html
    assert (tmp_path / "latest.html").read_text() == html
    assert report.latest(tmp_path)["champion_version"] == "3"  # type: ignore[index]


# ------------------------------------------------------------------ config, log reader


def test_monitoring_config_loads_and_rejects_unknown_keys(tmp_path: Path) -> None:
    cfg = load_monitoring_config()
    assert cfg.drift.psi_warn < cfg.drift.psi_alert
    bad = tmp_path / "monitoring.yaml"
    bad.write_text("drift:\n  psi_alrt: 0.3\n")
    with pytest.raises(ConfigError, match="psi_alrt"):
        load_yaml_model(MonitoringConfig, bad)
    bad.write_text("drift:\n  psi_warn: 0.5\n  psi_alert: 0.2\n")
    with pytest.raises(ConfigError, match="psi_warn"):
        load_yaml_model(MonitoringConfig, bad)


def _log_part(day: str, source: str, ids: list[str], logged: str) -> pd.DataFrame:
    n = len(ids)
    frame = pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(n)],
            "logged_at": pd.Timestamp(logged, tz="UTC"),
            "event_timestamp": pd.Timestamp(day, tz="UTC"),
            "transaction_id": ids,
            "card_id": np.arange(n),
            "merchant_id": np.arange(n),
            "model_version": "1",
            "score": 0.1,
            "decision": False,
            "threshold": 0.3,
            "unknown_card": False,
            "unknown_merchant": False,
            "feature_age_s": 1.0,
            "latency_ms": 2.0 if source == "api" else np.nan,
            "source": source,
        }
    )
    for column in MODEL_FEATURES:
        frame[column] = pd.array(np.arange(n), dtype="Int64")  # nullable ints in one file
    for column in CATEGORICAL_FEATURES:
        frame[column] = "x"
    return frame


def test_read_predictions_merges_api_log_and_batch_scores(tmp_path: Path) -> None:
    paths = StatePaths(root=tmp_path)
    api = tmp_path / "serving" / "predictions" / "date=2026-01-09"
    api.mkdir(parents=True)
    _log_part("2026-01-09", "api", ["a", "b"], "2026-01-09T01:00").to_parquet(
        api / "part-0001.parquet"
    )
    batch = tmp_path / "scores" / "date=2026-01-09"
    batch.mkdir(parents=True)
    _log_part("2026-01-09", "batch", ["b", "c", "d"], "2026-01-10T03:00").to_parquet(
        batch / "scores.parquet"
    )
    older = tmp_path / "scores" / "date=2026-01-08"
    older.mkdir(parents=True)
    _log_part("2026-01-08", "batch", ["z"], "2026-01-09T03:00").to_parquet(older / "scores.parquet")
    assert served.prediction_days(paths) == [dt.date(2026, 1, 8), dt.date(2026, 1, 9)]
    everything = served.read_predictions(paths)
    assert len(everything) == 6
    assert list(everything.columns[: len(served.PREDICTION_COLUMNS)]) == list(
        served.PREDICTION_COLUMNS
    )
    assert everything["card_txn_count_1h"].dtype == "float64"
    last_day = served.read_predictions(paths, days=1)
    assert sorted(last_day["source"].value_counts().items()) == [("api", 2), ("batch", 3)]
    # one row per transaction, the API's answer winning over the batch score of "b"
    one = served.one_per_transaction(last_day)
    assert sorted(one["transaction_id"]) == ["a", "b", "c", "d"]
    assert one.set_index("transaction_id").loc["b", "source"] == "api"
    only = served.read_predictions(paths, days=[dt.date(2026, 1, 8)], columns=["score"])
    assert list(only.columns) == ["score", "event_timestamp"]
    assert len(only) == 1
    assert served.read_predictions(StatePaths(root=tmp_path / "none")).empty

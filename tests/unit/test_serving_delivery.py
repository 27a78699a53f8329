"""The delivery check's verdicts from given load figures and API answers (no service)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from fraud_detection.release.delivery import (
    Check,
    DeliveryReport,
    _predict_check,
    check_load,
    format_report,
)
from fraud_detection.release.loadtest import LoadResult, LoadTestError, read_bodies
from fraud_detection.serving.settings import DeliverySettings

pytestmark = pytest.mark.unit

BUDGETS = DeliverySettings(min_qps=100, max_p99_ms=50, max_error_rate=0.0)


def _load(rps: float, p99: float, statuses: dict[int, int], transport: int = 0) -> LoadResult:
    return LoadResult(
        url="http://127.0.0.1:1/predict",
        concurrency=8,
        processes=1,
        seconds=10.0,
        requests=sum(statuses.values()) + transport,
        requests_per_second=rps,
        latency_ms={"p50": p99 / 2, "p95": p99, "p99": p99, "max": p99, "mean": p99 / 2},
        status_counts=statuses,
        transport_errors=transport,
    )


def _failed_budgets(checks: list[Check]) -> list[str | None]:
    return [c.budget for c in checks if not c.passed]


def test_figures_within_every_budget_pass() -> None:
    checks = check_load(_load(rps=400, p99=20, statuses={200: 4000}), BUDGETS)

    assert all(c.passed for c in checks)


def test_each_missed_budget_is_named() -> None:
    assert _failed_budgets(check_load(_load(50, 20, {200: 500}), BUDGETS)) == ["min_qps"]
    assert _failed_budgets(check_load(_load(400, 80, {200: 4000}), BUDGETS)) == ["max_p99_ms"]
    one_5xx = _load(400, 20, {200: 3999, 500: 1})
    assert _failed_budgets(check_load(one_5xx, BUDGETS)) == ["max_error_rate"]
    refused = _load(0, float("nan"), {}, transport=12)
    assert set(_failed_budgets(check_load(refused, BUDGETS))) == {
        "min_qps",
        "max_p99_ms",
        "max_error_rate",
    }


def test_the_report_names_failed_budgets_and_the_summary_says_why() -> None:
    report = DeliveryReport(model="fraud-detector", version="3", url="x", started_at="t")
    report.checks = [Check("GET /health", True, "HTTP 200")]
    report.checks += check_load(_load(50, 20, {200: 500}), BUDGETS)
    report.report_path = "/state/serving/delivery/v3.json"

    lines = format_report(report)

    assert not report.passed
    assert lines[0].startswith("delivery check of fraud-detector v3: FAILED")
    assert any(line.startswith("  FAIL load: throughput") for line in lines)
    assert "  failed budget(s): min_qps (configs/serving.yaml delivery:)" in lines
    assert "[min_qps]" in report.summary()
    assert json.loads(json.dumps(report.to_dict()))["passed"] is False


def _answer(status: int, body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(status, json=body)


def test_a_prediction_must_come_from_the_champion_and_be_a_probability() -> None:
    body = {
        "request_id": "r",
        "score": 0.2,
        "decision": False,
        "threshold": 0.3,
        "model_version": "3",
    }

    assert _predict_check(_answer(200, body), "3").passed
    assert "champion is v4" in _predict_check(_answer(200, body), "4").detail
    assert not _predict_check(_answer(200, {**body, "score": 1.5}), "3").passed
    assert not _predict_check(_answer(200, {"score": 0.1}), "3").passed
    assert "HTTP 503" in _predict_check(_answer(503, {"detail": "x"}), "3").detail


def test_request_bodies_are_read_from_json_or_json_lines(tmp_path: Path) -> None:
    listed, lines, bad = tmp_path / "a.json", tmp_path / "b.jsonl", tmp_path / "c.json"
    listed.write_text(json.dumps([{"card_id": 1}, {"card_id": 2}]))
    lines.write_text('{"card_id": 1}\n{"card_id": 2}\n')
    bad.write_text("[1, 2]")

    assert read_bodies(str(listed)) == read_bodies(str(lines)) == [{"card_id": 1}, {"card_id": 2}]
    with pytest.raises(LoadTestError, match="JSON objects"):
        read_bodies(str(bad))

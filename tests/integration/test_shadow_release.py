"""The staged release's shadow period: the live service scores every request with the
delivered challenger too, answers with the champion, and ``fraud model shadow-check``
promotes, waits for approval or blocks on what the prediction log shows.

The app runs in process (FastAPI's TestClient) on a served world (champion version 1).
The delivery check itself (a service of its own and a load test, ~30 s) is covered by
``tests/integration/test_release.py``; here its report is given, passed or failed, so
these tests are about what happens after it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from fraud_detection.config import StatePaths
from fraud_detection.registry import tracking
from fraud_detection.release.delivery import Check, DeliveryReport
from fraud_detection.serving.app import create_app
from fraud_detection.serving.schemas import requests_from_raw
from fraud_detection.serving.settings import load_serving_config
from tests.conftest import fraud_in_process
from tests.worlds import served_world, train_version

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "fraud-detector"
WINDOW = 120  # requests in the shadow window (serving.release.shadow.min_requests)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> StatePaths:
    return served_world(tmp_path_factory.mktemp("shadow"))


@pytest.fixture(scope="module")
def bodies(world: StatePaths) -> list[dict[str, Any]]:
    last = sorted(world.raw.glob("date=*/transactions.parquet"))[-1]
    return requests_from_raw(pd.read_parquet(last).head(1_200))


@pytest.fixture(autouse=True)
def staged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Staged release, a short shadow window with a latency bound a loaded machine meets."""
    monkeypatch.setenv("FRAUD_SERVING__RELEASE__STAGED", "true")
    monkeypatch.setenv("FRAUD_SERVING__RELEASE__SHADOW__MIN_REQUESTS", str(WINDOW))
    monkeypatch.setenv("FRAUD_SERVING__RELEASE__SHADOW__MAX_P99_MS", "200")


@contextmanager
def serving(world: StatePaths, canary_share: float = 0.0) -> Iterator[TestClient]:
    """The live service (the prediction log is flushed when it stops)."""
    config = load_serving_config(
        overrides={"reload_interval_s": 0.2, "release": {"canary_share": canary_share}}
    )
    with TestClient(create_app(world.root, config=config)) as client:
        yield client


def _shadow_version(client: TestClient) -> str | None:
    shadow = client.get("/ready").json()["shadow"]
    return None if shadow is None else shadow["model_version"]


def _await_shadow(client: TestClient, version: str) -> None:
    deadline = time.monotonic() + 30
    while _shadow_version(client) != version:
        assert time.monotonic() < deadline, client.get("/ready").json()
        time.sleep(0.1)


def _delivery(passed: bool) -> Any:
    """A delivery check that reports ``passed`` for the challenger, without running."""

    def run(**_kwargs: Any) -> DeliveryReport:
        challenger = tracking.challenger(MODEL)
        assert challenger is not None
        version = str(challenger.version)
        report = DeliveryReport(MODEL, version, "(given)", "2026-01-01T00:00:00+00:00")
        report.checks.append(
            Check(
                "load test",
                passed,
                "ok" if passed else "p99 900 ms",
                None if passed else "max_p99_ms",
            )
        )
        report.load = {
            "requests": 5_000,
            "requests_per_second": 500.0,
            "latency_ms": {"p50": 2.0, "p99": 4.0},
            "concurrency": 8,
            "status_counts": {"200": 5_000},
        }
        return report

    return run


def _release(
    world: StatePaths,
    version: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *,
    passed: bool = True,
) -> tuple[int, str, str]:
    """Gate-approved ``version`` through ``fraud model release`` with the given delivery."""
    tracking.set_version_tags(MODEL, version, {"gate.promote": "true"})
    monkeypatch.setattr("fraud_detection.release.challenger.run_delivery_check", _delivery(passed))
    return fraud_in_process(capsys, "model", "release", "--state-dir", str(world.root))


def _inverted(frame: pd.DataFrame) -> Any:
    """The template's model trained on flipped labels: its scores are the champion's
    inverted, so it disagrees on nearly every decision."""
    from fraud_detection.training.model import train
    from fraud_detection.training.settings import load_train_config

    return train(frame.assign(is_fraud=1 - frame["is_fraud"]), load_train_config().model)


def _log(world: StatePaths) -> pd.DataFrame:
    files = sorted((world.root / "serving" / "predictions").glob("date=*/part-*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def _champion() -> str:
    current = tracking.champion(MODEL)
    assert current is not None
    return str(current.version)


def test_a_challenger_that_fails_delivery_never_takes_traffic(
    world: StatePaths,
    bodies: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a gate-approved challenger whose delivery check fails
    version = train_version(world, seed=2)
    code, out, err = _release(world, version, capsys, monkeypatch, passed=False)
    assert code == 1, out + err
    assert f"version {version} stays challenger" in err
    # When the service runs with a canary share and takes requests
    with serving(world, canary_share=0.5) as client:
        time.sleep(1.0)  # several polls of the challenger alias
        answers = [client.post("/predict", json=b).json() for b in bodies[:60]]
        shadow = client.get("/ready").json()["shadow"]
    # Then it is neither scored in shadow, nor answers a canary, nor champion
    assert {a["model_version"] for a in answers} == {"1"}
    assert shadow["model_version"] is None
    assert shadow["challenger_alias"] is None  # the alias's version is not in shadow
    logged = _log(world)
    assert version not in set(logged["model_version"]) | set(logged["shadow_version"].dropna())
    assert _champion() == "1"
    assert tracking.version_info(MODEL, version)["tags"]["release.stage"] == "blocked"


def test_disagreement_in_shadow_blocks_promotion_and_a_failing_challenger_fails_no_request(
    world: StatePaths,
    bodies: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a challenger with inverted scores, delivered: in shadow
    version = train_version(world, seed=3, fit=_inverted)
    code, out, err = _release(world, version, capsys, monkeypatch)
    assert code == 0, out + err
    assert f"in shadow: version {version} is scored beside champion version 1" in out
    with serving(world) as client:
        _await_shadow(client, version)
        # When the window's requests are scored
        answers = [client.post("/predict", json=b) for b in bodies[:WINDOW]]
        # and then the challenger fails on every request
        service = client.app.state.service  # type: ignore[attr-defined]
        shadow = service.shadow.current
        service.shadow.current = dataclasses.replace(shadow, scorer=_Broken())
        failing = [client.post("/predict", json=b) for b in bodies[WINDOW : WINDOW + 5]]
        batch = client.post(
            "/predict/batch", json={"transactions": bodies[WINDOW + 5 : WINDOW + 9]}
        )
        counters = client.get("/ready").json()["shadow"]["counters"]
    # Then every request was answered by the champion, the failures too
    assert {r.status_code for r in answers + failing + [batch]} == {200}
    assert {r.json()["model_version"] for r in answers + failing} == {"1"}
    assert {p["model_version"] for p in batch.json()["predictions"]} == {"1"}
    assert counters["failed"] == 9
    # and the log has both models' scores, the failed ones NaN
    logged = _log(world)
    rows = logged[logged["shadow_version"] == version]
    assert len(rows) == WINDOW + 9
    assert set(rows["route"]) == {"shadow"}
    assert rows["shadow_score"].isna().sum() == 9
    assert (rows["shadow_ms"] >= 0).all()
    assert set(rows["status"]) == {200}
    # When the shadow window is judged
    code, out, err = fraud_in_process(
        capsys, "model", "shadow-check", "--state-dir", str(world.root)
    )
    # Then the challenger is blocked, the reason in one line naming the agreement
    assert code == 1, out + err
    assert len(err.strip().splitlines()) == 1, err
    assert "below min_agreement 0.99" in err
    assert "error rate" in err
    assert _champion() == "1"
    tags = tracking.version_info(MODEL, version)["tags"]
    assert tags["release.stage"] == "blocked"
    assert "agreement" in tags["release.blocked"]
    # and the service no longer scores it
    with serving(world) as client:
        time.sleep(0.6)
        assert _shadow_version(client) is None
        assert client.post("/predict", json=bodies[0]).json()["model_version"] == "1"


class _Broken:
    """A scorer that fails: the challenger breaking in production."""

    def score_one(self, *_args: Any) -> float:
        raise RuntimeError("challenger broke")

    def encode(self, *_args: Any) -> Any:
        raise RuntimeError("challenger broke")

    def predict(self, *_args: Any) -> Any:
        raise RuntimeError("challenger broke")


def test_agreement_awaits_approval_in_production_then_approve_promotes_it(
    world: StatePaths,
    bodies: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the production profile's rule: a person approves
    monkeypatch.setenv("FRAUD_PROFILE__SERVING__RELEASE_APPROVAL", "manual")
    champion = _champion()
    # and a challenger that scores like the champion (same data and seed), in shadow
    version = train_version(world, seed=1)
    assert _release(world, version, capsys, monkeypatch)[0] == 0
    state = ["--state-dir", str(world.root)]
    with serving(world) as client:
        _await_shadow(client, version)
        # When fewer requests than the window are scored, the check waits
        for body in bodies[:20]:
            assert client.post("/predict", json=body).status_code == 200
    code, out, err = fraud_in_process(capsys, "model", "shadow-check", *state)
    assert code == 0, out + err
    assert f"still in shadow: shadow window not full: 20 of min_requests {WINDOW}" in out
    # When the whole window is scored
    with serving(world) as client:
        for body in bodies[20 : WINDOW + 10]:
            assert client.post("/predict", json=body).json()["model_version"] == champion
    code, out, err = fraud_in_process(capsys, "model", "shadow-check", *state)
    # Then it passed, and awaits approval: nothing moved
    assert code == 0, out + err
    assert f"awaiting approval: version {version} passed its shadow window" in out
    assert "agreement 1.000" in out
    assert _champion() == champion
    assert tracking.version_info(MODEL, version)["tags"]["release.stage"] == "awaiting_approval"
    # When a version other than the challenger is approved, it is refused
    code, _, err = fraud_in_process(
        capsys, "model", "approve", "--version", champion, "--reason", "x", *state
    )
    assert code == 2, err
    assert "is not the challenger" in err
    # When it is approved
    code, out, err = fraud_in_process(
        capsys, "model", "approve", "--version", version, "--reason", "shadow clean", *state
    )
    # Then it is the champion, audited on the version and in the ledger
    assert code == 0, out + err
    assert f"promoted: version {version} is the champion (approved by " in out
    assert _champion() == version
    tags = tracking.version_info(MODEL, version)["tags"]
    assert tags["release.stage"] == "promoted"
    assert tags["release.approval_reason"] == "shadow clean"
    assert "@" in tags["release.approved_by"]
    record = json.loads((world.root / "ct" / "runs.jsonl").read_text().splitlines()[-1])
    assert record["outcome"] == "promoted"
    assert record["model_gate"] == f"released v{version} after shadow"
    assert tracking.challenger(MODEL) is None


def test_agreement_promotes_automatically_in_level_1_and_a_canary_answers_its_share(
    world: StatePaths,
    bodies: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    champion = _champion()
    # Given a challenger that scores like the champion, in shadow, with a canary of 25 %
    version = train_version(world, seed=1)
    assert _release(world, version, capsys, monkeypatch)[0] == 0
    share, n = 0.25, 800
    with serving(world, canary_share=share) as client:
        _await_shadow(client, version)
        # When transactions are scored, and some of them retried
        answers = [client.post("/predict", json=b).json() for b in bodies[:n]]
        retried = [client.post("/predict", json=b).json() for b in bodies[:50]]
        batch = client.post("/predict/batch", json={"transactions": bodies[n : n + 40]}).json()
    # Then about the share is answered by the challenger, the same model for a retry
    by_challenger = [a["model_version"] == version for a in answers]
    assert {a["model_version"] for a in answers} == {champion, version}
    assert abs(np.mean(by_challenger) - share) < 0.06, np.mean(by_challenger)
    assert [a["model_version"] for a in retried] == [a["model_version"] for a in answers[:50]]
    assert {p["model_version"] for p in batch["predictions"]} <= {champion, version}
    # and the log says which model answered and has the other's score beside it
    logged = _log(world)
    canary = logged[(logged["route"] == "canary") & (logged["model_version"] == version)]
    assert len(canary) == sum(by_challenger) + sum(
        a["model_version"] == version for a in retried
    ) + sum(p["model_version"] == version for p in batch["predictions"])
    assert (canary["shadow_version"] == champion).all()
    # When the window is judged (local profile: automatic promotion)
    code, out, err = fraud_in_process(
        capsys, "model", "shadow-check", "--state-dir", str(world.root)
    )
    # Then the challenger is the champion
    assert code == 0, out + err
    assert f"promoted: version {version} is the champion (shadow agreement 1.000" in out
    assert _champion() == version
    assert tracking.version_info(MODEL, version)["tags"]["release.stage"] == "promoted"
    # and the service answers with it, with no challenger left in shadow
    with serving(world) as client:
        assert client.post("/predict", json=bodies[0]).json()["model_version"] == version
        assert _shadow_version(client) is None


def test_a_request_answered_5xx_is_in_the_error_log(
    world: StatePaths, bodies: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fraud_detection.operations import evidence, health
    from fraud_detection.serving.service import Predictor

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("boom")

    with serving(world) as client:
        ok = client.post("/predict", json=bodies[1])
        monkeypatch.setattr(Predictor, "predict", broken)
        failed = client.post("/predict", json=bodies[2])
    assert (ok.status_code, failed.status_code) == (200, 500)
    assert failed.json() == {"detail": "internal error: RuntimeError"}
    errors = pd.concat(
        pd.read_parquet(f) for f in (world.root / "serving" / "errors").glob("date=*/*.parquet")
    )
    assert list(errors["status"]) == [500]
    assert list(errors["transaction_id"]) == [bodies[2]["transaction_id"]]
    figures = health.measure(ledger=[], predictions=evidence.prediction_log(world.root))
    assert figures.error_rate is not None
    assert 0 < figures.error_rate < 0.01

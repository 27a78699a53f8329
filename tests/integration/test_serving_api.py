"""The prediction API on a served world: responses, errors, limits, key, log, features.

One world per module (data, online store, champion v1, ~30 s); one app and client shared
by the tests that only read.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from fraud_detection.config import ServingSettings, StatePaths, load_profile
from fraud_detection.features.engineering import MODEL_FEATURES
from fraud_detection.serving.app import ServingError, create_app, predictions_folder
from fraud_detection.serving.schemas import requests_from_raw
from fraud_detection.serving.settings import load_serving_config
from tests.worlds import served_world

pytestmark = pytest.mark.integration

MAX_BODY = 16_384
MAX_ROWS = 20


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> StatePaths:
    return served_world(tmp_path_factory.mktemp("served"))


def _config() -> Any:
    return load_serving_config(
        overrides={"max_body_bytes": MAX_BODY, "max_batch_rows": MAX_ROWS, "reload_interval_s": 60}
    )


@pytest.fixture(scope="module")
def client(world: StatePaths) -> Iterator[TestClient]:
    with TestClient(create_app(world.root, config=_config())) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def bodies(world: StatePaths) -> list[dict[str, Any]]:
    """Requests from the last simulated day (its cards have live online features)."""
    last = sorted(world.raw.glob("date=*/transactions.parquet"))[-1]
    return requests_from_raw(pd.read_parquet(last).head(200))


# ------------------------------------------------------------------ /predict


def test_predict_returns_score_decision_and_champion_version(
    client: TestClient, bodies: list[dict[str, Any]]
) -> None:
    response = client.post("/predict", json=bodies[0])
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= {
        "request_id", "score", "decision", "threshold", "model_version",
        "feature_age_seconds", "unknown_card", "unknown_merchant",
    }  # fmt: skip
    assert body["model_version"] == "1"
    assert 0 <= body["score"] <= 1
    assert body["decision"] == (body["score"] >= body["threshold"])
    assert body["transaction_id"] == bodies[0]["transaction_id"]
    assert body["unknown_card"] is False
    assert body["unknown_merchant"] is False
    assert isinstance(body["feature_age_seconds"], float)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": None}, "amount"),
        ({"amount": -3}, "amount"),
        ({"timestamp": "2026-01-08T10:00:00"}, "timestamp"),  # no time zone
        ({"channel": "carrier_pigeon"}, "channel"),
        ({"card_id": "abc"}, "card_id"),
        ({"latitude": 123.0}, "latitude"),
    ],
)
def test_malformed_request_gets_422_naming_the_field(
    client: TestClient, bodies: list[dict[str, Any]], change: dict[str, Any], field: str
) -> None:
    body = {**bodies[0], **change}
    if change.get(field, 0) is None:
        del body[field]
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["body", field]]


def test_unknown_card_and_merchant_are_flagged_not_500(
    client: TestClient, bodies: list[dict[str, Any]]
) -> None:
    unknown = {**bodies[0], "card_id": 987_654_321, "merchant_id": 123_456_789}
    response = client.post("/predict", json=unknown)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["unknown_card"] is True
    assert body["unknown_merchant"] is True
    assert body["feature_age_seconds"] is None
    assert 0 <= body["score"] <= 1
    # An unseen merchant category is scored too (the model's missing-value branch)
    odd = client.post("/predict", json={**bodies[0], "merchant_category": "space_travel"})
    assert odd.status_code == 200
    assert 0 <= odd.json()["score"] <= 1


def test_oversized_body_gets_413(client: TestClient, bodies: list[dict[str, Any]]) -> None:
    big = {"transactions": [bodies[0]] * 200}  # ~50 kB > MAX_BODY
    response = client.post("/predict/batch", json=big)
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]
    # Without a Content-Length (chunked), the limit holds as well
    chunks = (b"x" * 4096 for _ in range(10))
    chunked = client.post("/predict", content=chunks, headers={"content-type": "application/json"})
    assert chunked.status_code == 413


def test_batch_scores_in_order_and_limits_rows(
    client: TestClient, bodies: list[dict[str, Any]]
) -> None:
    batch = bodies[:10]
    response = client.post("/predict/batch", json={"transactions": batch})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["transaction_id"] for p in predictions] == [b["transaction_id"] for b in batch]
    assert response.json()["model_version"] == "1"
    # The batch path scores exactly like the one-row path
    single = [client.post("/predict", json=b).json()["score"] for b in batch[:3]]
    np.testing.assert_allclose([p["score"] for p in predictions[:3]], single, rtol=0, atol=1e-12)
    too_many = client.post("/predict/batch", json={"transactions": [bodies[0]] * (MAX_ROWS + 1)})
    assert too_many.status_code == 422
    assert too_many.json()["detail"][0]["loc"] == ["body", "transactions"]


# ------------------------------------------------------- /ready, /metadata, docs


def test_ready_and_metadata_describe_the_champion(client: TestClient) -> None:
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    assert ready.json()["model"]["model_version"] == "1"
    assert ready.json()["online_store"]["ok"] is True
    assert client.get("/health").json() == {"status": "ok"}

    meta = client.get("/metadata").json()
    assert meta["model_name"] == "fraud-detector"
    assert meta["model_version"] == "1"
    assert meta["feature_service"] == "fraud_model_v1"
    assert meta["run_id"]
    assert meta["loaded_at"]
    assert meta["threshold_source"] == "run"
    assert "lineage.git_commit" in meta["lineage"]
    assert "logged" in meta["prediction_log"]
    assert "dropped" in meta["prediction_log"]


def test_docs_page_and_openapi(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/predict", "/predict/batch", "/ready", "/metadata", "/health"} <= set(spec["paths"])


def test_not_ready_without_an_online_store(world: StatePaths, tmp_path: Path) -> None:
    # Given a state folder with the registry but no online store
    empty = tmp_path / "state"
    empty.mkdir()
    (empty / "mlflow").symlink_to(world.root / "mlflow")
    with TestClient(create_app(empty, config=_config())) as bare:
        ready = bare.get("/ready")
        assert ready.status_code == 503
        assert "fraud features materialize" in ready.json()["online_store"]["error"]
        body = requests_from_raw(pd.read_parquet(next(world.raw.glob("*/*.parquet"))).head(1))[0]
        response = bare.post("/predict", json=body)
        assert response.status_code == 503
        assert "online store" in response.json()["detail"]


# ------------------------------------------------------------------ API key


def test_api_key_required_by_the_profile(
    world: StatePaths, bodies: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = load_profile().model_copy(
        update={"serving": ServingSettings(api_key_required=True), "state_dir": world.root}
    )
    monkeypatch.delenv("FRAUD_API_KEY", raising=False)
    with pytest.raises(ServingError, match="FRAUD_API_KEY"):
        create_app(profile=profile, config=_config())

    monkeypatch.setenv("FRAUD_API_KEY", "s3cret")
    with TestClient(create_app(profile=profile, config=_config())) as keyed:
        assert keyed.post("/predict", json=bodies[0]).status_code == 401
        wrong = keyed.post("/predict", json=bodies[0], headers={"X-API-Key": "nope"})
        assert wrong.status_code == 401
        assert "X-API-Key" in wrong.json()["detail"]
        right = keyed.post("/predict", json=bodies[0], headers={"X-API-Key": "s3cret"})
        assert right.status_code == 200
        # probes need no key, and without it /ready says only ready or not, and why
        probe = keyed.get("/ready")
        assert probe.status_code == 200
        assert probe.json() == {
            "ready": True,
            "reason": None,
            "detail": "send the X-API-Key header for the model, store and log details",
        }
        full = keyed.get("/ready", headers={"X-API-Key": "s3cret"}).json()
        assert full["model"]["model_version"] == "1"
        assert full["online_store"]["ok"] is True
        spec = keyed.get("/openapi.json").json()
        assert "APIKeyHeader" in spec["components"]["securitySchemes"]


# ------------------------------------------------------------ prediction log


def test_prediction_log_has_one_row_per_request(
    world: StatePaths, bodies: list[dict[str, Any]]
) -> None:
    # Given N requests with their own transaction ids
    batch = [{**b, "transaction_id": f"LOGTEST-{i}"} for i, b in enumerate(bodies[:37])]
    with TestClient(create_app(world.root, config=_config())) as fresh:
        answers = [fresh.post("/predict", json=b).json() for b in batch]
    # When the service has shut down, the log holds exactly N rows for them
    files = sorted(predictions_folder(world).glob("date=*/part-*.parquet"))
    logged = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    mine = logged[logged["transaction_id"].str.startswith("LOGTEST-", na=False)]
    assert len(mine) == len(batch)
    mine = mine.set_index("request_id").loc[[a["request_id"] for a in answers]]
    assert (mine["model_version"] == "1").all()
    np.testing.assert_allclose(mine["score"], [a["score"] for a in answers], rtol=0, atol=0)
    assert (mine["source"] == "api").all()
    assert (mine["latency_ms"] > 0).all()
    # And the logged model inputs reproduce the score through the registered pipeline
    import mlflow.sklearn

    pipeline = mlflow.sklearn.load_model("models:/fraud-detector/1")
    again = pipeline.predict_proba(mine[[*MODEL_FEATURES, "merchant_category", "channel"]])[:, 1]
    np.testing.assert_allclose(again, mine["score"], rtol=0, atol=1e-9)


# ------------------------------------------------------- online features through Feast


def test_the_served_features_are_the_feature_services(world: StatePaths) -> None:
    from fraud_detection.features import store

    feast_store = store.open_store(world, apply=False)
    service = feast_store.get_feature_service(store.FEATURE_SERVICE)
    listed = [f.name for p in service.feature_view_projections for f in p.features]
    online = store.open_online(world, apply=False)
    assert online.features == listed
    assert set(MODEL_FEATURES) <= set(online.features)


def test_lookups_equal_the_feast_sdk(world: StatePaths, bodies: list[dict[str, Any]]) -> None:
    from fraud_detection.features import store

    # Given cards and merchants of the last day, plus unknown ones
    online = store.open_online(world, apply=False)
    feast_store = store.open_store(world, apply=False)
    keys = [(b["card_id"], b["merchant_id"]) for b in bodies[:30]] + [(10**9, 10**9)]
    at_us = int(pd.Timestamp(bodies[0]["timestamp"]).value // 1_000)

    # When the service reads them, and Feast's get_online_features reads the same views
    served = [online.read(card, merchant, at_us) for card, merchant in keys]
    refs = [
        "card_recent:recent_amounts",
        "card_recent:recent_timestamps_us",
        "card_profile:home_latitude",
        "merchant_risk:merchant_fraud_rate_30d",
    ]
    sdk = feast_store.get_online_features(
        features=refs, entity_rows=[{"card_id": c, "merchant_id": m} for c, m in keys]
    ).to_dict()

    # Then the values are Feast's own, known and unknown alike
    for i, row in enumerate(served):
        assert list(row.state.amounts) == list(sdk["recent_amounts"][i] or [])
        assert list(row.state.timestamps_us) == list(sdk["recent_timestamps_us"][i] or [])
        assert row.values["home_latitude"] == pytest.approx(
            sdk["home_latitude"][i] if sdk["home_latitude"][i] is not None else math.nan,
            nan_ok=True,
        )
    assert sum(len(row.state) > 0 for row in served) >= 25
    assert served[-1].unknown_card
    assert served[-1].unknown_merchant
    assert not served[0].unknown_card


def test_features_decay_and_batch_rows_expire_at_the_transaction_time(
    world: StatePaths, bodies: list[dict[str, Any]]
) -> None:
    from fraud_detection.features import store

    online = store.open_online(world, apply=False)
    card, merchant = bodies[0]["card_id"], bodies[0]["merchant_id"]
    at_us = int(pd.Timestamp(bodies[0]["timestamp"]).value // 1_000)
    now = online.read(card, merchant, at_us)
    later = online.read(card, merchant, at_us + 8 * 86_400 * 10**6)
    assert now.values["card_txn_count_7d"] > 0
    assert not math.isnan(now.values["merchant_fraud_rate_30d"])
    # 8 days on: the card's window is empty, merchant risk (TTL 2 d) expired, profile kept
    assert later.values["card_txn_count_7d"] == 0
    assert math.isnan(later.values["card_amount_mean_7d"])
    assert math.isnan(later.values["merchant_fraud_rate_30d"])
    assert not math.isnan(later.values["home_latitude"])
    assert later.unknown_card is False
    assert later.feature_age_s is None

"""Replay equality: what the running API served is, row for row, the training row.

Two held-back simulated days are replayed in timestamp order through a real
``fraud serve`` (its own process), the way transactions arrive in production: the first
day, then its partition arrives (CT's gate, feature tables, materialization), then the
second day, with CT rebuilding every feature table and re-materializing the online store
in the middle of it. Some requests are retried, at once and later. Afterwards the second
day's partition arrives too, and Feast's point-in-time join (the training-set code)
builds the training row of every replayed transaction. The feature vector the service
logged for each request must equal that row within 1e-9, and a retry must neither change
its answer nor count twice in the card's later features.

Run on the SQLite online store (local profile) and on Redis (production profile).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fraud_detection.config import StatePaths
from fraud_detection.features.engineering import MODEL_FEATURES
from tests.worlds import arrive, hold_back, rematerialize, simulate, train_version

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WORLD = {"days": 10, "rows_per_day": 1_500, "cards": 300, "merchants": 60}
REPLAYED = 2  # the last days, held back and replayed
RETRY_EVERY = 23  # this request is sent twice in a row
LATE_RETRY_EVERY = 37  # ... and this one again 60 requests later
LATE_BY = 60


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.services)])
def online_store(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        request.getfixturevalue("redis_profile")
    return str(request.param)


def _days(paths: StatePaths) -> list[dt.date]:
    return sorted(dt.date.fromisoformat(p.name[5:]) for p in paths.raw.glob("date=*"))


def _bodies(feed: Path, day: dt.date) -> list[dict[str, Any]]:
    from fraud_detection.serving.schemas import requests_from_raw

    raw = pd.read_parquet(feed / f"date={day.isoformat()}" / "transactions.parquet")
    return requests_from_raw(raw.sort_values("event_timestamp", kind="stable"))


def _replay(
    client: Any, bodies: list[dict[str, Any]], answers: dict[str, list[dict[str, Any]]]
) -> None:
    """POST every body in order; some twice at once, some again later."""
    late: dict[int, dict[str, Any]] = {}
    for i, body in enumerate(bodies):
        sends = [body] * (2 if i % RETRY_EVERY == 0 else 1)
        if i in late:
            sends.append(late.pop(i))
        for sent in sends:
            response = client.post("/predict", json=sent)
            assert response.status_code == 200, response.text
            answers.setdefault(sent["transaction_id"], []).append(response.json())
        if i % LATE_RETRY_EVERY == 0:
            late[i + LATE_BY] = body
    for body in late.values():  # due after the day's end: send them now
        answers.setdefault(body["transaction_id"], []).append(
            client.post("/predict", json=body).json()
        )


def test_served_features_equal_the_training_rows(tmp_path: Path, online_store: str) -> None:
    import httpx

    from fraud_detection.features import store
    from fraud_detection.release.delivery import started_service
    from fraud_detection.serving.app import predictions_folder

    # Given a champion trained on the first days; the last two have not arrived yet
    paths = simulate(tmp_path / "state", **WORLD)
    feed = tmp_path / "feed"
    first, second = _days(paths)[-REPLAYED:]
    hold_back(paths, [first, second], feed)
    train_version(paths, promote=True)
    bodies_first, bodies_second = _bodies(feed, first), _bodies(feed, second)
    half = len(bodies_second) // 2

    # When both days are replayed through the running service, in timestamp order, with
    # the first day arriving between them and CT re-materializing during the second
    answers: dict[str, list[dict[str, Any]]] = {}
    log = tmp_path / "serve.log"
    with (
        started_service(paths.root, log, 180.0, lambda _: None) as base,
        httpx.Client(base_url=base, timeout=30.0) as client,
    ):
        _replay(client, bodies_first, answers)
        arrive(paths, [first], feed)
        _replay(client, bodies_second[:half], answers)
        rematerialize(paths)
        _replay(client, bodies_second[half:], answers)
        ready = client.get("/ready").json()
    assert ready["online_store"]["type"] == online_store
    assert ready["online_store"]["state_updates"]["failed"] == 0

    # Then a retried transaction got the same answer every time
    replayed = {b["transaction_id"] for b in bodies_first + bodies_second}
    assert set(answers) == replayed
    retried = {tid: got for tid, got in answers.items() if len(got) > 1}
    assert len(retried) > 50
    for got in retried.values():
        assert {(a["score"], a["model_version"]) for a in got} == {
            (got[0]["score"], got[0]["model_version"])
        }

    # And every logged feature vector equals the point-in-time training row of its
    # transaction (the second day arrives first, so that its training rows exist)
    arrive(paths, [second], feed)
    logged = pd.read_parquet(predictions_folder(paths))
    assert len(logged) == sum(len(got) for got in answers.values())
    raw = store.read_transactions(paths, [first, second])
    feast_store = store.open_store(paths)
    training = store.historical_features(feast_store, store.entity_rows(raw))
    training = training.set_index("transaction_id")[list(MODEL_FEATURES)]
    served = logged.set_index("transaction_id")[list(MODEL_FEATURES)]
    expected = training.loc[served.index]
    assert len(expected) == len(served) > 2_500
    for name in MODEL_FEATURES:
        got = served[name].to_numpy(dtype=float)
        want = expected[name].to_numpy(dtype=float)
        same = np.isclose(got, want, rtol=1e-9, atol=1e-9) | (np.isnan(got) & np.isnan(want))
        bad = np.flatnonzero(~same)
        assert not len(bad), (
            f"{name}: {len(bad)} of {len(got)} served rows differ from training, e.g. "
            f"{served.index[bad[0]]}: served {got[bad[0]]!r}, training {want[bad[0]]!r}"
        )

    # The replay had what carries the fraud signal: bursts, and cards active both days
    assert (expected["card_txn_count_1h"] >= 2).sum() >= 20
    assert (expected["card_txn_count_24h"] >= 3).sum() >= 100
    assert (expected["card_new_merchants_24h"] >= 1).sum() >= 100

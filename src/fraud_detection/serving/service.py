"""Scoring a transaction: online features, request-time features, the champion.

The steps of one prediction, the same for ``POST /predict`` and ``POST /predict/batch``:

1. read the card and the merchant through Feast's online store
   (:class:`~fraud_detection.features.online.OnlineFeatures`): the batch features as
   stored, and the card window features computed from the card's state as of the
   transaction's time, by the function that built the training rows; ``unknown_card`` /
   ``unknown_merchant`` when the store has never seen them;
2. compute the request-time features with ``engineering.request_feature_arrays``, the
   code that built the training sets;
3. score with the champion's scorer (:mod:`.scorer`) and apply its threshold;
4. append the transaction to the card's online state, so the card's next request sees
   it (a retried ``transaction_id`` is not counted twice), and queue a record for the
   prediction log (:mod:`.predlog`).

Steps 1 to 4 of one card hold the state writers' lock, so concurrent requests (the API
runs them in worker threads) and a re-materializing CT run never lose each other's
updates. A failed read raises :class:`~fraud_detection.features.online.OnlineStoreError`
(the API answers 503); a failed state write is counted and logged, and the score is
still returned, unless the write failed because the store stayed locked
(:class:`~fraud_detection.features.online.OnlineStoreBusy`): that is raised too, after
being counted, so the client retries (a retry is not counted twice) instead of the card's
state silently missing the transaction.

With a challenger in shadow (a staged release, :mod:`.champion`'s ``in_shadow``), step 3
scores the request with it too, after the state lock is released, and the log record says
so (``route``, ``shadow_*``): the champion answers (``shadow``), or, for the
``canary_share`` of transactions picked by a hash of their id (:func:`canary`, so a retry
gets the same model), the challenger answers and the champion is the one logged beside it
(``canary``). A challenger that fails to score never fails the request: its score is
logged as NaN and the champion answers. Without a challenger nothing of this runs.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fraud_detection.features.engineering import (
    MODEL_FEATURES,
    REQUEST_FEATURES,
    request_feature_arrays,
)
from fraud_detection.features.online import (
    CardState,
    OnlineFeatures,
    OnlineRow,
    OnlineStoreBusy,
    OnlineStoreError,
    transaction_key,
)
from fraud_detection.serving.champion import ServedModel
from fraud_detection.serving.predlog import PredictionLog, Record
from fraud_detection.serving.schemas import Transaction

__all__ = ["Predictor", "ShadowCounters", "StateUpdates", "canary", "model_inputs"]

log = logging.getLogger(__name__)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_US = dt.timedelta(microseconds=1)
_LOOKED_UP = tuple(name for name in MODEL_FEATURES if name not in REQUEST_FEATURES)
_HASH_SPAN = float(2**53)


def canary(key: int, share: float) -> bool:
    """Whether the transaction of ``key`` (``online.transaction_key``: a hash of its id, or
    of what it is when it has none) is answered by the challenger: the same answer for a
    retried request, in every process, for about ``share`` of the transactions."""
    return share > 0 and (key & (2**53 - 1)) / _HASH_SPAN < share


def _micros(stamp: dt.datetime) -> int:
    return (stamp - _EPOCH) // _ONE_US


def model_inputs(
    transactions: Sequence[Transaction], rows: Sequence[OnlineRow]
) -> list[list[float]]:
    """Every MODEL_FEATURE (looked up or computed from the card state, then computed at
    request time) of each transaction: floats, NaN when missing; request-time integers
    as ints."""
    n = len(transactions)
    request = request_feature_arrays(
        amount=np.fromiter((t.amount for t in transactions), np.float64, n),
        timestamp_us=np.fromiter((_micros(t.timestamp) for t in transactions), np.int64, n),
        channel=np.array([t.channel for t in transactions], dtype=object),
        latitude=np.fromiter((t.latitude for t in transactions), np.float64, n),
        longitude=np.fromiter((t.longitude for t in transactions), np.float64, n),
        card_amount_mean_7d=np.fromiter(
            (r.values["card_amount_mean_7d"] for r in rows), np.float64, n
        ),
        home_latitude=np.fromiter((r.values["home_latitude"] for r in rows), np.float64, n),
        home_longitude=np.fromiter((r.values["home_longitude"] for r in rows), np.float64, n),
    )
    computed = [request[name].tolist() for name in REQUEST_FEATURES]
    return [
        [row.values[name] for name in _LOOKED_UP] + [column[i] for column in computed]
        for i, row in enumerate(rows)
    ]


@dataclass
class StateUpdates:
    """How the card-state writes went (``/ready`` shows these)."""

    written: int = 0
    failed: int = 0
    last_error: str | None = None
    last_failed_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "written": self.written,
            "failed": self.failed,
            "last_error": self.last_error,
            "last_failed_at": self.last_failed_at,
        }


@dataclass
class ShadowCounters:
    """How the challenger's scoring went (``/ready`` shows these)."""

    scored: int = 0
    failed: int = 0
    canary: int = 0
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "scored": self.scored,
            "failed": self.failed,
            "canary_answers": self.canary,
            "last_error": self.last_error,
        }


@dataclass(frozen=True)
class _Beside:
    """The model scored beside the answer, for the log record."""

    route: str  # shadow | canary
    version: str
    score: float
    threshold: float
    ms: float


class Predictor:
    """Scores transactions with the watcher's current model, keeps the card states up to
    date and logs each prediction."""

    def __init__(
        self,
        online: OnlineFeatures,
        prediction_log: PredictionLog | None = None,
    ) -> None:
        missing = [name for name in _LOOKED_UP if name not in online.features]
        if missing:
            raise OnlineStoreError(
                f"the feature service {online.service_name!r} does not serve "
                f"{', '.join(missing)}, which the model is trained on"
            )
        self.online = online
        self.log = prediction_log
        self.updates = StateUpdates()
        self.shadow = ShadowCounters()
        self._counter_lock = threading.Lock()

    @staticmethod
    def _event(txn: Transaction) -> tuple[int, float, int, int]:
        t_us = _micros(txn.timestamp)
        key = transaction_key(txn.transaction_id, txn.card_id, t_us, txn.merchant_id, txn.amount)
        return (t_us, txn.amount, txn.merchant_id, key)

    def _write(self, items: list[tuple[int, CardState]]) -> None:
        try:
            written = self.online.write_states(items)
        except OnlineStoreError as exc:
            with self._counter_lock:
                self.updates.failed += len(items)
                self.updates.last_error = str(exc)
                self.updates.last_failed_at = dt.datetime.now(dt.UTC).isoformat()
            log.warning("card state update failed for %d card(s): %s", len(items), exc)
            if isinstance(exc, OnlineStoreBusy):
                raise
            return
        with self._counter_lock:
            self.updates.written += written

    def predict(
        self,
        model: ServedModel,
        txn: Transaction,
        started: float,
        deadline: float | None = None,
        *,
        nowait: bool = False,
        shadow: ServedModel | None = None,
        canary_share: float = 0.0,
    ) -> dict[str, Any]:
        """The response body of one transaction (and its log record). ``deadline``
        (``time.monotonic()``): give up waiting for the state lock then
        (:class:`~fraud_detection.features.online.OnlineStoreBusy`). ``nowait``: never
        wait for a lock (:class:`~fraud_detection.features.online.StoreWouldBlock`,
        nothing written nor logged: call again without it, off the event loop).
        ``shadow``: the challenger, scored too (see the module); it answers the
        ``canary_share`` of transactions."""
        event = self._event(txn)
        categories = (txn.merchant_category, txn.channel)
        with self.online.writing(deadline, nowait=nowait):
            row = self.online.read(txn.card_id, txn.merchant_id, event[0])
            features = model_inputs((txn,), (row,))[0]
            numbers = [features[i] for i in model.feature_index]
            took = time.perf_counter()
            score = model.scorer.score_one(numbers, categories)
            took = (time.perf_counter() - took) * 1e3
            t_us, amount, merchant, key = event
            updated = row.state.with_events([t_us], [amount], [merchant], [key])
            if updated is not None:
                self._write([(txn.card_id, updated)])
        if shadow is None:
            return self._respond(model, txn, row, features, score, started, "api")
        other, other_ms = self._score_shadow(shadow, features, categories)
        beside = self._route(model, score, took, shadow, other, other_ms, key, canary_share)
        if beside.route == "canary":
            return self._respond(shadow, txn, row, features, other, started, "api", beside)
        return self._respond(model, txn, row, features, score, started, "api", beside)

    def _score_shadow(
        self, shadow: ServedModel, features: list[Any], categories: tuple[str | None, ...]
    ) -> tuple[float, float]:
        """The challenger's score of one row and its time (ms); NaN when it fails."""
        started = time.perf_counter()
        error = None
        try:
            numbers = [features[i] for i in shadow.feature_index]
            score = float(shadow.scorer.score_one(numbers, categories))
        except Exception as exc:  # the challenger must never fail the live answer
            score, error = math.nan, f"{type(exc).__name__}: {exc}"
        took = (time.perf_counter() - started) * 1e3
        if not 0.0 <= score <= 1.0:  # NaN included
            score = math.nan
            self._shadow_failed(shadow, error or "score not a probability", 1)
        return score, took

    def _shadow_failed(self, shadow: ServedModel, error: str, rows: int) -> None:
        with self._counter_lock:
            first = self.shadow.failed == 0
            self.shadow.failed += rows
            self.shadow.last_error = error
        if first:
            log.warning(
                "challenger version %s failed to score in shadow: %s", shadow.version, error
            )

    def _route(
        self,
        model: ServedModel,
        score: float,
        took_ms: float,
        shadow: ServedModel,
        other: float,
        other_ms: float,
        key: int,
        canary_share: float,
    ) -> _Beside:
        """Who answers (a canary only when the challenger did score) and what is logged
        beside the answer."""
        with self._counter_lock:
            self.shadow.scored += 1
            if other == other and canary(key, canary_share):
                self.shadow.canary += 1
                return _Beside("canary", model.version, score, model.threshold, took_ms)
        return _Beside("shadow", shadow.version, other, shadow.threshold, other_ms)

    def predict_many(
        self,
        model: ServedModel,
        transactions: Sequence[Transaction],
        started: float,
        deadline: float | None = None,
        *,
        shadow: ServedModel | None = None,
        canary_share: float = 0.0,
    ) -> list[dict[str, Any]]:
        """Response bodies of several transactions, in order, scored in one model call.

        A transaction sees the earlier ones of its card in the same batch, as if they had
        come one by one; each card's state is written once at the end. ``shadow``: as
        :meth:`predict`, the challenger scoring the batch in one call of its own.
        """
        states: dict[int, CardState] = {}
        changed: set[int] = set()
        rows: list[OnlineRow] = []
        with self.online.writing(deadline):
            for txn in transactions:
                event = self._event(txn)
                state = states.get(txn.card_id)
                if state is None:
                    state = self.online.read_state(txn.card_id)
                rows.append(self.online.read(txn.card_id, txn.merchant_id, event[0], state))
                t_us, amount, merchant, key = event
                updated = state.with_events([t_us], [amount], [merchant], [key])
                if updated is not None:
                    state = updated
                    changed.add(txn.card_id)
                states[txn.card_id] = state
            if changed:
                self._write([(card, states[card]) for card in sorted(changed)])
        features = model_inputs(transactions, rows)
        numbers = np.asarray(features, dtype=np.float64)[:, list(model.feature_index)]
        categories: list[list[str | None]] = [
            [t.merchant_category for t in transactions],
            [t.channel for t in transactions],
        ]
        took = time.perf_counter()
        scores = model.scorer.predict(model.scorer.encode(numbers, categories)).tolist()
        if shadow is None:
            return [
                self._respond(model, t, r, f, s, started, "api")
                for t, r, f, s in zip(transactions, rows, features, scores, strict=True)
            ]
        took = (time.perf_counter() - took) * 1e3 / len(transactions)
        others, other_ms = self._score_shadow_many(shadow, features, categories)
        bodies = []
        for t, r, f, s, o in zip(transactions, rows, features, scores, others, strict=True):
            key = self._event(t)[3]
            beside = self._route(model, s, took, shadow, o, other_ms, key, canary_share)
            if beside.route == "canary":
                bodies.append(self._respond(shadow, t, r, f, o, started, "api", beside))
            else:
                bodies.append(self._respond(model, t, r, f, s, started, "api", beside))
        return bodies

    def _score_shadow_many(
        self, shadow: ServedModel, features: list[list[Any]], categories: list[list[str | None]]
    ) -> tuple[list[float], float]:
        """The challenger's scores of a batch (NaN where it fails) and its time per row."""
        started = time.perf_counter()
        error = None
        try:
            numbers = np.asarray(features, dtype=np.float64)[:, list(shadow.feature_index)]
            scores = np.asarray(
                shadow.scorer.predict(shadow.scorer.encode(numbers, categories)), dtype=np.float64
            )
            if scores.shape != (len(features),):
                raise ValueError(f"{scores.shape} scores for {len(features)} rows")
        except Exception as exc:  # the challenger must never fail the live answer
            scores, error = np.full(len(features), np.nan), f"{type(exc).__name__}: {exc}"
        took = (time.perf_counter() - started) * 1e3 / max(len(features), 1)
        bad = ~((scores >= 0.0) & (scores <= 1.0))
        if bad.any():
            scores[bad] = np.nan
            self._shadow_failed(shadow, error or "scores not probabilities", int(bad.sum()))
        return scores.tolist(), took

    def _respond(
        self,
        model: ServedModel,
        txn: Transaction,
        lookup: OnlineRow,
        features: list[Any],
        score: float,
        started: float,
        source: str,
        beside: _Beside | None = None,
    ) -> dict[str, Any]:
        request_id = uuid.uuid4().hex
        decision = score >= model.threshold
        age = lookup.feature_age_s
        body = {
            "request_id": request_id,
            "transaction_id": txn.transaction_id,
            "score": score,
            "decision": decision,
            "threshold": model.threshold,
            "model_version": model.version,
            "feature_age_seconds": age,
            "unknown_card": lookup.unknown_card,
            "unknown_merchant": lookup.unknown_merchant,
        }
        if self.log is not None:
            record: Record = (
                request_id,
                time.time_ns() // 1_000,
                _micros(txn.timestamp),
                txn.transaction_id,
                txn.card_id,
                txn.merchant_id,
                model.version,
                score,
                decision,
                model.threshold,
                lookup.unknown_card,
                lookup.unknown_merchant,
                age,
                (time.perf_counter() - started) * 1e3,
                source,
                200,
                *(
                    (None, None, None, None, None)
                    if beside is None
                    else (beside.route, beside.version, beside.score, beside.threshold, beside.ms)
                ),
                *[None if f != f else f for f in features],  # NaN -> null
                txn.merchant_category,
                txn.channel,
            )
            self.log.append(record)
        return body

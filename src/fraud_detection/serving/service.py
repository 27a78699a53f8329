"""Scoring a transaction: online features, request-time features, the champion.

The steps of one prediction, the same for ``POST /predict`` and ``POST /predict/batch``:

1. look the card and the merchant up in the online store (:mod:`.online`), with
   ``unknown_card`` / ``unknown_merchant`` when the store has never seen them (their
   features are then missing, which the model handles as a card's first transaction);
2. compute the request-time features with ``engineering.request_feature_arrays``, the
   code that built the training sets;
3. score with the champion's fast scorer (:mod:`.scorer`) and apply its threshold;
4. queue a record for the prediction log (:mod:`.predlog`).

No step raises for a valid :class:`~fraud_detection.serving.schemas.Transaction`.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

from fraud_detection.features.engineering import (
    CARD_FEATURES,
    MODEL_FEATURES,
    REQUEST_FEATURES,
    request_feature_arrays,
)
from fraud_detection.serving.champion import ServedModel
from fraud_detection.serving.online import LOOKED_UP, Lookup, OnlineStoreReader
from fraud_detection.serving.predlog import PredictionLog, Record
from fraud_detection.serving.schemas import Transaction

__all__ = ["Predictor", "model_inputs"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_US = dt.timedelta(microseconds=1)
# Where each looked-up MODEL_FEATURE sits in a Lookup's values.
_CARD_SLOTS = [LOOKED_UP.index(name) for name in CARD_FEATURES]
_MERCHANT_SLOT = LOOKED_UP.index("merchant_fraud_rate_30d")
_HOME = (LOOKED_UP.index("home_latitude"), LOOKED_UP.index("home_longitude"))
_MEAN = LOOKED_UP.index("card_amount_mean_7d")
assert (*CARD_FEATURES, "merchant_fraud_rate_30d", *REQUEST_FEATURES) == MODEL_FEATURES


def _micros(stamp: dt.datetime) -> int:
    return (stamp - _EPOCH) // _ONE_US


def model_inputs(
    transactions: Sequence[Transaction], lookups: Sequence[Lookup]
) -> tuple[list[list[float]], list[list[Any]]]:
    """Every MODEL_FEATURE (looked up, then computed at request time) of each transaction.

    Returns the rows of MODEL_FEATURES values (floats, NaN when missing; request-time
    integers as ints) and the request-time feature columns' raw values.
    """
    n = len(transactions)
    request = request_feature_arrays(
        amount=np.fromiter((t.amount for t in transactions), np.float64, n),
        timestamp_us=np.fromiter((_micros(t.timestamp) for t in transactions), np.int64, n),
        channel=np.array([t.channel for t in transactions], dtype=object),
        latitude=np.fromiter((t.latitude for t in transactions), np.float64, n),
        longitude=np.fromiter((t.longitude for t in transactions), np.float64, n),
        card_amount_mean_7d=np.fromiter((lk.values[_MEAN] for lk in lookups), np.float64, n),
        home_latitude=np.fromiter((lk.values[_HOME[0]] for lk in lookups), np.float64, n),
        home_longitude=np.fromiter((lk.values[_HOME[1]] for lk in lookups), np.float64, n),
    )
    computed = [request[name].tolist() for name in REQUEST_FEATURES]
    rows = []
    for i, lookup in enumerate(lookups):
        values = lookup.values
        rows.append(
            [values[s] for s in _CARD_SLOTS]
            + [values[_MERCHANT_SLOT]]
            + [column[i] for column in computed]
        )
    return rows, computed


class Predictor:
    """Scores transactions with the watcher's current model; logs each prediction."""

    def __init__(
        self,
        reader: OnlineStoreReader,
        prediction_log: PredictionLog | None = None,
    ) -> None:
        self.reader = reader
        self.log = prediction_log

    def _lookup(self, txn: Transaction) -> Lookup:
        return self.reader.lookup(txn.card_id, txn.merchant_id, txn.timestamp.timestamp())

    def predict(self, model: ServedModel, txn: Transaction, started: float) -> dict[str, Any]:
        """The response body of one transaction (and its log record)."""
        lookup = self._lookup(txn)
        rows, _ = model_inputs((txn,), (lookup,))
        features = rows[0]
        numbers = [features[i] for i in model.feature_index]
        score = model.scorer.score_one(numbers, (txn.merchant_category, txn.channel))
        return self._respond(model, txn, lookup, features, score, started, "api")

    def predict_many(
        self, model: ServedModel, transactions: Sequence[Transaction], started: float
    ) -> list[dict[str, Any]]:
        """Response bodies of several transactions, scored in one call of the model."""
        lookups = [self._lookup(t) for t in transactions]
        rows, _ = model_inputs(transactions, lookups)
        numbers = np.asarray(rows, dtype=np.float64)[:, list(model.feature_index)]
        categories: list[list[str | None]] = [
            [t.merchant_category for t in transactions],
            [t.channel for t in transactions],
        ]
        scores = model.scorer.predict(model.scorer.encode(numbers, categories)).tolist()
        return [
            self._respond(model, t, lk, row, s, started, "api")
            for t, lk, row, s in zip(transactions, lookups, rows, scores, strict=True)
        ]

    def _respond(
        self,
        model: ServedModel,
        txn: Transaction,
        lookup: Lookup,
        features: list[Any],
        score: float,
        started: float,
        source: str,
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
                *[None if f != f else f for f in features],  # NaN -> null
                txn.merchant_category,
                txn.channel,
            )
            self.log.append(record)
        return body

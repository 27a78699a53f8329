"""The prediction API (FastAPI): ``/predict``, ``/predict/batch``, ``/health``, ``/ready``,
``/metadata`` and the OpenAPI docs at ``/docs``.

``create_app`` wires the pieces: the champion watcher (:mod:`.champion`, hot reload), the
feature service's online features through Feast (``features.online``), the predictor
(:mod:`.service`) and the prediction log (:mod:`.predlog`); they start and stop with the
app (lifespan). When the online store cannot be read (not materialized yet, Redis down),
``/predict`` answers 503 with the reason and ``/ready`` says false; the next request
tries again, so the service recovers on its own when the store is back.

Nothing waits on the event loop. A ``/predict`` whose store locks are free (the common
case) is scored on the loop itself, taking no lock that is held (``nowait``: a hop to a
thread would cost more than the sub-millisecond work); one that would wait (a lock held by
another request, CT's merge or another SQLite connection; a store to open) goes to a small
pool of scoring threads, ``/predict/batch`` to a pool of one, ``/ready``'s store check to
Starlette's. So a locked store or a 1,000-row batch never holds up another request,
``/health`` included. A request gives up waiting for the store's locks after
``online.LOCK_WAIT_S``: 503 ``online store busy`` naming the lock, with ``Retry-After``
(see docs/serving.md for the design and figures).

With ``serving.release.staged`` a second watcher follows the ``challenger`` alias and holds
the challenger while its staged release has it in shadow (delivered, not yet promoted nor
blocked); each ``/predict`` is then scored by both (:mod:`.service`) and ``/ready`` shows
the shadow's counters. A ``/predict`` or ``/predict/batch`` answered 5xx is written to the
error log (``<state>/serving/errors/``, one row per transaction), so the health report can
compute the serving error rate.

A body over ``max_body_bytes`` is answered 413 and, when the profile requires it, a
request without the right ``X-API-Key`` 401, both by a small ASGI middleware before any
parsing. Probes (``/health``, ``/ready``) and the docs need no key.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import hmac
import logging
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from fraud_detection.config import Profile, Secrets, StatePaths, load_profile, state_paths
from fraud_detection.errors import FraudError
from fraud_detection.features.online import OnlineStoreBusy, OnlineStoreError, StoreWouldBlock
from fraud_detection.serving.champion import ChampionWatcher, ServedModel, in_shadow
from fraud_detection.serving.docs_ui import OPEN_PATHS as DOCS_PATHS
from fraud_detection.serving.docs_ui import add_docs
from fraud_detection.serving.predlog import PredictionLog, Record, error_schema
from fraud_detection.serving.schemas import BatchPrediction, BatchRequest, Prediction, Transaction
from fraud_detection.serving.service import Predictor
from fraud_detection.serving.settings import ServingConfig, load_serving_config

__all__ = [
    "API_KEY_HEADER",
    "ServingError",
    "create_app",
    "errors_folder",
    "predictions_folder",
]

log = logging.getLogger(__name__)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_US = dt.timedelta(microseconds=1)

# Worker threads scoring /predict requests: they take turns on the card-state lock, so
# more would only contend for the GIL; a few let one request wait on the store while
# another finishes.
PREDICT_THREADS = 4

API_KEY_HEADER = "X-API-Key"
OPEN_PATHS = frozenset({"/health", "/ready", "/openapi.json"}) | DOCS_PATHS

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ServingError(FraudError):
    """The service cannot start as configured; the message says what to set."""


def predictions_folder(paths: StatePaths) -> Path:
    """Where the prediction log's part files go."""
    return paths.root / "serving" / "predictions"


def errors_folder(paths: StatePaths) -> Path:
    """Where the requests answered 5xx are logged (one row per transaction)."""
    return paths.root / "serving" / "errors"


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _safe_input(value: Any) -> Any:
    """A rejected input as JSON can carry it: non-finite numbers and text that is not
    valid Unicode (a lone surrogate) as their ``repr``, integers beyond 64 bits as text,
    containers element by element, anything long cut short. (FastAPI's own handler
    echoes them raw and fails with a 500.)"""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "backslashreplace").decode("ascii", "replace")
        return value if len(value) <= 200 else value[:200] + "…"
    if isinstance(value, dict):
        return {_safe_input(str(k)): _safe_input(v) for k, v in list(value.items())[:50]}
    if isinstance(value, list | tuple):
        return [_safe_input(v) for v in list(value)[:50]]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)  # beyond what JSON encoders take as a number
    if value is None or isinstance(value, bool | int | float):
        return value
    return _safe_input(str(value))


def validation_error(errors: Any) -> Response:
    """422 naming each offending field (``loc``), what is wrong and the input, always
    encodable: the shape of FastAPI's own validation errors."""
    detail = []
    for error in errors:
        item: dict[str, Any] = {
            "type": str(error.get("type", "value_error")),
            "loc": [p if isinstance(p, int) else _safe_input(str(p)) for p in error.get("loc", ())],
            "msg": _safe_input(str(error.get("msg", ""))),
        }
        if "input" in error:
            item["input"] = _safe_input(error["input"])
        detail.append(item)
    return _json({"detail": detail}, 422)


def _timestamp_problem(
    stamp: dt.datetime, config: ServingConfig, loc: list[str | int]
) -> dict[str, Any] | None:
    """A 422 item when ``stamp`` lies outside the plausible window around the clock."""
    now = dt.datetime.now(dt.UTC)
    ahead = (stamp - now).total_seconds()
    if ahead > config.timestamp_max_future_s:
        bound = f"at most {config.timestamp_max_future_s:,.0f} s after the service's clock"
    elif -ahead > config.timestamp_max_age_days * 86_400:
        bound = f"at most {config.timestamp_max_age_days:,.0f} days before the service's clock"
    else:
        return None
    return {
        "type": "timestamp_out_of_window",
        "loc": loc,
        "msg": f"timestamp {stamp.isoformat()} must be {bound} "
        f"({now.isoformat(timespec='seconds')}; serving.timestamp_max_future_s / "
        "timestamp_max_age_days)",
        "input": stamp.isoformat(),
    }


# ----------------------------------------------------------------- middleware


class Guard:
    """Pure ASGI middleware: request-size limit (413) and optional API key (401)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, api_key: str | None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.api_key = None if api_key is None else api_key.encode()

    async def _reject(self, send: Send, status: int, detail: str) -> None:
        body = orjson.dumps({"detail": detail})
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.api_key is not None and scope["path"] not in OPEN_PATHS:
            given = headers.get(b"x-api-key", b"")
            if not hmac.compare_digest(given, self.api_key):
                what = "missing" if not given else "wrong"
                await self._reject(
                    send, 401, f"{what} API key: send it in the {API_KEY_HEADER} header"
                )
                return
        length = headers.get(b"content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.max_body_bytes:
                await self._reject(send, 413, self._too_large(int(length)))
                return
            await self.app(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        # No length given (chunked): read up to the limit, then hand the body on.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                await self._reject(send, 413, self._too_large(None))
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _too_large(self, size: int | None) -> str:
        shown = "more than the limit" if size is None else f"{size:,} bytes"
        return (
            f"request body is {shown}; the limit is {self.max_body_bytes:,} bytes "
            "(serving.max_body_bytes): send fewer transactions per request"
        )


# ----------------------------------------------------------------- the app


@dataclass
class _Service:
    """Everything the handlers use, created in the lifespan."""

    config: ServingConfig
    profile: Profile
    paths: StatePaths
    watcher: ChampionWatcher
    prediction_log: PredictionLog | None
    predict_pool: ThreadPoolExecutor
    batch_pool: ThreadPoolExecutor
    shadow: ChampionWatcher | None = None  # the challenger in shadow (staged release)
    error_log: PredictionLog | None = None
    predictor: Predictor | None = None
    store_error: str | None = None
    _opening: threading.Lock = field(default_factory=threading.Lock)

    def open_store(self) -> Predictor | None:
        """The predictor, opening Feast's online store first if that has not worked yet,
        or again when its file was replaced (a rebuilt SQLite store). Called from worker
        threads: one of them opens or reopens, the others wait for it."""
        predictor = self.predictor
        if predictor is not None and not predictor.online.replaced():
            return predictor
        with self._opening:
            predictor = self.predictor
            if predictor is None:
                return self._open()
            if not predictor.online.replaced():
                return predictor
            log.warning("online store file replaced: reopening it")
            kept = predictor.updates  # the counters /ready shows carry on
            self.predictor = None
            predictor.online.close()  # once the request using it, if any, is done
            reopened = self._open()
            if reopened is not None:
                reopened.updates = kept
            return reopened

    def _open(self) -> Predictor | None:
        if self.predictor is not None:
            return self.predictor
        try:
            from fraud_detection.features.store import open_online

            online = open_online(self.paths, apply=False, feast_settings=self.profile.feast)
            self.predictor = Predictor(online, self.prediction_log)
        except FraudError as exc:
            self.store_error = str(exc)
        except Exception as exc:  # Feast: a missing registry or service
            self.store_error = f"{type(exc).__name__}: {exc}: run `fraud features materialize`"
        return self.predictor

    def check_store(self) -> bool:
        predictor = self.open_store()
        if predictor is None:
            return False
        try:
            predictor.online.check()
        except OnlineStoreError as exc:
            self.store_error = str(exc)
            return False
        self.store_error = None
        return True


def create_app(
    state_dir: str | Path | None = None,
    *,
    config: ServingConfig | None = None,
    profile: Profile | None = None,
) -> FastAPI:
    """The prediction API for a state folder (default: the active profile's).

    Nothing starts until the app's lifespan does (``uvicorn`` or ``with TestClient(app)``):
    then MLflow is set up, the champion loaded and followed, the online store opened
    and the prediction log's writer started. Raises :class:`ServingError` when the
    profile requires an API key and ``FRAUD_API_KEY`` is not set.
    """
    profile = profile or load_profile()
    if state_dir is not None:
        profile = profile.model_copy(update={"state_dir": Path(state_dir).resolve()})
    config = config or load_serving_config()
    paths = state_paths(profile)
    api_key: str | None = None
    if profile.serving.api_key_required:
        secret = Secrets().api_key
        if secret is None or not secret.get_secret_value().strip():
            raise ServingError(
                f"profile {profile.name!r} requires an API key (serving.api_key_required) but "
                "FRAUD_API_KEY is not set (or blank): export FRAUD_API_KEY=<key> and start again"
            )
        api_key = secret.get_secret_value()

    holder: dict[str, _Service] = {}

    @contextlib.asynccontextmanager
    async def lifespan(started_app: FastAPI) -> AsyncIterator[None]:
        from fraud_detection.registry import tracking
        from fraud_detection.serving.scorer import limit_openmp_threads

        limit_openmp_threads()  # this thread scores most /predict requests: one row, one thread
        tracking.setup_mlflow(profile)
        watcher = ChampionWatcher(
            profile.mlflow.model_name,
            interval_s=config.reload_interval_s,
            champion_file=paths.root / "serving" / "champion.json",
            threshold_override=config.threshold,
            alias=config.alias,
        )
        prediction_log = error_log = None
        if config.prediction_log.enabled:
            prediction_log = PredictionLog(predictions_folder(paths), config.prediction_log)
            prediction_log.start()
            error_log = PredictionLog(errors_folder(paths), config.prediction_log, error_schema())
            error_log.start()
        shadow = None
        if config.alias == "champion" and config.release.staged:
            # The challenger scored beside the champion while its release has it in shadow.
            shadow = ChampionWatcher(
                profile.mlflow.model_name,
                interval_s=config.reload_interval_s,
                champion_file=paths.root / "serving" / "champion.json",
                threshold_override=config.threshold,
                alias="challenger",
                admit=in_shadow,
                drop_when_absent=True,
            )
        service = _Service(
            config=config,
            profile=profile,
            paths=paths,
            watcher=watcher,
            prediction_log=prediction_log,
            # The threads that score: one OpenMP thread each (the setting is per thread).
            predict_pool=ThreadPoolExecutor(
                PREDICT_THREADS, "predict", initializer=limit_openmp_threads
            ),
            batch_pool=ThreadPoolExecutor(1, "predict-batch", initializer=limit_openmp_threads),
            shadow=shadow,
            error_log=error_log,
        )
        if not service.check_store():
            log.warning("online store not ready: %s", service.store_error)
        watcher.start()
        if shadow is not None:
            shadow.start()
        # What is loaded now (libraries, the model, the store) lives as long as the
        # service: keep it out of the collector's full passes, which otherwise walk
        # ~430,000 objects holding the GIL for ~0.3 s, a stall every few large batches.
        gc.collect()
        gc.freeze()
        holder["service"] = service
        started_app.state.service = service  # for operators and tests: what is running
        try:
            yield
        finally:
            gc.unfreeze()
            service.predict_pool.shutdown()
            service.batch_pool.shutdown()
            watcher.stop()
            if shadow is not None:
                shadow.stop()
            if error_log is not None:
                error_log.close()
            if prediction_log is not None:
                counters = prediction_log.close()
                log.info(
                    "prediction log: %d rows in %d files under %s (%d dropped)",
                    counters.logged,
                    counters.files,
                    predictions_folder(paths),
                    counters.dropped,
                )
            if service.predictor is not None:
                service.predictor.online.close()
            holder.clear()

    app = FastAPI(
        title="Fraud detection: prediction API",
        version="1",
        summary="Scores card transactions with the champion model on online features.",
        lifespan=lifespan,
        docs_url=None,  # served from the package, not a CDN: docs_ui.add_docs
        redoc_url=None,
    )
    add_docs(app)
    app.add_middleware(
        Guard,
        max_body_bytes=config.max_body_bytes,
        api_key=api_key,
    )
    secured: dict[str, Any] = {"security": [{"APIKeyHeader": []}]} if api_key else {}

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> Response:
        return validation_error(exc.errors())

    def _serving() -> tuple[_Service, Predictor, ServedModel] | Response:
        """The service, its predictor and the model to answer with (read once), or a 503
        saying why not."""
        service = holder.get("service")
        if service is None:
            return _json({"detail": "the service is starting"}, 503)
        predictor = service.open_store()
        if predictor is None:
            return _json({"detail": f"online store unavailable: {service.store_error}"}, 503)
        model = service.watcher.current
        if model is None:
            report = service.watcher.ready_report()
            why = (
                report["last_reload"]["error"]
                or report["registry_error"]
                or (f"no {service.profile.mlflow.model_name!r} version has the champion alias")
            )
            return _json({"detail": f"no model loaded: {why}"}, 503)
        return service, predictor, model

    def _store_down(service: _Service, exc: OnlineStoreError) -> Response:
        service.store_error = str(exc)
        log.warning("online store unavailable: %s", exc)
        if isinstance(exc, OnlineStoreBusy):  # a lock held too long: worth a retry soon
            body = orjson.dumps({"detail": service.store_error})
            return Response(body, 503, headers={"Retry-After": "1"}, media_type="application/json")
        return _json({"detail": f"online store unavailable: {service.store_error}"}, 503)

    async def _off_loop(batch: bool, call: Callable[..., Response], *args: Any) -> Response:
        """``call(*args)`` in the service's scoring threads, the event loop free meanwhile."""
        service = holder.get("service")
        if service is None:
            return _json({"detail": "the service is starting"}, 503)
        pool = service.batch_pool if batch else service.predict_pool
        return await asyncio.get_running_loop().run_in_executor(pool, call, *args)

    def _beside(service: _Service) -> tuple[ServedModel | None, float]:
        """The challenger in shadow (read once, like the champion) and its canary share."""
        shadow = None if service.shadow is None else service.shadow.current
        return shadow, service.config.release.canary_share

    def _failed(
        response: Response,
        transactions: Sequence[Transaction],
        path: str,
        started: float,
        model: ServedModel | None = None,
    ) -> Response:
        """``response``; a 5xx one is written to the error log first, a row per transaction."""
        service = holder.get("service")
        if response.status_code < 500 or service is None or service.error_log is None:
            return response
        try:
            detail = str(orjson.loads(bytes(response.body)).get("detail"))
        except (orjson.JSONDecodeError, AttributeError):
            detail = ""
        if model is None:
            model = service.watcher.current
        logged_at, took = time.time_ns() // 1_000, (time.perf_counter() - started) * 1e3
        for txn in transactions:
            record: Record = (
                uuid.uuid4().hex,
                logged_at,
                (txn.timestamp - _EPOCH) // _ONE_US,
                txn.transaction_id,
                txn.card_id,
                path,
                response.status_code,
                detail[:500],
                None if model is None else model.version,
                took,
            )
            service.error_log.append(record)
        return response

    def _internal_error(exc: Exception) -> Response:
        log.exception("scoring failed: %s", exc)
        return _json({"detail": f"internal error: {type(exc).__name__}"}, 500)

    def _predict_one(transaction: Transaction, started: float, arrived: float) -> Response:
        serving = _serving()
        if isinstance(serving, Response):
            return _failed(serving, [transaction], "/predict", started)
        service, predictor, model = serving  # read once: a reload never changes it mid-request
        shadow, share = _beside(service)
        # The lock wait counts from the request's arrival: a request that queued for a
        # thread behind others stuck on a held lock gives up at once, not a wait later.
        deadline = arrived + predictor.online.lock_wait_s
        try:
            body = predictor.predict(
                model, transaction, started, deadline, shadow=shadow, canary_share=share
            )
        except OnlineStoreError as exc:
            return _failed(_store_down(service, exc), [transaction], "/predict", started, model)
        except Exception as exc:
            return _failed(_internal_error(exc), [transaction], "/predict", started, model)
        return _json(body)

    @app.post(
        "/predict",
        response_model=Prediction,
        summary="Score one transaction",
        responses={503: {"description": "No model or online store loaded yet"}},
        openapi_extra=secured,
    )
    async def predict(transaction: Transaction) -> Response:
        started, arrived = time.perf_counter(), time.monotonic()
        late = _timestamp_problem(transaction.timestamp, config, ["body", "timestamp"])
        if late is not None:
            return _json({"detail": [late]}, 422)
        answered = _predict_inline(transaction, started)
        if answered is not None:
            return answered
        return await _off_loop(False, _predict_one, transaction, started, arrived)

    def _predict_inline(transaction: Transaction, started: float) -> Response | None:
        """The common case on the event loop itself: the store open, its locks free.
        Nothing here waits: a held lock, a store to open or reopen, or no model yet is
        None, and the request goes to a scoring thread (which waits, bounded, or answers
        503). A hop to a thread per request would cost more than the sub-millisecond work
        (docs/serving.md)."""
        service = holder.get("service")
        if service is None:
            return None
        predictor, model = service.predictor, service.watcher.current
        if predictor is None or model is None or predictor.online.replaced():
            return None
        shadow, share = _beside(service)
        try:
            body = predictor.predict(
                model, transaction, started, nowait=True, shadow=shadow, canary_share=share
            )
        except StoreWouldBlock:
            return None
        except OnlineStoreError as exc:
            return _failed(_store_down(service, exc), [transaction], "/predict", started, model)
        except Exception as exc:
            return _failed(_internal_error(exc), [transaction], "/predict", started, model)
        return _json(body)

    @app.post(
        "/predict/batch",
        response_model=BatchPrediction,
        summary="Score several transactions in one request",
        openapi_extra=secured,
    )
    async def predict_batch(batch: BatchRequest) -> Response:
        return await _off_loop(True, _predict_many, batch, time.perf_counter())

    def _predict_many(batch: BatchRequest, started: float) -> Response:
        late = [
            problem
            for i, t in enumerate(batch.transactions)
            if (
                problem := _timestamp_problem(
                    t.timestamp, config, ["body", "transactions", i, "timestamp"]
                )
            )
        ]
        if late:
            return _json({"detail": late[:20]}, 422)
        serving = _serving()
        if isinstance(serving, Response):
            return _failed(serving, batch.transactions, "/predict/batch", started)
        service, predictor, model = serving
        shadow, share = _beside(service)
        limit = service.config.max_batch_rows
        if len(batch.transactions) > limit:
            return _json(
                {
                    "detail": [
                        {
                            "type": "too_long",
                            "loc": ["body", "transactions"],
                            "msg": f"at most {limit} transactions per request "
                            f"(got {len(batch.transactions)}; serving.max_batch_rows)",
                        }
                    ]
                },
                422,
            )
        txns, path = batch.transactions, "/predict/batch"
        try:  # batches take turns (a pool of one); the lock wait counts from this turn
            bodies = predictor.predict_many(model, txns, started, shadow=shadow, canary_share=share)
        except OnlineStoreError as exc:
            return _failed(_store_down(service, exc), txns, path, started, model)
        except Exception as exc:
            return _failed(_internal_error(exc), txns, path, started, model)
        return _json({"model_version": model.version, "predictions": bodies})

    @app.get("/health", summary="Liveness: the process is up")
    async def health() -> Response:
        return _json({"status": "ok"})

    @app.get(
        "/ready",
        summary="Readiness: a model and the online store are loaded",
        responses={503: {"description": "Not ready; the body says why"}},
    )
    async def ready(request: Request) -> Response:
        service = holder.get("service")
        if service is None:
            return _json({"ready": False, "detail": "the service is starting"}, 503)
        store_ok = await run_in_threadpool(service.check_store)
        model = service.watcher.ready_report()
        is_ready = bool(model["loaded"]) and store_ok
        given = request.headers.get(API_KEY_HEADER, "").encode()
        if api_key is not None and not hmac.compare_digest(given, api_key.encode()):
            # A probe without the key learns ready or not and why, in words; the details
            # (errors with paths and SQL, versions, counters) are for key holders.
            why = [] if model["loaded"] else ["no model loaded"]
            why += [] if store_ok else ["online store unavailable"]
            short = {
                "ready": is_ready,
                "reason": "; ".join(why) or None,
                "detail": f"send the {API_KEY_HEADER} header for the model, store and log details",
            }
            return _json(short, 200 if is_ready else 503)
        body = {
            "ready": is_ready,
            "model": model,
            "online_store": {
                "ok": store_ok,
                "type": service.profile.feast.online_store,
                "error": service.store_error,
                "state_updates": None
                if service.predictor is None
                else service.predictor.updates.to_dict(),
            },
            "prediction_log": None
            if service.prediction_log is None
            else service.prediction_log.counters().to_dict(),
            "error_log": None
            if service.error_log is None
            else service.error_log.counters().to_dict(),
            "shadow": _shadow_report(service),
        }
        return _json(body, 200 if is_ready else 503)

    def _shadow_report(service: _Service) -> dict[str, Any] | None:
        """The challenger in shadow: which version, the canary share, how scoring went."""
        if service.shadow is None:
            return None
        current = service.shadow.current
        return {
            "model_version": None if current is None else current.version,
            "threshold": None if current is None else current.threshold,
            "canary_share": service.config.release.canary_share,
            "challenger_alias": service.shadow.champion_version,
            "last_reload": service.shadow.status.to_dict(),
            "counters": None if service.predictor is None else service.predictor.shadow.to_dict(),
        }

    @app.get(
        "/metadata",
        summary="The served model: version, run, lineage tags, feature service, threshold",
        openapi_extra=secured,
    )
    async def metadata() -> Response:
        serving = await run_in_threadpool(_serving)  # may open the store
        if isinstance(serving, Response):
            return serving
        service, _, model = serving
        counters = None if service.prediction_log is None else service.prediction_log.counters()
        return _json(
            {
                **model.metadata(),
                "champion_alias": service.watcher.champion_version,
                "prediction_log": {
                    "folder": str(predictions_folder(service.paths)),
                    **({} if counters is None else counters.to_dict()),
                }
                if service.prediction_log is not None
                else None,
                "limits": {
                    "max_body_bytes": service.config.max_body_bytes,
                    "max_batch_rows": service.config.max_batch_rows,
                },
                "api_key_required": api_key is not None,
            }
        )

    if api_key is not None:
        _add_security_scheme(app)
    return app


def _add_security_scheme(app: FastAPI) -> None:
    """Document the API key in the OpenAPI schema (the docs page's Authorize button)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = {
                "APIKeyHeader": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

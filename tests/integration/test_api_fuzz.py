"""Fuzzing the prediction API from its own OpenAPI schema (schemathesis): never a 500.

Schemathesis reads ``/openapi.json`` from the app (in-process, over ASGI, lifespan
started: champion loaded, online store open, prediction log running) and generates
requests for every operation, valid and invalid bodies alike: out-of-range amounts, wrong
types, missing fields, unknown categories, huge ids, odd time zones. Every answer must
be a non-5xx status, with a body matching the response schema documented for it; valid
bodies must be scored (200) and invalid ones rejected (422). The number of examples per
operation is bounded so the module runs in well under a minute after its world is built.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
)
from schemathesis.generation import GenerationMode

from fraud_detection.config import StatePaths
from tests.worlds import served_world

pytestmark = pytest.mark.integration

EXAMPLES = 150  # per operation and mode (valid, invalid): a few seconds each
OPERATIONS = [
    ("POST", "/predict"),
    ("POST", "/predict/batch"),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metadata"),
]
# Every answer: not a 5xx, and a body matching the schema documented for its status.
# (``status_code_conformance`` is left out for now: a body that is not JSON at all gets
# FastAPI's 400, which the app's schema does not list yet.)
CHECKS = [not_a_server_error, response_schema_conformance]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> StatePaths:
    return served_world(tmp_path_factory.mktemp("fuzz-world"))


@pytest.fixture(scope="module")
def app(world: StatePaths) -> Iterator[Any]:
    from fraud_detection.serving.app import create_app
    from fraud_detection.serving.settings import load_serving_config

    # Generated timestamps span years 1 to 9999: a window that admits them all, so valid
    # bodies reach the scoring path (the window itself: test_every_bad_input_is_a_4xx...).
    wide = {"timestamp_max_future_s": 1e12, "timestamp_max_age_days": 1e7}
    return create_app(state_dir=world.root, config=load_serving_config(overrides=wide))


@pytest.fixture(scope="module")
def api_schema(app: Any) -> Iterator[Any]:
    from schemathesis.python import asgi

    # Loading the schema starts the app's lifespan (champion, online store, log writer).
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    asgi.shutdown_lifespans()


def test_the_schema_documents_the_operations_clients_use(api_schema: Any) -> None:
    documented = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}

    assert set(OPERATIONS) <= documented


# The operations are listed here rather than with ``@schema.parametrize()`` on a lazy
# ``schemathesis.pytest.from_fixture`` schema: that loader sets ``item._nodeid``, which
# pytest 9 no longer has. Each operation's strategy drives Hypothesis directly.
@pytest.mark.parametrize(
    ("method", "path", "mode"),
    [(method, path, GenerationMode.POSITIVE) for method, path in OPERATIONS]
    # Invalid data needs something to get wrong: the GET probes take no input.
    + [(method, path, GenerationMode.NEGATIVE) for method, path in OPERATIONS if method == "POST"],
)
def test_no_input_makes_the_api_fail(
    api_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    statuses: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def call(case: Any) -> None:
        response = case.call()
        statuses.append(response.status_code)
        case.validate_response(response, checks=CHECKS)

    call()

    assert statuses
    assert max(statuses) < 500
    if method == "POST":
        # Valid bodies were scored; invalid ones were generated and rejected.
        assert (200 if mode is GenerationMode.POSITIVE else 422) in statuses


# ------------------------------------------------ a permanent matrix of bad inputs

_VALID = {
    "transaction_id": "bad-input-control",
    "card_id": 42,
    "merchant_id": 7,
    "amount": 59.9,
    "channel": "online",
    "merchant_category": "electronics",
    "latitude": 40.71,
    "longitude": -74.01,
}


def _body(**change: Any) -> bytes:
    """A /predict body (timestamp: an hour ago) with ``change``, as raw JSON bytes: NaN and
    Infinity as Python's json writes them, lone surrogates as JSON escapes."""
    import datetime as dt
    import json

    hour_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    return json.dumps({**_VALID, "timestamp": hour_ago, **change}).encode()


# name -> (raw body, the field the 4xx must name; None: the body as a whole)
BAD_INPUTS: dict[str, tuple[bytes, str | None]] = {
    "NaN amount": (_body(amount=float("nan")), "amount"),
    "Infinity latitude": (_body(latitude=float("inf")), "latitude"),
    "-Infinity longitude": (_body(longitude=float("-inf")), "longitude"),
    "1e400 amount (overflows to inf)": (_body(amount=1.5).replace(b"1.5", b"1e400"), "amount"),
    "lone surrogate in merchant_category": (
        _body(merchant_category="X").replace(b'"X"', b'"\\ud800"'),
        "merchant_category",
    ),
    "lone surrogate in transaction_id": (
        _body(transaction_id="X").replace(b'"X"', b'"\\udfff"'),
        "transaction_id",
    ),
    "lone surrogate in channel": (_body(channel="X").replace(b'"X"', b'"\\ud800"'), "channel"),
    "year 1 with +01:00 (before UTC's year 1)": (
        _body(timestamp="0001-01-01T00:00:00+01:00"),
        "timestamp",
    ),
    "year 9999 with -01:00 (after UTC's year 9999)": (
        _body(timestamp="9999-12-31T23:59:59-01:00"),
        "timestamp",
    ),
    "year 9999 (outside the plausible window)": (
        _body(timestamp="9999-01-01T00:00:00Z"),
        "timestamp",
    ),
    "1970 (outside the plausible window)": (_body(timestamp="1970-01-01T00:00:00Z"), "timestamp"),
    "far ahead (2100)": (_body(timestamp="2100-01-01T00:00:00Z"), "timestamp"),
    "no time zone": (_body(timestamp="2026-01-08T14:03:00"), "timestamp"),
    "month 13": (_body(timestamp="2026-13-01T00:00:00Z"), "timestamp"),
    "card_id true": (_body(card_id=True), "card_id"),
    "card_id as a string": (_body(card_id="42"), "card_id"),
    "card_id 42.0": (_body(card_id=42.0), "card_id"),
    "merchant_id false": (_body(merchant_id=False), "merchant_id"),
    "amount as a string": (_body(amount="59.9"), "amount"),
    "amount true": (_body(amount=True), "amount"),
    "card_id beyond int64": (_body(card_id=2**63), "card_id"),
    "negative merchant_id": (_body(merchant_id=-1), "merchant_id"),
    "unknown field": (_body(cvv="123"), "cvv"),
    "missing amount": (_body().replace(b'"amount": 59.9, ', b""), "amount"),
    "channel not allowed": (_body(channel="fax"), "channel"),
    "empty merchant_category": (_body(merchant_category=""), "merchant_category"),
    "a JSON array": (b"[1, 2]", None),
    "JSON null": (b"null", None),
    "truncated JSON": (b'{"card_id": ', None),
    "bytes that are not UTF-8": (b'\xff\xfe{"card_id": 1}', None),
    "nesting 100,000 deep": (b"[" * 100_000 + b"]" * 100_000, None),
    "empty body": (b"", None),
}


@pytest.fixture(scope="module")
def client(world: StatePaths) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from fraud_detection.serving.app import create_app

    with TestClient(create_app(state_dir=world.root), raise_server_exceptions=False) as test:
        yield test


def test_a_valid_body_dated_an_hour_ago_is_scored(client: Any) -> None:
    # The control of the matrix below: the same body, unchanged, is a 200
    response = client.post("/predict", content=_body(), headers=JSON)
    assert response.status_code == 200, response.text
    assert 0.0 <= response.json()["score"] <= 1.0


JSON = {"content-type": "application/json"}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_every_bad_input_is_a_4xx_naming_the_field(client: Any, case: str) -> None:
    body, field = BAD_INPUTS[case]

    # When the body is sent alone, and inside a batch
    single = client.post("/predict", content=body, headers=JSON)
    batch = client.post(
        "/predict/batch",
        content=b'{"transactions": [' + _body() + b", " + body + b"]}",
        headers=JSON,
    )

    # Then each is refused with a 4xx whose JSON names the field, and the service is up
    for response, where in ((single, ["body"]), (batch, ["body", "transactions", 1])):
        assert 400 <= response.status_code < 500, (case, response.status_code, response.text)
        detail = response.json()["detail"]
        if field is not None:
            assert any(
                item["loc"][: len(where)] == where and field in map(str, item["loc"])
                for item in detail
            ), (case, detail)
    assert client.get("/health").status_code == 200

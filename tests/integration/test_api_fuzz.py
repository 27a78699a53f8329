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
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from fraud_detection.serving.app import create_app

    paths = served_world(tmp_path_factory.mktemp("fuzz-world"))
    return create_app(state_dir=paths.root)


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

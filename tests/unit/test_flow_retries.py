"""A CT task retries what may pass on a second try, never a user-fixable error."""

from __future__ import annotations

import pytest
from prefect.states import Failed

from fraud_detection.config import ConfigError
from fraud_detection.errors import FraudError, ServiceUnavailableError
from fraud_detection.features.online import OnlineStoreError
from fraud_detection.orchestration import flows

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("exc", "retried"),
    [
        (FraudError("no raw partition: run fraud simulate"), False),
        (ConfigError("configs/train.yaml: unknown key"), False),
        (ServiceUnavailableError("MLflow's database did not answer"), True),
        (OnlineStoreError("Redis at 127.0.0.1:6379 did not answer"), True),
        (ConnectionResetError("connection reset by peer"), True),
        (RuntimeError("a library hiccup"), True),
    ],
)
def test_only_errors_that_may_pass_are_retried(exc: Exception, retried: bool) -> None:
    assert flows._transient(None, None, Failed(data=exc)) is retried


def test_every_retrying_task_asks_first() -> None:
    tasks = [v for v in vars(flows).values() if getattr(v, "retries", 0)]
    assert tasks
    assert all(t.retry_condition_fn is flows._transient for t in tasks), [
        t.name for t in tasks if t.retry_condition_fn is not flows._transient
    ]

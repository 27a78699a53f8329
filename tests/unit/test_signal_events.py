"""Signals and data arrival as Prefect events: sent only to a server that answers, the
signal file always written; which pending signals a signal-started CT run answers."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from fraud_detection import events
from fraud_detection.config import StatePaths
from fraud_detection.errors import FraudError
from fraud_detection.monitoring import signals

pytestmark = pytest.mark.unit


ApiUrl = Callable[[str | None], AbstractContextManager[Any]]


def _signal(kind: signals.Kind = "drift") -> signals.Signal:
    return signals.Signal(kind=kind, detail="PSI 0.3 > 0.2", metric="psi", value=0.3, threshold=0.2)


@pytest.fixture
def api_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiUrl]:
    """Set (or unset) the Prefect API for one test; the server check is redone."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)

    def use(url: str | None) -> AbstractContextManager[Any]:
        events._server.cache_clear()
        if url is None:
            return temporary_settings(restore_defaults={PREFECT_API_URL})
        return temporary_settings(updates={PREFECT_API_URL: url})

    yield use
    events._server.cache_clear()


def test_without_a_server_no_event_is_sent_and_the_signal_file_is_written(
    tmp_path: Path, api_url: ApiUrl
) -> None:
    paths = StatePaths(root=tmp_path)
    with api_url(None):
        assert not events.enabled()
        signal = _signal()
        path = signals.emit(paths, signal)
        assert events.partitions_landed([]) == 0

    assert path.exists()
    assert [s.id for s in signals.pending(paths)] == [signal.id]


def test_a_server_that_does_not_answer_is_skipped_quickly(api_url: ApiUrl) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.perf_counter()
    with api_url(f"http://127.0.0.1:{port}/api"):
        assert not events.enabled()
        assert not signals.announce(_signal())
    assert time.perf_counter() - started < 5


def test_a_signal_run_answers_every_pending_signal(tmp_path: Path, api_url: ApiUrl) -> None:
    paths = StatePaths(root=tmp_path)
    with api_url(None):
        first, second = _signal("drift"), _signal("performance")
        signals.emit(paths, first)
        signals.emit(paths, second)

    # The run started by the first signal answers both
    answered, done = signals.answering(paths, first.id)
    assert done is None
    assert {s.id for s in answered} == {first.id, second.id}

    # ... and marks them consumed when it ends; a run started by either one later
    # (another event of the same storm) has nothing to do, and says why
    for signal in answered:
        signals.consume(paths, signal, "kept champion")
    for signal in (first, second):
        answered, done = signals.answering(paths, signal.id)
        assert answered == []
        assert done == f"signal {signal.id} already consumed (kept champion)"

    # A run started by hand (no signal id) retrains, answering nothing
    assert signals.answering(paths, None) == ([], None)
    # ... and one for a signal this state folder never saw retrains too
    assert signals.answering(paths, "0123456789ab") == ([], None)


def test_a_signal_id_that_is_no_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FraudError, match="is not a signal id"):
        signals.answering(StatePaths(root=tmp_path), "*")

"""Running a level-1 flow from a command, on this machine or against a Prefect server.

``fraud ct run``, ``fraud score``, ``fraud monitor run``, the labs, the level-1 demo and
``make deploy`` call these before a flow: Prefect's database, results and logs go into the
state folder; the console shows a failed run as one line (the CLI's), not a traceback; an
unexpected failure becomes one line naming the error, its traceback kept in a file.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def prefect_environment(state: Path) -> None:
    """Keep Prefect's local database, results and logs inside the state folder.

    Without ``PREFECT_API_URL`` a flow runs against a temporary local server (about 15-25 s
    to start); with it (``make deploy`` sets it), against that server. The profile's
    ``prefect.api_url`` (the production profile's server) sets it when it is not set.
    """
    from fraud_detection import stack
    from fraud_detection.config import load_profile

    profile = load_profile()
    if api_url := profile.prefect.api_url:
        os.environ.setdefault("PREFECT_API_URL", api_url)
    stack.preflight(profile)  # a server the profile needs is down: one line, now
    os.environ.setdefault("PREFECT_HOME", str(state / "prefect"))
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(state / "prefect" / "storage"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # Offline: no usage telemetry from the temporary server.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    (state / "prefect").mkdir(parents=True, exist_ok=True)


class _WithoutTraceback(logging.Formatter):
    """Formats a record as ``inner`` does, but without its traceback (console only)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


class _WithoutRunFailures(logging.Filter):
    """Drops a flow or task run's failure from the console: the exception logged with it
    and the "Finished in state Failed" line. The ``fraud`` command prints the error
    itself, in one line; the records still reach the Prefect server (its UI)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(("prefect.flow_runs", "prefect.task_runs")):
            return True
        failure = record.exc_info is not None or (
            record.levelno >= logging.ERROR and record.getMessage().startswith("Finished in")
        )
        return not failure


def _console_without_tracebacks() -> None:
    """Prefect's console handler prints no run failure (the CLI prints it in one line)
    and no traceback; the full traceback still goes to the Prefect server's log (its
    UI) and to the error file. ``FRAUD_DEBUG=1`` leaves the console as Prefect sets it."""
    from prefect.logging.handlers import PrefectConsoleHandler

    if os.environ.get("FRAUD_DEBUG", "") not in ("", "0"):
        return
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", ""):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, PrefectConsoleHandler) and not isinstance(
                handler.formatter, _WithoutTraceback
            ):
                handler.setFormatter(_WithoutTraceback(handler.formatter or logging.Formatter()))
                handler.addFilter(_WithoutRunFailures())


@contextlib.contextmanager
def flow_failure(what: str, state: Path) -> Iterator[None]:
    """A flow that fails on anything but a :class:`FraudError` (which already says what
    to do) becomes one line naming the error (a :class:`PipelineError`, or a
    :class:`ServiceUnavailableError` for a store that did not answer), with its traceback
    kept in a file."""
    from fraud_detection.errors import (
        EXIT_UNAVAILABLE,
        FraudError,
        PipelineError,
        ServiceUnavailableError,
        describe,
    )

    try:
        yield
    except FraudError:
        raise
    except Exception as exc:
        import datetime as dt
        import traceback

        folder = state / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        file = folder / f"error-{stamp}.txt"
        file.write_text("".join(traceback.format_exception(exc)))
        first = (str(exc).strip().splitlines() or [""])[0]
        if len(first) > 300:
            first = first[:297] + "..."
        # A database or server that did not answer is exit code 5; anything else, 6.
        kind = ServiceUnavailableError if describe(exc)[0] == EXIT_UNAVAILABLE else PipelineError
        raise kind(f"{what} failed: {type(exc).__name__}: {first} (traceback: {file})") from exc


def load_flows() -> Any:
    """The level-1 flows module, imported on first use (Prefect's import takes seconds)."""
    from fraud_detection.orchestration import flows

    _console_without_tracebacks()
    return flows

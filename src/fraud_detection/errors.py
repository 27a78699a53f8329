"""Errors a user can act on, and the exit code of each kind.

The ``fraud`` command prints any of them as one line (``error: <message>``) and exits with
its class's ``exit_code``; ``fraud_detection.cli.main`` maps other exceptions (OS errors,
unreachable services, Prefect failures) onto the same codes. The table, also in
docs/reliability.md:

=====  ====================================================================
code   meaning
=====  ====================================================================
0      done
1      a gate or check said no (``fraud validate`` rejected a partition, ...)
2      a usage error or another user-fixable error (:class:`FraudError`)
3      a configuration error: a config file, a ``FRAUD_*`` variable
4      a file-system error: a path that is a file, missing or not writable
5      a store or service that cannot be reached or opened (MLflow, Redis, ...)
6      a pipeline (Prefect flow) failed for another reason
70     an unexpected error (a bug): one line; ``FRAUD_DEBUG=1`` shows the traceback
130    interrupted (Ctrl-C)
=====  ====================================================================
"""

EXIT_GATE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_PATH = 4
EXIT_UNAVAILABLE = 5
EXIT_PIPELINE = 6
EXIT_UNEXPECTED = 70  # EX_SOFTWARE in sysexits.h
EXIT_INTERRUPTED = 130


class FraudError(Exception):
    """Something the user can fix: the message says what was wrong and what to do."""

    exit_code = EXIT_USAGE


class PathError(FraudError):
    """A file or folder that cannot be used: a file where a folder is needed, a folder
    that cannot be written."""

    exit_code = EXIT_PATH


class ServiceUnavailableError(FraudError):
    """A store or service that cannot be reached or opened (a database, a server)."""

    exit_code = EXIT_UNAVAILABLE


class PipelineError(FraudError):
    """A pipeline run (a Prefect flow) failed for a reason that is not one of the above."""

    exit_code = EXIT_PIPELINE


# Exceptions of libraries that mean "the store or service did not answer", by the module
# that defines them and their class name (matched without importing the library).
_UNREACHABLE = {
    ("sqlalchemy", "OperationalError"),
    ("sqlalchemy", "InterfaceError"),
    ("psycopg", "OperationalError"),
    ("sqlite3", "OperationalError"),
    ("redis", "ConnectionError"),
    ("redis", "TimeoutError"),
    ("httpx", "TransportError"),
    ("requests", "ConnectionError"),
    ("requests", "Timeout"),
    ("urllib3", "HTTPError"),
}


def _first_line(exc: BaseException, limit: int = 300) -> str:
    line = (str(exc).strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _from(exc: BaseException, package: str) -> bool:
    """Whether ``exc``'s class, or the code that raised it, belongs to ``package``."""
    if any(c.__module__.split(".")[0] == package for c in type(exc).__mro__):
        return True
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = "" if tb is None else str(tb.tb_frame.f_globals.get("__name__", ""))
    return module.split(".")[0] == package


def describe(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one-line message (with the fix) for an error of a command."""
    if isinstance(exc, FraudError):
        return exc.exit_code, str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    kind = f"{type(exc).__name__}: {_first_line(exc)}"
    if _from(exc, "prefect"):
        return EXIT_PIPELINE, f"the orchestrator (Prefect) failed: {kind}"
    unreachable = isinstance(exc, (ConnectionError, TimeoutError)) or any(
        (c.__module__.split(".")[0], c.__name__) in _UNREACHABLE for c in type(exc).__mro__
    )
    if unreachable:
        return EXIT_UNAVAILABLE, (
            f"a store or service could not be reached: {kind}; check that it runs "
            "(`fraud stack status`) and the profile's address for it"
        )
    if isinstance(exc, OSError):
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        what = f"{exc.strerror}: {where}" if exc.strerror and where else kind
        return EXIT_PATH, f"{what} (check the path and its permissions)"
    return EXIT_UNEXPECTED, f"unexpected {kind}"

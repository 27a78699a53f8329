"""A load generator for a running HTTP service: ``fraud loadtest``.

``concurrency`` clients each hold one keep-alive connection and send requests back to
back (a closed loop: the next request leaves when the previous answer is in) for
``duration_s`` seconds or until ``requests`` have been sent, cycling through the given
bodies. The result has latency percentiles, achieved requests per second, the count of
answers per status code and of transport errors (refused, reset, timed out), and the
client's own CPU time.

The client is kept cheap because on a small machine it competes with the server for the
same cores: one asyncio event loop (uvloop when installed), requests encoded to bytes once
up front, and a minimal HTTP/1.1 response reader (status line, ``Content-Length`` or
chunked body, ``Connection: close``); no HTTP library per request. Its CPU time is
measured on its own thread(s) and reported as seconds and microseconds per request, so a
report can say how much of the machine the client took. ``processes > 1`` splits the
connections over that many client processes (each its own loop) for a larger server.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from fraud_detection.errors import FraudError

API_KEY_HEADER = "X-API-Key"
MAX_ERROR_EXAMPLES = 5
# Between reconnect attempts after a refused connection, so a dead server is not spun on.
RECONNECT_PAUSE_S = 0.05


class LoadTestError(FraudError):
    """The load test could not run (bad URL, no request bodies)."""


@dataclass(frozen=True)
class Target:
    """Where requests go: host, port and the request path (with its query)."""

    host: str
    port: int
    path: str

    @classmethod
    def from_url(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise LoadTestError(
                f"cannot load-test {url!r}: give a plain http:// URL with a host, "
                "e.g. http://127.0.0.1:8000/predict (https is not supported)"
            )
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.hostname, parts.port or 80, path)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"


@dataclass
class LoadResult:
    """What a load test measured. Latencies in milliseconds, from request sent to answer read."""

    url: str
    concurrency: int
    processes: int
    seconds: float
    requests: int
    requests_per_second: float
    latency_ms: dict[str, float]
    status_counts: dict[int, int]
    transport_errors: int
    error_examples: list[str] = field(default_factory=list)
    client_cpu_seconds: float = 0.0
    # The client's CPU time per answered request: its own cost, to set against the server's.
    client_cpu_us_per_request: float = 0.0

    def count(self, status: int) -> int:
        return self.status_counts.get(status, 0)

    @property
    def ok(self) -> int:
        """Answers with a 2xx status."""
        return sum(n for code, n in self.status_counts.items() if 200 <= code < 300)

    @property
    def server_errors(self) -> int:
        """Answers with a 5xx status."""
        return sum(n for code, n in self.status_counts.items() if code >= 500)

    @property
    def client_cpu_share(self) -> float:
        """The client's CPU seconds per wall second (1.0 = one core busy)."""
        return self.client_cpu_seconds / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["status_counts"] = {str(k): v for k, v in sorted(self.status_counts.items())}
        out["client_cpu_share"] = round(self.client_cpu_share, 3)
        return out

    def table(self) -> str:
        """A short table for a terminal."""
        lat = self.latency_ms
        statuses = ", ".join(f"{code}: {n:,}" for code, n in sorted(self.status_counts.items()))
        lines = [
            f"load test of {self.url}: {self.concurrency} clients for {self.seconds:.1f} s"
            + (f" ({self.processes} client processes)" if self.processes > 1 else ""),
            f"  requests        {self.requests:,} ({self.requests_per_second:,.0f} /s)",
            f"  latency ms      p50 {lat['p50']:.2f}  p95 {lat['p95']:.2f}  "
            f"p99 {lat['p99']:.2f}  max {lat['max']:.2f}",
            f"  status codes    {statuses or '-'}",
            f"  transport errs  {self.transport_errors:,}",
            f"  client CPU      {self.client_cpu_seconds:.1f} s "
            f"({self.client_cpu_share:.0%} of a core, "
            f"{self.client_cpu_us_per_request:.0f} us per request)",
        ]
        lines += [f"    error: {example}" for example in self.error_examples]
        return "\n".join(lines)


# ------------------------------------------------------------------------ requests


def encode_requests(
    target: Target,
    bodies: Sequence[Mapping[str, Any] | bytes] | None,
    *,
    method: str = "POST",
    api_key: str | None = None,
    api_key_header: str = API_KEY_HEADER,
    headers: Mapping[str, str] | None = None,
) -> list[bytes]:
    """Every request as the bytes sent on the wire, encoded once before the run.

    ``bodies`` are JSON-ready mappings (or already-encoded JSON bytes); ``None`` or empty
    with ``method="GET"`` sends one body-less request.
    """
    import orjson

    extra = dict(headers or {})
    if api_key:
        extra[api_key_header] = api_key
    head = f"{method} {target.path} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in extra.items())
    if not bodies:
        if method != "GET":
            raise LoadTestError(f"no request bodies to send with {method}")
        return [(head + "\r\n").encode()]
    out = []
    for body in bodies:
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        out.append(
            (
                head + f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
            ).encode()
            + raw
        )
    return out


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one HTTP/1.1 response; return its status and whether the connection stays open."""
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1."):
        raise ValueError(f"not an HTTP response: {head[:40]!r}")
    status = int(head[9:12])
    length, chunked, keep = -1, False, head[7:8] == b"1"
    for line in head.lower().split(b"\r\n")[1:]:
        if line.startswith(b"content-length:"):
            length = int(line[15:])
        elif line.startswith(b"transfer-encoding:") and b"chunked" in line:
            chunked = True
        elif line.startswith(b"connection:"):
            keep = b"close" not in line
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length >= 0:
        await reader.readexactly(length)
    else:  # no length: the body runs to the end of the connection
        await reader.read()
        keep = False
    return status, keep


@dataclass
class _Tally:
    """One process's raw measurements (merged across client processes)."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    error_examples: list[str] = field(default_factory=list)
    measured_s: float = 0.0
    cpu_s: float = 0.0

    def error(self, exc: BaseException) -> None:
        self.transport_errors += 1
        if len(self.error_examples) < MAX_ERROR_EXAMPLES:
            self.error_examples.append(f"{type(exc).__name__}: {exc}".strip().rstrip(":"))


async def _client(
    number: int,
    target: Target,
    payloads: Sequence[bytes],
    stride: int,
    window: tuple[float, float],
    budget: list[int],
    timeout_s: float,
    tally: _Tally,
) -> None:
    """One connection sending requests back to back until the window ends or the budget is out.

    Requests started before ``window[0]`` (the warm-up) are sent but not counted.
    """
    start, end = window
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    index, count = number, len(payloads)
    clock = time.perf_counter
    try:
        while True:
            sent = clock()
            if sent >= end or budget[0] <= 0:
                return
            counted = sent >= start
            if counted:
                budget[0] -= 1
            try:
                async with asyncio.timeout(timeout_s):
                    if writer is None:
                        reader, writer = await asyncio.open_connection(target.host, target.port)
                        sent = clock()
                    if reader is None:  # opened with writer just above
                        raise RuntimeError("no connection to read from")
                    writer.write(payloads[index % count])
                    status, keep = await _read_response(reader)
            except (OSError, TimeoutError, EOFError, ValueError, asyncio.LimitOverrunError) as exc:
                if counted:
                    tally.error(exc)
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(RECONNECT_PAUSE_S)
                continue
            if counted:
                tally.latencies.append(clock() - sent)
                tally.statuses[status] += 1
            index += stride
            if not keep:
                if writer is not None:
                    writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


async def _drive(
    target: Target,
    payloads: Sequence[bytes],
    connections: int,
    first: int,
    stride: int,
    duration_s: float | None,
    requests: int | None,
    warmup_s: float,
    timeout_s: float,
) -> _Tally:
    tally = _Tally()
    now = time.perf_counter()
    start = now + warmup_s
    end = start + duration_s if duration_s is not None else math.inf
    budget = [requests if requests is not None else 2**62]
    cpu = time.thread_time()
    await asyncio.gather(
        *(
            _client(first + i, target, payloads, stride, (start, end), budget, timeout_s, tally)
            for i in range(connections)
        )
    )
    tally.cpu_s = time.thread_time() - cpu
    tally.measured_s = time.perf_counter() - max(start, now)
    return tally


def _run_loop(*args: Any) -> _Tally:
    """Run :func:`_drive` on a fresh event loop (uvloop's if installed)."""
    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is in the locked environment
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_drive(*args))


def _percentiles(latencies: Sequence[float]) -> dict[str, float]:
    import numpy as np

    if not latencies:
        nan = float("nan")
        return {"p50": nan, "p95": nan, "p99": nan, "max": nan, "mean": nan}
    ms = np.asarray(latencies) * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "p50": round(float(p50), 3),
        "p95": round(float(p95), 3),
        "p99": round(float(p99), 3),
        "max": round(float(ms.max()), 3),
        "mean": round(float(ms.mean()), 3),
    }


def run_loadtest(
    url: str,
    bodies: Sequence[Mapping[str, Any] | bytes] | None,
    *,
    concurrency: int = 32,
    duration_s: float | None = 10.0,
    requests: int | None = None,
    warmup_s: float = 0.0,
    method: str = "POST",
    api_key: str | None = None,
    api_key_header: str = API_KEY_HEADER,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 10.0,
    processes: int = 1,
) -> LoadResult:
    """Send requests to ``url`` from ``concurrency`` keep-alive clients and measure them.

    Stops after ``duration_s`` seconds (after ``warmup_s`` seconds not counted) or once
    ``requests`` counted requests were sent, whichever comes first; at least one must be
    given. Bodies are cycled, client ``i`` starting at body ``i``. A request that gets no
    full answer within ``timeout_s`` counts as a transport error, and its connection is
    replaced. Never raises for what the server does: refusals, resets and timeouts are
    counted in ``transport_errors`` with a few examples.
    """
    if duration_s is None and requests is None:
        raise LoadTestError("give a duration or a number of requests for the load test")
    if concurrency < 1 or processes < 1:
        raise LoadTestError("concurrency and processes must be at least 1")
    target = Target.from_url(url)
    payloads = encode_requests(
        target,
        bodies,
        method=method,
        api_key=api_key,
        api_key_header=api_key_header,
        headers=headers,
    )
    processes = min(processes, concurrency)
    started = time.perf_counter()
    if processes == 1:
        tallies = [
            _run_loop(
                target,
                payloads,
                concurrency,
                0,
                concurrency,
                duration_s,
                requests,
                warmup_s,
                timeout_s,
            )
        ]
    else:
        tallies = _run_processes(
            target, payloads, concurrency, processes, duration_s, requests, warmup_s, timeout_s
        )
    wall = time.perf_counter() - started - warmup_s
    latencies = [x for t in tallies for x in t.latencies]
    statuses: Counter[int] = Counter()
    for t in tallies:
        statuses.update(t.statuses)
    errors = sum(t.transport_errors for t in tallies)
    seconds = max([t.measured_s for t in tallies] + [1e-9]) if tallies else max(wall, 1e-9)
    cpu = sum(t.cpu_s for t in tallies)
    answered = len(latencies)
    return LoadResult(
        url=target.url,
        concurrency=concurrency,
        processes=processes,
        seconds=round(seconds, 3),
        requests=answered + errors,
        requests_per_second=round(answered / seconds, 1),
        latency_ms=_percentiles(latencies),
        status_counts=dict(sorted(statuses.items())),
        transport_errors=errors,
        error_examples=[e for t in tallies for e in t.error_examples][:MAX_ERROR_EXAMPLES],
        client_cpu_seconds=round(cpu, 3),
        client_cpu_us_per_request=round(cpu / answered * 1e6, 1) if answered else 0.0,
    )


def _run_processes(
    target: Target,
    payloads: Sequence[bytes],
    concurrency: int,
    processes: int,
    duration_s: float | None,
    requests: int | None,
    warmup_s: float,
    timeout_s: float,
) -> list[_Tally]:
    """Split the connections (and the request budget) over ``processes`` spawned processes."""
    import multiprocessing

    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    budgets = (
        [None] * processes
        if requests is None
        else [requests // processes + (i < requests % processes) for i in range(processes)]
    )
    firsts = [sum(shares[:i]) for i in range(processes)]
    jobs = [
        (
            target,
            payloads,
            shares[i],
            firsts[i],
            concurrency,
            duration_s,
            budgets[i],
            warmup_s,
            timeout_s,
        )
        for i in range(processes)
    ]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        return pool.starmap(_run_loop, jobs)


# ---------------------------------------------------------------------- inputs


def read_bodies(path: str) -> list[dict[str, Any]]:
    """Request bodies from a JSON file (a list of objects) or a JSON-lines file."""
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise LoadTestError(f"request bodies file not found: {file}")
    text = file.read_text()
    try:
        parsed = json.loads(text)
        bodies = parsed if isinstance(parsed, list) else [parsed]
    except json.JSONDecodeError:
        try:
            bodies = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise LoadTestError(
                f"{file}: neither a JSON list nor JSON lines ({exc.msg} at line {exc.lineno})"
            ) from exc
    if not bodies or not all(isinstance(b, dict) for b in bodies):
        raise LoadTestError(f"{file}: expected a non-empty list of JSON objects")
    return bodies


def sample_bodies(frame: Any, rows: int = 1_000) -> list[dict[str, Any]]:
    """Up to ``rows`` request bodies from raw transactions (``schemas.requests_from_raw``)."""
    from fraud_detection.serving.schemas import requests_from_raw

    bodies: list[dict[str, Any]] = requests_from_raw(frame.head(rows))
    return bodies


def bodies_from_state(state_dir: Any, rows: int = 1_000) -> list[dict[str, Any]]:
    """Request bodies from the newest raw partition under ``state_dir``'s data folder."""
    import pandas as pd

    from fraud_detection.config import StatePaths

    raw = StatePaths(root=state_dir).raw
    partitions = sorted(raw.glob("date=*/transactions.parquet"))
    if not partitions:
        raise LoadTestError(
            f"no raw transactions under {raw} to build requests from: run `fraud simulate` "
            "or pass --bodies FILE"
        )
    return sample_bodies(pd.read_parquet(partitions[-1]), rows)

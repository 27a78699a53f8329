"""``fraud loadtest`` (load a running service) and ``fraud delivery-check`` (is the
champion delivered?). Heavy imports happen inside the commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

StateDir = Annotated[
    Path | None, typer.Option(help="Use this state folder instead of the profile's.")
]


def _state(state_dir: Path | None) -> Path:
    from fraud_detection.config import load_profile

    return state_dir.resolve() if state_dir else load_profile().state_dir


def _predict_url(url: str) -> str:
    """A base URL (``http://host:port``) means its ``/predict``."""
    from urllib.parse import urlsplit

    return url.rstrip("/") + "/predict" if urlsplit(url).path in ("", "/") else url


def loadtest_command(
    url: Annotated[
        str, typer.Option(help="The service (base URL or full endpoint URL).")
    ] = "http://127.0.0.1:8000",
    concurrency: Annotated[int, typer.Option(help="Concurrent keep-alive clients.")] = 32,
    duration: Annotated[float, typer.Option(help="Seconds to measure.")] = 60.0,
    requests: Annotated[
        int | None, typer.Option(help="Stop after this many requests (even before --duration).")
    ] = None,
    warmup: Annotated[float, typer.Option(help="Seconds sent first and not counted.")] = 2.0,
    bodies: Annotated[
        Path | None,
        typer.Option(help="Request bodies: a JSON list or JSON lines (default: raw transactions)."),
    ] = None,
    rows: Annotated[
        int, typer.Option(help="Transactions from the newest raw day to cycle through.")
    ] = 1_000,
    processes: Annotated[
        int, typer.Option(help="Client processes to spread the connections over.")
    ] = 1,
    output: Annotated[Path | None, typer.Option(help="Also write the result as JSON here.")] = None,
    state_dir: StateDir = None,
) -> None:
    """Load-test a running service: latency percentiles, req/s, status codes, errors.

    The API key, when the service needs one, comes from FRAUD_API_KEY. Exits 1 if any
    request got a 5xx answer or none at all (transport error).
    """
    from fraud_detection.config import Secrets
    from fraud_detection.release.loadtest import bodies_from_state, read_bodies, run_loadtest

    target = _predict_url(url)
    payloads = read_bodies(str(bodies)) if bodies else bodies_from_state(_state(state_dir), rows)
    key = Secrets().api_key
    typer.echo(
        f"load test: {concurrency} clients on {target} for {duration:g} s "
        f"(+{warmup:g} s warm-up), {len(payloads):,} distinct bodies"
    )
    result = run_loadtest(
        target,
        payloads,
        concurrency=concurrency,
        duration_s=duration,
        requests=requests,
        warmup_s=warmup,
        api_key=None if key is None else key.get_secret_value(),
        processes=processes,
    )
    typer.echo(result.table())
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        typer.echo(f"  result: {output}")
    refused = result.requests - result.ok - result.server_errors - result.transport_errors
    if refused:
        typer.echo(f"  note: {refused:,} answers were 4xx: check the bodies and the API key")
    failed = result.server_errors + result.transport_errors
    if failed:
        typer.echo(
            f"FAILED: {failed:,} of {result.requests:,} requests got a 5xx or no answer", err=True
        )
        raise typer.Exit(1)


def delivery_check_command(
    url: Annotated[
        str | None,
        typer.Option(help="Check this running service (base URL) instead of starting one."),
    ] = None,
    state_dir: StateDir = None,
) -> None:
    """Is the champion delivered? It loads and predicts, the API answers, load budgets hold.

    The budgets are in configs/serving.yaml (delivery:); exits 1 when a check fails.
    Writes <state>/serving/delivery/v<N>.json and tags the version delivery_check=passed
    or failed in MLflow: a promotion counts as delivered when the tag says passed.
    """
    from fraud_detection.release.delivery import format_report, run_delivery_check

    report = run_delivery_check(
        state_dir=state_dir, url=url, progress=lambda message: typer.echo(f"... {message}")
    )
    for line in format_report(report):
        typer.echo(line)
    if not report.passed:
        typer.echo(f"delivery check FAILED: {report.summary()}", err=True)
        raise typer.Exit(1)

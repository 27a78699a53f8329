"""Model delivery checks: is the champion actually delivered? ``fraud delivery-check``.

Google's continuous-delivery checks for a model, automated, for the current champion:

1. **model**: the registered version loads with the service's own loader
   (``champion.load_version``: pipeline, fast scorer, checked against each other) and
   predicts on its signature's input example: one finite probability in [0, 1] per row.
2. **API**: the service answers: ``GET /health`` 200, ``GET /ready`` 200 naming the
   champion's version, and one ``POST /predict`` of a real transaction
   (``schemas.requests_from_raw``) answered 200 with a score in [0, 1] by that version.
3. **load**: a short load test (``release.loadtest``) meets the budgets of
   ``configs/serving.yaml`` ``delivery:``: requests per second at least ``min_qps``, p99
   latency at most ``max_p99_ms``, failed requests (5xx or transport errors) at most
   ``max_error_rate`` of the requests.

The check starts the service itself (``fraud serve`` on a free loopback port, in a child
process, stopped afterwards) unless given the URL of a running one. It writes
``<state>/serving/delivery/v<N>.json``, tags the model version in MLflow
(``delivery_check=passed|failed``, ``delivery_check.summary``, ``delivery_check.at``) and
returns the report; the CLI prints it and exits 1 when a check failed, naming the failed
budget. A promotion is considered delivered when its version carries
``delivery_check=passed`` (:func:`delivered`).

CT does not run this after a promotion: it would add the service start and a load test
(~30-50 s on 2 cores) to every run, while CT's model gate already loads the model and
scores holdout rows (the infrastructure check). What only this check adds, the API and
its latency budget, is a property of the deployed service, so it runs on the delivery
side: ``make delivery-check`` after a promotion, or ``--url`` against the deployment.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fraud_detection.errors import FraudError

if TYPE_CHECKING:
    from fraud_detection.config import Profile
    from fraud_detection.release.loadtest import LoadResult
    from fraud_detection.serving.settings import DeliverySettings

Progress = Callable[[str], None]

DELIVERY_TAG = "delivery_check"
SUMMARY_TAG = "delivery_check.summary"
AT_TAG = "delivery_check.at"
PASSED, FAILED = "passed", "failed"
SUMMARY_MAX_CHARS = 500
PREDICTION_FIELDS = ("request_id", "score", "decision", "threshold", "model_version")


class DeliveryError(FraudError):
    """The delivery check could not run: no champion, the service did not start."""


@dataclass(frozen=True)
class Check:
    """One delivery check: its name, whether it passed, and a one-line detail."""

    name: str
    passed: bool
    detail: str
    # For a load budget: which one (``min_qps``, ``max_p99_ms``, ``max_error_rate``).
    budget: str | None = None


@dataclass
class DeliveryReport:
    """Everything one delivery check found, as written to ``v<N>.json``."""

    model: str
    version: str
    url: str
    started_at: str
    seconds: float = 0.0
    checks: list[Check] = field(default_factory=list)
    budgets: dict[str, Any] = field(default_factory=dict)
    load: dict[str, Any] | None = None
    service_log: str | None = None
    report_path: str | None = None

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]

    def summary(self) -> str:
        """One line: passed with the load figures, or the failed checks and budgets."""
        if self.passed:
            load = self.load or {}
            lat = load.get("latency_ms", {})
            return (
                f"passed: model, API and load ({load.get('requests_per_second', 0):,.0f} req/s, "
                f"p99 {lat.get('p99', float('nan')):.1f} ms at "
                f"{load.get('concurrency', '?')} clients)"
            )
        failed = "; ".join(
            f"{c.name}{f' [{c.budget}]' if c.budget else ''}: {c.detail}" for c in self.failed
        )
        return f"failed: {failed}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["passed"] = self.passed
        out["summary"] = self.summary()
        return out


# ----------------------------------------------------------------- (i) the model


def check_model(name: str, version: str) -> Check:
    """Load the version with the service's own loader and score its signature's example.

    ``champion.load_version`` is what the service runs before swapping a version in: it
    downloads the sklearn pipeline, builds the fast scorer and checks it against the
    pipeline on the logged input example. Here the example (read back through the
    pyfunc, checked against the signature's columns) is then scored by that scorer: one
    finite probability in [0, 1] per row.
    """
    from fraud_detection.registry import tracking
    from fraud_detection.serving.champion import load_version

    check = "model loads and predicts its input example"
    uri = f"models:/{name}/{version}"
    try:
        served = load_version(name, version)
        pyfunc = tracking.load_pyfunc(uri)
    except Exception as exc:
        return Check(check, False, _one_line(exc))
    example = pyfunc.input_example
    if example is None:
        return Check(check, False, f"{uri} was logged without an input example")
    schema = pyfunc.metadata.get_input_schema()
    expected = list(schema.input_names()) if schema is not None else []
    got = [str(c) for c in getattr(example, "columns", [])]
    if got != expected:
        return Check(check, False, f"input example columns {got} differ from the signature's")
    try:
        scores = served.scorer.score_frame(example)
    except Exception as exc:
        return Check(check, False, f"scoring the input example failed: {_one_line(exc)}")
    ok, detail = tracking.check_probabilities(scores, len(example))
    return Check(check, ok, f"{uri} by the serving scorer: {detail}")


# -------------------------------------------------------------------- (ii) the API


def check_api(
    base_url: str, version: str, body: Mapping[str, Any], headers: Mapping[str, str]
) -> list[Check]:
    """``/health``, ``/ready`` with the champion's version, one ``/predict``."""
    import httpx

    checks = []
    with httpx.Client(base_url=base_url, headers=dict(headers), timeout=30.0) as client:
        try:
            health = client.get("/health")
            checks.append(
                Check("GET /health", health.status_code == 200, f"HTTP {health.status_code}")
            )
            ready = client.get("/ready")
            model = _json(ready).get("model")
            served = model.get("model_version") if isinstance(model, dict) else None
            ok = ready.status_code == 200 and str(served) == version
            checks.append(
                Check(
                    "GET /ready serves the champion",
                    ok,
                    f"HTTP {ready.status_code}, model_version {served!r} (champion v{version})",
                )
            )
            answer = client.post("/predict", json=dict(body))
            checks.append(_predict_check(answer, version))
        except httpx.HTTPError as exc:
            checks.append(Check("API answers", False, f"{base_url}: {_one_line(exc)}"))
    return checks


def _json(response: Any) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _predict_check(answer: Any, version: str) -> Check:
    name = "POST /predict scores a transaction"
    if answer.status_code != 200:
        return Check(name, False, f"HTTP {answer.status_code}: {answer.text[:200]}")
    data = _json(answer)
    missing = [key for key in PREDICTION_FIELDS if key not in data]
    if missing:
        return Check(name, False, f"answer lacks {', '.join(missing)}")
    score = data["score"]
    if not isinstance(score, (int, float)) or not 0.0 <= score <= 1.0:
        return Check(name, False, f"score {score!r} is not a probability")
    if str(data["model_version"]) != version:
        return Check(name, False, f"scored by v{data['model_version']}, champion is v{version}")
    return Check(name, True, f"HTTP 200, score {score:.4f} by v{version}")


# ------------------------------------------------------------------- (iii) load


def check_load(result: LoadResult, budgets: DeliverySettings) -> list[Check]:
    """The load test's figures against each budget; each failure names its budget."""
    failed = result.server_errors + result.transport_errors
    rate = failed / result.requests if result.requests else 1.0
    p99 = result.latency_ms["p99"]
    qps = result.requests_per_second
    return [
        Check(
            "load: throughput",
            qps >= budgets.min_qps,
            f"{qps:,.1f} req/s (budget min_qps {budgets.min_qps:g})",
            "min_qps",
        ),
        Check(
            "load: p99 latency",
            not math.isnan(p99) and p99 <= budgets.max_p99_ms,
            f"p99 {p99:.1f} ms (budget max_p99_ms {budgets.max_p99_ms:g})",
            "max_p99_ms",
        ),
        Check(
            "load: failed requests",
            result.requests > 0 and rate <= budgets.max_error_rate,
            f"{failed} of {result.requests} failed (5xx {result.server_errors}, transport "
            f"{result.transport_errors}; budget max_error_rate {budgets.max_error_rate:g})",
            "max_error_rate",
        ),
    ]


# --------------------------------------------------------------- the service


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def started_service(
    state_dir: Path,
    log_path: Path,
    timeout_s: float,
    progress: Progress,
    env: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """``fraud serve`` on a free loopback port in a child process; yields its base URL.

    ``env`` adds environment variables (``FRAUD_SERVING__ALIAS=challenger``). Waits for
    ``/ready`` to answer 200; stops the service (SIGTERM, then SIGKILL) on exit.
    """
    import httpx

    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "fraud_detection.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--state-dir",
        str(state_dir),
    ]
    env = {**os.environ, "FRAUD_PROFILE__STATE_DIR": str(state_dir), **(env or {})}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{port}"
    progress(f"starting fraud serve on {base} (log {log_path})")
    with log_path.open("w") as log:
        proc = subprocess.Popen(  # noqa: S603  (our own fraud serve command, no shell)
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            started = time.perf_counter()
            last = "no answer"
            while True:
                if proc.poll() is not None:
                    raise DeliveryError(
                        f"fraud serve exited with code {proc.returncode} before it was ready: "
                        f"{_last_line(log_path)} (see {log_path})"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    ready = httpx.get(f"{base}/ready", timeout=2.0)
                    if ready.status_code == 200:
                        break
                    last = " ".join(ready.text.split())[:300]
                if time.perf_counter() - started > timeout_s:
                    raise DeliveryError(
                        f"fraud serve was not ready after {timeout_s:.0f} s (last /ready: "
                        f"{last}; log {log_path}); raise delivery.startup_timeout_s if slow"
                    )
                time.sleep(0.25)
            progress(f"service ready in {time.perf_counter() - started:.1f} s")
            yield base
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


# ------------------------------------------------------------------ the report


def report_path(state_dir: Path, version: str) -> Path:
    """``<state>/serving/delivery/v<N>.json``."""
    return state_dir / "serving" / "delivery" / f"v{version}.json"


def write_report(report: DeliveryReport, path: Path) -> Path:
    report.report_path = str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def tag_version(name: str, version: str, report: DeliveryReport) -> None:
    """``delivery_check=passed|failed`` and a summary on the model version."""
    from mlflow import MlflowClient

    client = MlflowClient()
    summary = report.summary()
    if len(summary) > SUMMARY_MAX_CHARS:
        summary = summary[: SUMMARY_MAX_CHARS - 3] + "..."
    client.set_model_version_tag(name, version, DELIVERY_TAG, PASSED if report.passed else FAILED)
    client.set_model_version_tag(name, version, SUMMARY_TAG, summary)
    client.set_model_version_tag(name, version, AT_TAG, report.started_at)


def delivered(name: str, version: str) -> bool:
    """Whether ``version`` passed its delivery check (``delivery_check=passed``)."""
    from mlflow import MlflowClient

    return MlflowClient().get_model_version(name, version).tags.get(DELIVERY_TAG) == PASSED


# ------------------------------------------------------------------- the check


def _sample_bodies(state_dir: Path, rows: int) -> list[dict[str, Any]]:
    from fraud_detection.release.loadtest import bodies_from_state

    try:
        return bodies_from_state(state_dir, rows)
    except FraudError as exc:
        raise DeliveryError(str(exc)) from exc


def _headers(profile: Profile) -> dict[str, str]:
    from fraud_detection.config import Secrets
    from fraud_detection.release.loadtest import API_KEY_HEADER

    key = Secrets().api_key
    if key is None:
        if profile.serving.api_key_required:
            raise DeliveryError(
                "the profile requires an API key: set FRAUD_API_KEY for the delivery check"
            )
        return {}
    return {API_KEY_HEADER: key.get_secret_value()}


def run_delivery_check(
    *,
    state_dir: Path | None = None,
    url: str | None = None,
    budgets: DeliverySettings | None = None,
    progress: Progress = lambda _message: None,
    alias: str = "champion",
) -> DeliveryReport:
    """Run the three checks against the current champion; write, tag and return the report.

    ``url`` is a running service's base URL (``http://host:port``); without it the service
    is started here on the profile's (or ``state_dir``'s) state. ``alias="challenger"``
    checks the challenger instead, in a service started here that serves it
    (``FRAUD_SERVING__ALIAS``) and logs no predictions: it takes no live traffic. Raises
    :class:`DeliveryError` when there is nothing to check (no such alias) or the service
    cannot be started; a failed check is a report with ``passed`` false, not an error.
    """
    from fraud_detection.config import load_profile
    from fraud_detection.registry import tracking
    from fraud_detection.release.loadtest import run_loadtest
    from fraud_detection.serving.settings import load_serving_config

    profile = load_profile()
    if state_dir is not None:
        profile = profile.model_copy(update={"state_dir": state_dir.resolve()})
    state = profile.state_dir
    budgets = budgets or load_serving_config().delivery
    tracking.setup_mlflow(profile)
    name = profile.mlflow.model_name
    if url and alias != "champion":
        raise DeliveryError(
            f"a running service serves the champion: the {alias} is checked in a service "
            "started here (leave out --url)"
        )
    current = tracking.by_alias(name, alias)
    if current is None:
        raise DeliveryError(
            f"no {alias} of {name!r} to check: run `fraud ct run` (or `make ct`) first"
        )
    version = str(current.version)
    headers = _headers(profile)
    bodies = _sample_bodies(state, budgets.sample_rows)
    started = time.perf_counter()
    report = DeliveryReport(
        model=name,
        version=version,
        url=url or "(started here)",
        started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        budgets=budgets.model_dump(),
    )
    progress(f"checking {name} v{version}: the model loads and predicts")
    report.checks.append(check_model(name, version))
    log_path = state / "serving" / "delivery" / f"v{version}-serve.log"
    service: contextlib.AbstractContextManager[str] = (
        contextlib.nullcontext(url.rstrip("/"))
        if url
        else started_service(
            state,
            log_path,
            budgets.startup_timeout_s,
            progress,
            env={}
            if alias == "champion"
            else {"FRAUD_SERVING__ALIAS": alias, "FRAUD_SERVING__PREDICTION_LOG__ENABLED": "false"},
        )
    )
    if not url:
        report.service_log = str(log_path)
    with service as base:
        report.url = base
        progress(f"checking the API at {base}")
        report.checks.extend(check_api(base, version, bodies[0], headers))
        progress(
            f"load test: {budgets.concurrency} clients for {budgets.duration_s:g} s "
            f"(+{budgets.warmup_s:g} s warm-up)"
        )
        load = run_loadtest(
            f"{base}/predict",
            bodies,
            concurrency=budgets.concurrency,
            duration_s=budgets.duration_s,
            warmup_s=budgets.warmup_s,
            headers=headers,
        )
        report.load = load.to_dict()
        report.checks.extend(check_load(load, budgets))
    report.seconds = round(time.perf_counter() - started, 1)
    write_report(report, report_path(state, version))
    tag_version(name, version, report)
    return report


def format_report(report: DeliveryReport) -> list[str]:
    """The one-screen summary the CLI prints."""
    verdict = "PASSED" if report.passed else "FAILED"
    lines = [f"delivery check of {report.model} v{report.version}: {verdict} ({report.seconds} s)"]
    for check in report.checks:
        mark = "ok  " if check.passed else "FAIL"
        lines.append(f"  {mark} {check.name}: {check.detail}")
    if report.load:
        lat = report.load["latency_ms"]
        lines.append(
            f"  load: {report.load['requests']:,} requests at {report.load['concurrency']} "
            f"clients, {report.load['requests_per_second']:,.1f} req/s, p50 {lat['p50']:.1f} ms, "
            f"p99 {lat['p99']:.1f} ms, statuses {report.load['status_counts']}"
        )
    lines.append(f"  report: {report.report_path}")
    lines.append(
        f"  MLflow: {report.model} v{report.version} tagged "
        f"{DELIVERY_TAG}={PASSED if report.passed else FAILED}"
    )
    if not report.passed:
        budgets = sorted({c.budget for c in report.failed if c.budget})
        if budgets:
            lines.append(
                f"  failed budget(s): {', '.join(budgets)} (configs/serving.yaml delivery:)"
            )
    return lines


def _one_line(exc: BaseException, limit: int = 300) -> str:
    message = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return message if len(message) <= limit else message[: limit - 3] + "..."

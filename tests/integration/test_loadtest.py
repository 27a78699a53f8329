"""The load generator against a small local HTTP server: counts, statuses, errors.

The server (``http.server`` in a thread, HTTP/1.1 keep-alive) answers 500 when the body
says so, a chunked body on ``/chunked`` and closes the connection on ``/close``, so every
way the load generator reads an answer is exercised with known expected counts.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from fraud_detection.release.loadtest import LoadTestError, run_loadtest
from tests.conftest import free_port

pytestmark = pytest.mark.integration


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[dict[str, object]]] = []
    keys: ClassVar[list[str | None]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.seen.append(body)
        _Handler.keys.append(self.headers.get("X-API-Key"))
        status = 500 if body.get("fail") else 200
        if self.path == "/chunked":
            self.send_response(status)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b'{"a":', b"1}"):
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        payload = b'{"ok": true}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        if self.path == "/close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_args: object) -> None:  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _clear() -> None:
    _Handler.seen.clear()
    _Handler.keys.clear()


def test_counts_every_answer_by_status_and_cycles_the_bodies(server: str) -> None:
    bodies = [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3, "fail": True}]

    result = run_loadtest(
        f"{server}/predict",
        bodies,
        concurrency=4,
        requests=200,
        duration_s=None,
        api_key="k3y",  # pragma: allowlist secret
    )

    assert result.requests == 200
    assert result.status_counts == {200: 150, 500: 50}
    assert result.server_errors == 50
    assert result.ok == 150
    assert result.transport_errors == 0
    assert len(_Handler.seen) == 200
    assert {body["n"] for body in _Handler.seen} == {0, 1, 2, 3}
    assert set(_Handler.keys) == {"k3y"}
    assert result.latency_ms["p50"] <= result.latency_ms["p99"] <= result.latency_ms["max"]
    assert result.requests_per_second > 0
    assert "500: 50" in result.table()


def test_reads_chunked_answers_and_reconnects_when_the_server_closes(server: str) -> None:
    chunked = run_loadtest(f"{server}/chunked", [{"n": 1}], concurrency=2, requests=30)
    closing = run_loadtest(f"{server}/close", [{"n": 1}], concurrency=2, requests=30)

    assert chunked.status_counts == {200: 30}
    assert chunked.transport_errors == 0
    assert closing.status_counts == {200: 30}
    assert closing.transport_errors == 0


def test_a_duration_bounded_run_stops_on_time(server: str) -> None:
    result = run_loadtest(f"{server}/predict", [{"n": 1}], concurrency=2, duration_s=0.5)

    assert 0.4 < result.seconds < 5
    assert result.ok == len(_Handler.seen) > 0


def test_refused_connections_are_transport_errors_not_answers() -> None:
    url = f"http://127.0.0.1:{free_port()}/predict"

    result = run_loadtest(url, [{"n": 1}], concurrency=2, requests=6, duration_s=None)

    assert result.transport_errors == 6
    assert result.status_counts == {}
    assert "ConnectionRefusedError" in result.error_examples[0]


def test_client_processes_split_the_work(server: str) -> None:
    result = run_loadtest(
        f"{server}/predict", [{"n": 1}], concurrency=4, requests=80, duration_s=None, processes=2
    )

    assert result.processes == 2
    assert result.status_counts == {200: 80}
    assert len(_Handler.seen) == 80


def test_a_bad_url_is_a_user_error() -> None:
    with pytest.raises(LoadTestError, match="http://"):
        run_loadtest("https://example.org/predict", [{"n": 1}], requests=1)


def test_make_loadtest_runs_the_locustfile_on_raw_transactions_each_with_an_id_of_its_own(
    server: str, tmp_path: Path
) -> None:
    import os
    import subprocess

    from tests import worlds

    # Given a state folder with one raw day, and the small server standing for the API
    paths = worlds.simulate(tmp_path / "state", days=1, rows_per_day=60, cards=20, merchants=5)
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "FRAUD_LOADTEST_ROWS": "50",
        "FRAUD_API_KEY": "l0cust-k3y",  # pragma: allowlist secret
    }
    # When `make loadtest` runs Locust headless on that state for three seconds with 3 users
    done = subprocess.run(
        ["make", "-s", "-C", str(root), "loadtest", f"LOAD_URL={server}", "LOAD_USERS=3",
         "LOAD_TIME=3s", f"STATE_DIR={paths.root}"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    # Then it says where its report is: Locust's HTML report and its figures as JSON
    assert done.returncode == 0, done.stderr[-2000:]
    folder = paths.root / "serving" / "loadtest"
    assert f"report: {folder / 'report.html'}" in done.stdout, done.stdout
    assert "<html" in (folder / "report.html").read_text()[:2000].lower()
    # Then it posted /predict bodies of the raw day, each with a transaction id of its own,
    # with the API key, and counted every answer (but those of the requests still in flight,
    # one per user at most, when the time was up and Locust stopped its users)
    (stats,) = json.loads((folder / "stats.json").read_text())
    sent = len(_Handler.seen)
    assert sent > 10
    assert (stats["method"], stats["name"]) == ("POST", "/predict")
    assert sent - 3 <= stats["num_requests"] <= sent
    assert stats["num_failures"] == 0
    ids = [body["transaction_id"] for body in _Handler.seen]
    assert len(set(ids)) == sent
    assert {body["card_id"] for body in _Handler.seen} <= set(range(1, 10_000))
    assert {"amount", "merchant_id", "timestamp"} <= set(_Handler.seen[0])
    assert set(_Handler.keys) == {"l0cust-k3y"}  # pragma: allowlist secret


def test_make_loadtest_without_a_service_says_how_to_start_one(tmp_path: Path) -> None:
    import subprocess

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        ["make", "-s", "-C", str(root), "loadtest", "LOAD_URL=http://127.0.0.1:9",
         f"STATE_DIR={tmp_path / 'state'}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert lines == [
        "error: no service answers at http://127.0.0.1:9: start one first (make serve), "
        "or point LOAD_URL=... at it"
    ], done.stderr
    assert not (tmp_path / "state" / "serving" / "loadtest").exists()

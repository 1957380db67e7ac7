"""How `wapp up -d` reads /readyz to decide the stack is up, and whose logs explain why not."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from appliance.stack.control import _readiness
from tests.fixtures.stack import free_port


@dataclass
class Answer:
    status: int = 200
    body: dict[str, object] = field(default_factory=lambda: {"status": "ready", "checks": {}})


@pytest.fixture
def readyz() -> Iterator[tuple[str, Answer]]:
    """A real HTTP server answering /readyz with whatever the test puts in the Answer."""
    answer = Answer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            payload = json.dumps(answer.body).encode()
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/readyz", answer
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_200_means_ready(readyz: tuple[str, Answer]) -> None:
    url, _ = readyz
    assert _readiness(url).ready


def test_failing_checks_name_the_programs_whose_logs_explain_them(
    readyz: tuple[str, Answer],
) -> None:
    url, answer = readyz
    answer.status = 503
    checks = {
        "database": "ok",
        "redis": "ok",
        "engine.whatsapp": "no fresh heartbeat",
        "engine.sandbox": "no fresh heartbeat",
    }
    answer.body = {"success": False, "error": {"code": "NOT_READY", "details": {"checks": checks}}}
    readiness = _readiness(url)
    assert not readiness.ready
    assert readiness.culprits == ("engine-sandbox", "engine")
    assert "engine.whatsapp: no fresh heartbeat" in readiness.detail


def test_a_failing_database_points_at_the_api(readyz: tuple[str, Answer]) -> None:
    url, answer = readyz
    answer.status = 503
    checks = {"database": "unable to open database file", "redis": "ok"}
    answer.body = {"success": False, "error": {"details": {"checks": checks}}}
    assert _readiness(url).culprits == ("api",)


def test_an_api_that_does_not_answer_is_not_ready() -> None:
    readiness = _readiness(f"http://127.0.0.1:{free_port()}/readyz")
    assert not readiness.ready
    assert readiness.culprits == ("api",)
    assert "does not answer" in readiness.detail

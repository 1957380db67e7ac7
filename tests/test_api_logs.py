# ruff: noqa: F811  (the api_process fixture imported from tests.fixtures)
"""The api's logs: every answer carries `X-Trace-Id`, every request is one JSON line with
it, and a 500's line carries the stack. Through a real `wapp api`."""

from __future__ import annotations

import sqlite3
from typing import Any

import httpx

from tests.fixtures.api_process import ApiProcess, api_process  # noqa: F401  (fixture)

BAD_KEY = {"Authorization": "Bearer wapp_nosuchkey_secret"}
SEND = {"to": "15559000", "type": "text", "text": "hi"}


def _request_line(lines: list[dict[str, Any]], trace_id: str) -> dict[str, Any]:
    found = [line for line in lines if line.get("msg") == "request"]
    matching = [line for line in found if line.get("trace_id") == trace_id]
    assert len(matching) == 1, f"one request line for {trace_id}, got {found}"
    return matching[0]


def test_every_answer_has_a_trace_id_logged_on_one_json_line(api_process: ApiProcess) -> None:
    with httpx.Client(base_url=api_process.url, timeout=10) as client:
        answers = [
            client.get("/healthz"),
            client.get("/no/such/route"),
            # The fast JSON send path, refused before any session is looked up.
            client.post("/v1/sessions/s1/messages", json=SEND, headers=BAD_KEY),
            # A route through FastAPI's own stack, refused the same way.
            client.get("/v1/sessions", headers=BAD_KEY),
            client.get("/healthz", headers={"X-Trace-Id": "caller-chosen-1"}),
        ]
    api_process.stop()
    assert [a.status_code for a in answers] == [200, 404, 401, 401, 200]
    assert answers[-1].headers["x-trace-id"] == "caller-chosen-1"
    lines = api_process.json_lines()
    assert {line["service"] for line in lines} == {"api"}
    for answer in answers:
        trace_id = answer.headers["x-trace-id"]
        line = _request_line(lines, trace_id)
        assert line["method"] == answer.request.method
        assert line["path"] == answer.request.url.path
        assert line["status"] == answer.status_code
        assert line["duration_ms"] >= 0
        assert line["level"] == "info"
        assert "exc" not in line


def test_a_500_answers_with_a_trace_id_whose_log_line_carries_the_stack(
    api_process: ApiProcess,
) -> None:
    # A realistic fault: the table every authenticated request reads is gone.
    with sqlite3.connect(api_process.database) as db:
        db.execute("DROP TABLE api_keys")
    with httpx.Client(base_url=api_process.url, timeout=10) as client:
        answers = [
            client.get("/v1/sessions", headers=BAD_KEY),
            client.post("/v1/sessions/s1/messages", json=SEND, headers=BAD_KEY),
        ]
    api_process.stop()
    lines = api_process.json_lines()
    for answer in answers:
        assert answer.status_code == 500
        body = answer.json()
        assert body["success"] is False
        assert body["error"]["code"] == "INTERNAL_ERROR"
        trace_id = answer.headers["x-trace-id"]
        line = _request_line(lines, trace_id)
        assert (line["status"], line["level"]) == (500, "error")
        assert "Traceback" in line["exc"]
        assert "no such table: api_keys" in line["exc"]
    # One line per request: the stack is not logged a second time without its trace id.
    stacks = [line for line in lines if "no such table" in line.get("exc", "")]
    assert len(stacks) == len(answers)

"""A send to a number that is not on WhatsApp, end to end through HTTP
on the real stack with the sandbox: accepted with 202, then `failed` with the error code
NOT_ON_WHATSAPP in the message, its timeline and the live event stream, while a send to a
registered number (a simulated contact) from the same session is still delivered."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.fixtures.stack import StackDir
from tests.fixtures.waiting import wait_for

SESSION, PHONE = "nobody-shop", "15550401"
CONTACT = "15559401"
UNKNOWN = "15559499"


@pytest.fixture
def api(running_stack: StackDir) -> Iterator[httpx.Client]:
    boot = running_stack.wapp("keys", "bootstrap-admin")
    assert boot.returncode == 0, boot.stderr
    key = boot.stdout.strip().splitlines()[-1]
    with httpx.Client(
        base_url=f"http://127.0.0.1:{running_stack.api_port}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    ) as client:
        yield client


def send_text(api: httpx.Client, to: str, text: str) -> str:
    response = api.post(
        f"/v1/sessions/{SESSION}/messages", json={"type": "text", "to": to, "text": text}
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def failed_event(api: httpx.Client, message_id: str, timeout: float = 30) -> dict[str, Any]:
    """The `message.status` event saying `failed` for this message, read from the live
    event stream from its start (so it is found however early it came)."""
    deadline = time.monotonic() + timeout
    params = {"type": "message.status", "since": "0-0"}
    with api.stream("GET", "/v1/events", params=params, timeout=timeout) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if time.monotonic() > deadline:
                break
            if not line.startswith("data: "):
                continue
            event = orjson.loads(line[len("data: ") :])
            data = event["data"]
            if data["messageId"] == message_id and data["status"] == "failed":
                return dict(event)
    raise AssertionError(f"no failed event for {message_id}")


def test_a_send_to_a_number_not_on_whatsapp_is_failed_with_not_on_whatsapp(
    api: httpx.Client,
) -> None:
    contact = api.put(f"/v1/sandbox/contacts/{CONTACT}", json={"pushName": "Carol"})
    assert contact.status_code == 200, contact.text
    body = {"name": SESSION, "upstream": "sandbox", "phone": PHONE, "pacing": {"enabled": False}}
    created = api.post("/v1/sessions", json=body)
    assert created.status_code == 201, created.text
    wait_for(
        "connected", lambda: api.get(f"/v1/sessions/{SESSION}").json()["state"] == "connected", 90
    )

    nobody = send_text(api, UNKNOWN, "is anyone there?")
    carol = send_text(api, CONTACT, "hello carol")

    def settled() -> dict[str, Any] | None:
        message = api.get(f"/v1/messages/{nobody}").json()
        return message if message["status"] == "failed" else None

    message = wait_for("the send to the unknown number failed", settled, 60)
    assert message["errorCode"] == "NOT_ON_WHATSAPP"
    assert UNKNOWN in message["errorReason"]
    steps = message["timeline"]
    assert [s["status"] for s in steps] == ["queued", "sending", "failed"], steps
    assert steps[-1]["detail"]["code"] == "NOT_ON_WHATSAPP", steps[-1]

    event = failed_event(api, nobody)
    assert event["session"] == SESSION
    assert event["data"]["code"] == "NOT_ON_WHATSAPP"
    assert event["data"]["recipient"].split("@")[0] == UNKNOWN

    # The same session still reaches a registered number.
    wait_for(
        "the send to the contact delivered",
        lambda: api.get(f"/v1/messages/{carol}").json()["status"] in ("delivered", "read"),
        60,
    )

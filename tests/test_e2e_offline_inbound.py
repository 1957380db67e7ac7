"""Issue 11 item 1 end to end: what a simulated contact sends while a session is stopped, or
while its engine is killed, arrives inbound once each, in order, with one webhook each; and
receipts owed while the simulator restarted still arrive (the message reaches `read`)."""

from __future__ import annotations

import base64
import signal
import time
import tomllib
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest

from appliance.stack.engine_process import ENGINE_MAIN
from appliance.stack.programs import SIM_MAIN
from tests.fixtures.post_receiver import PostReceiver, post_receiver  # noqa: F401
from tests.fixtures.stack import StackDir, start_stack
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.timeout(300)

PHONE, CONTACT, SESSION = "15550071", "15559071", "off-1"
PNG = base64.b64encode(bytes.fromhex("89504e470d0a1a0a0000000d49484452")).decode()


@pytest.fixture
def stack(stack_dir: StackDir) -> StackDir:
    text = stack_dir.config.read_text(encoding="utf-8")
    stack_dir.config.write_text(text + "[webhooks]\nallow_private = true\n", encoding="utf-8")
    return start_stack(stack_dir)


@pytest.fixture
def api(stack: StackDir) -> Iterator[httpx.Client]:
    boot = stack.wapp("keys", "bootstrap-admin")
    assert boot.returncode == 0, boot.stderr
    with httpx.Client(
        base_url=f"http://127.0.0.1:{stack.api_port}",
        headers={"Authorization": f"Bearer {boot.stdout.strip().splitlines()[-1]}"},
        timeout=30,
    ) as client:
        yield client


def control_url(stack: StackDir) -> str:
    port = tomllib.loads(stack.config.read_text(encoding="utf-8"))["sandbox"]["control_port"]
    return f"http://127.0.0.1:{port}"


def state(api: httpx.Client) -> str:
    response = api.get(f"/v1/sessions/{SESSION}")
    assert response.status_code == 200, response.text
    return str(response.json()["state"])


def wait_state(api: httpx.Client, wanted: str) -> None:
    wait_for(f"session {wanted}", lambda: state(api) == wanted, 60)


def contact_sends_three(api: httpx.Client, stack: StackDir, tag: str) -> list[str]:
    """A text, an image (through the sandbox API) and a reaction to the text (simulator)."""
    text = api.post(
        f"/v1/sandbox/contacts/{CONTACT}/messages", json={"session": SESSION, "text": tag}
    )
    assert text.status_code == 201, text.text
    image = api.post(
        f"/v1/sandbox/contacts/{CONTACT}/messages",
        json={
            "session": SESSION,
            "media": {"kind": "image", "dataBase64": PNG, "mimetype": "image/png"},
        },
    )
    assert image.status_code == 201, image.text
    text_id = text.json()["message"]["id"]
    # The sandbox API has no reactions; the simulator's control API has.
    reaction = httpx.post(
        f"{control_url(stack)}/contacts/{CONTACT}/messages",
        json={"to": PHONE, "reaction": {"emoji": "👍", "targetId": text_id}},
        timeout=30,
    )
    assert reaction.status_code == 200, reaction.text
    return [text_id, image.json()["message"]["id"], reaction.json()["data"]["id"]]


def inbound(api: httpx.Client) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.get(
        f"/v1/sessions/{SESSION}/messages", params={"direction": "in", "limit": 100}
    ).json()["items"]
    return items


def assert_arrived_once_in_order(
    api: httpx.Client, receiver: PostReceiver, wa_ids: list[str]
) -> None:
    def arrived() -> list[dict[str, Any]] | None:
        mine = [m for m in inbound(api) if m["waId"] in wa_ids]
        return mine if len(mine) >= len(wa_ids) else None

    rows = wait_for("inbound messages", arrived, 90)
    rows.sort(key=lambda m: (m["createdAt"], m["id"]))
    assert [m["waId"] for m in rows] == wa_ids  # once each, in the order they were sent
    assert [m["kind"] for m in rows] == ["text", "image", "reaction"]

    def hooked() -> list[str] | None:
        got = [
            p["data"]["waId"]
            for p in receiver.snapshot("/hook")
            if p["type"] == "message.received" and p["data"]["waId"] in wa_ids
        ]
        return got if len(got) >= len(wa_ids) else None

    assert wait_for("webhooks", hooked, 60) == wa_ids
    time.sleep(2)  # nothing arrives twice later either
    assert len([m for m in inbound(api) if m["waId"] in wa_ids]) == len(wa_ids)
    assert hooked() == wa_ids


def processes(stack: StackDir, main: str) -> list[psutil.Process]:
    return [p for p in stack.processes() if main in " ".join(p.cmdline())]


def test_messages_sent_while_stopped_or_while_the_engine_died_arrive_once_in_order(
    api: httpx.Client,
    stack: StackDir,
    post_receiver: PostReceiver,  # noqa: F811
) -> None:
    created = api.post(
        "/v1/sessions",
        json={"name": SESSION, "upstream": "sandbox", "phone": PHONE, "pacing": {"enabled": False}},
    )
    assert created.status_code == 201, created.text
    wait_state(api, "connected")
    hook = api.post("/v1/webhooks", json={"url": post_receiver.url("/hook")})
    assert hook.status_code == 201, hook.text

    # 1. Stopped: WhatsApp (the simulator) queues them; they come at the next start.
    assert api.post(f"/v1/sessions/{SESSION}/stop").status_code == 202
    wait_state(api, "stopped")
    first = contact_sends_three(api, stack, "while stopped")
    assert api.post(f"/v1/sessions/{SESSION}/start").status_code == 202
    assert_arrived_once_in_order(api, post_receiver, first)

    # 2. The engine is killed while the session is up; supervisord restarts it.
    wait_state(api, "connected")
    engines = processes(stack, str(ENGINE_MAIN))
    assert engines
    for proc in engines:
        proc.send_signal(signal.SIGKILL)
    second = contact_sends_three(api, stack, "while the engine died")
    assert_arrived_once_in_order(api, post_receiver, second)


def test_receipts_owed_while_the_simulator_restarted_are_delivered(
    api: httpx.Client, stack: StackDir
) -> None:
    created = api.post(
        "/v1/sessions",
        json={"name": SESSION, "upstream": "sandbox", "phone": PHONE, "pacing": {"enabled": False}},
    )
    assert created.status_code == 201, created.text
    wait_state(api, "connected")
    tuned = api.put(f"/v1/sandbox/contacts/{CONTACT}", json={"readDelayMs": 4000})
    assert tuned.status_code in (200, 201), tuned.text
    sent = api.post(
        f"/v1/sessions/{SESSION}/messages", json={"type": "text", "to": CONTACT, "text": "read me"}
    )
    assert sent.status_code == 202, sent.text
    message_id = sent.json()["id"]

    def status() -> str:
        return str(api.get(f"/v1/messages/{message_id}").json()["status"])

    wait_for("delivered", lambda: status() == "delivered", 60)
    # The read receipt is owed but not due: restart the simulator (supervisord brings it back).
    for proc in processes(stack, str(SIM_MAIN)):
        proc.send_signal(signal.SIGTERM)
    wait_for("read after the simulator restarted", lambda: status() == "read", 120)

# ruff: noqa: F811  (the post_receiver fixture is requested by name)
"""/metrics on the real stack with two api workers: a sandbox session that pairs itself,
sends, a reply, a webhook endpoint, a dropped connection and an engine restart, all read
back through prometheus_client's text parser, whichever worker answers the scrape."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.post_receiver import PostReceiver, post_receiver  # noqa: F401
from tests.fixtures.stack import StackDir, start_stack
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.timeout(300)

CONTACT, PHONE, SESSION = "15559000", "15550001", "m1"
SENDS = "/v1/sessions/{session}/messages"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def stack(stack_dir: StackDir) -> StackDir:
    """The stack with two api workers and webhooks allowed to the loopback receiver."""
    text = stack_dir.config.read_text(encoding="utf-8").replace("[api]\n", "[api]\nworkers = 2\n")
    stack_dir.config.write_text(text + "[webhooks]\nallow_private = true\n", encoding="utf-8")
    return start_stack(stack_dir)


@pytest.fixture
def api(stack: StackDir) -> Iterator[httpx.Client]:
    boot = stack.wapp("keys", "bootstrap-admin")
    assert boot.returncode == 0, boot.stderr
    key = boot.stdout.strip().splitlines()[-1]
    with httpx.Client(
        base_url=f"http://127.0.0.1:{stack.api_port}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    ) as client:
        yield client


def scrape(stack: StackDir) -> Samples:
    # No key: loopback is enough by default. A new connection each time, so the scrapes
    # land on either worker.
    response = httpx.get(f"http://127.0.0.1:{stack.api_port}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    found: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def metric(stack: StackDir, name: str, **labels: str) -> float | None:
    return value(scrape(stack), name, **labels)


def control_port(stack: StackDir) -> int:
    text = stack.config.read_text(encoding="utf-8")
    found = re.search(r"control_port = (\d+)", text)
    assert found is not None
    return int(found.group(1))


def test_metrics_after_real_traffic_with_two_workers(
    stack: StackDir, api: httpx.Client, post_receiver: PostReceiver
) -> None:
    hook = api.post("/v1/webhooks", json={"url": post_receiver.url("/hook")})
    assert hook.status_code == 201, hook.text
    endpoint = hook.json()["id"]
    contact = api.put(f"/v1/sandbox/contacts/{CONTACT}", json={"pushName": "Carol"})
    assert contact.status_code in (200, 201), contact.text
    created = api.post(
        "/v1/sessions",
        json={"name": SESSION, "upstream": "sandbox", "phone": PHONE, "pacing": {"enabled": False}},
    )
    assert created.status_code == 201, created.text
    wait_for("connected", lambda: api.get(f"/v1/sessions/{SESSION}").json()["state"] == "connected")

    ids = []
    for i in range(3):
        sent = api.post(
            f"/v1/sessions/{SESSION}/messages", json={"type": "text", "to": CONTACT, "text": f"{i}"}
        )
        assert sent.status_code == 202, sent.text
        ids.append(sent.json()["id"])
    reply = api.post(
        f"/v1/sandbox/contacts/{CONTACT}/messages", json={"session": SESSION, "text": "back"}
    )
    assert reply.status_code in (200, 201, 202), reply.text
    for _ in range(12):  # fresh connections: spread over both workers
        assert httpx.get(f"{api.base_url}/v1/sessions", headers=api.headers).status_code == 200

    def settled() -> Samples | None:
        found = scrape(stack)
        done = (
            value(
                found, "wapp_messages_total", session=SESSION, direction="out", status="delivered"
            )
            == 3
            and value(
                found, "wapp_messages_total", session=SESSION, direction="in", status="received"
            )
            == 1
            and value(found, "wapp_webhook_backlog", endpoint=endpoint) == 0
        )
        return found if done else None

    samples = wait_for("sends delivered, the reply stored, webhooks sent", settled)

    def v(name: str, **labels: str) -> float | None:
        return value(samples, name, **labels)

    assert v("wapp_messages_total", session=SESSION, direction="out", status="queued") == 3
    assert v("wapp_messages_total", session=SESSION, direction="out", status="sent") == 3
    assert v("wapp_send_queue_depth", session=SESSION) == 0
    assert v("wapp_sessions", state="connected", upstream="sandbox") == 1
    assert v("wapp_session_state", session=SESSION, state="connected") == 1
    assert v("wapp_session_state", session=SESSION, state="qr") == 0
    assert v("wapp_engine_up", upstream="sandbox") == 1
    assert (v("wapp_engine_rss_bytes", upstream="sandbox") or 0) > 10 * 2**20
    assert (v("wapp_engine_heap_used_bytes", upstream="sandbox") or 0) > 2**20
    assert v("wapp_engine_loop_lag_seconds", upstream="sandbox") is not None
    delivered = v("wapp_webhook_deliveries_total", endpoint=endpoint, outcome="delivered")
    assert delivered == len(post_receiver.snapshot("/hook")) > 0
    assert v("wapp_recycles_total", upstream="sandbox") == 0

    # Request counts are the sum over both workers, whichever one answers.
    for _ in range(4):
        wait_for(
            "every worker's counts flushed",
            lambda: (
                metric(
                    stack,
                    "wapp_http_requests_total",
                    method="GET",
                    route="/v1/sessions",
                    status="200",
                )
                == 12
            ),
            timeout=15,
        )
    counted = metric(stack, "wapp_http_requests_total", method="POST", route=SENDS, status="202")
    assert counted == 3  # the fast path, under the route's template

    # A dropped TCP connection: the engine reconnects after a backoff (`reconnecting`).
    kick = httpx.post(
        f"http://127.0.0.1:{control_port(stack)}/faults/kick",
        json={"phone": PHONE, "kind": "drop"},
        timeout=10,
    )
    assert kick.status_code == 200, kick.text
    wait_for(
        "one reconnect counted",
        lambda: metric(stack, "wapp_reconnects_total", session=SESSION) == 1,
    )

    # An engine restart is one recycle, whichever worker saw it first.
    restarted = stack.wapp("restart", "engine-sandbox")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    wait_for(
        "the restart counted", lambda: metric(stack, "wapp_recycles_total", upstream="sandbox") == 1
    )
    wait_for(
        "connected again", lambda: api.get(f"/v1/sessions/{SESSION}").json()["state"] == "connected"
    )
    assert metric(stack, "wapp_recycles_total", upstream="sandbox") == 1
    assert metric(stack, "wapp_recycles_total", upstream="whatsapp") == 0

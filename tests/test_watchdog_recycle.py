"""The watchdog on the real stack: the sandbox engine is pushed over its memory limit with the
sandbox-only ballast while messages flow; the watchdog recycles it through supervisord and
every message is delivered exactly once (the simulated contacts' received lists tell), the
sessions come back without a QR, and the recycle is an event and an admin alert carrying
the reason and the figures.
"""

from __future__ import annotations

import collections
import functools
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from appliance.settings import load_settings
from appliance.stack.layout import StackLayout
from appliance.stack.rpc import connect
from tests.fixtures.post_receiver import PostReceiver, post_receiver  # noqa: F401
from tests.fixtures.stack import StackDir, start_stack
from tests.fixtures.waiting import wait_for

LIMIT_MB = 450
BALLAST_MB = 600
SESSIONS = {f"wd-{i}": f"4917300000{i}" for i in range(3)}
CONTACTS = [f"1555800{j:04d}" for j in range(3)]
MESSAGES = 45


@pytest.fixture
def watched_stack(watched_stack_dir: StackDir, post_receiver: PostReceiver) -> StackDir:  # noqa: F811
    stack_dir = watched_stack_dir
    with stack_dir.config.open("a", encoding="utf-8") as config:
        config.write(
            "[watchdog]\n"
            "interval_s = 1.0\n"
            f"engine_max_rss_mb = {LIMIT_MB}\n"
            "over_limit_samples = 2\n"
            "api_max_rss_mb = 8192\n"
            "[webhooks]\n"
            "allow_private = true\n"
            f'alert_webhook_url = "{post_receiver.url("/alerts")}"\n'
            "alert_min_interval_s = 0\n"
        )
    return start_stack(stack_dir)


@pytest.fixture
def api(watched_stack: StackDir) -> Iterator[httpx.Client]:
    boot = watched_stack.wapp("keys", "bootstrap-admin")
    assert boot.returncode == 0, boot.stderr
    key = boot.stdout.strip().splitlines()[-1]
    with httpx.Client(
        base_url=f"http://127.0.0.1:{watched_stack.api_port}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    ) as client:
        yield client


def engine_pid(stack: StackDir) -> int | None:
    supervisor = connect(StackLayout.of(load_settings(stack.config)))
    assert supervisor is not None
    with supervisor:
        (program,) = [p for p in supervisor.status().programs if p.name == "engine-sandbox"]
    return program.pid


def connected(api: httpx.Client, name: str) -> bool:
    return bool(api.get(f"/v1/sessions/{name}").json()["state"] == "connected")


def delivered(api: httpx.Client, message_id: str) -> bool:
    return api.get(f"/v1/messages/{message_id}").json()["status"] in ("delivered", "read")


def qr_posts(receiver: PostReceiver) -> int:
    return sum(
        1
        for post in receiver.snapshot("/hook")
        if post.get("type") == "session.state"
        and (post.get("data") or {}).get("state") in ("qr", "pairing_code")
    )


def send_carefully(api: httpx.Client, session: str, to: str, text: str, key: str) -> str:
    """As a careful client does: retry what failed with the same Idempotency-Key."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            response = api.post(
                f"/v1/sessions/{session}/messages",
                json={"type": "text", "to": to, "text": text},
                headers={"Idempotency-Key": key},
            )
        except httpx.TransportError:
            time.sleep(0.5)
            continue
        if response.status_code == 202:
            return str(response.json()["id"])
        assert response.status_code >= 500 or response.status_code == 409, response.text
        time.sleep(0.5)
    raise AssertionError(f"{text} never accepted")


def test_a_recycle_under_traffic_loses_nothing_and_says_why(
    watched_stack: StackDir,
    api: httpx.Client,
    post_receiver: PostReceiver,  # noqa: F811
) -> None:
    stack = watched_stack
    hook = api.post("/v1/webhooks", json={"url": post_receiver.url("/hook")})
    assert hook.status_code == 201, hook.text
    for phone in CONTACTS:
        assert api.put(f"/v1/sandbox/contacts/{phone}", json={}).status_code in (200, 201)
    for name, phone in SESSIONS.items():
        body = {"name": name, "upstream": "sandbox", "phone": phone, "pacing": {"enabled": False}}
        assert api.post("/v1/sessions", json=body).status_code == 201
    for name in SESSIONS:
        wait_for(f"{name} connected", functools.partial(connected, api, name))
    old_pid = engine_pid(stack)
    assert old_pid is not None

    nonce = uuid.uuid4().hex[:6]
    accepted: dict[str, str] = {}
    names = list(SESSIONS)

    def traffic() -> None:
        for i in range(MESSAGES):
            text = f"wd {nonce} {i}"
            accepted[text] = send_carefully(
                api, names[i % len(names)], CONTACTS[i % len(CONTACTS)], text, f"{nonce}-{i}"
            )
            time.sleep(0.3)

    sender = threading.Thread(target=traffic)
    sender.start()
    wait_for("a third of the traffic accepted", lambda: len(accepted) >= MESSAGES // 3)
    qr_before = qr_posts(post_receiver)
    assert qr_before >= 1, "the first pairing showed no QR: the no-QR check below proves nothing"
    ballast = stack.wapp("watchdog", "ballast", "--mb", str(BALLAST_MB))
    assert ballast.returncode == 0, ballast.stderr
    new_pid = wait_for(
        "the watchdog recycling the sandbox engine",
        lambda: (pid := engine_pid(stack)) not in (None, old_pid) and pid,
        timeout=60,
    )
    sender.join(timeout=180)
    assert not sender.is_alive()
    assert len(accepted) == MESSAGES

    def received() -> collections.Counter[str]:
        counts: collections.Counter[str] = collections.Counter()
        for phone in CONTACTS:
            items = api.get(f"/v1/sandbox/contacts/{phone}/messages").json()["items"]
            counts.update(
                t for item in items if (t := item.get("text", "")).startswith(f"wd {nonce} ")
            )
        return counts

    counts = wait_for(
        "every message delivered",
        lambda: (c := received()) and len(c) == MESSAGES and c,
        timeout=180,
    )
    assert sorted(counts) == sorted(accepted)
    assert set(counts.values()) == {1}, "a message was delivered twice"
    for message_id in accepted.values():
        wait_for(f"{message_id} delivered", functools.partial(delivered, api, message_id))
    for name in SESSIONS:
        wait_for(f"{name} back", functools.partial(connected, api, name))
    # Restored from stored auth: no QR came after the recycle.
    assert qr_posts(post_receiver) == qr_before

    events = stack.wapp("watchdog", "events")
    assert events.returncode == 0, events.stderr
    recycle = [line for line in events.stdout.splitlines() if '"engine.recycled"' in line]
    assert len(recycle) == 1
    assert '"reason":"memory"' in recycle[0]
    assert f'"old_pid":{old_pid}' in recycle[0]
    alert = wait_for(
        "the engine.recycled alert",
        lambda: [
            p for p in post_receiver.snapshot("/alerts") if p["type"] == "alert.engine.recycled"
        ],
        timeout=30,
    )[0]
    assert alert["details"]["reason"] == "memory"
    assert alert["details"]["figures"]["rss_mb"] > LIMIT_MB
    assert alert["details"]["oldPid"] == old_pid
    assert alert["details"]["newPid"] == new_pid
    assert "recycled by the watchdog (memory: RSS" in alert["message"]

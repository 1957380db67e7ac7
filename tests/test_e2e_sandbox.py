"""End to end through HTTP only: the real stack (`wapp up -d`: redis, api, engines,
simulator), two sandbox sessions that pair themselves, every message kind reaching a
simulated contact with delivered and read in its timeline, and inbound messages with
their media downloaded through the engine."""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.fixtures.stack import StackDir
from tests.fixtures.waiting import wait_for

CONTACT = "15559000"
ALICE, BOB = "15550001", "15550002"


def _png(width: int = 4, height: int = 4) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x02\x00\x00\x00"
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def api(running_stack: StackDir) -> Iterator[httpx.Client]:
    boot = running_stack.wapp("keys", "bootstrap-admin")
    assert boot.returncode == 0, boot.stderr
    key = boot.stdout.strip().splitlines()[-1]
    assert key.startswith("wapp_")
    with httpx.Client(
        base_url=f"http://127.0.0.1:{running_stack.api_port}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    ) as client:
        yield client


def create_session(api: httpx.Client, name: str, phone: str) -> None:
    body = {"name": name, "upstream": "sandbox", "phone": phone, "pacing": {"enabled": False}}
    response = api.post("/v1/sessions", json=body)
    assert response.status_code == 201, response.text


def connected(api: httpx.Client, name: str) -> bool:
    return api.get(f"/v1/sessions/{name}").json()["state"] == "connected"


def send(api: httpx.Client, session: str, body: dict[str, Any], file: bytes | None = None) -> str:
    if file is None:
        response = api.post(f"/v1/sessions/{session}/messages", json=body)
    else:
        mimetype = body.pop("_mimetype")
        response = api.post(
            f"/v1/sessions/{session}/messages",
            files={
                "message": (None, orjson.dumps(body), "application/json"),
                "file": ("upload.bin", file, mimetype),
            },
        )
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    return str(response.json()["id"])


def timeline(api: httpx.Client, message_id: str) -> list[str]:
    body = api.get(f"/v1/messages/{message_id}").json()
    return [step["status"] for step in body["timeline"]]


def test_two_sandbox_sessions_pair_send_every_kind_and_receive(api: httpx.Client) -> None:
    contact = api.put(
        f"/v1/sandbox/contacts/{CONTACT}", json={"pushName": "Carol", "readDelayMs": 200}
    )
    assert contact.status_code == 200, contact.text
    create_session(api, "alice", ALICE)
    create_session(api, "bob", BOB)
    wait_for("alice connected", lambda: connected(api, "alice"), 90)
    wait_for("bob connected", lambda: connected(api, "bob"), 90)

    png = _png()
    sent: dict[str, str] = {}
    sent["text"] = send(api, "alice", {"type": "text", "to": CONTACT, "text": "hello carol"})
    for kind, mimetype in [
        ("image", "image/png"),
        ("video", "video/mp4"),
        ("audio", "audio/mpeg"),
        ("voice", "audio/ogg; codecs=opus"),
        ("document", "application/pdf"),
        ("sticker", "image/webp"),
    ]:
        sent[kind] = send(api, "alice", {"type": kind, "to": CONTACT, "_mimetype": mimetype}, png)
    sent["location"] = send(
        api, "alice", {"type": "location", "to": CONTACT, "latitude": 52.52, "longitude": 13.4}
    )
    sent["contact"] = send(
        api,
        "alice",
        {
            "type": "contact",
            "to": CONTACT,
            "displayName": "Ada",
            "vcard": "BEGIN:VCARD\nVERSION:3.0\nFN:Ada\nTEL:+4915112345678\nEND:VCARD",
        },
    )
    sent["reply"] = send(
        api, "alice", {"type": "text", "to": CONTACT, "text": "a reply", "replyTo": sent["text"]}
    )
    sent["mention"] = send(
        api, "alice", {"type": "text", "to": CONTACT, "text": f"hi @{BOB}", "mentions": [BOB]}
    )
    sent["reaction"] = send(
        api, "alice", {"type": "reaction", "to": CONTACT, "messageId": sent["text"], "emoji": "👍"}
    )
    sent["to-bob"] = send(api, "alice", {"type": "text", "to": BOB, "text": "hi bob"})

    for kind, message_id in sent.items():
        if kind in ("reaction", "to-bob"):
            continue
        wait_for(f"{kind} read", lambda mid=message_id: "read" in timeline(api, mid), 90)
        steps = timeline(api, message_id)
        assert steps[:2] == ["queued", "sending"], (kind, steps)
        assert {"sent", "delivered", "read"} <= set(steps), (kind, steps)

    received = wait_for(
        "contact received everything",
        lambda: (
            (r := api.get(f"/v1/sandbox/contacts/{CONTACT}/messages").json()["items"])
            and len(r) >= len(sent) - 1
            and r
        ),
        60,
    )
    texts = {item.get("text") for item in received}
    assert {"hello carol", "a reply", f"hi @{BOB}"} <= texts
    media_sizes = [item["media"]["size"] for item in received if item.get("media")]
    assert media_sizes.count(len(png)) >= 5  # the contact decrypted the very bytes sent

    inbound_bob = wait_for(
        "bob's inbound",
        lambda: api.get("/v1/sessions/bob/messages", params={"direction": "in"}).json()["items"],
    )
    assert inbound_bob[0]["content"]["text"] == "hi bob"

    photo = bytes(range(256)) * 40
    pushed = api.post(
        f"/v1/sandbox/contacts/{CONTACT}/messages",
        json={
            "session": "alice",
            "media": {
                "kind": "document",
                "dataBase64": base64.b64encode(photo).decode(),
                "mimetype": "application/octet-stream",
                "fileName": "p.bin",
            },
        },
    )
    assert pushed.status_code == 201, pushed.text
    inbound = wait_for(
        "alice's inbound document",
        lambda: [
            m
            for m in api.get("/v1/sessions/alice/messages", params={"direction": "in"}).json()[
                "items"
            ]
            if m["kind"] == "document"
        ],
    )
    media = api.get(f"/v1/messages/{inbound[0]['id']}/media")
    assert media.status_code == 200, media.text
    assert hashlib.sha256(media.content).digest() == hashlib.sha256(photo).digest()

"""`wapp send`, `wapp messages show` and `wapp keys show|quotas|create --json` against a
real stack: a sandbox session sends to a simulated contact, the timeline shows the
receipts, and quotas set from the CLI are the ones the send path enforces."""

from __future__ import annotations

import subprocess
import zlib
from pathlib import Path
from typing import Any

import orjson

from tests.fixtures.cli_stack import CliStack

CONTACT = "15559100"


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stdout + result.stderr
    return orjson.loads(result.stdout)


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = (2).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00"
    raw = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))


def _connected(cli_stack: CliStack, name: str, phone: str) -> None:
    created = cli_stack.wapp(
        "sessions", "create", name, "--sandbox", "--phone", phone, "--no-pacing", "--wait"
    )
    assert created.returncode == 0, created.stderr


def test_send_text_and_follow_it_to_the_contacts_receipts(cli_stack: CliStack) -> None:
    cli_stack.simulator("POST", "/contacts", {"phone": CONTACT, "readDelayMs": 100})
    _connected(cli_stack, "sender", "15550201")
    sent = _json(
        cli_stack.wapp("send", "sender", CONTACT, "hello from the cli", "--wait", "--json")
    )
    assert sent["status"] == "queued"
    assert sent["session"] == "sender"
    assert sent["finalStatus"] in ("delivered", "read")

    shown = _json(cli_stack.wapp("messages", "show", sent["id"], "--json"))
    assert shown["content"]["text"] == "hello from the cli"
    assert shown["chat"] == f"{CONTACT}@s.whatsapp.net"
    steps = [s["status"] for s in shown["timeline"]]
    assert steps[0] == "queued"
    assert "sent" in steps
    assert "delivered" in steps

    table = cli_stack.wapp("messages", "show", sent["id"])
    assert table.returncode == 0
    assert "hello from the cli" in table.stdout
    assert "delivered" in table.stdout
    received = cli_stack.simulator("GET", f"/contacts/{CONTACT}/received")
    assert any(m.get("text") == "hello from the cli" for m in received)


def test_send_an_image_file_with_a_caption(cli_stack: CliStack, tmp_path: Path) -> None:
    _connected(cli_stack, "imager", "15550202")
    image = tmp_path / "dot.png"
    image.write_bytes(_png())
    sent = _json(
        cli_stack.wapp("send", "imager", CONTACT, "a dot", "--image", str(image), "--json")
    )
    shown = _json(cli_stack.wapp("messages", "show", sent["id"], "--json"))
    assert shown["kind"] == "image"
    assert shown["content"]["caption"] == "a dot"
    assert shown["content"]["mimetype"] == "image/png"


def test_send_refusals_exit_with_the_error(cli_stack: CliStack, tmp_path: Path) -> None:
    unknown = cli_stack.wapp("send", "nosuch", CONTACT, "hi")
    assert unknown.returncode == 1
    assert "no session nosuch" in unknown.stderr
    cli_stack.wapp("sessions", "create", "idle", "--sandbox")
    not_connected = cli_stack.wapp("send", "idle", CONTACT, "hi")
    assert not_connected.returncode == 1
    assert "not connected" in not_connected.stderr
    no_text = cli_stack.wapp("send", "idle", CONTACT)
    assert no_text.returncode == 2
    bad_to = cli_stack.wapp("send", "idle", "12", "hi")
    assert bad_to.returncode == 2
    assert "to:" in bad_to.stderr
    image = tmp_path / "x.png"
    image.write_bytes(_png())
    two = cli_stack.wapp("send", "idle", CONTACT, "--image", str(image), "--sticker", str(image))
    assert two.returncode == 2
    for result in (unknown, not_connected, no_text, bad_to, two):
        assert "Traceback" not in result.stderr


def test_messages_show_of_an_unknown_id_exits_1(cli_stack: CliStack) -> None:
    result = cli_stack.wapp("messages", "show", "01900000-0000-7000-8000-000000000000")
    assert result.returncode == 1
    assert "no message" in result.stderr


def test_keys_quotas_set_show_and_are_enforced_on_send(cli_stack: CliStack) -> None:
    created = _json(
        cli_stack.wapp("keys", "create", "--name", "shop", "--role", "tenant", "--json")
    )
    assert created["key"].startswith("wapp_")
    key_id = created["id"]
    shown = _json(cli_stack.wapp("keys", "quotas", key_id, "--json"))
    assert shown["maxSessions"] is None
    assert shown["usage"] == {"sessions": 0, "messagesToday": 0}

    set_ = _json(
        cli_stack.wapp(
            "keys", "quotas", key_id, "--max-sessions", "3", "--messages-per-day", "10", "--json"
        )
    )
    assert (set_["maxSessions"], set_["messagesPerDay"]) == (3, 10)
    # An option not given keeps its value; `none` lifts a quota.
    kept = _json(cli_stack.wapp("keys", "quotas", key_id, "--max-sessions", "none", "--json"))
    assert (kept["maxSessions"], kept["messagesPerDay"]) == (None, 10)
    assert _json(cli_stack.wapp("keys", "show", key_id, "--json"))["messagesPerDay"] == 10
    human = cli_stack.wapp("keys", "show", key_id)
    assert "messages today: 0 of 10" in human.stdout

    listed = _json(cli_stack.wapp("keys", "list", "--json"))
    assert key_id in [k["id"] for k in listed]
    bad = cli_stack.wapp("keys", "quotas", key_id, "--max-sessions", "-1")
    assert bad.returncode == 2
    unknown = cli_stack.wapp("keys", "quotas", "nosuch", "--messages-per-day", "5")
    assert unknown.returncode == 1
    assert "no API key nosuch" in unknown.stderr


def test_a_message_quota_set_on_the_admin_key_stops_cli_sends(cli_stack: CliStack) -> None:
    # The CLI acts as the first admin key: its quota counts CLI sends like API sends.
    _connected(cli_stack, "quota", "15550203")
    admin_id = cli_stack.admin_key.removeprefix("wapp_").split("_")[0]
    before = _json(cli_stack.wapp("keys", "show", admin_id, "--json"))["usage"]["messagesToday"]
    limit = before + 1
    cli_stack.wapp("keys", "quotas", admin_id, "--messages-per-day", str(limit))
    try:
        assert cli_stack.wapp("send", "quota", CONTACT, "one").returncode == 0
        refused = cli_stack.wapp("send", "quota", CONTACT, "two")
        assert refused.returncode == 1
        assert "quota is spent" in refused.stderr
        used = _json(cli_stack.wapp("keys", "show", admin_id, "--json"))["usage"]
        assert used["messagesToday"] == limit
    finally:
        cli_stack.wapp("keys", "quotas", admin_id, "--messages-per-day", "none")

"""The proof of `wapp backup` / `wapp restore` (scripts/bench/backup_restore runs it).

"qr_needed" counts the sessions that reported a `qr` or `pairing_code` state after the
restore (from `wapp:events`, entries newer than the restore): a sandbox session without
its auth state would pair itself again through a QR, so 0 means every session came back
on its restored keys. "messages_kept" compares every message (id and status, both
directions) each session listed before the backup with what it lists after the restore.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_stack import Stack

from appliance.security.master_key import create_master_key

PASSPHRASE = "bench passphrase, not a secret"
CONTACT = "15557000001"


def eventually(what: str, probe: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := probe():
            return found
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def states(api: httpx.Client) -> dict[str, str]:
    items = api.get("/v1/sessions", params={"limit": 500}).json()["items"]
    return {item["name"]: item["state"] for item in items}


# A status may only move forward after the restore (a receipt arriving later).
RANK = {"queued": 0, "sending": 1, "sent": 2, "delivered": 3, "read": 4, "received": 4}


def messages(api: httpx.Client, names: list[str]) -> dict[str, str]:
    """Every message id of these sessions, both directions, with its status."""
    seen: dict[str, str] = {}
    for name in names:
        body = api.get(f"/v1/sessions/{name}/messages", params={"limit": 200}).json()
        seen |= {m["id"]: m["status"] for m in body["items"]}
    return seen


def kept(before: dict[str, str], after: dict[str, str]) -> int:
    return sum(1 for i, status in before.items() if i in after and RANK[after[i]] >= RANK[status])


def populate(api: httpx.Client, n: int) -> list[str]:
    assert api.put(f"/v1/sandbox/contacts/{CONTACT}", json={}).status_code in (200, 201)
    names = [f"move-{i:03d}" for i in range(n)]
    for i, name in enumerate(names):
        body = {
            "name": name,
            "upstream": "sandbox",
            "phone": f"49173200{i:04d}",
            "pacing": {"enabled": False},
        }
        created = api.post("/v1/sessions", json=body)
        assert created.status_code == 201, created.text
    eventually(
        "every session connected",
        lambda: all(states(api).get(name) == "connected" for name in names),
        timeout=60 + 5 * n,
    )
    for name in names:
        out = api.post(
            f"/v1/sessions/{name}/messages",
            json={"type": "text", "to": CONTACT, "text": f"out {name}"},
        )
        assert out.status_code == 202, out.text
        sent = api.post(
            f"/v1/sandbox/contacts/{CONTACT}/messages", json={"session": name, "text": f"in {name}"}
        )
        assert sent.status_code == 201, sent.text

    def settled() -> bool:
        found = messages(api, names)
        done = {"delivered", "read", "received"}
        return len(found) == 2 * n and all(status in done for status in found.values())

    eventually("every message delivered and received", settled, timeout=60 + 5 * n)
    return names


def wipe(stack: Stack, database_url: str | None) -> None:
    data = stack.root / "data"
    shutil.rmtree(data)
    if database_url:
        url = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        subprocess.run(
            ["psql", url, "-q", "-c", "DROP SCHEMA public CASCADE; CREATE SCHEMA public"],
            check=True,
            capture_output=True,
        )
    # A new box: `wapp init` would have made it its own master key.
    create_master_key(data / "master.key")


def qr_sessions(stack: Stack, since_ms: int) -> int:
    client = redis.Redis(unix_socket_path=str(stack.root / "data" / "redis" / "redis.sock"))
    try:
        entries = client.xrange("wapp:events", min=f"{since_ms}-0")
    finally:
        client.close()
    paired_again: set[str] = set()
    for _id, fields in entries:  # type: ignore[union-attr]
        event = json.loads(fields[b"data"])
        if event["type"] == "session.state" and event["payload"]["state"] in ("qr", "pairing_code"):
            paired_again.add(event["session"])
    return len(paired_again)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--keep", action="store_true", help="Leave the stack's dir behind.")
    args = parser.parse_args()
    stack = Stack.create(args.database_url)
    secret = stack.root / "passphrase"
    secret.write_text(PASSPHRASE)
    secret.chmod(0o600)
    backup = stack.root / "box.wappbak"
    try:
        stack.up()
        key = stack.bootstrap_key()
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=stack.url, headers=headers, timeout=30) as api:
            names = populate(api, args.sessions)
            before = messages(api, names)
        started = time.monotonic()
        done = stack.wapp("backup", str(backup), "--passphrase-file", str(secret))
        backup_s = time.monotonic() - started
        if done.returncode != 0:
            raise SystemExit(f"backup failed: {done.stdout}{done.stderr}")
        stack.down()
        wipe(stack, args.database_url)
        started = time.monotonic()
        done = stack.wapp("restore", str(backup), "--passphrase-file", str(secret))
        restore_s = time.monotonic() - started
        if done.returncode != 0:
            raise SystemExit(f"restore failed: {done.stdout}{done.stderr}")
        restored_at = int(time.time() * 1000)
        stack.up()
        with httpx.Client(base_url=stack.url, headers=headers, timeout=30) as api:

            def all_connected() -> bool:
                now = states(api)
                return all(now.get(name) == "connected" for name in names)

            try:
                eventually("every session connected again", all_connected, 60 + 5 * len(names))
            except SystemExit as exc:
                print(exc, file=sys.stderr)
            connected = sum(1 for name in names if states(api).get(name) == "connected")
            after = messages(api, names)
        print(f"backup file: {backup.stat().st_size / 1048576:.2f} MiB", file=sys.stderr)
        print(
            f"sessions={len(names)} restored_connected={connected} "
            f"qr_needed={qr_sessions(stack, restored_at)} "
            f"messages_kept={kept(before, after)}/{len(before)} "
            f"backup_s={backup_s:.2f} restore_s={restore_s:.2f}"
        )
    finally:
        if args.keep:
            stack.down()
            print(f"kept {stack.root}", file=sys.stderr)
        else:
            stack.destroy()


if __name__ == "__main__":
    main()

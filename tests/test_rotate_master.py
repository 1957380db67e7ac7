"""`wapp keys rotate-master` on a live box (the real `wapp`, a real stack, the run's
database): every session's data key and every webhook secret end up under the new key,
sessions keep working and reopen without a QR; a SIGKILL at any point of the rotation
loses nothing, the box keeps reading meanwhile, and running it again finishes the job."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from appliance.db.engine import create_db_engine
from appliance.paths import REPO_DIR
from appliance.security.rotation import _open_dek
from appliance.settings import Settings, load_settings
from appliance.webhooks.crypto import open_sealed
from tests.fixtures.box import Box, populate
from tests.fixtures.stack import stack_directory
from tests.fixtures.waiting import wait_for


@pytest.fixture(scope="module")
def box() -> Iterator[Box]:
    with stack_directory() as stack:
        with stack.config.open("a", encoding="utf-8") as config:
            config.write("[webhooks]\nallow_private = true\n")
        populated = populate(stack)
        with populated.api() as api:
            for path in ("/a", "/b"):
                hook = api.post("/v1/webhooks", json={"url": f"http://127.0.0.1:9{path}"})
                assert hook.status_code == 201, hook.text
        yield populated


def _key(path: Path) -> bytes:
    return base64.b64decode(path.read_bytes().strip())


def _wrapped_deks(settings: Settings) -> dict[str, bytes]:
    client = redis.Redis(unix_socket_path=str(settings.redis_socket_path))
    try:
        keys = [k.decode() for k in client.scan_iter(match="wapp:auth:*")]
        return {k: client.hget(k, "dek") for k in keys}  # type: ignore[misc]
    finally:
        client.close()


def _secrets(settings: Settings) -> list[str]:
    async def go() -> list[str]:
        engine = create_db_engine(settings)
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(sa.text("SELECT secret_encrypted FROM webhooks"))
                return [row[0] for row in rows]
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _readable_under(settings: Settings, key: bytes) -> tuple[int, int]:
    """How many data keys and webhook secrets open under `key`."""
    deks = 0
    for name, wrapped in _wrapped_deks(settings).items():
        try:
            _open_dek(key, wrapped, f"{name}:dek".encode())
            deks += 1
        except Exception:
            continue
    secrets = 0
    for stored in _secrets(settings):
        try:
            open_sealed(key, stored)
            secrets += 1
        except Exception:
            continue
    return deks, secrets


def _restart_engine_and_wait(box: Box) -> None:
    """The engine reopens every session's auth state: it must unwrap each data key."""
    since = int(time.time() * 1000)
    done = box.stack.wapp("restart", "engine-sandbox")
    assert done.returncode == 0, done.stdout + done.stderr
    client = redis.Redis(unix_socket_path=str(box.stack.data_dir / "redis" / "redis.sock"))
    try:
        # The state the API shows may still be the one the old engine reported: wait for
        # the new engine's own `connected`, or the next step would race its session opens.
        for name in box.sessions:
            wait_for(f"{name} reopened", lambda n=name: _reopened(client, since, n))
        entries = client.xrange("wapp:events", min=f"{since}-0")
    finally:
        client.close()
    assert not [e for _id, e in entries if b'"state":"qr"' in e[b"data"]], "a QR after rotation"


def _reopened(client: redis.Redis, since: int, name: str) -> bool:
    """Whether `name` reported `connected` on wapp:events since `since` (ms)."""
    for _id, entry in client.xrange("wapp:events", min=f"{since}-0"):
        event = json.loads(entry[b"data"])
        is_state = event.get("type") == "session.state" and event.get("session") == name
        if is_state and (event.get("payload") or {}).get("state") == "connected":
            return True
    return False


def test_rotation_rewraps_everything_and_the_box_keeps_working(box: Box) -> None:
    settings = load_settings(box.stack.config)
    path = settings.master_key_path
    old = _key(path)
    assert _readable_under(settings, old) == (2, 2)
    done = box.stack.wapp("keys", "rotate-master")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 session data key(s) and 2 webhook secret(s) re-wrapped" in done.stdout
    new = _key(path)
    assert new != old
    assert path.stat().st_mode & 0o777 == 0o600
    assert not path.with_name("master.key.next").exists()
    assert not path.with_name("master.key.old").exists()
    assert _readable_under(settings, new) == (2, 2)
    assert _readable_under(settings, old) == (0, 0)
    _restart_engine_and_wait(box)
    with box.api() as api:
        sent = api.post(
            f"/v1/sessions/{box.sessions[0]}/messages",
            json={"type": "text", "to": "15558000001", "text": "after rotation"},
        )
        assert sent.status_code == 202, sent.text
        message = str(sent.json()["id"])
        # The api reads webhook secrets under the new key (it was started before).
        hook = api.get("/v1/webhooks").json()["items"][0]["id"]
        rotated = api.post(f"/v1/webhooks/{hook}/rotate-secret")
        assert rotated.status_code in (200, 201), rotated.text
    assert _readable_under(settings, new) == (2, 2)
    wait_for("sent after rotation", lambda: box.status(message) in ("delivered", "read"))


@pytest.mark.parametrize(("phase", "count"), [("sessions", 1), ("swap", 0), ("final", 0)])
def test_a_crash_mid_rotation_loses_nothing_and_a_rerun_finishes(
    box: Box, phase: str, count: int
) -> None:
    settings = load_settings(box.stack.config)
    path = settings.master_key_path
    upcoming = path.with_name("master.key.next")
    old = _key(path)
    # A case left unsound by the one before says so here, with the key files it left.
    assert _readable_under(settings, old) == (2, 2), sorted(p.name for p in path.parent.iterdir())
    crash = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fixtures.rotate_crash",
            str(box.stack.config),
            phase,
            str(count),
        ],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert crash.returncode == -9, crash.stdout + crash.stderr
    new = _key(upcoming) if upcoming.exists() else _key(path)
    assert new != old
    if phase == "sessions":
        # Half way: one data key under each master key, both files still there.
        assert _readable_under(settings, new)[0] == 1
        assert _readable_under(settings, old)[0] == 1
    # Whatever the point, the engine reopens every session meanwhile.
    _restart_engine_and_wait(box)
    done = box.stack.wapp("keys", "rotate-master")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "finished an interrupted rotation" in done.stdout
    # The run finished the crashed rotation: the key it had made, not a third one.
    assert _key(path) == new
    assert _readable_under(settings, new) == (2, 2)
    assert not upcoming.exists()
    assert not path.with_name("master.key.old").exists()
    _restart_engine_and_wait(box)

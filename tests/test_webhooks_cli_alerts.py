# ruff: noqa: F811  (fixtures imported from test_webhooks_support are requested by name)
"""`wapp webhooks ...` as an operator runs it, and admin alerts to a real receiver."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from standardwebhooks import Webhook as StandardWebhook

from appliance.db.engine import create_sessionmaker
from appliance.db.models import Session
from appliance.db.types import utcnow
from appliance.security.master_key import create_master_key
from tests.fixtures.settings import MakeSettings
from tests.fixtures.waiting import wait_for_async
from tests.fixtures.webhooks import Receiver, receiver  # noqa: F401  (fixture)

WAPP = Path(sys.executable).parent / "wapp"


def _wapp(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WAPP_")}
    return subprocess.run(
        [str(WAPP), "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=clean,
        timeout=60,
    )


def test_the_cli_adds_lists_tests_rotates_replays_and_removes(
    tmp_path: Path, database_url: str, receiver: Receiver
) -> None:
    data = tmp_path / "data"
    config = tmp_path / "config.toml"
    config.write_text(
        f'[general]\ndata_dir = "{data}"\n[database]\nurl = "{database_url}"\n'
        "[webhooks]\nallow_private = true\n"
    )
    data.mkdir(exist_ok=True)
    create_master_key(data / "master.key")

    added = _wapp(config, "webhooks", "add", receiver.url, "--event", "session.state")
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip().splitlines()[-1]
    assert secret.startswith("whsec_")
    [row] = orjson.loads(_wapp(config, "webhooks", "list", "--json").stdout)["items"]
    assert (row["url"], row["eventTypes"]) == (receiver.url, ["session.state"])
    assert secret not in _wapp(config, "webhooks", "list").stdout

    tested = _wapp(config, "webhooks", "test", row["id"])
    assert tested.returncode == 0, tested.stdout + tested.stderr
    got = receiver.received[0]
    assert StandardWebhook(secret).verify(got.body, got.headers)["type"] == "webhook.test"
    receiver.script = [(500, {})]
    assert _wapp(config, "webhooks", "test", row["id"]).returncode == 1

    rotated = _wapp(config, "webhooks", "rotate", row["id"], "--overlap-s", "0")
    assert rotated.returncode == 0, rotated.stderr
    assert rotated.stdout.strip().splitlines()[-1] != secret

    replayed = _wapp(config, "webhooks", "replay", row["id"], "--since", "1h")
    assert replayed.returncode == 0, replayed.stderr
    assert "requeued 0" in replayed.stdout
    assert _wapp(config, "webhooks", "replay", row["id"], "--since", "soon").returncode == 2

    assert _wapp(config, "webhooks", "rm", row["id"]).returncode == 0
    assert orjson.loads(_wapp(config, "webhooks", "list", "--json").stdout) == {"items": []}
    missing = _wapp(config, "webhooks", "rm", row["id"])
    assert missing.returncode != 0
    assert "no webhook" in missing.stdout + missing.stderr


async def test_a_failed_session_alerts_the_admin_once_per_interval(
    make_settings: MakeSettings,
    database_url: str,
    db_engine: AsyncEngine,
    db_sessionmaker: async_sessionmaker[AsyncSession],
    redis: aioredis.Redis,
    receiver: Receiver,
) -> None:
    from appliance.webhooks.alerts import Alerter
    from appliance.webhooks.engine_restarts import engine_restart_alert
    from tests.fixtures.webhooks import beat

    settings = make_settings(
        database={"url": database_url},
        webhooks={"alert_webhook_url": receiver.url, "alert_min_interval_s": 60},
    )
    reader = create_sessionmaker(db_engine, read_only=True)
    alerter = Alerter(settings.webhooks, reader, redis, scan_s=0.05)
    async with db_sessionmaker.begin() as db:
        db.add(Session(name="s1", upstream="sandbox", state="connected"))
        db.add(
            Session(
                name="s2",
                upstream="sandbox",
                state="failed",
                state_reason="3 reconnects without connecting",
                state_changed_at=utcnow() + timedelta(milliseconds=1),
            )
        )
    assert await alerter.scan() == 1
    [got] = receiver.received
    assert got.json["type"] == "alert.session.failed"
    assert got.json["details"]["session"] == "s2"
    # The session flaps: failed again, logged out: still within the interval, no new alert.
    for state in ("failed", "logged_out"):
        async with db_sessionmaker.begin() as db:
            await db.execute(
                sa.update(Session)
                .where(sa.column("name") == "s2")
                .values(state=state, state_changed_at=utcnow() + timedelta(seconds=1))
            )
        assert await alerter.scan() == 0
    assert len(receiver.received) == 1
    # Another worker's alerter shares the limit (Redis).
    other = Alerter(settings.webhooks, reader, redis)
    assert await other.alert(engine_restart_alert(beat(1), beat(2, 1))) == 1
    assert await alerter.alert(engine_restart_alert(beat(2, 1), beat(3, 2))) == 0
    assert [r.json["type"] for r in receiver.received] == [
        "alert.session.failed",
        "alert.engine.recycled",
    ]
    await asyncio.sleep(0)


async def test_alerts_run_in_the_api_when_configured(
    make_settings: MakeSettings,
    database_url: str,
    db_sessionmaker: async_sessionmaker[AsyncSession],
    redis: aioredis.Redis,
    receiver: Receiver,
) -> None:
    from tests.fixtures.webhooks import running_api_for, settings_with_key

    settings = settings_with_key(
        make_settings, database_url, webhooks={"alert_webhook_url": receiver.url}
    )
    async with running_api_for(settings) as client:
        runtime: Any = client._transport.app.state.webhooks  # type: ignore[attr-defined]
        runtime.alerter.scan_s = 0.05
        async with db_sessionmaker.begin() as db:
            db.add(
                Session(
                    name="s9",
                    upstream="sandbox",
                    state="logged_out",
                    state_changed_at=utcnow() + timedelta(seconds=1),
                )
            )
        await wait_for_async(
            "len(receiver.received) == 1", lambda: len(receiver.received) == 1, timeout=10
        )
    assert receiver.received[0].json["type"] == "alert.session.logged_out"


async def test_alerts_are_also_emailed_when_smtp_is_configured(
    make_settings: MakeSettings,
    database_url: str,
    db_engine: AsyncEngine,
    redis: aioredis.Redis,
) -> None:
    """A real SMTP conversation with a minimal server on 127.0.0.1."""
    from appliance.webhooks.alerts import Alerter
    from appliance.webhooks.engine_restarts import engine_restart_alert
    from tests.fixtures.webhooks import beat

    mails: list[bytes] = []

    async def smtp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 test ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                writer.write(b"250 test\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go on\r\n")
                await writer.drain()
                body = b""
                while (chunk := await reader.readline()) != b".\r\n":
                    body += chunk
                mails.append(body)
                writer.write(b"250 queued\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(smtp, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        settings = make_settings(
            database={"url": database_url},
            webhooks={
                "alert_email_to": "ops@example.com",
                "smtp_host": "127.0.0.1",
                "smtp_port": port,
                "smtp_starttls": False,
            },
        )
        alerter = Alerter(settings.webhooks, create_sessionmaker(db_engine), redis)
        assert await alerter.alert(engine_restart_alert(beat(1), beat(2, 1))) == 1
    finally:
        server.close()
        await server.wait_closed()
    [mail] = mails
    assert b"To: ops@example.com" in mail
    assert b"engine (whatsapp) restarted: pid 1 -> 2" in mail

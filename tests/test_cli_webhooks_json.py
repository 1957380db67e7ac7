# ruff: noqa: F811  (fixtures imported from tests.fixtures.webhooks are requested by name)
"""`wapp webhooks ... --json` prints what the API answers to the same request: the real CLI
(a subprocess on the config of the api's own database) beside an in-process api."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from appliance.settings import Settings
from tests.fixtures.api import auth
from tests.fixtures.webhooks import (  # noqa: F401  (fixtures)
    Receiver,
    receiver,
    webhook_settings,
    wh_client,
)

WAPP = Path(sys.executable).parent / "wapp"


def _config(settings: Settings, tmp_path: Path) -> Path:
    """A config file naming the api's own data dir, database and Redis."""
    config = tmp_path / "config.toml"
    config.write_text(
        f'[general]\ndata_dir = "{settings.general.data_dir}"\n'
        f'[database]\nurl = "{settings.database.url}"\n'
        f'[redis]\nmanaged = false\nurl = "{settings.redis.url}"\n'
        "[webhooks]\nallow_private = true\n",
        encoding="utf-8",
    )
    return config


async def _wapp(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WAPP_")}
    # In a thread: the in-process api keeps serving its background tasks meanwhile.
    return await asyncio.to_thread(
        subprocess.run,
        [str(WAPP), "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=clean,
        timeout=60,
    )


async def _json(config: Path, *args: str, code: int = 0) -> Any:
    result = await _wapp(config, *args, "--json")
    assert result.returncode == code, result.stdout + result.stderr
    return orjson.loads(result.stdout)


async def test_json_of_every_webhooks_command_is_the_apis_answer(
    wh_client: httpx.AsyncClient,
    webhook_settings: Settings,
    admin_key: str,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    config = _config(webhook_settings, tmp_path)
    h = auth(admin_key)

    added = await _json(config, "webhooks", "add", receiver.url, "--event", "session.state")
    by_api = await wh_client.post(
        "/v1/webhooks", headers=h, json={"url": receiver.url, "eventTypes": ["session.state"]}
    )
    assert by_api.status_code == 201, by_api.text
    assert set(added) == set(by_api.json())
    assert added["secret"].startswith("whsec_")
    assert (added["url"], added["eventTypes"]) == (receiver.url, ["session.state"])
    hook = added["id"]

    # What the API would show of the very same rows, field for field.
    shown = await _json(config, "webhooks", "show", hook)
    assert shown == (await wh_client.get(f"/v1/webhooks/{hook}", headers=h)).json()
    assert "secret" not in shown
    listed = await _json(config, "webhooks", "list")
    assert listed == (await wh_client.get("/v1/webhooks", headers=h)).json()
    assert {w["id"] for w in listed["items"]} == {hook, by_api.json()["id"]}

    rotated = await _json(config, "webhooks", "rotate", hook, "--overlap-s", "600")
    api_rotated = await wh_client.post(
        f"/v1/webhooks/{by_api.json()['id']}/rotate-secret", headers=h, json={"overlapS": 600}
    )
    assert set(rotated) == set(api_rotated.json())
    assert rotated["secret"] not in (added["secret"], api_rotated.json()["secret"])
    overlap_until = datetime.fromisoformat(rotated["previousSecretExpiresAt"])
    assert overlap_until > datetime.now(UTC) + timedelta(seconds=500)
    after = await _json(config, "webhooks", "show", hook)
    assert after == (await wh_client.get(f"/v1/webhooks/{hook}", headers=h)).json()

    tested = await _json(config, "webhooks", "test", hook)
    api_tested = (await wh_client.post(f"/v1/webhooks/{hook}/test", headers=h)).json()
    assert set(tested) == set(api_tested)
    assert tested["ok"] is True
    assert tested["statusCode"] == 200
    # A receiver that fails: the same JSON says so, and the exit code is still 1.
    receiver.script = [(500, {})]
    failed = await _json(config, "webhooks", "test", hook, code=1)
    assert (failed["ok"], failed["statusCode"]) == (False, 500)

    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    replayed = await _json(config, "webhooks", "replay", hook, "--since", since)
    api_replayed = await wh_client.post(
        f"/v1/webhooks/{hook}/replay", headers=h, params={"since": since}
    )
    assert replayed == api_replayed.json() == {"requeued": 0}


async def test_json_commands_refuse_unknown_ids_and_bad_input_without_half_json(
    wh_client: httpx.AsyncClient, webhook_settings: Settings, tmp_path: Path
) -> None:
    config = _config(webhook_settings, tmp_path)
    for args in (
        ("show", "wh_missing"),
        ("rotate", "wh_missing"),
        ("test", "wh_missing"),
        ("replay", "wh_missing", "--since", "1h"),
    ):
        result = await _wapp(config, "webhooks", *args, "--json")
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert result.stdout == ""
        assert "no webhook" in result.stderr
        assert "Traceback" not in result.stderr
    bad_url = await _wapp(config, "webhooks", "add", "ftp://example.com/x", "--json")
    assert bad_url.returncode != 0
    assert bad_url.stdout == ""
    assert "Traceback" not in bad_url.stderr
    assert (await _json(config, "webhooks", "list")) == {"items": []}

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appliance.auth import api_keys
from appliance.db.models import ApiKey
from appliance.errors import NotFound, Unauthorized
from appliance.settings import Settings
from tests.fixtures.settings import write_config

Sessions = async_sessionmaker[AsyncSession]
WAPP = Path(sys.executable).parent / "wapp"


async def test_a_created_key_authenticates_and_only_its_hash_is_stored(
    db_sessionmaker: Sessions,
) -> None:
    created = await api_keys.create_api_key(db_sessionmaker, name="ci", role="tenant")
    assert created.plaintext.startswith(f"wapp_{created.key.id}_")
    secret = created.plaintext.split("_", 2)[2]
    async with db_sessionmaker() as db:
        row = await db.get(ApiKey, created.key.id)
    assert row is not None
    assert secret not in row.secret_hash
    assert (await api_keys.authenticate(db_sessionmaker, created.plaintext)).id == created.key.id


@pytest.mark.parametrize(
    "presented",
    ["", "Bearer x", "wapp_", "wapp_only-id", "nope_id_secret"],
)
async def test_malformed_keys_are_refused(db_sessionmaker: Sessions, presented: str) -> None:
    with pytest.raises(Unauthorized):
        await api_keys.authenticate(db_sessionmaker, presented)


async def test_a_wrong_secret_an_unknown_id_and_a_revoked_key_are_refused_alike(
    db_sessionmaker: Sessions,
) -> None:
    created = await api_keys.create_api_key(db_sessionmaker, name="a", role="admin")
    with pytest.raises(Unauthorized, match="invalid API key"):
        await api_keys.authenticate(db_sessionmaker, created.plaintext + "x")
    with pytest.raises(Unauthorized, match="invalid API key"):
        await api_keys.authenticate(db_sessionmaker, "wapp_00000000-0000-0000-0000-000000000000_s")
    await api_keys.revoke_api_key(db_sessionmaker, created.key.id)
    with pytest.raises(Unauthorized, match="invalid API key"):
        await api_keys.authenticate(db_sessionmaker, created.plaintext)


async def test_revoking_twice_or_an_unknown_key_is_not_found(db_sessionmaker: Sessions) -> None:
    created = await api_keys.create_api_key(db_sessionmaker, name="a", role="tenant")
    await api_keys.revoke_api_key(db_sessionmaker, created.key.id)
    with pytest.raises(NotFound):
        await api_keys.revoke_api_key(db_sessionmaker, created.key.id)
    with pytest.raises(NotFound):
        await api_keys.revoke_api_key(db_sessionmaker, "no-such-id")


async def test_the_first_admin_key_is_made_once(db_sessionmaker: Sessions) -> None:
    first = await api_keys.ensure_admin_key(db_sessionmaker)
    assert first is not None
    assert first.key.role == "admin"
    assert await api_keys.ensure_admin_key(db_sessionmaker) is None
    await api_keys.revoke_api_key(db_sessionmaker, first.key.id)
    assert await api_keys.ensure_admin_key(db_sessionmaker) is not None


def _wapp(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WAPP), "--config", str(config), *args], capture_output=True, text=True, timeout=60
    )


def test_the_keys_cli_creates_lists_and_revokes_without_showing_secrets_again(
    db_settings: Settings, tmp_path: Path
) -> None:
    config = write_config(db_settings, tmp_path / "c.toml")
    created = _wapp(config, "keys", "create", "--name", "shop", "--max-sessions", "3")
    assert created.returncode == 0, created.stderr
    plaintext = created.stdout.strip().splitlines()[-1]
    assert plaintext.startswith("wapp_")
    listed = _wapp(config, "keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = orjson.loads(listed.stdout)
    assert [(r["name"], r["role"], r["maxSessions"]) for r in rows] == [("shop", "tenant", 3)]
    assert plaintext.split("_", 2)[2] not in listed.stdout
    revoked = _wapp(config, "keys", "revoke", rows[0]["id"])
    assert revoked.returncode == 0, revoked.stderr
    assert orjson.loads(_wapp(config, "keys", "list", "--json").stdout) == []
    again = _wapp(config, "keys", "revoke", rows[0]["id"])
    assert again.returncode == 1
    assert "no active API key" in again.stderr


def test_the_keys_cli_refuses_an_unknown_role(db_settings: Settings, tmp_path: Path) -> None:
    config = write_config(db_settings, tmp_path / "c.toml")
    result = _wapp(config, "keys", "create", "--name", "x", "--role", "root")
    assert result.returncode == 2


def test_bootstrap_admin_prints_a_key_once(db_settings: Settings, tmp_path: Path) -> None:
    config = write_config(db_settings, tmp_path / "c.toml")
    first = _wapp(config, "keys", "bootstrap-admin")
    assert first.returncode == 0, first.stderr
    assert f"http://127.0.0.1:{db_settings.api.port}" in first.stdout
    assert first.stdout.strip().splitlines()[-1].startswith("wapp_")
    second = _wapp(config, "keys", "bootstrap-admin")
    assert second.returncode == 0
    assert "wapp_" not in second.stdout.replace("wapp keys", "")

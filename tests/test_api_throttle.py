"""The bad-key throttle: one bad client cannot lock out good keys,
and nobody picks the address it is counted under with X-Forwarded-For."""

from __future__ import annotations

import uuid

import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appliance.api.app import create_app
from appliance.api.serve import proxy_options
from appliance.auth import api_keys
from tests.fixtures.api import auth, served
from tests.fixtures.settings import MakeSettings

LIMIT = 10  # [api] auth_failure_limit's default


async def _status(client: httpx.AsyncClient, key: str, **headers: str) -> int:
    response = await client.get("/v1/keys/me", headers={**auth(key), **headers})
    if response.status_code == 429:
        assert response.json()["error"]["code"] == "RATE_LIMITED"
        assert int(response.headers["retry-after"]) >= 1
    return response.status_code


async def test_a_revoked_key_hammering_locks_out_neither_admin_nor_other_tenants(
    api_client: httpx.AsyncClient,
    db_sessionmaker: async_sessionmaker[AsyncSession],
    admin_key: str,
    tenant_key: str,
) -> None:
    revoked = await api_keys.create_api_key(db_sessionmaker, name="old", role="tenant")
    await api_keys.revoke_api_key(db_sessionmaker, revoked.key.id)
    codes = [await _status(api_client, revoked.plaintext) for _ in range(LIMIT + 5)]
    assert codes == [401] * LIMIT + [429] * 5
    # Every client here is 127.0.0.1; the old throttle refused all of them now.
    assert await _status(api_client, admin_key) == 200
    assert await _status(api_client, tenant_key) == 200
    # Another bad key has a count of its own: a plain 401, not the revoked key's 429.
    assert await _status(api_client, "wapp_other_secret") == 401


async def test_a_valid_key_passes_while_wrong_secrets_for_its_id_are_throttled(
    api_client: httpx.AsyncClient, admin_key: str
) -> None:
    key_id = api_keys.parse(admin_key)[0]
    guesses = [await _status(api_client, f"wapp_{key_id}_wrong") for _ in range(LIMIT + 2)]
    assert guesses[-1] == 429
    assert await _status(api_client, admin_key) == 200
    assert await _status(api_client, f"wapp_{key_id}_wrong") == 429


async def test_made_up_key_ids_are_throttled_per_address_but_good_keys_pass(
    api_client: httpx.AsyncClient, admin_key: str
) -> None:
    codes = [
        await _status(api_client, f"wapp_{uuid.uuid4().hex}_guess") for _ in range(LIMIT * 10 + 1)
    ]
    assert codes[:-1] == [401] * (LIMIT * 10)
    assert codes[-1] == 429
    assert await _status(api_client, admin_key) == 200


async def test_missing_keys_are_not_counted(api_client: httpx.AsyncClient, admin_key: str) -> None:
    for _ in range(LIMIT * 2):
        assert (await api_client.get("/v1/keys/me")).status_code == 401
    assert await _status(api_client, "wapp_x_y") == 401


def test_trusted_proxies_accepts_addresses_and_networks_only(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings(api={"trusted_proxies": ["10.0.0.5", "10.1.0.0/16", "::1"]})
    assert settings.api.trusted_proxies == ("10.0.0.5", "10.1.0.0/16", "::1")
    assert make_settings().api.trusted_proxies == ()
    with pytest.raises(ValueError, match="not an IP address or network"):
        make_settings(api={"trusted_proxies": ["*"]})


@pytest.mark.parametrize(
    ("trusted", "last"),
    [
        # Default: X-Forwarded-For is ignored, the peer (127.0.0.1) is counted: 429.
        ((), 429),
        # A trusted proxy's X-Forwarded-For names the client: each address its own count.
        (("127.0.0.1",), 401),
    ],
)
async def test_forwarded_addresses_count_only_from_trusted_proxies(
    make_settings: MakeSettings,
    database_url: str,
    redis: aioredis.Redis,
    trusted: tuple[str, ...],
    last: int,
) -> None:
    settings = make_settings(database={"url": database_url}, api={"trusted_proxies": trusted})
    # As `wapp api` starts uvicorn (appliance/api/serve.py).
    async with (
        served(create_app(settings), **proxy_options(settings.api)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        codes = [
            await _status(client, "wapp_same_bad", **{"X-Forwarded-For": f"203.0.113.{n}"})
            for n in range(LIMIT + 1)
        ]
    assert codes[:-1] == [401] * LIMIT
    assert codes[-1] == last

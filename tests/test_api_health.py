from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI
from pydantic import BaseModel

from appliance.api.app import create_app
from appliance.contracts import EngineHeartbeat, Upstream
from appliance.redis_keys import engine_heartbeat_key
from tests.fixtures.api import ApiClientFactory, running_api
from tests.fixtures.settings import MakeSettings


async def beat(redis: aioredis.Redis, upstream: Upstream = "whatsapp", ttl_ms: int = 15000) -> None:
    heartbeat = EngineHeartbeat(
        pid=1234,
        upstream=upstream,
        started_at=datetime.now(UTC),
        uptime_s=1.0,
        rss_bytes=1,
        heap_used_bytes=1,
        heap_total_bytes=1,
        sessions=0,
        loop_lag_ms=0.5,
        node_version="v24.19.0",
    )
    await redis.set(engine_heartbeat_key(upstream), heartbeat.model_dump_json(), px=ttl_ms)


def assert_error_shape(body: dict[str, object], code: str) -> None:
    assert set(body) == {"success", "error"}
    assert body["success"] is False
    error = body["error"]
    assert isinstance(error, dict)
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]


async def test_healthz_answers_while_nothing_else_is_up(api_client: httpx.AsyncClient) -> None:
    response = await api_client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_ready_with_database_redis_and_a_fresh_heartbeat(
    api_client: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    await beat(redis)
    response = await api_client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "redis": "ok", "engine.whatsapp": "ok"},
    }


async def test_readyz_names_the_engine_when_its_heartbeat_is_missing(
    api_client: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    response = await api_client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert_error_shape(body, "NOT_READY")
    assert "engine.whatsapp" in body["error"]["message"]
    assert body["error"]["details"]["checks"]["engine.whatsapp"] == "no fresh heartbeat"
    assert body["error"]["details"]["checks"]["database"] == "ok"


async def test_readyz_goes_unready_when_the_heartbeat_expires(
    api_client: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    await beat(redis, ttl_ms=150)
    assert (await api_client.get("/readyz")).status_code == 200
    while await redis.exists(engine_heartbeat_key("whatsapp")):
        pass
    assert (await api_client.get("/readyz")).status_code == 503


async def test_readyz_calls_an_unreadable_heartbeat_not_ready(
    api_client: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    await redis.set(engine_heartbeat_key("whatsapp"), b"{not json", px=10000)
    response = await api_client.get("/readyz")
    assert response.status_code == 503
    assert (
        response.json()["error"]["details"]["checks"]["engine.whatsapp"] == "heartbeat unreadable"
    )


async def test_readyz_with_the_sandbox_enabled_needs_both_engines(
    make_settings: MakeSettings, api_client_for: ApiClientFactory, redis: aioredis.Redis
) -> None:
    settings = make_settings(sandbox={"enabled": True})
    async with api_client_for(settings) as client:
        await beat(redis, "whatsapp")
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert "engine.sandbox" in response.json()["error"]["message"]
        await beat(redis, "sandbox")
        assert (await client.get("/readyz")).status_code == 200


async def test_readyz_names_redis_when_it_is_unreachable(
    make_settings: MakeSettings, api_client_for: ApiClientFactory, tmp_path: object
) -> None:
    settings = make_settings(redis={"url": "unix:///nonexistent/wapp-test/redis.sock"})
    async with api_client_for(settings) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["error"]["details"]["checks"]
    assert checks["redis"] != "ok"
    assert checks["database"] == "ok"


async def test_readyz_names_the_database_when_it_is_unreachable(
    make_settings: MakeSettings, api_client_for: ApiClientFactory, redis: aioredis.Redis
) -> None:
    settings = make_settings(database={"url": "sqlite+aiosqlite:////nonexistent/dir/wapp.db"})
    await beat(redis)
    async with api_client_for(settings) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["error"]["details"]["checks"]
    assert checks["database"] != "ok"
    assert checks["redis"] == "ok"
    assert response.json()["error"]["message"] == "not ready: database"


async def test_an_unknown_route_answers_404_in_the_error_shape(
    api_client: httpx.AsyncClient,
) -> None:
    response = await api_client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert_error_shape(response.json(), "NOT_FOUND")


async def test_a_wrong_method_answers_405_in_the_error_shape(api_client: httpx.AsyncClient) -> None:
    response = await api_client.post("/healthz")
    assert response.status_code == 405
    assert_error_shape(response.json(), "METHOD_NOT_ALLOWED")


class _Probe(BaseModel):
    pairing_phone: str
    count: int


def _app_with_probe_routes(app: FastAPI) -> FastAPI:
    # Routes that exist only in this test, to drive the app-wide handlers.
    @app.post("/probe")
    async def probe(body: _Probe) -> dict[str, int]:
        return {"count": body.count}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom secret-ish detail")

    return app


async def test_bad_input_answers_422_naming_each_field(make_settings: MakeSettings) -> None:
    app = _app_with_probe_routes(create_app(make_settings()))
    async with running_api(app) as client:
        response = await client.post("/probe", json={"pairing_phone": "1", "count": "many"})
        missing = await client.post("/probe", json={})
        not_json = await client.post(
            "/probe", content=b"{oops", headers={"content-type": "application/json"}
        )
    assert response.status_code == 422
    body = response.json()
    assert_error_shape(body, "VALIDATION_ERROR")
    assert body["error"]["details"]["fields"][0]["field"] == "body.count"
    assert missing.status_code == 422
    assert {f["field"] for f in missing.json()["error"]["details"]["fields"]} == {
        "body.pairingPhone",
        "body.count",
    }
    assert not_json.status_code == 422
    assert_error_shape(not_json.json(), "VALIDATION_ERROR")


async def test_an_unexpected_error_answers_500_in_the_error_shape_without_details(
    make_settings: MakeSettings,
) -> None:
    app = _app_with_probe_routes(create_app(make_settings()))
    async with running_api(app) as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    assert_error_shape(response.json(), "INTERNAL_ERROR")
    assert "kaboom" not in response.text


async def test_every_response_carries_a_trace_id_and_a_valid_one_is_kept(
    api_client: httpx.AsyncClient,
) -> None:
    kept = await api_client.get("/healthz", headers={"X-Trace-Id": "abc-123"})
    assert kept.headers["x-trace-id"] == "abc-123"
    replaced = await api_client.get("/healthz", headers={"X-Trace-Id": "bad id with spaces"})
    assert replaced.headers["x-trace-id"] != "bad id with spaces"
    assert len(replaced.headers["x-trace-id"]) == 32


async def test_openapi_is_served_with_the_probes(api_client: httpx.AsyncClient) -> None:
    spec = (await api_client.get("/openapi.json")).json()
    assert {"/healthz", "/readyz"} <= set(spec["paths"])
    assert "503" in spec["paths"]["/readyz"]["get"]["responses"]
    docs = await api_client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_probes_reject_a_body_method_with_405(
    api_client: httpx.AsyncClient, path: str
) -> None:
    response = await api_client.delete(path)
    assert response.status_code == 405

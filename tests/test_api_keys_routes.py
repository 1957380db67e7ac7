from __future__ import annotations

import httpx
import pytest

from tests.fixtures.api import auth


async def test_an_admin_creates_a_key_whose_secret_is_shown_once(
    api_client: httpx.AsyncClient, admin_key: str
) -> None:
    created = await api_client.post(
        "/v1/keys",
        json={"name": "shop", "maxSessions": 2, "messagesPerDay": 100},
        headers=auth(admin_key),
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["key"].startswith(f"wapp_{body['id']}_")
    assert (body["role"], body["maxSessions"], body["messagesPerDay"]) == ("tenant", 2, 100)
    secret = body["key"].split("_", 2)[2]
    listed = await api_client.get("/v1/keys", headers=auth(admin_key))
    assert listed.status_code == 200
    assert secret not in listed.text
    assert body["id"] in {k["id"] for k in listed.json()["items"]}
    one = await api_client.get(f"/v1/keys/{body['id']}", headers=auth(admin_key))
    assert "key" not in one.json()
    me = await api_client.get("/v1/keys/me", headers=auth(body["key"]))
    assert me.json()["id"] == body["id"]


async def test_x_api_key_works_like_bearer(api_client: httpx.AsyncClient, admin_key: str) -> None:
    response = await api_client.get("/v1/keys/me", headers={"X-Api-Key": admin_key})
    assert response.status_code == 200


async def test_quotas_are_set_and_cleared(api_client: httpx.AsyncClient, admin_key: str) -> None:
    created = (
        await api_client.post("/v1/keys", json={"name": "q"}, headers=auth(admin_key))
    ).json()
    set_ = await api_client.put(
        f"/v1/keys/{created['id']}/quotas",
        json={"maxSessions": 3, "messagesPerDay": 10},
        headers=auth(admin_key),
    )
    assert (set_.json()["maxSessions"], set_.json()["messagesPerDay"]) == (3, 10)
    cleared = await api_client.put(
        f"/v1/keys/{created['id']}/quotas", json={}, headers=auth(admin_key)
    )
    assert (cleared.json()["maxSessions"], cleared.json()["messagesPerDay"]) == (None, None)


async def test_a_revoked_key_is_refused(api_client: httpx.AsyncClient, admin_key: str) -> None:
    created = (
        await api_client.post("/v1/keys", json={"name": "r"}, headers=auth(admin_key))
    ).json()
    revoked = await api_client.delete(f"/v1/keys/{created['id']}", headers=auth(admin_key))
    assert revoked.status_code == 200
    assert revoked.json()["revokedAt"] is not None
    refused = await api_client.get("/v1/keys/me", headers=auth(created["key"]))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "UNAUTHORIZED"
    again = await api_client.delete(f"/v1/keys/{created['id']}", headers=auth(admin_key))
    assert again.status_code == 404


async def test_a_tenant_cannot_manage_keys(api_client: httpx.AsyncClient, tenant_key: str) -> None:
    for method, path in [
        ("GET", "/v1/keys"),
        ("POST", "/v1/keys"),
        ("GET", "/v1/keys/x"),
        ("DELETE", "/v1/keys/x"),
        ("PUT", "/v1/keys/x/quotas"),
    ]:
        response = await api_client.request(
            method, path, headers=auth(tenant_key), json={"name": "x"}
        )
        assert response.status_code == 403, (method, path)
        assert response.json()["error"]["code"] == "FORBIDDEN"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic abc"},
        {"X-Api-Key": "wapp_x_y"},
    ],
)
async def test_missing_or_bad_keys_answer_401(
    api_client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await api_client.get("/v1/keys/me", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHORIZED"


async def test_bad_create_bodies_answer_422(api_client: httpx.AsyncClient, admin_key: str) -> None:
    for body in [
        {},
        {"name": ""},
        {"name": "x", "role": "root"},
        {"name": "x", "maxSessions": 0},
        {"name": "x", "messagesPerDay": "lots"},
    ]:
        response = await api_client.post("/v1/keys", json=body, headers=auth(admin_key))
        assert response.status_code == 422, body
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_unknown_key_ids_answer_404(api_client: httpx.AsyncClient, admin_key: str) -> None:
    assert (await api_client.get("/v1/keys/nope", headers=auth(admin_key))).status_code == 404
    response = await api_client.put("/v1/keys/nope/quotas", json={}, headers=auth(admin_key))
    assert response.status_code == 404


async def test_repeated_bad_keys_from_one_address_are_slowed_down(
    api_client: httpx.AsyncClient, admin_key: str
) -> None:
    for _ in range(10):
        assert (await api_client.get("/v1/keys/me", headers=auth("wapp_a_b"))).status_code == 401
    blocked = await api_client.get("/v1/keys/me", headers=auth("wapp_a_b"))
    assert blocked.status_code == 429
    assert blocked.json()["error"]["code"] == "RATE_LIMITED"
    assert 1 <= int(blocked.headers["retry-after"]) <= 60
    # Only the bad key waits: a good key from the same address is never refused for it.
    assert (await api_client.get("/v1/keys/me", headers=auth(admin_key))).status_code == 200


async def test_no_answer_contains_a_secret(api_client: httpx.AsyncClient, admin_key: str) -> None:
    secret = admin_key.split("_", 2)[2]
    for path in ["/v1/keys", "/v1/keys/me"]:
        response = await api_client.get(path, headers=auth(admin_key))
        assert secret not in response.text

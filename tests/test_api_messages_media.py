from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appliance.contracts import DownloadMediaReply
from appliance.settings import Settings
from tests.fixtures.api import ApiClientFactory, auth
from tests.fixtures.api_helpers import (
    connected_session,
    control_commands,
    inbound_message,
    put_heartbeat,
    session_commands,
)
from tests.fixtures.settings import MakeSettings

Db = async_sessionmaker[AsyncSession]
TO = "4915112345678"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
LIMIT = 4096


class _Media(BaseHTTPRequestHandler):
    """A real HTTP server for media URLs: what a client's CDN would be."""

    def do_GET(self) -> None:
        routes = {
            "/photo.png": (200, "image/png", PNG),
            "/doc.pdf": (200, "application/pdf", b"%PDF-1.4 test"),
            "/page.html": (200, "text/html", b"<html></html>"),
            "/big.png": (200, "image/png", b"x" * (LIMIT + 1)),
            "/missing": (404, "text/plain", b"no"),
        }
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/photo.png")
            self.end_headers()
            return
        if self.path == "/endless.png":
            # No Content-Length: the limit must hold while streaming.
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            for _ in range(4):
                self.wfile.write(b"y" * LIMIT)
            return
        code, kind, data = routes.get(self.path, (404, "text/plain", b"?"))
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def media_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Media)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _settings(make_settings: MakeSettings, database_url: str, **media: object) -> Settings:
    return make_settings(database={"url": database_url}, media={"max_bytes": LIMIT, **media})


@pytest.fixture
async def private_ok_client(
    api_client_for: ApiClientFactory,
    make_settings: MakeSettings,
    database_url: str,
    redis: aioredis.Redis,
) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client_for(_settings(make_settings, database_url, allow_private=True)) as c:
        yield c


async def _send(client: httpx.AsyncClient, key: str, body: dict[str, object]) -> httpx.Response:
    return await client.post("/v1/sessions/sales-1/messages", json=body, headers=auth(key))


async def test_a_media_url_is_fetched_into_a_blob_the_engine_sends(
    private_ok_client: httpx.AsyncClient,
    media_server: str,
    tenant_key: str,
    redis: aioredis.Redis,
    db_sessionmaker: Db,
    data_dir: Path,
) -> None:
    await connected_session(private_ok_client, tenant_key, db_sessionmaker)
    response = await _send(
        private_ok_client,
        tenant_key,
        {
            "type": "image",
            "to": TO,
            "media": {"url": f"{media_server}/redirect"},
            "caption": "look",
        },
    )
    assert response.status_code == 202, response.text
    [command] = await session_commands(redis, "sales-1")
    assert command.type == "send_media"
    payload = command.payload
    assert (payload.kind, payload.mimetype, payload.caption, payload.url) == (
        "image",
        "image/png",
        "look",
        None,
    )
    blob = Path(payload.blob_path)
    assert blob.parent == data_dir / "media" / "outbound"
    assert await asyncio.to_thread(blob.read_bytes) == PNG


async def test_a_document_keeps_its_filename_and_any_allowed_type(
    private_ok_client: httpx.AsyncClient,
    media_server: str,
    tenant_key: str,
    redis: aioredis.Redis,
    db_sessionmaker: Db,
) -> None:
    await connected_session(private_ok_client, tenant_key, db_sessionmaker)
    response = await _send(
        private_ok_client,
        tenant_key,
        {
            "type": "document",
            "to": TO,
            "media": {"url": f"{media_server}/doc.pdf"},
            "filename": "cat.pdf",
        },
    )
    assert response.status_code == 202, response.text
    [command] = await session_commands(redis, "sales-1")
    assert (command.payload.filename, command.payload.mimetype) == ("cat.pdf", "application/pdf")


@pytest.mark.parametrize(
    ("path", "kind", "status", "code"),
    [
        ("/big.png", "image", 413, "MEDIA_TOO_LARGE"),
        ("/endless.png", "image", 413, "MEDIA_TOO_LARGE"),
        ("/page.html", "document", 415, "MEDIA_TYPE_NOT_ALLOWED"),
        ("/doc.pdf", "image", 415, "MEDIA_TYPE_NOT_ALLOWED"),
        ("/missing", "image", 422, "MEDIA_FETCH_FAILED"),
    ],
)
async def test_media_urls_over_the_limits_are_refused_and_nothing_is_kept(
    private_ok_client: httpx.AsyncClient,
    media_server: str,
    tenant_key: str,
    redis: aioredis.Redis,
    db_sessionmaker: Db,
    data_dir: Path,
    path: str,
    kind: str,
    status: int,
    code: str,
) -> None:
    await connected_session(private_ok_client, tenant_key, db_sessionmaker)
    body = {"type": kind, "to": TO, "media": {"url": f"{media_server}{path}"}}
    response = await _send(private_ok_client, tenant_key, body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert await session_commands(redis, "sales-1") == []
    outbound = data_dir / "media" / "outbound"
    assert not outbound.exists() or list(outbound.iterdir()) == []


async def test_a_private_media_url_is_refused_unless_allowed(
    api_client_for: ApiClientFactory,
    make_settings: MakeSettings,
    database_url: str,
    media_server: str,
    tenant_key: str,
    redis: aioredis.Redis,
    db_sessionmaker: Db,
) -> None:
    async with api_client_for(_settings(make_settings, database_url)) as client:
        await connected_session(client, tenant_key, db_sessionmaker)
        for url in (
            f"{media_server}/photo.png",
            media_server.replace("127.0.0.1", "localhost") + "/photo.png",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:9/x.png",
            "http://10.1.2.3/x.png",
        ):
            response = await _send(
                client, tenant_key, {"type": "image", "to": TO, "media": {"url": url}}
            )
            assert response.status_code == 422, url
            assert response.json()["error"]["code"] == "MEDIA_URL_REFUSED", url
        assert await session_commands(redis, "sales-1") == []


async def test_an_uploaded_file_becomes_the_blob(
    api_client_for: ApiClientFactory,
    make_settings: MakeSettings,
    database_url: str,
    tenant_key: str,
    redis: aioredis.Redis,
    db_sessionmaker: Db,
) -> None:
    async with api_client_for(_settings(make_settings, database_url)) as client:
        await connected_session(client, tenant_key, db_sessionmaker)
        message = orjson.dumps({"type": "voice", "to": TO}).decode()
        sound = b"OggS" + b"\x01" * 100
        response = await client.post(
            "/v1/sessions/sales-1/messages",
            data={"message": message},
            files={"file": ("note.ogg", sound, "audio/ogg")},
            headers={**auth(tenant_key), "Idempotency-Key": "voice-1"},
        )
        assert response.status_code == 202, response.text
        [command] = await session_commands(redis, "sales-1")
        assert (command.payload.kind, command.payload.mimetype) == ("voice", "audio/ogg")
        assert await asyncio.to_thread(Path(command.payload.blob_path).read_bytes) == sound
        # The same upload again is a replay; other bytes under the same key are not.
        again = await client.post(
            "/v1/sessions/sales-1/messages",
            data={"message": message},
            files={"file": ("note.ogg", sound, "audio/ogg")},
            headers={**auth(tenant_key), "Idempotency-Key": "voice-1"},
        )
        assert again.json()["id"] == response.json()["id"]
        other = await client.post(
            "/v1/sessions/sales-1/messages",
            data={"message": message},
            files={"file": ("note.ogg", sound + b"!", "audio/ogg")},
            headers={**auth(tenant_key), "Idempotency-Key": "voice-1"},
        )
        assert other.status_code == 422
        assert other.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
        assert len(await session_commands(redis, "sales-1")) == 1


async def test_bad_uploads_are_refused(
    api_client_for: ApiClientFactory,
    make_settings: MakeSettings,
    database_url: str,
    tenant_key: str,
    redis: aioredis.Redis,
    db_sessionmaker: Db,
) -> None:
    async with api_client_for(_settings(make_settings, database_url)) as client:
        await connected_session(client, tenant_key, db_sessionmaker)
        image = orjson.dumps({"type": "image", "to": TO}).decode()
        cases = [
            ({"message": image}, ("a.png", b"x" * (LIMIT + 1), "image/png"), 413),
            ({"message": image}, ("a.html", b"<html>", "text/html"), 415),
            ({}, ("a.png", PNG[:100], "image/png"), 422),
            ({"message": "{not json"}, ("a.png", PNG[:100], "image/png"), 422),
            (
                {"message": orjson.dumps({"type": "image"}).decode()},
                ("a.png", b"x", "image/png"),
                422,
            ),
            (
                {"message": orjson.dumps({"type": "text", "to": TO, "text": "x"}).decode()},
                ("a.png", b"x", "image/png"),
                422,
            ),
        ]
        for data, file, status in cases:
            response = await client.post(
                "/v1/sessions/sales-1/messages",
                data=data,
                files={"file": file},
                headers=auth(tenant_key),
            )
            assert response.status_code == status, (data, file[0], response.text)
            assert response.json()["success"] is False
        assert await session_commands(redis, "sales-1") == []


MEDIA_REF = {
    "kind": "image",
    "mimetype": "image/jpeg",
    "direct_path": "/v/t62/abc",
    "url": "https://mmg.whatsapp.net/v/t62/abc",
    "media_key": "a2V5",
    "file_enc_sha256": "ZW5j",
    "file_sha256": "c2hh",
    "file_length": 9,
}


async def _play_download(redis: aioredis.Redis, data: bytes) -> int:
    """The engine's side: take download_media, write the file, LPUSH the reply."""
    while True:
        for command in await control_commands(redis):
            if command.type == "download_media":
                await asyncio.to_thread(Path(command.payload.target_path).write_bytes, data)
                reply = DownloadMediaReply(
                    request_id=command.payload.request_id,
                    ok=True,
                    path=command.payload.target_path,
                    size=len(data),
                )
                await redis.lpush(command.payload.reply_to, reply.model_dump_json())
                return 1
        await asyncio.sleep(0.02)


async def test_a_received_attachment_is_downloaded_through_the_engine_then_cached(
    api_client: httpx.AsyncClient,
    tenant_key: str,
    other_tenant_key: str,
    redis: aioredis.Redis,
    db_sessionmaker: Db,
    data_dir: Path,
) -> None:
    session = await connected_session(api_client, tenant_key, db_sessionmaker)
    message_id = await inbound_message(
        db_sessionmaker,
        session["id"],
        kind="image",
        payload={"kind": "image", "media": {"mimetype": "image/jpeg", "ref": MEDIA_REF}},
    )
    await put_heartbeat(redis, rss_mb=100, sessions=1)
    engine = asyncio.create_task(_play_download(redis, b"jpegbytes"))
    first = await api_client.get(f"/v1/messages/{message_id}/media", headers=auth(tenant_key))
    await engine
    assert first.status_code == 200, first.text
    assert first.content == b"jpegbytes"
    assert first.headers["content-type"] == "image/jpeg"
    [download] = [c for c in await control_commands(redis) if c.type == "download_media"]
    assert download.payload.media.direct_path == "/v/t62/abc"
    assert str(download.payload.message_id) == message_id
    assert Path(download.payload.target_path) == data_dir / "media" / "cache" / message_id
    # Served from the cache: no second command, even with the engine gone.
    await redis.delete("wapp:engine:whatsapp:heartbeat")
    second = await api_client.get(f"/v1/messages/{message_id}/media", headers=auth(tenant_key))
    assert second.content == b"jpegbytes"
    assert len([c for c in await control_commands(redis) if c.type == "download_media"]) == 1
    hidden = await api_client.get(
        f"/v1/messages/{message_id}/media", headers=auth(other_tenant_key)
    )
    assert hidden.status_code == 404


async def test_media_of_a_message_without_attachment_is_404_and_a_silent_engine_504(
    api_client_for: ApiClientFactory,
    make_settings: MakeSettings,
    database_url: str,
    tenant_key: str,
    redis: aioredis.Redis,
    db_sessionmaker: Db,
) -> None:
    settings = make_settings(database={"url": database_url}, sessions={"reply_timeout_s": 0.3})
    async with api_client_for(settings) as client:
        session = await connected_session(client, tenant_key, db_sessionmaker)
        text = await inbound_message(db_sessionmaker, session["id"], wa_id="3ATXT")
        none = await client.get(f"/v1/messages/{text}/media", headers=auth(tenant_key))
        assert none.status_code == 404
        assert none.json()["error"]["code"] == "NO_MEDIA"
        image = await inbound_message(
            db_sessionmaker,
            session["id"],
            wa_id="3AIMG",
            payload={"kind": "image", "media": {"mimetype": "image/jpeg", "ref": MEDIA_REF}},
        )
        down = await client.get(f"/v1/messages/{image}/media", headers=auth(tenant_key))
        assert down.status_code == 503
        await put_heartbeat(redis, rss_mb=100, sessions=1)
        silent = await client.get(f"/v1/messages/{image}/media", headers=auth(tenant_key))
        assert silent.status_code == 504
        assert silent.json()["error"]["code"] == "ENGINE_TIMEOUT"


async def test_the_json_part_may_come_as_a_file(
    api_client_for: ApiClientFactory,
    make_settings: MakeSettings,
    database_url: str,
    tenant_key: str,
    redis: aioredis.Redis,
    db_sessionmaker: Db,
) -> None:
    async with api_client_for(_settings(make_settings, database_url)) as client:
        await connected_session(client, tenant_key, db_sessionmaker)
        message = orjson.dumps({"type": "sticker", "to": TO})
        response = await client.post(
            "/v1/sessions/sales-1/messages",
            files={
                "message": ("message.json", message, "application/json"),
                "file": ("s.webp", b"RIFF0000WEBP", "image/webp"),
            },
            headers=auth(tenant_key),
        )
        assert response.status_code == 202, response.text
        [command] = await session_commands(redis, "sales-1")
        assert (command.payload.kind, command.payload.mimetype) == ("sticker", "image/webp")

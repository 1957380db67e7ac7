"""The dispatcher's HTTP client against real local servers: plain and TLS, keep-alive,
a server that hangs up, answers too big to keep, every way a send can fail, and the
SSRF guard at connect time."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from appliance.webhooks import ssrf
from appliance.webhooks.http_client import HTTP_ERRORS, MAX_BODY, EndpointClient
from tests.fixtures.tls import self_signed

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def serving(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return await reader.readexactly(length)


def answering(status: bytes, body: bytes = b"", extra: bytes = b"") -> tuple[Handler, list[int]]:
    """A keep-alive server answering every request alike; also counts its connections."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                await read_request(reader)
                writer.write(
                    b"HTTP/1.1 "
                    + status
                    + b"\r\ncontent-length: "
                    + str(len(body)).encode()
                    + b"\r\n"
                    + extra
                    + b"\r\n"
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return handle, connections


async def test_posts_reuse_one_kept_alive_connection_and_read_the_answer() -> None:
    handle, connections = answering(b"429 Too Many Requests", b"slow down", b"Retry-After: 7\r\n")
    client = EndpointClient(2, allow_private=True)
    async with serving(handle) as port:
        for _ in range(5):
            reply = await client.post(
                f"http://127.0.0.1:{port}/hook", b'{"a":1}', {"x-test": "1"}, timeout_s=5
            )
            assert reply.status == 429
            assert reply.headers["retry-after"] == "7"
            assert reply.text == "slow down"
    await client.aclose()
    assert len(connections) == 1


async def test_the_request_arrives_with_its_body_and_headers() -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        body = await reader.readexactly(len(b'{"hello":"world"}'))
        seen.append((head, body))
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        writer.close()

    client = EndpointClient(1, allow_private=True)
    async with serving(handle) as port:
        reply = await client.post(
            f"http://127.0.0.1:{port}/in?x=1",
            b'{"hello":"world"}',
            {"webhook-id": "evt-1", "content-type": "application/json"},
            timeout_s=5,
        )
    await client.aclose()
    assert reply.status == 204
    [(head, body)] = seen
    assert head.startswith(b"POST /in?x=1 HTTP/1.1\r\n")
    assert b"webhook-id: evt-1\r\n" in head
    assert body == b'{"hello":"world"}'


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # no keep-alive, though the answer did not say so

    client = EndpointClient(1, allow_private=True)
    async with serving(handle) as port:
        url = f"http://127.0.0.1:{port}/hook"
        assert (await client.post(url, b"1", {}, timeout_s=5)).status == 200
        await asyncio.sleep(0.1)  # the close reaches the client
        assert (await client.post(url, b"2", {}, timeout_s=5)).status == 200
    await client.aclose()
    assert len(connections) == 2


async def test_only_the_first_64_kib_of_a_big_answer_are_kept() -> None:
    handle, _ = answering(b"500 Internal Server Error", b"x" * (MAX_BODY * 4))
    client = EndpointClient(1, allow_private=True)
    async with serving(handle) as port:
        reply = await client.post(f"http://127.0.0.1:{port}/", b"{}", {}, timeout_s=5)
    await client.aclose()
    assert reply.status == 500
    assert len(reply.text) == MAX_BODY


async def test_refused_silent_and_garbled_servers_raise_send_errors() -> None:
    client = EndpointClient(1, allow_private=True)
    async with serving(answering(b"200 OK")[0]) as port:
        pass  # closed again: nothing listens on `port` now
    with pytest.raises(HTTP_ERRORS) as refused:
        await client.post(f"http://127.0.0.1:{port}/", b"{}", {}, timeout_s=5)
    assert type(refused.value).__name__ == "ConnectError"

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await read_request(reader)
            await reader.read()  # until the client gives up and hangs up
        finally:
            writer.close()

    async with serving(silent) as port:
        with pytest.raises(HTTP_ERRORS) as timed_out:
            await client.post(f"http://127.0.0.1:{port}/", b"{}", {}, timeout_s=0.3)
    assert type(timed_out.value).__name__ == "ReadTimeout"

    async def garbled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"this is not HTTP\r\n\r\n")
        await writer.drain()
        writer.close()

    async with serving(garbled) as port:
        with pytest.raises(HTTP_ERRORS):
            await client.post(f"http://127.0.0.1:{port}/", b"{}", {}, timeout_s=5)
    await client.aclose()


def _tls_contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1, and a client that trusts it."""
    cert_path, key_path = self_signed(tmp_path, "127.0.0.1")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    return server, client


async def test_https_goes_through_tls_and_an_untrusted_certificate_is_refused(
    tmp_path: Path,
) -> None:
    server_tls, client_tls = _tls_contexts(tmp_path)
    handle, connections = answering(b"200 OK", b"secure")
    trusting = EndpointClient(1, allow_private=True, ssl_context=client_tls)
    # certifi's roots: our certificate is not among them
    default = EndpointClient(1, allow_private=True)
    async with serving(handle, tls=server_tls) as port:
        url = f"https://127.0.0.1:{port}/hook"
        for _ in range(2):
            reply = await trusting.post(url, b"{}", {}, timeout_s=5)
            assert (reply.status, reply.text) == (200, "secure")
        with pytest.raises(HTTP_ERRORS) as refused:
            await default.post(url, b"{}", {}, timeout_s=5)
        await asyncio.sleep(0.1)  # the server side hears the abort and closes its end
    await trusting.aclose()
    await default.aclose()
    assert type(refused.value).__name__ == "ConnectError"
    assert "certificate" in str(refused.value).lower()
    assert len(connections) == 1  # the trusted one, kept alive


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
async def test_a_private_target_is_refused_before_any_connection_is_made(host: str) -> None:
    handle, connections = answering(b"200 OK")
    guarded = EndpointClient(1)  # private targets not allowed: the default
    async with serving(handle) as port:
        with pytest.raises(ssrf.BlockedAddress) as refused:
            await guarded.post(f"http://{host}:{port}/hook", b"{}", {}, timeout_s=5)
        await asyncio.sleep(0.05)
    await guarded.aclose()
    assert "private or local" in refused.value.message
    assert connections == []  # the check comes before the connection, not after


async def test_a_host_that_does_not_resolve_is_a_send_error() -> None:
    guarded = EndpointClient(1)
    with pytest.raises(HTTP_ERRORS) as failed:
        await guarded.post("http://no-such-host.invalid/hook", b"{}", {}, timeout_s=5)
    await guarded.aclose()
    assert "does not resolve" in str(failed.value)

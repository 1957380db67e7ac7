from __future__ import annotations

import asyncio
import os
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from appliance.services import media
from tests.fixtures.settings import MakeSettings
from tests.fixtures.tls import self_signed


@pytest.mark.parametrize(
    ("mimetype", "allowed"),
    [
        ("image/png", True),
        ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", True),
        ("application/pdf", True),
        ("text/html", False),
        ("application/pdfx", False),
        ("", False),
    ],
)
def test_content_types_match_exact_entries_and_families(mimetype: str, allowed: bool) -> None:
    rules = ["image/*", "application/pdf", "application/vnd.openxmlformats-officedocument.*"]
    assert media.type_allowed(mimetype, rules) is allowed


def test_base_type_drops_parameters() -> None:
    assert media.base_type("Audio/OGG; codecs=opus") == "audio/ogg"


def test_prune_drops_old_files_then_the_oldest_beyond_the_size(tmp_path: Path) -> None:
    now = time.time()
    for name, age_s in [("old", 7200), ("a", 300), ("b", 200), ("c", 100)]:
        path = tmp_path / name
        path.write_bytes(b"x" * 10)
        os.utime(path, (now - age_s, now - age_s))
    removed = media.prune(tmp_path, max_age_s=3600, max_bytes=20)
    assert removed == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "c"]
    assert media.prune(tmp_path / "absent", max_age_s=1) == 0


class _Png(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"\x89PNG\r\n\x1a\n" + self.headers.get("Host", "").encode()
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    # For `localhost` only: verifying against the address would fail.
    cert, key = self_signed(tmp_path, "localhost")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Png)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], cert
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_https_is_fetched_from_the_checked_address_and_verified_for_the_name(
    https_server: tuple[int, Path], make_settings: MakeSettings
) -> None:
    port, cert = https_server
    settings = make_settings(media={"allow_private": True})
    trust = ssl.create_default_context(cafile=str(cert))
    blob = await media.fetch_url(
        f"https://user:pw@localhost:{port}/p.png",
        settings=settings,
        message_id=uuid.uuid4(),
        verify=trust,
    )
    # The server saw the name the client gave (not the pinned address, not the userinfo).
    assert await asyncio.to_thread(blob.path.read_bytes) == b"\x89PNG\r\n\x1a\n" + (
        f"localhost:{port}".encode()
    )
    with pytest.raises(media.MediaFetchFailed):
        await media.fetch_url(
            f"https://localhost:{port}/p.png", settings=settings, message_id=uuid.uuid4()
        )

"""Outbound media: fetch a URL or take an upload, check size and type, store a blob file.

The engine sends from the blob (`blob_path`), never from a URL a client gave: the api
is the one place that fetches client URLs, so the size, type and address rules hold.
A URL whose host resolves to a loopback, private, link-local, reserved or metadata
address (appliance/ssrf.py, the guard webhooks use too) is refused unless `[media]
allow_private` is on, and the request then goes to the address that was checked (no
second DNS lookup to rebind), redirects included.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urljoin, urlsplit

import httpx

from appliance import ssrf
from appliance.errors import ValidationFailed, WappError
from appliance.settings import Settings

MAX_REDIRECTS: Final = 3
_CHUNK: Final = 64 * 1024


class MediaTooLarge(WappError):
    status = 413
    code = "MEDIA_TOO_LARGE"


class MediaTypeNotAllowed(WappError):
    status = 415
    code = "MEDIA_TYPE_NOT_ALLOWED"


class MediaUrlRefused(ValidationFailed):
    code = "MEDIA_URL_REFUSED"


class MediaFetchFailed(ValidationFailed):
    code = "MEDIA_FETCH_FAILED"
    retryable = True


@dataclass(frozen=True)
class Blob:
    path: Path
    size: int
    sha256: str
    mimetype: str


# --- rules ---------------------------------------------------------------------------


def base_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def type_allowed(mimetype: str, allowed: list[str]) -> bool:
    for rule in allowed:
        if rule.endswith("*") and mimetype.startswith(rule[:-1]):
            return True
        if mimetype == rule:
            return True
    return False


def check_type(mimetype: str, settings: Settings) -> str:
    mimetype = base_type(mimetype)
    if not type_allowed(mimetype, settings.media.allowed_types):
        raise MediaTypeNotAllowed(
            f"content type {mimetype or '(none)'} is not allowed ([media] allowed_types)",
            details={"mimetype": mimetype, "allowed": settings.media.allowed_types},
        )
    return mimetype


def _too_large(settings: Settings, size: int | None = None) -> MediaTooLarge:
    limit = settings.media.max_bytes
    got = f" ({size} bytes)" if size is not None else ""
    return MediaTooLarge(
        f"media larger than {limit} bytes{got}", details={"maxBytes": limit, "size": size}
    )


async def _addresses(host: str, port: int, settings: Settings) -> list[str]:
    """The host's addresses, all public unless `[media] allow_private` (appliance/ssrf.py)."""
    try:
        if settings.media.allow_private:
            return await ssrf.resolve(host, port)
        return await ssrf.public_addresses(host, port)
    except OSError as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise MediaFetchFailed(f"cannot resolve {host}: {reason}", details={"host": host}) from exc
    except ssrf.NotPublic as exc:
        raise MediaUrlRefused(
            f"{host} resolves to a non-public address ([media] allow_private is off)",
            details={"host": host, "addresses": exc.blocked},
        ) from exc


async def _pinned_target(url: str, settings: Settings) -> tuple[str, str]:
    """(url to request with the host replaced by a checked address, the original host)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MediaUrlRefused(
            "a media URL must be http(s)://host/...",
            details={"fields": [{"field": "body.media.url", "message": "not an http(s) URL"}]},
        )
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = (await _addresses(host, port, settings))[0]
    literal = f"[{address}]" if ":" in address else address
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    return parts._replace(netloc=netloc).geturl(), host


def _host_header(url: str) -> str:
    """host[:port] of the URL as given, without any user:password@ part."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{parts.port}" if parts.port else host


# --- storing -------------------------------------------------------------------------


def blob_path(settings: Settings, message_id: uuid.UUID) -> Path:
    return settings.media_outbound_dir / str(message_id)


async def _write(
    chunks: AsyncIterator[bytes], target: Path, settings: Settings, mimetype: str
) -> Blob:
    """Stream to `<target>.part`, cut at the size limit, then rename into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    size = 0
    try:
        with partial.open("wb") as fh:
            async for chunk in chunks:
                size += len(chunk)
                if size > settings.media.max_bytes:
                    raise _too_large(settings)
                digest.update(chunk)
                fh.write(chunk)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return Blob(path=target, size=size, sha256=digest.hexdigest(), mimetype=mimetype)


async def store_bytes(
    chunks: AsyncIterator[bytes], *, settings: Settings, message_id: uuid.UUID, mimetype: str
) -> Blob:
    """An upload: checked type, streamed to the outbound dir under the size limit."""
    return await _write(
        chunks, blob_path(settings, message_id), settings, check_type(mimetype, settings)
    )


async def fetch_url(
    url: str,
    *,
    settings: Settings,
    message_id: uuid.UUID,
    mimetype: str | None = None,
    verify: ssl.SSLContext | bool = True,
) -> Blob:
    """GET `url` (redirects re-checked hop by hop) into the outbound dir.

    `mimetype`, when given, overrides what the server says (some serve octet-stream).
    `verify` is httpx's: the system's trust store unless a caller (a test) brings its own.
    """
    timeout = httpx.Timeout(settings.media.fetch_timeout_s)
    async with httpx.AsyncClient(
        timeout=timeout, follow_redirects=False, trust_env=False, verify=verify
    ) as client:
        for _ in range(MAX_REDIRECTS + 1):
            target, host = await _pinned_target(url, settings)
            request = client.build_request(
                "GET",
                target,
                headers={"Host": _host_header(url), "Accept": "*/*"},
                # TLS must still verify the name the client gave, not the address.
                extensions={"sni_hostname": host},
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise MediaFetchFailed(
                    f"fetching the media URL failed: {type(exc).__name__}", details={"url": url}
                ) from exc
            try:
                if response.is_redirect and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    continue
                if response.status_code != 200:
                    raise MediaFetchFailed(
                        f"the media URL answered {response.status_code}",
                        details={"url": url, "status": response.status_code},
                    )
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > settings.media.max_bytes:
                    raise _too_large(settings, int(declared))
                kind = check_type(mimetype or response.headers.get("content-type", ""), settings)
                try:
                    return await _write(
                        response.aiter_bytes(_CHUNK),
                        blob_path(settings, message_id),
                        settings,
                        kind,
                    )
                except httpx.HTTPError as exc:
                    raise MediaFetchFailed(
                        f"reading the media URL failed: {type(exc).__name__}",
                        details={"url": url},
                    ) from exc
            finally:
                await response.aclose()
    raise MediaFetchFailed(f"more than {MAX_REDIRECTS} redirects", details={"url": url})


# --- retention -----------------------------------------------------------------------


def prune(directory: Path, *, max_age_s: float, max_bytes: int | None = None) -> int:
    """Delete files older than `max_age_s`, then the oldest while over `max_bytes`.

    Blocking (a directory scan): call it through `asyncio.to_thread`. Returns how many
    files went.
    """
    if not directory.is_dir():
        return 0
    now = time.time()
    files: list[tuple[float, int, Path]] = []
    removed = 0
    for entry in os.scandir(directory):
        if not entry.is_file():
            continue
        stat = entry.stat()
        if now - stat.st_mtime > max_age_s:
            Path(entry.path).unlink(missing_ok=True)
            removed += 1
        else:
            files.append((stat.st_mtime, stat.st_size, Path(entry.path)))
    if max_bytes is not None:
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
            removed += 1
    return removed

"""Received attachments: fetched and decrypted by the engine into the media cache, once.

The inbound row's payload (a `MessageReceivedPayload`) keeps the `MediaRef` the engine
needs. The first request sends `download_media` with a target path in the cache dir and
waits for the reply; later ones read the cached file. The cache is pruned by age and
total size after each download.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

from appliance.contracts import MediaRef
from appliance.db.models import Message, Session
from appliance.errors import NotFound
from appliance.services import commands, media, replies, sessions
from appliance.services.numbers import EngineRequestFailed
from appliance.settings import Settings


class NoMedia(NotFound):
    code = "NO_MEDIA"


@dataclass(frozen=True)
class CachedMedia:
    path: Path
    mimetype: str
    filename: str | None


def _media_of(message: Message) -> tuple[MediaRef, dict[str, object]]:
    info = message.payload.get("media") if message.direction == "in" else None
    ref = info.get("ref") if isinstance(info, dict) else None
    if not isinstance(info, dict) or ref is None:
        raise NoMedia(
            f"message {message.id} has no received attachment", details={"messageId": message.id}
        )
    return MediaRef.model_validate(ref), info


def cache_path(settings: Settings, message: Message) -> Path:
    return settings.media_cache_dir / message.id


async def fetch(
    redis: aioredis.Redis, settings: Settings, message: Message, session: Session
) -> CachedMedia:
    ref, info = _media_of(message)
    filename = info.get("filename")
    found = CachedMedia(
        path=cache_path(settings, message),
        mimetype=str(info.get("mimetype") or ref.mimetype),
        filename=str(filename) if filename else None,
    )
    if found.path.is_file():
        return found
    sessions.require_connected(session)
    await commands.require_engine(redis, session.upstream)
    found.path.parent.mkdir(parents=True, exist_ok=True)
    request_id, reply_to = replies.new_request()
    await commands.send(
        redis,
        "download_media",
        session=session.name,
        upstream=session.upstream,
        payload={
            "request_id": str(request_id),
            "message_id": message.id,
            "media": ref.model_dump(mode="json"),
            "target_path": str(found.path),
            "reply_to": reply_to,
        },
    )
    reply = await replies.wait(
        redis,
        request_id=request_id,
        reply_to=reply_to,
        timeout_s=settings.sessions.reply_timeout_s,
    )
    if not reply.ok or not found.path.is_file():
        raise EngineRequestFailed(
            f"the engine could not download the attachment: {reply.reason or reply.code}",
            details={"engineCode": reply.code, "reason": reply.reason},
        )
    await asyncio.to_thread(
        media.prune,
        settings.media_cache_dir,
        max_age_s=settings.media.retention_max_age_h * 3600,
        max_bytes=settings.media.cache_max_mb * 1024 * 1024,
    )
    if not found.path.is_file():
        # Pruned at once: the cache is smaller than this one file. Serve nothing stale.
        raise EngineRequestFailed(
            "the attachment is larger than the media cache ([media] cache_max_mb)",
            details={"cacheMaxMb": settings.media.cache_max_mb},
        )
    return found

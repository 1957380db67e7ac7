"""What a client may send: the `POST /v1/sessions/{id}/messages` body, one model per type.

camelCase on the wire, like every HTTP model; `to_payload` turns a validated body into
the engine's contract payload (snake_case) once quotes and media are resolved.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, HttpUrl

from appliance.camel import ApiModel
from appliance.contracts import MessageRef, wa_message_id
from appliance.phones import Recipient


class Body(ApiModel):
    # A misspelt field must fail loudly rather than be dropped.
    model_config = ConfigDict(extra="forbid")

    to: Recipient
    reply_to: uuid.UUID | None = Field(
        default=None, description="One of our message ids in this session, to quote"
    )
    mentions: list[Recipient] = Field(default_factory=list, max_length=256)


class TextBody(Body):
    type: Literal["text"]
    text: str = Field(min_length=1, max_length=65536, examples=["Hello from wapp"])


class MediaSource(ApiModel):
    model_config = ConfigDict(extra="forbid")

    url: HttpUrl = Field(examples=["https://example.com/catalog.pdf"])


class MediaBody(Body):
    type: Literal["image", "video", "audio", "voice", "document", "sticker"]
    media: MediaSource | None = Field(
        default=None, description="By URL; or upload the file as multipart part `file`"
    )
    mimetype: str | None = Field(
        default=None,
        min_length=3,
        max_length=255,
        description="Overrides the type the server or upload declares",
    )
    caption: str | None = Field(default=None, max_length=4096)
    filename: str | None = Field(default=None, max_length=255, examples=["catalog.pdf"])


class LocationBody(Body):
    type: Literal["location"]
    latitude: float = Field(ge=-90, le=90, examples=[52.52])
    longitude: float = Field(ge=-180, le=180, examples=[13.405])
    name: str | None = Field(default=None, max_length=256)
    address: str | None = Field(default=None, max_length=1024)


class ContactBody(Body):
    type: Literal["contact"]
    display_name: str = Field(min_length=1, max_length=256, examples=["Ada Lovelace"])
    vcard: str = Field(
        min_length=10,
        max_length=16384,
        examples=["BEGIN:VCARD\nVERSION:3.0\nFN:Ada Lovelace\nTEL:+4915112345678\nEND:VCARD"],
    )


class ReactionBody(Body):
    type: Literal["reaction"]
    message_id: uuid.UUID = Field(description="The message (ours, in this session) to react to")
    emoji: str = Field(max_length=16, description="Empty removes an earlier reaction")


OutgoingMessage = Annotated[
    TextBody | MediaBody | LocationBody | ContactBody | ReactionBody,
    Field(discriminator="type"),
]

# Which engine command carries each body type.
COMMAND_TYPE: dict[str, str] = {
    "text": "send_text",
    "image": "send_media",
    "video": "send_media",
    "audio": "send_media",
    "voice": "send_media",
    "document": "send_media",
    "sticker": "send_media",
    "location": "send_location",
    "contact": "send_contact",
    "reaction": "send_reaction",
}

# The families each media kind must come in (None: any allowed type, e.g. documents).
KIND_FAMILY: dict[str, str | None] = {
    "image": "image/",
    "video": "video/",
    "audio": "audio/",
    "voice": "audio/",
    "sticker": "image/",
    "document": None,
}

EXAMPLES: dict[str, dict[str, Any]] = {
    "text": {"value": {"type": "text", "to": "4915112345678", "text": "Hello from wapp"}},
    "image": {
        "value": {
            "type": "image",
            "to": "4915112345678",
            "media": {"url": "https://example.com/photo.jpg"},
            "caption": "Our new shop",
        }
    },
    "document": {
        "value": {
            "type": "document",
            "to": "4915112345678",
            "media": {"url": "https://example.com/catalog.pdf"},
            "filename": "catalog.pdf",
        }
    },
    "voice": {
        "value": {
            "type": "voice",
            "to": "4915112345678",
            "media": {"url": "https://example.com/note.ogg"},
            "mimetype": "audio/ogg; codecs=opus",
        }
    },
    "location": {
        "value": {
            "type": "location",
            "to": "4915112345678",
            "latitude": 52.52,
            "longitude": 13.405,
            "name": "Shop",
        }
    },
    "contact": {
        "value": {
            "type": "contact",
            "to": "4915112345678",
            "displayName": "Ada",
            "vcard": "BEGIN:VCARD\nVERSION:3.0\nFN:Ada\nTEL:+4915100000\nEND:VCARD",
        }
    },
    "reaction": {
        "value": {
            "type": "reaction",
            "to": "4915112345678",
            "messageId": "8a3c1f2e-5b7d-4e9a-9c1b-2d3e4f5a6b7c",
            "emoji": "👍",
        }
    },
    "reply with mention": {
        "value": {
            "type": "text",
            "to": "4915112345678",
            "text": "@4915100000 see above",
            "replyTo": "8a3c1f2e-5b7d-4e9a-9c1b-2d3e4f5a6b7c",
            "mentions": ["4915100000"],
        }
    },
}


def to_payload(
    body: TextBody | MediaBody | LocationBody | ContactBody | ReactionBody,
    *,
    message_id: uuid.UUID,
    quoted: MessageRef | None,
    target: MessageRef | None = None,
    blob_path: str | None = None,
    mimetype: str | None = None,
) -> dict[str, Any]:
    """The contract payload (validated by the command envelope) for this body."""
    base: dict[str, Any] = {
        "message_id": str(message_id),
        "wa_id": wa_message_id(message_id),
        "to": body.to,
        "quoted": quoted.model_dump(mode="json") if quoted else None,
        "mentions": list(body.mentions),
    }
    if isinstance(body, TextBody):
        return {**base, "text": body.text}
    if isinstance(body, MediaBody):
        return {
            **base,
            "kind": body.type,
            "url": None,
            "blob_path": blob_path,
            "mimetype": mimetype,
            "caption": body.caption,
            "filename": body.filename,
        }
    if isinstance(body, LocationBody):
        return {
            **base,
            "latitude": body.latitude,
            "longitude": body.longitude,
            "name": body.name,
            "address": body.address,
        }
    if isinstance(body, ContactBody):
        return {**base, "display_name": body.display_name, "vcard": body.vcard}
    assert target is not None  # a reaction's target is resolved before this
    return {**base, "target": target.model_dump(mode="json"), "emoji": body.emoji}

"""An engine event as live listeners see it: the webhook envelope plus trace and stream ids."""

from __future__ import annotations

from typing import Any

from appliance.contracts import Event
from appliance.webhooks.outbox import envelope


def public_event(event: Event, *, stream_id: str | None = None) -> dict[str, Any]:
    body = envelope(event)
    body["traceId"] = event.trace_id
    if stream_id is not None:
        body["streamId"] = stream_id
    return body

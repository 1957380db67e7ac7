"""What a try's answer means: delivered, retried (when), failed for good, or dead.

Pure functions of the answer, the row and the settings, so every rule is testable alone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from appliance.settings import WebhooksSettings
from appliance.webhooks import pairing
from appliance.webhooks.recorder import Outcome


def backoff_s(attempts: int, settings: WebhooksSettings) -> float:
    """Delay before try `attempts + 1`: exponential from retry_initial_s, capped, equal jitter."""
    base: float = min(settings.retry_max_s, settings.retry_initial_s * 2.0 ** max(0, attempts - 1))
    return base / 2 + random.uniform(0, base / 2)


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """`Retry-After` in seconds or as an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        at = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if at.tzinfo is None:
        return None
    return max(0.0, (at - now).total_seconds())


@dataclass
class Row:
    """A due delivery as the dispatcher reads it."""

    id: str
    event_id: str
    session: str | None
    payload: dict[str, Any]
    attempts: int
    created_at: datetime


def classify(
    row: Row,
    *,
    status_code: int | None,
    retry_after: str | None,
    error: str | None,
    latency_ms: int,
    at: datetime,
    settings: WebhooksSettings,
) -> Outcome:
    attempt = row.attempts + 1
    out = Outcome(row.id, attempt, at, status_code, latency_ms, error, "retry")
    if status_code is not None and 200 <= status_code < 300:
        out.verdict = "delivered"
        return out
    if status_code == 410:
        out.verdict = "failed"
        out.disable_endpoint = "the receiver answered 410 Gone"
        return out
    if status_code is not None and 400 <= status_code < 500 and status_code not in (408, 429):
        out.verdict = "failed"
        return out
    delay = backoff_s(attempt, settings)
    if status_code == 429:
        honoured = retry_after_s(retry_after, at)
        if honoured is not None:
            delay = honoured
    deadline = row.created_at + timedelta(seconds=settings.retry_window_s)
    if pairing.is_pairing(row.payload):
        # A QR is useless (and its secret must go) long before a day has passed.
        deadline = min(deadline, pairing.deadline(row.created_at))
    next_at = at + timedelta(seconds=delay)
    if next_at > deadline:
        out.verdict = "dead"
        return out
    out.next_attempt_at = next_at
    return out

"""A short-lived in-process cache of API key rows, so a request need not read its key.

Bounded staleness: a row is used for at most `TTL_S` seconds after it was read. A key
revoked (or given new quotas) through this process is dropped from its cache at once;
in another api worker process the change takes effect within `TTL_S`. The secret is
still checked against the cached hash on every request, and unknown or revoked keys
are never cached, so a wrong key always reaches the database (and the throttle).
"""

from __future__ import annotations

import time
from typing import Final

from cachetools import TTLCache

from appliance.auth.single_flight import SingleFlight
from appliance.db.models import ApiKey

TTL_S: Final = 5.0
_MAX_ENTRIES: Final = 10_000


def _now() -> float:
    # Looked up at each call (not `timer=time.monotonic`), so tests can move the clock.
    return time.monotonic()


_rows: TTLCache[str, ApiKey] = TTLCache(maxsize=_MAX_ENTRIES, ttl=TTL_S, timer=_now)
# When an entry expires under load, one read refills it for every request waiting.
loads: SingleFlight[ApiKey | None] = SingleFlight()


def get(key_id: str) -> ApiKey | None:
    """The row read less than TTL_S ago, or None."""
    return _rows.get(key_id)


def put(row: ApiKey) -> None:
    if row.revoked_at is None:
        _rows[row.id] = row


def forget(key_id: str) -> None:
    _rows.pop(key_id, None)


def clear() -> None:
    _rows.clear()

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

from appliance.auth.single_flight import SingleFlight
from appliance.db.models import ApiKey

TTL_S: Final = 5.0
_MAX_ENTRIES: Final = 10_000

_rows: dict[str, tuple[float, ApiKey]] = {}
# When an entry expires under load, one read refills it for every request waiting.
loads: SingleFlight[ApiKey | None] = SingleFlight()


def get(key_id: str) -> ApiKey | None:
    """The row read less than TTL_S ago, or None."""
    found = _rows.get(key_id)
    if found is None:
        return None
    expires, row = found
    if time.monotonic() >= expires:
        _rows.pop(key_id, None)
        return None
    return row


def put(row: ApiKey) -> None:
    if row.revoked_at is not None:
        return
    if len(_rows) >= _MAX_ENTRIES:
        _rows.clear()
    _rows[row.id] = (time.monotonic() + TTL_S, row)


def forget(key_id: str) -> None:
    _rows.pop(key_id, None)


def clear() -> None:
    _rows.clear()

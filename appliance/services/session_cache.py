"""A short-lived in-process cache of session rows for the send path.

Bounded staleness: a row is used for at most `TTL_S` seconds after it was read. Once
`watch_changes()` ran (the api does it at start), any change to a session made through
an ORM session in this process (the event consumer's state changes, start/stop/logout,
pairing, deletes, bulk UPDATE/DELETE statements) empties the cache at once; a change
made by another process (another api worker, the CLI, a direct SQL update) takes effect
on the send path within `TTL_S`. In that window a send to a session that just dropped
is accepted and waits in its Redis stream, as a send accepted just before the drop would.
"""

from __future__ import annotations

import time
from typing import Any, Final

from cachetools import TTLCache
from sqlalchemy import event, orm

from appliance.auth.single_flight import SingleFlight
from appliance.db.models import Session

TTL_S: Final = 1.0
_MAX_ENTRIES: Final = 10_000


def _now() -> float:
    # Looked up at each call (not `timer=time.monotonic`), so tests can move the clock.
    return time.monotonic()


_rows: TTLCache[str, Session] = TTLCache(maxsize=_MAX_ENTRIES, ttl=TTL_S, timer=_now)
# When an entry expires under load, one read refills it for every request waiting.
loads: SingleFlight[Session | None] = SingleFlight()
_ROW_EVENTS: Final = ("after_insert", "after_update", "after_delete")


def get(ref: str) -> Session | None:
    """The row named or identified by `ref`, read less than TTL_S ago, or None."""
    return _rows.get(ref)


def put(ref: str, row: Session) -> None:
    _rows[ref] = row


def clear(*_: Any) -> None:
    _rows.clear()


def _on_statement(state: orm.ORMExecuteState) -> None:
    """UPDATE/DELETE statements on sessions run through an ORM session (bulk ones too)."""
    mapper = state.bind_mapper
    if (state.is_update or state.is_delete) and mapper is not None and mapper.class_ is Session:
        clear()


def watch_changes() -> None:
    """Empty the cache on every session row change made through the ORM in this process.

    Called by the process that caches (the api, at start), not at import: the listener
    on every ORM session's statements costs each statement of every process that imports
    this module. Idempotent.
    """
    if event.contains(orm.Session, "do_orm_execute", _on_statement):
        return
    for change in _ROW_EVENTS:
        event.listen(Session, change, clear)
    event.listen(orm.Session, "do_orm_execute", _on_statement)

"""A short-lived in-process cache of session rows for the send path.

Bounded staleness: a row is used for at most `TTL_S` seconds after it was read. Any
change to a session made through an ORM session in this process (the event consumer's
state changes, start/stop/logout, pairing, deletes, bulk UPDATE/DELETE statements)
empties the cache at once; a change made by another process (another api worker, a direct SQL
update) takes effect on the send path within `TTL_S`. In that window a send to a session
that just dropped is accepted and waits in its Redis stream, as a send accepted just
before the drop would.
"""

from __future__ import annotations

import time
from typing import Any, Final

from sqlalchemy import event, orm

from appliance.auth.single_flight import SingleFlight
from appliance.db.models import Session

TTL_S: Final = 1.0
_MAX_ENTRIES: Final = 10_000

_rows: dict[str, tuple[float, Session]] = {}
# When an entry expires under load, one read refills it for every request waiting.
loads: SingleFlight[Session | None] = SingleFlight()


def get(ref: str) -> Session | None:
    """The row named or identified by `ref`, read less than TTL_S ago, or None."""
    found = _rows.get(ref)
    if found is None:
        return None
    expires, row = found
    if time.monotonic() >= expires:
        _rows.pop(ref, None)
        return None
    return row


def put(ref: str, row: Session) -> None:
    if len(_rows) >= _MAX_ENTRIES:
        _rows.clear()
    _rows[ref] = (time.monotonic() + TTL_S, row)


def clear(*_: Any) -> None:
    _rows.clear()


def _on_statement(state: orm.ORMExecuteState) -> None:
    """UPDATE/DELETE statements on sessions run through an ORM session (bulk ones too)."""
    mapper = state.bind_mapper
    if (state.is_update or state.is_delete) and mapper is not None and mapper.class_ is Session:
        clear()


for _change in ("after_insert", "after_update", "after_delete"):
    event.listen(Session, _change, clear)
event.listen(orm.Session, "do_orm_execute", _on_statement)

"""SQLite WAL checkpoints, run off the event loop.

The writer connection makes none (`engine.create_writer_engine`): the send batcher
commits on the event loop, and a checkpoint (copying the WAL into the database file
and fsyncing it, tens of ms) would stall every request with it. Instead, every
`interval_s` a PASSIVE checkpoint runs on a pooled connection, on aiosqlite's thread for
it. PASSIVE never waits for or blocks writers or readers; what it copies lets the next
write start the WAL over from its beginning, so the WAL stays about one interval of
writes long.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncEngine

from appliance.periodic import every

log = logging.getLogger(__name__)


class Checkpoint(NamedTuple):
    """What `PRAGMA wal_checkpoint` answers."""

    busy: bool
    wal_frames: int
    checkpointed_frames: int


async def checkpoint(engine: AsyncEngine) -> Checkpoint:
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        # On the driver, not through SQLAlchemy, which would open a transaction first.
        cursor = await driver.execute("PRAGMA wal_checkpoint(PASSIVE)")
        busy, frames, done = await cursor.fetchone()
        await cursor.close()
    return Checkpoint(bool(busy), int(frames), int(done))


class WalCheckpoints:
    def __init__(self, engine: AsyncEngine, *, interval_s: float = 1.0) -> None:
        self._engine = engine
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(
                every(self._interval_s, self._stopping, self._checkpoint_logged),
                name="wapp-wal-checkpoints",
            )

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _checkpoint_logged(self) -> None:
        try:
            await checkpoint(self._engine)
        except Exception:  # the next interval tries again
            log.warning("WAL checkpoint failed", exc_info=True)

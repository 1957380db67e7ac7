"""Group commit for sends: concurrent requests' rows go to the database together.

A send hands its `messages` row, its `queued` timeline row and its command to
`SendBatcher.submit` and waits. A flush task takes everything waiting (up to
`max_batch`) and writes the rows at once (`send_rows`: one statement on Postgres, one
transaction on the batcher's own SQLite connection); the batch's commands are then XADDed in one
Redis pipeline, and only then is each waiter answered: a 202 still means the row is
committed and the command is in Redis. There is one flush task: on SQLite it gives the one writer
connection back after each batch, so other writes get their turn; on Postgres it keeps
its pooled connection while sends keep coming (no checkout and ping per batch).
Committed batches go to one enqueue task, which XADDs them in commit order and
answers: the next batch is being written meanwhile, so the database never waits for
Redis. One flush task, not several: measured on Postgres, one made batches large
enough to cost the event loop about 210 us per send where two cost 260-280 and four
440, with more sends per second.

When a batch fails (an Idempotency-Key taken, by another batch or by a twin in this
one), each of its sends is retried alone, in its own transaction, as a send without
batching would be: one failing row costs the others a retry, never their message. A
send whose Idempotency-Key is taken is answered `False` (the caller replays the first
answer); any other error reaches that send's caller only.

A send whose row committed but whose XADD failed (Redis restarting) hears
`EnqueueFailed`, carrying its message id: the row exists, and the requeue sweep
(`services.requeue`) puts its command into Redis once Redis is back, so that error is
never a lost message. `on_enqueue_failed` tells the sweep to look soon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Final

import redis.asyncio as aioredis
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from appliance.db.sqlite_writer import SqliteWriter
from appliance.errors import EnqueueFailed
from appliance.services import send_rows

log = logging.getLogger(__name__)

MAX_BATCH: Final = 256


@dataclass
class PendingSend:
    """One send: its rows (column -> value), and the command to XADD once they commit."""

    message: dict[str, Any]
    status: dict[str, Any]
    stream: str
    data: str
    idempotent: bool
    future: asyncio.Future[bool] = field(init=False)


class SendBatcher:
    def __init__(
        self,
        writer: AsyncEngine,
        redis: aioredis.Redis,
        *,
        max_batch: int = MAX_BATCH,
        stream_maxlen: int = 100_000,
        on_enqueue_failed: Callable[[], None] | None = None,
    ) -> None:
        self._writer = writer
        self._on_enqueue_failed = on_enqueue_failed
        self._redis = redis
        self._max_batch = max_batch
        self._maxlen = stream_maxlen
        # SQLite's one writer connection must go back between batches, or other writes
        # would wait for the sends to stop; Postgres' pool has more.
        self._postgres = writer.dialect.name == "postgresql"
        # SQLite: the rows are written on a sqlite3 connection of their own
        # (`SqliteWriter`), made at the first batch with the writer engine's busy_timeout.
        self._sqlite: SqliteWriter | None = None
        self._queue: asyncio.Queue[PendingSend] = asyncio.Queue()
        self._committed: asyncio.Queue[list[PendingSend]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._run(), name="wapp-send-batcher"),
                asyncio.create_task(self._enqueue_committed(), name="wapp-send-enqueuer"),
            ]

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        await self._queue.join()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None

    async def submit(self, item: PendingSend) -> bool:
        """True once committed and XADDed; False when the Idempotency-Key was taken."""
        if not self._tasks:
            raise RuntimeError("the send batcher is not running")
        item.future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(item)
        # A client that goes away cancels only this wait (the future), never the batch:
        # its row is committed and enqueued all the same, as it would be without batching.
        return await item.future

    async def _run(self) -> None:
        """The commit stage: take what waits, write it, pass it on to be enqueued."""
        while True:
            first = [await self._queue.get()]
            failed = await self._write_while_queued(self._take_ready(first))
            if failed:
                for item in failed:
                    await self._settle_alone(item)
                self._done(failed)

    def _take_ready(self, batch: list[PendingSend]) -> list[PendingSend]:
        while len(batch) < self._max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _write_while_queued(self, batch: list[PendingSend]) -> list[PendingSend]:
        """Writes `batch`, and on Postgres what queued meanwhile, on one pooled
        connection; each batch is handed on to be enqueued as soon as it commits.
        Returns the batch that failed, to be settled send by send, or []."""
        writing: list[PendingSend] = batch
        try:
            async with self._writer.connect() as conn:
                while writing:
                    try:
                        await self._write(conn, writing)
                    except Exception:
                        return writing  # the connection goes back first
                    self._committed.put_nowait(writing)
                    writing = self._take_ready([]) if self._postgres else []
        except Exception:
            if writing:  # taking the connection failed: nothing of this batch was written
                return writing
            # Giving it back failed: every batch was committed and handed on already.
            log.warning("returning the writer connection failed", exc_info=True)
        except BaseException as exc:  # cancelled: whoever still waits must hear
            for item in writing:
                _fail(item, exc)
            self._done(writing)
            raise
        return []

    async def _enqueue_committed(self) -> None:
        """The enqueue stage: XADD committed batches in commit order, then answer.

        A stage of its own so the next batch is written while this one's Redis round
        trip and answers happen: the database never waits for Redis.
        """
        while True:
            batch = await self._committed.get()
            try:
                await self._xadd(batch)
                for item in batch:
                    _succeed(item, True)
            except Exception as exc:
                self._enqueue_failed(batch, exc)
            except BaseException as exc:  # cancelled: the sweep enqueues what was committed
                for item in batch:
                    _fail(item, exc)
                raise
            finally:
                self._done(batch)

    def _done(self, batch: list[PendingSend]) -> None:
        for _ in batch:
            self._queue.task_done()

    async def _settle_alone(self, item: PendingSend) -> None:
        """One send in its own transaction: the batch it came in failed."""
        try:
            result = await send_alone(self._writer.begin, self._redis, item, maxlen=self._maxlen)
        except EnqueueFailed as exc:
            self._told_enqueue_failed(1, exc)
            _fail(item, exc)
        except Exception as exc:  # it belongs to this send's caller
            _fail(item, exc)
        else:
            _succeed(item, result)

    async def _write(self, conn: AsyncConnection, batch: list[PendingSend]) -> None:
        messages = [item.message for item in batch]
        statuses = [item.status for item in batch]
        if self._postgres:
            raw = await conn.get_raw_connection()
            await send_rows.postgres(raw.driver_connection, messages, statuses)
            return
        # The pooled connection is held, unused, while the batch is written: holding the
        # writer engine's one connection is what keeps SQLite to one writer at a time
        # in this process (other writes queue for it in asyncio, not in busy handlers).
        writer = self._sqlite or await self._start_sqlite_writer(conn)
        await writer.write(lambda db: send_rows.sqlite(db, messages, statuses))

    async def _start_sqlite_writer(self, conn: AsyncConnection) -> SqliteWriter:
        # Its connection waits for locks as long as the engine's connections do.
        # Asked on the driver (aiosqlite's public API): a statement through SQLAlchemy
        # would begin a transaction, BEGIN IMMEDIATE, and take the lock the batch needs.
        driver: Any = (await conn.get_raw_connection()).driver_connection
        async with driver.execute("PRAGMA busy_timeout") as cursor:
            (busy,) = await cursor.fetchone()
        self._sqlite = SqliteWriter(conn.engine.url.database or "", busy_timeout_ms=int(busy))
        return self._sqlite

    async def _xadd(self, batch: list[PendingSend]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for item in batch:
            pipe.xadd(item.stream, {"data": item.data}, maxlen=self._maxlen, approximate=True)
        results = await pipe.execute(raise_on_error=False)
        failed = [r for r in results if isinstance(r, Exception)]
        if not failed:
            return
        # Rows are committed; only the sends whose XADD failed hear about it.
        for item, result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                self._enqueue_failed([item], result)

    def _enqueue_failed(self, batch: list[PendingSend], exc: Exception) -> None:
        """Committed rows whose commands are not in Redis: their callers hear a retryable
        error with the real message id, and the sweep is told to look soon."""
        for item in batch:
            _fail(item, _enqueue_failure(item, exc))
        self._told_enqueue_failed(len(batch), exc)

    def _told_enqueue_failed(self, sends: int, exc: BaseException) -> None:
        log.warning(
            "sends committed but not enqueued; the requeue sweep will enqueue them",
            extra={"messages": sends, "error": str(exc)},
        )
        if self._on_enqueue_failed is not None:
            self._on_enqueue_failed()


async def send_alone(
    begin: Callable[[], AbstractAsyncContextManager[AsyncConnection | AsyncSession]],
    redis: aioredis.Redis,
    item: PendingSend,
    *,
    maxlen: int,
) -> bool:
    """One send in its own transaction (`begin`: an engine's or a session maker's), then
    its XADD; how a failed batch's sends are retried, and how a caller without a running
    batcher (the CLI) sends. Plain Core INSERTs, whose failures are SQLAlchemy's.

    True once committed and XADDed; False when its Idempotency-Key is taken. Raises
    `EnqueueFailed` (with the message id) when the row committed but the XADD failed.
    """
    try:
        async with begin() as conn:
            await conn.execute(send_rows.MESSAGES.insert(), [item.message])
            await conn.execute(send_rows.STATUSES.insert(), [item.status])
    except IntegrityError:
        if item.idempotent:
            return False
        raise
    try:
        await redis.xadd(item.stream, {"data": item.data}, maxlen=maxlen, approximate=True)
    except Exception as exc:
        raise _enqueue_failure(item, exc) from exc
    return True


def _enqueue_failure(item: PendingSend, exc: Exception) -> EnqueueFailed:
    failure = EnqueueFailed(
        "the message is stored but Redis refused its command; it is enqueued "
        "automatically once Redis is back (a retry with the same Idempotency-Key "
        "answers 202 with this id)",
        details={"messageId": item.message["id"]},
    )
    failure.__cause__ = exc
    return failure


# A waiter whose client went away has a cancelled future: it hears nothing more.
def _succeed(item: PendingSend, result: bool) -> None:
    if not item.future.done():
        item.future.set_result(result)


def _fail(item: PendingSend, exc: BaseException) -> None:
    if not item.future.done():
        item.future.set_exception(exc)

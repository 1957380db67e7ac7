"""Real HTTP receivers on 127.0.0.1 for the webhook tests, and helpers to feed events."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import httpx
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appliance.contracts import (
    Event,
    MessageStatusEvent,
    MessageStatusPayload,
    SessionStateEvent,
    SessionStatePayload,
)
from appliance.db.models import Session
from appliance.security.master_key import create_master_key
from appliance.settings import Settings
from appliance.webhooks.outbox import enqueue_deliveries
from tests.fixtures.api import running_api
from tests.fixtures.settings import MakeSettings


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class InFlight:
    """Requests being answered right now, and the most there ever were (shareable)."""

    now: int = 0
    most: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def enter(self) -> None:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def leave(self) -> None:
        with self._lock:
            self.now -= 1


@dataclass
class Receiver:
    """An HTTP server in a thread: answers from `script` (status, headers) in turn, then 200.

    `delay_s` holds each answer back; `in_flight` (and `shared`, which several receivers
    may count into) record how many requests it answers at once."""

    port: int = 0
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    # When each request's body had been read (time.time()), answered or not.
    arrived: list[float] = field(default_factory=list)
    delay_s: float = 0.0
    in_flight: InFlight = field(default_factory=InFlight)
    shared: InFlight | None = None
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver._lock:
                    receiver.arrived.append(time.time())
                gauges = [g for g in (receiver.in_flight, receiver.shared) if g is not None]
                for gauge in gauges:
                    gauge.enter()
                try:
                    time.sleep(receiver.delay_s)
                finally:
                    # Before the answer goes out: once the client has it, it may send the
                    # next request, which must not find this one still counted.
                    for gauge in gauges:
                        gauge.leave()
                self._answer(body)

            def _answer(self, body: bytes) -> None:
                with receiver._lock:
                    code, headers = receiver.script.pop(0) if receiver.script else (200, {})
                    receiver.answered.append(code)
                    if 200 <= code < 300:
                        receiver.received.append(
                            Received(
                                {k.lower(): v for k, v in self.headers.items()}, body, time.time()
                            )
                        )
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def webhook_settings(make_settings: MakeSettings, database_url: str) -> Settings:
    """Fast retries and polling, private targets allowed (the receivers are on 127.0.0.1)."""
    return settings_with_key(
        make_settings,
        database_url,
        webhooks={
            "allow_private": True,
            "retry_initial_s": 0.05,
            "retry_max_s": 0.2,
            "poll_interval_s": 0.05,
            "lease_s": 5.0,
        },
    )


def settings_with_key(make_settings: MakeSettings, database_url: str, **sections: Any) -> Settings:
    """Settings on this test's database, with the master key the api needs on disk."""
    settings = make_settings(database={"url": database_url}, **sections)
    create_master_key(settings.master_key_path)
    return settings


T = TypeVar("T")


@pytest.fixture
async def wh_client(webhook_settings: Settings, redis: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with running_api_for(webhook_settings) as client:
        yield client


def running_api_for(settings: Settings) -> Any:
    from appliance.api.app import create_app

    return running_api(create_app(settings))


def key_id(plaintext: str) -> str:
    return plaintext.split("_")[1]


async def add_session(
    sessions: async_sessionmaker[AsyncSession], name: str, owner_key_id: str | None
) -> str:
    async with sessions.begin() as db:
        row = Session(name=name, upstream="sandbox", owner_key_id=owner_key_id)
        db.add(row)
    return row.id


def state_event(session: str, state: str = "connected") -> SessionStateEvent:
    return SessionStateEvent(session=session, payload=SessionStatePayload(state=state))  # type: ignore[arg-type]


def status_event(session: str, n: int) -> MessageStatusEvent:
    import uuid

    return MessageStatusEvent(
        session=session,
        payload=MessageStatusPayload(message_id=uuid.uuid4(), status="sent", wa_id=f"W{n}"),
    )


async def feed(
    sessions: async_sessionmaker[AsyncSession],
    events: list[Event],
    *,
    owner_key_id: str | None,
    session_id: str | None,
) -> int:
    """What the event consumer does: enqueue in a transaction (committed here)."""
    n = 0
    async with sessions.begin() as db:
        for e in events:
            n += await enqueue_deliveries(db, e, owner_key_id=owner_key_id, session_id=session_id)
    return n


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def eventually(
    fetch: Callable[[], Awaitable[T]], ok: Callable[[T], bool], timeout_s: float = 10.0
) -> T:
    """Call `fetch` until `ok(result)`; the last result, or AssertionError on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await fetch()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached in time; last: {value!r}")
        await asyncio.sleep(0.05)

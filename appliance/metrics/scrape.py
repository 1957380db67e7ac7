"""One scrape: every metric family, read at once from the database and Redis.

Sessions are labelled by their engine name (unique on the box, the one in Redis keys and
engine logs); webhook endpoints by their id (a URL may carry a token in its query).
What each figure counts is in docs/monitoring.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, get_args

import redis.asyncio as aioredis
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import ValidationError
from redis.exceptions import ResponseError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from appliance.contracts import EngineHeartbeat, SessionState, Upstream
from appliance.db.models import Message, MessageStatusEvent, Session, Webhook, WebhookDelivery
from appliance.metrics import counters
from appliance.metrics.http import StoredRequests
from appliance.readiness import expected_engines
from appliance.redis_keys import ENGINE_CONSUMER_GROUP, session_commands_stream
from appliance.services import commands
from appliance.services.session_liveness import overlay_engine_view
from appliance.settings import Settings

STATES: tuple[SessionState, ...] = get_args(SessionState)
# A delivery row's final outcomes; `pending` ones are the backlog.
DELIVERY_OUTCOMES = ("delivered", "failed", "dead")


class Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        yield from self.families


async def render(
    settings: Settings, reader: async_sessionmaker[AsyncSession], redis: aioredis.Redis
) -> bytes:
    """The Prometheus text exposition of the whole box."""
    upstreams = expected_engines(settings)
    # A restart between two polls of the boot watch is counted before it is shown.
    await counters.BootWatch(redis, upstreams, interval_s=1).poll()
    beats: dict[Upstream, EngineHeartbeat | None] = {
        u: await _heartbeat(redis, u) for u in get_args(Upstream)
    }
    async with reader() as db:
        sessions = list((await db.scalars(sa.select(Session))).all())
        messages = await _message_counts(db)
        deliveries = await _delivery_counts(db)
    registry = CollectorRegistry(auto_describe=False)
    families = [
        *_session_families(sessions, beats, upstreams),
        _messages_family(messages),
        await _queue_depth(redis, [s.name for s in sessions]),
        *_webhook_families(deliveries),
        *_engine_families(settings, beats, upstreams),
        await _stored_counter(
            redis,
            counters.RECONNECTS_KEY,
            "wapp_reconnects",
            "Reconnect attempts the engine reported for a session (session.state reconnecting).",
            "session",
        ),
        await _stored_counter(
            redis,
            counters.RESTARTS_KEY,
            "wapp_recycles",
            "Engine restarts seen (a new boot in its heartbeat): watchdog recycles, crashes,"
            " restarts by hand.",
            "upstream",
        ),
    ]
    registry.register(Families(families))
    registry.register(await StoredRequests.read(redis))
    return generate_latest(registry)


async def _heartbeat(redis: aioredis.Redis, upstream: Upstream) -> EngineHeartbeat | None:
    try:
        return await commands.heartbeat(redis, upstream)
    except ValidationError:
        return None  # unreadable: shown as no engine, as /readyz does


def _session_families(
    rows: list[Session], beats: dict[Upstream, EngineHeartbeat | None], upstreams: list[Upstream]
) -> list[Metric]:
    by_state = GaugeMetricFamily(
        "wapp_sessions",
        "Sessions by the state the api shows (the engine's view) and upstream.",
        labels=["state", "upstream"],
    )
    current = GaugeMetricFamily(
        "wapp_session_state",
        "1 for the state a session is in (as the api shows it), 0 for the others.",
        labels=["session", "state"],
    )
    counts = {(state, u): 0 for u in upstreams for state in STATES}
    for row in sorted(rows, key=lambda r: r.name):
        overlay_engine_view(row, beats[row.upstream])  # a detached row: only this scrape sees it
        counts[(row.state, row.upstream)] = counts.get((row.state, row.upstream), 0) + 1
        for state in STATES:
            current.add_metric([row.name, state], 1.0 if state == row.state else 0.0)
    for (state, upstream), n in sorted(counts.items()):
        by_state.add_metric([state, upstream], n)
    return [by_state, current]


async def _message_counts(db: AsyncSession) -> list[tuple[str, str, str, int]]:
    # Outbound: each status a message reached (its timeline rows), so every series only
    # grows; inbound: messages received.
    outbound = (
        sa.select(col(Session.name), col(MessageStatusEvent.status), sa.func.count())
        .select_from(MessageStatusEvent)
        .join(Message, col(Message.id) == col(MessageStatusEvent.message_id))
        .join(Session, col(Session.id) == col(Message.session_id))
        .group_by(col(Session.name), col(MessageStatusEvent.status))
    )
    inbound = (
        sa.select(col(Session.name), sa.func.count())
        .select_from(Message)
        .join(Session, col(Session.id) == col(Message.session_id))
        .where(col(Message.direction) == "in")
        .group_by(col(Session.name))
    )
    found = [(name, "out", status, n) for name, status, n in (await db.execute(outbound)).all()]
    found += [(name, "in", "received", n) for name, n in (await db.execute(inbound)).all()]
    return found


def _messages_family(counts: list[tuple[str, str, str, int]]) -> Metric:
    family = CounterMetricFamily(
        "wapp_messages",
        "Messages per session: outbound ones that reached each status, inbound ones received.",
        labels=["session", "direction", "status"],
    )
    for name, direction, status, n in sorted(counts):
        family.add_metric([name, direction, status], n)
    return family


async def _delivery_counts(db: AsyncSession) -> dict[str, dict[str, int]]:
    hooks = (await db.scalars(sa.select(col(Webhook.id)))).all()
    counts: dict[str, dict[str, int]] = {hook: {} for hook in hooks}
    rows = await db.execute(
        sa.select(
            col(WebhookDelivery.webhook_id), col(WebhookDelivery.status), sa.func.count()
        ).group_by(col(WebhookDelivery.webhook_id), col(WebhookDelivery.status))
    )
    for hook, status, n in rows.all():
        counts.setdefault(hook, {})[status] = n
    return counts


def _webhook_families(counts: dict[str, dict[str, int]]) -> list[Metric]:
    total = CounterMetricFamily(
        "wapp_webhook_deliveries",
        "Webhook deliveries that ended, by endpoint id and outcome (delivered, failed: refused"
        " for good, dead: retries exhausted).",
        labels=["endpoint", "outcome"],
    )
    backlog = GaugeMetricFamily(
        "wapp_webhook_backlog",
        "Webhook deliveries still pending (not yet delivered, retrying) per endpoint id.",
        labels=["endpoint"],
    )
    for hook in sorted(counts):
        for outcome in DELIVERY_OUTCOMES:
            total.add_metric([hook, outcome], counts[hook].get(outcome, 0))
        backlog.add_metric([hook], counts[hook].get("pending", 0))
    return [total, backlog]


async def _queue_depth(redis: aioredis.Redis, sessions: list[str]) -> Metric:
    """Commands waiting in each session's stream: not yet read by the engine's group (its
    lag) plus read and not acked (pending). Acked entries stay until trimmed: not counted."""
    family = GaugeMetricFamily(
        "wapp_send_queue_depth",
        "Commands of a session not yet done by the engine: unread (consumer-group lag) plus"
        " read but not acked (pending).",
        labels=["session"],
    )
    names = sorted(sessions)
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.xinfo_groups(session_commands_stream(name))
        pipe.xlen(session_commands_stream(name))
    replies = await pipe.execute(raise_on_error=False) if names else []
    for index, name in enumerate(names):
        groups, length = replies[2 * index], replies[2 * index + 1]
        family.add_metric([name], await _depth(redis, name, groups, length))
    return family


async def _depth(redis: aioredis.Redis, name: str, groups: Any, length: Any) -> int:
    if isinstance(groups, ResponseError) or isinstance(length, Exception):
        return 0  # no stream yet: nothing was ever queued
    for group in groups:
        if _text(group["name"]) != ENGINE_CONSUMER_GROUP:
            continue
        lag = group.get("lag")
        if lag is None:
            # Redis cannot tell the lag (entries deleted inside the unread range): count them.
            unread = await redis.xrange(
                session_commands_stream(name), f"({_text(group['last-delivered-id'])}", "+"
            )
            lag = len(unread)
        return int(lag) + int(group["pending"])
    return int(length)  # the engine never read this stream: all of it waits


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _engine_families(
    settings: Settings, beats: dict[Upstream, EngineHeartbeat | None], upstreams: list[Upstream]
) -> list[Metric]:
    up = GaugeMetricFamily(
        "wapp_engine_up", "1 while the engine's heartbeat is fresh, else 0.", labels=["upstream"]
    )
    rss = GaugeMetricFamily(
        "wapp_engine_rss_bytes", "The engine's resident memory (heartbeat).", labels=["upstream"]
    )
    heap = GaugeMetricFamily(
        "wapp_engine_heap_used_bytes",
        "The engine's V8 heap in use (heartbeat).",
        labels=["upstream"],
    )
    lag = GaugeMetricFamily(
        "wapp_engine_loop_lag_seconds",
        "The engine's event-loop lag, p99 over the last heartbeat interval.",
        labels=["upstream"],
    )
    budget = GaugeMetricFamily(
        "wapp_engine_memory_budget_bytes",
        "[sessions] engine_memory_budget_mb: the RSS admission control keeps the engine under.",
        labels=["upstream"],
    )
    sessions = GaugeMetricFamily(
        "wapp_engine_sessions", "Sessions the engine holds (heartbeat).", labels=["upstream"]
    )
    for upstream in upstreams:
        beat = beats[upstream]
        up.add_metric([upstream], 0 if beat is None else 1)
        budget.add_metric([upstream], settings.sessions.engine_memory_budget_mb * 1024 * 1024)
        if beat is None:
            continue  # no heartbeat, no figures: absent rather than a made-up zero
        rss.add_metric([upstream], beat.rss_bytes)
        heap.add_metric([upstream], beat.heap_used_bytes)
        lag.add_metric([upstream], beat.loop_lag_ms / 1000)
        sessions.add_metric([upstream], beat.sessions)
    return [up, rss, heap, lag, sessions, budget]


async def _stored_counter(
    redis: aioredis.Redis, key: str, name: str, documentation: str, label: str
) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=[label])
    stored = await redis.hgetall(key)  # type: ignore[misc]
    for field, value in sorted((_text(k), int(v)) for k, v in stored.items()):
        family.add_metric([field], value)
    return family

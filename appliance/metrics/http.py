"""API request counts and durations: counted per worker, summed across workers in Redis.

`RequestMetrics.observe` runs once per request (the outermost middleware calls it, the
fast send path included) and only updates dicts. `flush` moves what was counted since
the last flush into two Redis hashes with HINCRBY/HINCRBYFLOAT, so the sums are the
box's whichever worker answers the scrape; a flush that fails puts its counts back, so a
Redis blip loses nothing. A worker killed outright loses at most `FLUSH_EVERY_S` of counts.

Labels are the route template (`/v1/sessions/{session}/messages`), never the raw path, so
their number stays bounded; a request no route matched counts as `unmatched`.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any, Final

import redis.asyncio as aioredis
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from starlette.types import Scope

from appliance import redis_keys

log = logging.getLogger("appliance.metrics")

REQUESTS_KEY: Final = redis_keys.HTTP_REQUESTS_KEY
DURATIONS_KEY: Final = redis_keys.HTTP_DURATIONS_KEY
FLUSH_EVERY_S: Final = 2.0
# Where a path served outside Starlette's router (the fast send path) names its route.
ROUTE_KEY: Final = "wapp.route"
UNMATCHED: Final = "unmatched"
# Seconds; the API answers most requests in milliseconds, uploads and waits take longer.
BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SEP: Final = "|"  # route templates never contain it
_SUM: Final = "sum"


def route_of(scope: Scope) -> str:
    named: str | None = scope.get(ROUTE_KEY)
    if named is not None:
        return named
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class RequestMetrics:
    """This worker's counts since its last flush."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, int], int] = {}
        # (method, route) -> per-bucket counts (not cumulative), the last one for +Inf.
        self._buckets: dict[tuple[str, str], list[int]] = {}
        self._sums: dict[tuple[str, str], float] = {}

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        method: str = scope["method"]
        route = route_of(scope)
        key = (method, route, status)
        self._counts[key] = self._counts.get(key, 0) + 1
        pair = (method, route)
        buckets = self._buckets.get(pair)
        if buckets is None:
            buckets = self._buckets[pair] = [0] * (len(BUCKETS) + 1)
        # bisect_left: the first bound >= seconds, i.e. the `le` bucket it belongs to.
        buckets[bisect_left(BUCKETS, seconds)] += 1
        self._sums[pair] = self._sums.get(pair, 0.0) + seconds

    def _take(self) -> tuple[dict[Any, int], dict[Any, list[int]], dict[Any, float]]:
        taken = (self._counts, self._buckets, self._sums)
        self._counts, self._buckets, self._sums = {}, {}, {}
        return taken

    def _put_back(
        self, counts: dict[Any, int], buckets: dict[Any, list[int]], sums: dict[Any, float]
    ) -> None:
        for key, n in counts.items():
            self._counts[key] = self._counts.get(key, 0) + n
        for pair, values in buckets.items():
            mine = self._buckets.setdefault(pair, [0] * (len(BUCKETS) + 1))
            for i, n in enumerate(values):
                mine[i] += n
        for pair, total in sums.items():
            self._sums[pair] = self._sums.get(pair, 0.0) + total

    async def flush(self, redis: aioredis.Redis) -> int:
        """Add this worker's counts to the box's; how many requests went. Never raises."""
        counts, buckets, sums = self._take()
        if not counts:
            return 0
        pipe = redis.pipeline(transaction=False)
        for (method, route, status), n in counts.items():
            pipe.hincrby(REQUESTS_KEY, _SEP.join((method, route, str(status))), n)
        for (method, route), values in buckets.items():
            for i, n in enumerate(values):
                if n:
                    pipe.hincrby(DURATIONS_KEY, _SEP.join((method, route, str(i))), n)
            pipe.hincrbyfloat(
                DURATIONS_KEY, _SEP.join((method, route, _SUM)), sums[(method, route)]
            )
        try:
            await pipe.execute()
        except Exception as exc:  # Redis down: keep the counts for the next flush
            self._put_back(counts, buckets, sums)
            log.warning("request metrics not flushed: %s: %s", type(exc).__name__, exc)
            return 0
        return sum(counts.values())


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class StoredRequests(Collector):
    """The box's request metrics as read from Redis (`read`), for one scrape."""

    def __init__(
        self, requests: dict[bytes | str, bytes | str], durations: dict[bytes | str, bytes | str]
    ) -> None:
        self.requests = {_text(k): int(v) for k, v in requests.items()}
        self.durations = {_text(k): _text(v) for k, v in durations.items()}

    @classmethod
    async def read(cls, redis: aioredis.Redis) -> StoredRequests:
        pipe = redis.pipeline(transaction=False)
        pipe.hgetall(REQUESTS_KEY)
        pipe.hgetall(DURATIONS_KEY)
        requests, durations = await pipe.execute()
        return cls(requests, durations)

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        total = CounterMetricFamily(
            "wapp_http_requests",
            "API requests answered, by method, route template and status code.",
            labels=["method", "route", "status"],
        )
        for field, n in sorted(self.requests.items()):
            method, route, status = field.split(_SEP)
            total.add_metric([method, route, status], n)
        yield total
        yield self._histogram()

    def _histogram(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(
            "wapp_http_request_duration_seconds",
            "Time from a request's arrival to its answer's end, by method and route template.",
            labels=["method", "route"],
        )
        per_route: dict[tuple[str, str], list[int]] = {}
        sums: dict[tuple[str, str], float] = {}
        for field, value in self.durations.items():
            method, route, slot = field.split(_SEP)
            pair = (method, route)
            if slot == _SUM:
                sums[pair] = float(value)
                continue
            counts = per_route.setdefault(pair, [0] * (len(BUCKETS) + 1))
            counts[int(slot)] += int(value)
        for pair in sorted(per_route):
            cumulative, buckets = 0, []
            for bound, n in zip((*map(str, BUCKETS), "+Inf"), per_route[pair], strict=True):
                cumulative += n
                buckets.append((bound, float(cumulative)))
            family.add_metric(list(pair), buckets, sums.get(pair, 0.0))
        return family

"""The watchdog's decisions, fed with figures measured on real processes (psutil).

A `MemoryHog` is a real child process that allocates and frees resident memory on
command; the policy sees it through the same `TreeSampler` the watchdog uses. Time is
passed explicitly (`now`), so cooldowns and the hourly limit are exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import psutil
import pytest

from appliance.contracts import EngineHeartbeat
from appliance.settings import WatchdogSettings
from appliance.watchdog.measure import MB, TreeSampler
from appliance.watchdog.policy import Observation, Policy, Verdict
from tests.fixtures.memory_hog import MemoryHog

T0 = 1_800_000_000.0


@pytest.fixture
def hog() -> Iterator[MemoryHog]:
    with MemoryHog() as process:
        yield process


def settings(**overrides: object) -> WatchdogSettings:
    base: dict[str, object] = {
        "over_limit_samples": 3,
        "cooldown_s": 600,
        "max_recycles_per_hour": 2,
        "startup_grace_s": 30,
        "heartbeat_stale_s": 20,
        "loop_lag_max_ms": 500,
        "loop_lag_samples": 2,
    }
    return WatchdogSettings.model_validate(base | overrides)


def limit_above(sampler: TreeSampler, hog: MemoryHog, margin_mb: int) -> int:
    """A limit `margin_mb` over the hog's RSS, once it holds 64 MB (limits start at 64)."""
    hog.alloc(64)
    tree = sampler.sample(hog.pid)
    assert tree is not None
    return int(tree.rss_bytes / MB) + margin_mb


def observe_api(policy: Policy, sampler: TreeSampler, pid: int, now: float) -> Verdict | None:
    tree = sampler.sample(pid)
    assert tree is not None
    return policy.observe(Observation(program="api", kind="api", tree=tree, uptime_s=120), now)


def test_the_sampler_sums_a_real_process_tree(hog: MemoryHog) -> None:
    sampler = TreeSampler()
    alone = sampler.sample(hog.pid)
    assert alone is not None
    assert alone.processes == 1
    child = hog.child()
    hog.alloc(40)
    tree = sampler.sample(hog.pid)
    assert tree is not None
    assert tree.processes == 2
    child_rss = psutil.Process(child).memory_info().rss
    # Both members and the 40 MB just written count; the pipes to this test are open fds.
    assert tree.rss_bytes >= alone.rss_bytes + 40 * MB + child_rss * 0.9
    assert tree.open_files >= 3
    assert sampler.sample(999_999_999) is None


def test_memory_over_the_limit_recycles_only_after_enough_samples_in_a_row(
    hog: MemoryHog,
) -> None:
    sampler = TreeSampler()
    limit = limit_above(sampler, hog, 30)
    policy = Policy(settings(api_max_rss_mb=limit))
    hog.alloc(60)
    first = observe_api(policy, sampler, hog.pid, T0)
    second = observe_api(policy, sampler, hog.pid, T0 + 5)
    assert first is None
    assert second is None
    # Back under the limit for one sample: the count starts again.
    hog.free()
    under = observe_api(policy, sampler, hog.pid, T0 + 10)
    assert under is None
    # Over again: the 64 MB the limit was measured with, and 60 more.
    hog.alloc(124)
    assert observe_api(policy, sampler, hog.pid, T0 + 15) is None
    assert observe_api(policy, sampler, hog.pid, T0 + 20) is None
    verdict = observe_api(policy, sampler, hog.pid, T0 + 25)
    assert verdict is not None
    assert verdict.allowed
    assert verdict.reason == "memory"
    figures = verdict.figures
    assert figures["rss_limit_mb"] == limit
    assert figures["rss_mb"] > limit
    assert figures["over_limit_samples"] == 3
    assert figures["pid"] == hog.pid


def test_cooldown_then_hourly_limit(hog: MemoryHog) -> None:
    sampler = TreeSampler()
    policy = Policy(settings(api_max_rss_mb=limit_above(sampler, hog, 30), over_limit_samples=1))
    hog.alloc(60)
    first = observe_api(policy, sampler, hog.pid, T0)
    assert first is not None
    assert first.allowed
    policy.recycled("api", T0)
    # Still over (a recycle that did not help): inside the cooldown it is blocked, once.
    blocked = observe_api(policy, sampler, hog.pid, T0 + 60)
    assert blocked is not None
    assert not blocked.allowed
    assert blocked.blocked_by == "cooldown"
    assert observe_api(policy, sampler, hog.pid, T0 + 120) is None
    # Past the cooldown: allowed again; that is the second recycle of the hour.
    again = observe_api(policy, sampler, hog.pid, T0 + 601)
    assert again is not None
    assert again.allowed
    policy.recycled("api", T0 + 601)
    # Past the next cooldown but still within the hour of the first: the hourly limit.
    limited = observe_api(policy, sampler, hog.pid, T0 + 1300)
    assert limited is not None
    assert limited.blocked_by == "hourly_limit"
    assert policy.recycles_in_last_hour("api", T0 + 1300) == 2
    # An hour after the first, one slot is free again.
    freed = observe_api(policy, sampler, hog.pid, T0 + 3601)
    assert freed is not None
    assert freed.allowed


def beat(pid: int, at: float, *, lag_ms: float = 1.0) -> EngineHeartbeat:
    return EngineHeartbeat(
        pid=pid,
        upstream="sandbox",
        started_at=datetime.fromtimestamp(T0 - 100, UTC),
        uptime_s=100,
        rss_bytes=100 * MB,
        heap_used_bytes=40 * MB,
        heap_total_bytes=60 * MB,
        sessions=3,
        loop_lag_ms=lag_ms,
        node_version="v24",
        at=datetime.fromtimestamp(at, UTC),
    )


def observe_engine(
    policy: Policy,
    sampler: TreeSampler,
    pid: int,
    now: float,
    heartbeat: EngineHeartbeat | None,
    uptime_s: float = 300,
) -> Verdict | None:
    tree = sampler.sample(pid)
    assert tree is not None
    obs = Observation(
        program="engine-sandbox", kind="engine", tree=tree, uptime_s=uptime_s, heartbeat=heartbeat
    )
    return policy.observe(obs, now)


def test_a_stale_heartbeat_recycles_the_engine_but_not_within_its_startup_grace(
    hog: MemoryHog,
) -> None:
    sampler = TreeSampler()
    policy = Policy(settings(engine_max_rss_mb=4096))
    assert observe_engine(policy, sampler, hog.pid, T0, beat(hog.pid, T0)) is None
    # The key expired (None): age counts from the last heartbeat this process wrote.
    assert observe_engine(policy, sampler, hog.pid, T0 + 15, None) is None
    stale = observe_engine(policy, sampler, hog.pid, T0 + 25, None)
    assert stale is not None
    assert stale.reason == "heartbeat_stale"
    assert stale.figures["heartbeat_age_s"] == 25.0
    # A new process that never wrote one is as old as itself; within the grace, left alone.
    fresh = Policy(settings(engine_max_rss_mb=4096))
    assert observe_engine(fresh, sampler, hog.pid, T0, None, uptime_s=25) is None
    late = observe_engine(fresh, sampler, hog.pid, T0 + 10, None, uptime_s=35)
    assert late is not None
    assert late.reason == "heartbeat_stale"
    # The previous process's heartbeat (another pid) says nothing about this one.
    other = Policy(settings(engine_max_rss_mb=4096))
    assert (
        observe_engine(other, sampler, hog.pid, T0, beat(hog.pid + 1, T0), uptime_s=40) is not None
    )


def test_loop_lag_recycles_after_its_samples_and_carries_the_heartbeat_figures(
    hog: MemoryHog,
) -> None:
    sampler = TreeSampler()
    policy = Policy(settings(engine_max_rss_mb=4096))
    assert observe_engine(policy, sampler, hog.pid, T0, beat(hog.pid, T0, lag_ms=900)) is None
    assert observe_engine(policy, sampler, hog.pid, T0 + 1, beat(hog.pid, T0, lag_ms=10)) is None
    assert (
        observe_engine(policy, sampler, hog.pid, T0 + 2, beat(hog.pid, T0 + 2, lag_ms=900)) is None
    )
    verdict = observe_engine(policy, sampler, hog.pid, T0 + 3, beat(hog.pid, T0 + 3, lag_ms=900))
    assert verdict is not None
    assert verdict.reason == "loop_lag"
    figures = verdict.figures
    assert figures["loop_lag_ms"] == 900.0
    assert figures["loop_lag_max_ms"] == 500
    assert figures["heap_used_mb"] == 40.0
    assert figures["sessions"] == 3


def test_a_new_pid_starts_the_counts_again(hog: MemoryHog) -> None:
    sampler = TreeSampler()
    policy = Policy(settings(api_max_rss_mb=limit_above(sampler, hog, 30)))
    hog.alloc(60)
    observe_api(policy, sampler, hog.pid, T0)
    observe_api(policy, sampler, hog.pid, T0 + 5)
    with MemoryHog() as successor:
        successor.alloc(124)
        # Two samples over for the old pid do not count for its successor.
        assert observe_api(policy, sampler, successor.pid, T0 + 10) is None
        assert observe_api(policy, sampler, successor.pid, T0 + 15) is None
        assert observe_api(policy, sampler, successor.pid, T0 + 20) is not None

"""The loop of the api's background watchers: a tick now, then one every interval."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable


async def every(
    interval_s: float, stopping: asyncio.Event, tick: Callable[[], Awaitable[object]]
) -> None:
    """Awaits `tick` at once and then every `interval_s` until `stopping` is set; a stop
    ends the wait at once, never a tick halfway."""
    while not stopping.is_set():
        await tick()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval_s)

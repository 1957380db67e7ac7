"""A Redis to back up from or restore into, whether the stack runs or not.

With the stack up, its Redis. With the stack down and Redis managed, a temporary
redis-server on the stack's own config (same socket, same AOF dir), shut down cleanly at
the end (SHUTDOWN fsyncs the AOF), so what was restored is on disk when `wapp up` starts.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import redis.exceptions
from redis.asyncio import Redis

from appliance.errors import CommandFailed, RedisUnavailable
from appliance.redis_client import create_redis
from appliance.settings import Settings
from appliance.stack.layout import StackLayout
from appliance.stack.render import redis_conf

_START_TIMEOUT_S = 20.0


async def _ping(client: Redis) -> bool:
    try:
        return bool(await client.ping())
    except (redis.exceptions.ConnectionError, OSError):
        return False


@asynccontextmanager
async def redis_for(settings: Settings) -> AsyncIterator[Redis]:
    client = create_redis(settings)
    try:
        if await _ping(client):
            yield client
            return
    finally:
        await client.aclose()
    if not settings.redis.managed:
        raise RedisUnavailable(f"Redis at {settings.redis.url} does not answer")
    async with _temporary(settings) as temp:
        yield temp


def _write_conf(settings: Settings) -> Path:
    layout = StackLayout.of(settings)
    layout.redis_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    conf = layout.redis_dir / "restore-redis.conf"
    conf.write_text(redis_conf(settings, layout), encoding="utf-8")
    return conf


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


@asynccontextmanager
async def _temporary(settings: Settings) -> AsyncIterator[Redis]:
    binary = shutil.which(settings.redis.server_binary)
    if binary is None:
        raise CommandFailed(f"redis.server_binary: {settings.redis.server_binary} not found")
    conf = _write_conf(settings)
    proc = await asyncio.create_subprocess_exec(
        binary, str(conf), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    client = create_redis(settings)
    try:
        deadline = asyncio.get_running_loop().time() + _START_TIMEOUT_S
        while not await _ping(client):
            if proc.returncode is not None or asyncio.get_running_loop().time() > deadline:
                exited = proc.returncode is not None and proc.stderr is not None
                # Read its stderr only once it exited: a live process would block the read.
                err = (await proc.stderr.read()).decode() if exited and proc.stderr else ""
                raise CommandFailed(f"a temporary redis-server did not start: {err.strip()}")
            await asyncio.sleep(0.05)
        yield client
        # SHUTDOWN answers by closing the connection once the AOF is fsynced.
        with suppress(redis.exceptions.ConnectionError):
            await client.shutdown()
        await asyncio.wait_for(proc.wait(), _START_TIMEOUT_S)
    finally:
        await client.aclose()
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), _START_TIMEOUT_S)
        _remove(conf)

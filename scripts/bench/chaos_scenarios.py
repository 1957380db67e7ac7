"""The chaos scenarios: each injects its fault mid-burst and returns its tally."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from chaos_count import Run, Tally, burst, in_thread, settle, wait_connected


async def engine_kill(run: Run) -> Tally:
    tally = Tally("engine_kill")
    await burst(run, tally, lambda: in_thread(lambda: run.stack.kill9("engine-sandbox")))
    await settle(run, tally)
    return tally


async def api_kill(run: Run) -> Tally:
    tally = Tally("api_kill")
    await burst(run, tally, lambda: in_thread(lambda: run.stack.kill9("api")))
    await settle(run, tally)
    return tally


async def redis_kill(run: Run) -> Tally:
    tally = Tally("redis_kill")
    await burst(run, tally, lambda: in_thread(lambda: run.stack.kill9("redis")))
    await settle(run, tally)
    return tally


async def down_up(run: Run) -> Tally:
    tally = Tally("down_up")

    def cycle() -> None:
        run.stack.down()
        run.stack.up()

    await burst(run, tally, lambda: in_thread(cycle))
    await wait_connected(run, run.sessions)
    await settle(run, tally)
    return tally


async def offline_inbound(run: Run) -> Tally:
    """Contacts send to stopped sessions; the sessions start again and get everything."""
    tally = Tally("offline_inbound")
    offline = run.sessions[: max(1, len(run.sessions) // 5)]
    online = [s for s in run.sessions if s not in offline]
    for name in offline:
        await run.client.call("POST", f"/v1/sessions/{name}/stop")
    await asyncio.sleep(2)

    async def start_them() -> None:
        for name in offline:
            await run.client.call("POST", f"/v1/sessions/{name}/start")

    await burst(run, tally, start_them, out_sessions=online, in_sessions=offline)
    await wait_connected(run, offline)
    await settle(run, tally)
    return tally


async def frozen_sim(run: Run) -> Tally:
    """The simulator freezes while sessions restart (mid-handshake); then it thaws."""
    tally = Tally("frozen_sim")
    restarting = run.sessions[-8:]

    async def freeze() -> None:
        await in_thread(lambda: run.stack.signal("sim", signal.SIGSTOP))
        try:
            for name in restarting:
                await run.client.call("POST", f"/v1/sessions/{name}/stop")
                await run.client.call("POST", f"/v1/sessions/{name}/start")
            await asyncio.sleep(5)
        finally:
            await in_thread(lambda: run.stack.signal("sim", signal.SIGCONT))

    await burst(run, tally, freeze)
    await wait_connected(run, run.sessions)
    await settle(run, tally)
    return tally


async def receiver_down_api_kill(run: Run) -> Tally:
    tally = Tally("receiver_down_api_kill")
    run.receiver.down()

    async def fault() -> None:
        await in_thread(lambda: run.stack.kill9("api"))
        await asyncio.sleep(8)
        run.receiver.up()

    try:
        await burst(run, tally, fault)
    finally:
        if run.receiver._server is None:
            run.receiver.up()
    await settle(run, tally)
    return tally


async def webhook_deleted(run: Run) -> Tally:
    """A second endpoint is deleted mid-delivery; the first one loses nothing."""
    tally = Tally("webhook_deleted")
    created = await run.client.call(
        "POST", "/v1/webhooks", json_body={"url": run.receiver.url("/doomed")}
    )
    if created is None:
        raise RuntimeError("could not create the second webhook endpoint")
    endpoint = created.json()["id"]
    after_delete: list[int] = []

    async def delete() -> None:
        await run.client.call("DELETE", f"/v1/webhooks/{endpoint}")
        after_delete.append(len(run.receiver.snapshot("/doomed")))

    await burst(run, tally, delete)
    await settle(run, tally)
    late = len(run.receiver.snapshot("/doomed")) - (after_delete[0] if after_delete else 0)
    tally.note = f"posts_after_delete={late}"
    return tally


SCENARIOS: dict[str, Callable[[Run], Awaitable[Tally]]] = {
    "engine_kill": engine_kill,
    "api_kill": api_kill,
    "redis_kill": redis_kill,
    "down_up": down_up,
    "offline_inbound": offline_inbound,
    "frozen_sim": frozen_sim,
    "receiver_down_api_kill": receiver_down_api_kill,
    "webhook_deleted": webhook_deleted,
}

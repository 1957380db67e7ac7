"""Chaos: faults injected mid-burst on a real sandbox stack, and an exact count of what survived.

Each scenario sends `--messages` texts over `--sessions` sandbox sessions (a careful client
retries with the same Idempotency-Key), has simulated contacts send a tenth as many to the
sessions, and injects its fault when 30 % of the burst is accepted. Then it waits until every
accepted message reached its contact and every status, inbound message and webhook is in (or
until `--settle` seconds pass) and counts:

- lost: accepted sends whose text never reached the simulated contact;
- duplicated: texts a contact (or a session's inbound list) got more than once;
- stuck: accepted sends not `delivered`/`read` in the api;
- inbound_lost: texts a contact sent (201) that are not inbound messages of the session;
- webhooks_lost: inbound texts with no `message.received` webhook, plus accepted sends with no
  `delivered`/`read` `message.status` webhook.

Last line: scenarios=N messages=M lost=0 duplicated=0 stuck=0 inbound_lost=0 webhooks_lost=0
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_stack import Client, Receiver, Stack

FINAL = {"delivered", "read"}


@dataclass
class Run:
    stack: Stack
    client: Client
    receiver: Receiver
    sessions: list[str]
    phones: dict[str, str]
    contacts: list[str]
    messages: int
    settle_s: float
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex[:6])


@dataclass
class Tally:
    name: str
    accepted: dict[str, str] = field(default_factory=dict)  # text -> message id
    sent_to: dict[str, str] = field(default_factory=dict)  # text -> contact
    inbound: dict[str, str] = field(default_factory=dict)  # text -> session
    refused: int = 0
    lost: int = 0
    duplicated: int = 0
    stuck: int = 0
    inbound_lost: int = 0
    webhooks_lost: int = 0
    note: str = ""

    def line(self) -> str:
        return (
            f"scenario={self.name} accepted={len(self.accepted)} refused={self.refused} "
            f"inbound={len(self.inbound)} lost={self.lost} duplicated={self.duplicated} "
            f"stuck={self.stuck} inbound_lost={self.inbound_lost} "
            f"webhooks_lost={self.webhooks_lost}{(' ' + self.note) if self.note else ''}"
        )


async def send_one(run: Run, tally: Tally, index: int, sessions: list[str]) -> None:
    session = sessions[index % len(sessions)]
    contact = run.contacts[index % len(run.contacts)]
    text = f"chaos {tally.name} {run.nonce} out {index}"
    response = await run.client.call(
        "POST",
        f"/v1/sessions/{session}/messages",
        json_body={"type": "text", "to": contact, "text": text},
        idempotency_key=f"{run.nonce}-{tally.name}-{index}",
    )
    if response is None:
        tally.refused += 1
        return
    tally.accepted[text] = response.json()["id"]
    tally.sent_to[text] = contact


async def inject_one(run: Run, tally: Tally, index: int, sessions: list[str]) -> None:
    session = sessions[index % len(sessions)]
    contact = run.contacts[(index + 3) % len(run.contacts)]
    text = f"chaos {tally.name} {run.nonce} in {index}"
    # Not idempotent: retried only while it surely never reached the api.
    response = await run.client.call(
        "POST",
        f"/v1/sandbox/contacts/{contact}/messages",
        json_body={"session": session, "text": text},
        retry_ambiguous=False,
    )
    if response is not None:
        tally.inbound[text] = session


async def burst(
    run: Run,
    tally: Tally,
    fault: Callable[[], Awaitable[None]],
    *,
    out_sessions: list[str] | None = None,
    in_sessions: list[str] | None = None,
    concurrency: int = 32,
) -> None:
    """Send the scenario's traffic; call `fault` once 30 % of it is accepted."""
    out_sessions = out_sessions or run.sessions
    in_sessions = in_sessions or run.sessions
    jobs: list[Callable[[], Awaitable[None]]] = []
    for i in range(run.messages):
        jobs.append(lambda i=i: send_one(run, tally, i, out_sessions))
        if i % 10 == 5:
            jobs.append(lambda i=i: inject_one(run, tally, i, in_sessions))
    gate = asyncio.Semaphore(concurrency)
    threshold = int(len(jobs) * 0.3)
    done = 0
    fault_task: asyncio.Task[None] | None = None

    async def guarded(job: Callable[[], Awaitable[None]]) -> None:
        nonlocal done, fault_task
        async with gate:
            await job()
        done += 1
        if done >= threshold and fault_task is None:
            fault_task = asyncio.create_task(fault())

    await asyncio.gather(*(guarded(job) for job in jobs))
    if fault_task is not None:
        await fault_task


async def settle(run: Run, tally: Tally) -> None:
    """Wait until everything owed is in, or `settle_s` passes; then count."""
    deadline = time.monotonic() + run.settle_s
    statuses: dict[str, str] = {}
    while True:
        received = await contacts_received(run, tally.name)
        inbound = await sessions_inbound(run, tally.name)
        for mid in tally.accepted.values():
            if statuses.get(mid) not in FINAL:
                body = await run.client.get_json(f"/v1/messages/{mid}")
                statuses[mid] = (body or {}).get("status", "?")
        hooks = webhook_texts(run, tally)
        missing = (
            sum(1 for t in tally.accepted if received[t] == 0)
            + sum(1 for mid in tally.accepted.values() if statuses.get(mid) not in FINAL)
            + sum(1 for t in tally.inbound if inbound[t] == 0)
            + count_webhooks_missing(tally, hooks)
        )
        if missing == 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(2)
    tally.lost = sum(1 for t in tally.accepted if received[t] == 0)
    tally.duplicated = sum(n - 1 for n in received.values() if n > 1) + sum(
        n - 1 for n in inbound.values() if n > 1
    )
    tally.stuck = sum(1 for mid in tally.accepted.values() if statuses.get(mid) not in FINAL)
    tally.inbound_lost = sum(1 for t in tally.inbound if inbound[t] == 0)
    tally.webhooks_lost = count_webhooks_missing(tally, hooks)


async def contacts_received(run: Run, scenario: str) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    prefix = f"chaos {scenario} {run.nonce} out "
    for contact in run.contacts:
        body = await run.client.get_json(f"/v1/sandbox/contacts/{contact}/messages")
        for item in (body or {}).get("items", []):
            text = item.get("text")
            if isinstance(text, str) and text.startswith(prefix):
                counts[text] += 1
    return counts


async def sessions_inbound(run: Run, scenario: str) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    prefix = f"chaos {scenario} {run.nonce} in "
    for session in run.sessions:
        cursor: str | None = None
        while True:
            path = f"/v1/sessions/{session}/messages?direction=in&limit=200"
            body = await run.client.get_json(path + (f"&cursor={cursor}" if cursor else ""))
            items = (body or {}).get("items", [])
            for item in items:
                text = _text_of(item)
                if text and text.startswith(prefix):
                    counts[text] += 1
            cursor = (body or {}).get("nextCursor")
            if not cursor or not items:
                break
    return counts


def _text_of(item: dict[str, Any]) -> str | None:
    for holder in (item, item.get("content") or {}, item.get("payload") or {}):
        if isinstance(holder, dict) and isinstance(holder.get("text"), str):
            return str(holder["text"])
    return None


def webhook_texts(run: Run, tally: Tally) -> tuple[set[str], set[str]]:
    """(inbound texts with a message.received post, message ids with a final status post)."""
    received: set[str] = set()
    final: set[str] = set()
    for post in run.receiver.snapshot("/hook"):
        data = post.get("data") or {}
        if post.get("type") == "message.received":
            text = _text_of(data)
            if text:
                received.add(text)
        elif post.get("type") == "message.status" and data.get("status") in FINAL:
            final.add(str(data.get("messageId")))
    return received, final


def count_webhooks_missing(tally: Tally, hooks: tuple[set[str], set[str]]) -> int:
    received, final = hooks
    return sum(1 for t in tally.inbound if t not in received) + sum(
        1 for mid in tally.accepted.values() if mid not in final
    )


async def wait_connected(run: Run, sessions: list[str], patience_s: float = 180) -> None:
    deadline = time.monotonic() + patience_s
    pending = set(sessions)
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            body = await run.client.get_json(f"/v1/sessions/{name}")
            if (body or {}).get("state") == "connected":
                pending.discard(name)
        if pending:
            await asyncio.sleep(1)
    if pending:
        raise RuntimeError(f"sessions not connected after {patience_s} s: {sorted(pending)[:5]}")


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn)


# The scenarios: each returns its tally.


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


async def prepare(stack: Stack, args: argparse.Namespace) -> Run:
    receiver = Receiver()
    receiver.up()
    client = Client(stack.url, stack.bootstrap_key())
    contacts = [f"1555900{j:04d}" for j in range(args.contacts)]
    for phone in contacts:
        put = await client.call(
            "PUT", f"/v1/sandbox/contacts/{phone}", json_body={"readDelayMs": 300}
        )
        if put is None:
            raise RuntimeError(f"could not create contact {phone}")
    hook = await client.call("POST", "/v1/webhooks", json_body={"url": receiver.url("/hook")})
    if hook is None:
        raise RuntimeError("could not create the webhook endpoint")
    sessions = [f"chaos-{i:03d}" for i in range(args.sessions)]
    phones = {name: f"1555100{i:04d}" for i, name in enumerate(sessions)}
    for name in sessions:
        body = {
            "name": name,
            "upstream": "sandbox",
            "phone": phones[name],
            "pacing": {"enabled": False},
        }
        if await client.call("POST", "/v1/sessions", json_body=body) is None:
            raise RuntimeError(f"could not create session {name}")
    run = Run(stack, client, receiver, sessions, phones, contacts, args.messages, args.settle)
    await wait_connected(run, sessions)
    return run


async def main_async(args: argparse.Namespace) -> int:
    stack = Stack.create(args.postgres_url if args.db == "postgres" else None)
    tallies: list[Tally] = []
    try:
        stack.up()
        run = await prepare(stack, args)
        names = args.scenarios.split(",") if args.scenarios else list(SCENARIOS)
        for name in names:
            started = time.monotonic()
            tally = await SCENARIOS[name](run)
            tallies.append(tally)
            print(f"{tally.line()} seconds={time.monotonic() - started:.0f}", flush=True)
        await run.client.close()
    finally:
        if args.keep:
            print(f"kept: {stack.root}", flush=True)
        else:
            stack.destroy()
    total = {
        "lost": sum(t.lost for t in tallies),
        "duplicated": sum(t.duplicated for t in tallies),
        "stuck": sum(t.stuck for t in tallies),
        "inbound_lost": sum(t.inbound_lost for t in tallies),
        "webhooks_lost": sum(t.webhooks_lost for t in tallies),
    }
    messages = sum(len(t.accepted) for t in tallies)
    print(
        f"scenarios={len(tallies)} messages={messages} "
        + " ".join(f"{k}={v}" for k, v in total.items())
    )
    return 0 if not any(total.values()) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--contacts", type=int, default=10)
    parser.add_argument("--settle", type=float, default=240.0)
    parser.add_argument("--scenarios", default="", help="comma-separated; default: all")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--postgres-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    )
    parser.add_argument("--keep", action="store_true", help="keep the stack's temp dir")
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()

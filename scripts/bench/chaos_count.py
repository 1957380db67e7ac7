"""The chaos run's traffic and its exact count of what survived (see chaos_bench.py)."""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

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

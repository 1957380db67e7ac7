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
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_count import Run, Tally, wait_connected
from chaos_scenarios import SCENARIOS
from chaos_stack import Client, Receiver, Stack
from sqlalchemy.engine import make_url


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
    database = None
    if args.db == "postgres":
        database = f"wapp_chaos_{uuid.uuid4().hex[:8]}"
        psql(args.postgres_url, f'CREATE DATABASE "{database}"')
    url = make_url(args.postgres_url).set(database=database) if database else None
    stack = Stack.create(url.render_as_string(hide_password=False) if url else None)
    tallies: list[Tally] = []
    try:
        stack.up()
        run = await prepare(stack, args)
        names = args.scenarios.split(",") if args.scenarios else list(SCENARIOS)
        for name in names:
            await wait_connected(run, run.sessions)  # each scenario starts on a whole stack
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
            if database:
                psql(args.postgres_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
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


def psql(sqlalchemy_url: str, statement: str) -> None:
    url = make_url(sqlalchemy_url)
    subprocess.run(
        [
            "psql",
            "-h",
            url.host or "127.0.0.1",
            "-p",
            str(url.port or 5432),
            "-U",
            url.username or "postgres",
            "-d",
            url.database or "postgres",
            "-c",
            statement,
        ],
        check=True,
        capture_output=True,
    )


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

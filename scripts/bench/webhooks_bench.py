"""20,000 events fanned out to 4 local receivers through the real outbox and dispatcher.

The feeder does what the event consumer does (enqueue_deliveries in a transaction, in
batches, at a steady rate); the dispatcher is the api's own; the receivers run in a
separate process. Latency: the event's timestamp (set just before its enqueue) to its
arrival at the receiver. Ends with `deliveries_per_s=... p99_ms=... lost=...` (the worse
figure of the databases run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import orjson
from sqlalchemy.engine import make_url

from appliance.contracts import MessageStatusEvent, MessageStatusPayload
from appliance.db import migrate
from appliance.db.engine import create_db_engine, create_sessionmaker
from appliance.security.master_key import create_master_key, load_master_key
from appliance.settings import Settings
from appliance.webhooks import service
from appliance.webhooks.crypto import SecretBox
from appliance.webhooks.dispatcher import Dispatcher
from appliance.webhooks.outbox import enqueue_deliveries

HERE = Path(__file__).resolve().parent


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def run_one(
    label: str, database_url: str, args: argparse.Namespace, tmp: Path
) -> dict[str, float]:
    data = tmp / label
    data.mkdir()
    settings = Settings(
        general={"data_dir": str(data)},
        database={"url": database_url, "pool_size": 10},
        webhooks={
            "allow_private": True,
            "poll_interval_s": args.poll_interval,
            "max_concurrency": 64,
            "per_endpoint_concurrency": args.per_endpoint,
            "batch_size": args.batch_size,
        },
    )
    await migrate.upgrade(settings)
    create_master_key(settings.master_key_path)
    master = load_master_key(settings.master_key_path)
    out_file = tmp / f"{label}-received.json"
    receivers = subprocess.Popen(
        [sys.executable, str(HERE / "webhooks_receiver.py"), str(args.receivers), str(out_file)],
        stdout=subprocess.PIPE,
    )
    assert receivers.stdout is not None
    ports = orjson.loads(receivers.stdout.readline())
    engine = create_db_engine(settings)
    sessions = create_sessionmaker(engine)
    readers = create_sessionmaker(engine, read_only=True)
    admin = service.Scope(key_id=None, is_admin=True)
    for port in ports:
        await service.create_webhook(
            sessions,
            scope=admin,
            box=SecretBox(master),
            settings=settings.webhooks,
            url=f"http://127.0.0.1:{port}/hook",
        )
    dispatcher = Dispatcher(settings.webhooks, engine, master_key=master)
    dispatcher.start()
    names = [f"s{i}" for i in range(args.sessions)]
    expected = args.events * len(ports)
    started = time.perf_counter()
    fed = 0
    interval = args.batch / args.rate
    next_at = started
    while fed < args.events:
        n = min(args.batch, args.events - fed)
        async with sessions.begin() as db:
            for i in range(fed, fed + n):
                event = MessageStatusEvent(
                    session=names[i % len(names)],
                    payload=MessageStatusPayload(
                        message_id=uuid.uuid4(), status="delivered", wa_id=f"3EB0{i:018d}"
                    ),
                )
                await enqueue_deliveries(db, event, owner_key_id=None, session_id=None)
        fed += n
        next_at += interval
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    feed_s = time.perf_counter() - started
    # Wait until the outbox is drained (or the deadline passes: then rows are lost).
    import sqlalchemy as sa

    deadline = time.perf_counter() + args.drain_timeout
    pending = expected
    while time.perf_counter() < deadline:
        async with readers() as db:
            pending = (
                await db.execute(
                    sa.text("SELECT count(*) FROM webhook_deliveries WHERE status != 'delivered'")
                )
            ).scalar_one()
        if pending == 0:
            break
        await asyncio.sleep(0.05)
    total_s = time.perf_counter() - started
    await dispatcher.stop()
    await engine.dispose()
    await asyncio.sleep(0.2)
    receivers.terminate()
    receivers.wait(timeout=30)
    records = orjson.loads(out_file.read_bytes())
    unique = {(r[0], r[1]) for r in records}
    latencies = [r[2] for r in records]
    lost = expected - len(unique)
    result = {
        "deliveries": float(len(unique)),
        "duplicates": float(len(records) - len(unique)),
        "feed_s": feed_s,
        "total_s": total_s,
        "deliveries_per_s": len(unique) / total_s,
        "p50_ms": pct(latencies, 0.50),
        "p99_ms": pct(latencies, 0.99),
        "max_ms": max(latencies) if latencies else float("nan"),
        "mean_ms": statistics.fmean(latencies) if latencies else float("nan"),
        "lost": float(lost),
        "pending_left": float(pending),
    }
    print(
        f"[{label}] events={args.events} receivers={len(ports)} sessions={args.sessions} "
        f"rate={args.rate}/s delivered={len(unique)} duplicates={len(records) - len(unique)} "
        f"fed_in={feed_s:.1f}s drained_in={total_s:.1f}s "
        f"deliveries_per_s={result['deliveries_per_s']:.0f} p50_ms={result['p50_ms']:.0f} "
        f"p99_ms={result['p99_ms']:.0f} max_ms={result['max_ms']:.0f} lost={lost}",
        flush=True,
    )
    return result


async def main() -> None:
    import logging

    logging.basicConfig(format="%(asctime)s %(name)s %(message)s", level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--receivers", type=int, default=4)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--rate", type=float, default=300.0, help="events per second fed")
    parser.add_argument("--batch", type=int, default=10, help="events per feeder transaction")
    parser.add_argument("--per-endpoint", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--poll-interval", type=float, default=0.05)
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "WAPP_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    results: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="wapp-bench-webhooks-") as tmp_name:
        tmp = Path(tmp_name)
        if args.db in ("sqlite", "both"):
            results.append(
                await run_one("sqlite", f"sqlite+aiosqlite:///{tmp}/bench.db", args, tmp)
            )
        if args.db in ("postgres", "both"):
            server = make_url(args.postgres_url)
            name = f"wapp_bench_{uuid.uuid4().hex[:12]}"
            admin_dsn = server.set(drivername="postgresql").render_as_string(hide_password=False)
            conn = await asyncpg.connect(admin_dsn)
            await conn.execute(f'CREATE DATABASE "{name}"')
            await conn.close()
            try:
                url = server.set(database=name).render_as_string(hide_password=False)
                results.append(await run_one("postgres", url, args, tmp))
            finally:
                conn = await asyncpg.connect(admin_dsn)
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                await conn.close()
    worst_rate = min(r["deliveries_per_s"] for r in results)
    worst_p99 = max(r["p99_ms"] for r in results)
    lost = int(sum(r["lost"] for r in results))
    print(f"deliveries_per_s={worst_rate:.0f} p99_ms={worst_p99:.0f} lost={lost}")


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())  # as the api runs (uvicorn[standard])

"""api_enqueue: the real enqueue path against a bare 202 endpoint, under the same load.

Each database run: a fresh database migrated, an admin key, one session marked
connected (no engine: queued commands pile up in the session's Redis stream, as they
would behind a pacer), the api served by `wapp api` (uvicorn, one worker), wrk posting
text messages. Then the bare app under the same uvicorn settings and the same wrk load.
Each measured run starts on a settled disk (`settle_disk`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import httpx
from sqlalchemy.engine import make_url

from appliance.auth.api_keys import create_api_key
from appliance.db import migrate
from appliance.db.engine import create_db_engine, create_sessionmaker
from appliance.db.models import Session
from appliance.security.master_key import create_master_key

HERE = Path(__file__).resolve().parent
WAPP = Path(sys.executable).parent / "wapp"
UVICORN = Path(sys.executable).parent / "uvicorn"
BODY = '{"type": "text", "to": "4915112345678", "text": "hello from the benchmark"}'


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, key: str, args: argparse.Namespace, workdir: Path) -> Result:
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{BODY}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
    )
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{args.connections}",
            f"-d{args.duration}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    # Anchored: "+/- Stdev" columns such as "69.50%" must not pass for the 50% line.
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: .*?timeout (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    errors += int(socket_errors.group(1)) if socket_errors else 0
    return Result(rps, p50, p99, errors)


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    sock = workdir / "r.sock"
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
    )
    while not sock.exists():
        time.sleep(0.05)
    return proc, f"unix://{sock}"


async def prepare(config: Path, database_url: str) -> str:
    from appliance.settings import load_settings

    settings = load_settings(config)
    await migrate.upgrade(settings)
    engine = create_db_engine(settings)
    writer = create_sessionmaker(engine)
    key = await create_api_key(writer, name="bench", role="admin")
    async with writer() as db, db.begin():
        db.add(
            Session(
                name="bench",
                upstream="whatsapp",
                state="connected",
                active=True,
                owner_key_id=key.key.id,
            )
        )
    await engine.dispose()
    return key.plaintext


async def checkpoint_postgres(database_url: str) -> None:
    """Earlier runs' (and test suites') rows still being written back to disk would
    land in this run as stalls of the WAL fsync at commit (seen in pg_stat_activity as
    IO/WALSync waits of 100-480 ms): start the run from a checkpoint."""
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CHECKPOINT")
    except asyncpg.InsufficientPrivilegeError:
        print("note: not allowed to CHECKPOINT; earlier writes may stall this run")
    finally:
        await conn.close()


def settle_disk(database_url: str | None) -> None:
    """The same quiet disk for every measured run: the kernel's dirty pages flushed,
    and Postgres checkpointed."""
    os.sync()
    if database_url is not None and database_url.startswith("postgresql"):
        asyncio.run(checkpoint_postgres(database_url))


def run_api(
    label: str, database_url: str, redis_url: str, args: argparse.Namespace, tmp: Path
) -> Result:
    data = tmp / label
    data.mkdir()
    create_master_key(data / "master.key")
    port = free_port()
    config = data / "config.toml"
    config.write_text(
        f'[general]\ndata_dir = "{data}"\nlog_level = "warning"\n'
        f'[api]\nport = {port}\n[database]\nurl = "{database_url}"\n'
        f'[redis]\nmanaged = false\nurl = "{redis_url}"\n'
    )
    key = asyncio.run(prepare(config, database_url))
    proc = subprocess.Popen(
        [str(WAPP), "--config", str(config), "api"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        settle_disk(database_url)
        return wrk(f"http://127.0.0.1:{port}/v1/sessions/bench/messages", key, args, data)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run_bare(args: argparse.Namespace, tmp: Path) -> Result:
    port = free_port()
    proc = subprocess.Popen(
        [
            str(UVICORN),
            "api_enqueue_bare:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=HERE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/docs")
        settle_disk(None)
        return wrk(f"http://127.0.0.1:{port}/v1/sessions/bench/messages", "x", args, tmp)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def pg_database(server_url: str, name: str, *, drop: bool = False) -> None:
    dsn = make_url(server_url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f'DROP DATABASE IF EXISTS "{name}"' if drop else f'CREATE DATABASE "{name}"'
        )
    finally:
        await conn.close()


def show(label: str, result: Result, bare: Result) -> None:
    print(
        f"{label:9} enqueue {result.rps:8.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
        f"p99 {result.p99_ms:6.2f} ms  errors {result.errors}  "
        f"| bare {bare.rps:8.0f} req/s  p50 {bare.p50_ms:6.2f} ms  p99 {bare.p99_ms:6.2f} ms  "
        f"| ratio {result.rps / bare.rps:.2f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "WAPP_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="wapp-bench-"))
    redis_proc, redis_url = start_redis(tmp)
    ratios: dict[str, float] = {}
    worst_p99, enqueue_rps, bare_rps = 0.0, [], []
    try:
        for label in ["sqlite", "postgres"] if args.db == "both" else [args.db]:
            if label == "sqlite":
                url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
                result = run_api(label, url, redis_url, args, tmp)
            else:
                name = f"wapp_bench_{uuid.uuid4().hex[:8]}"
                asyncio.run(pg_database(args.postgres_url, name))
                try:
                    url = make_url(args.postgres_url).set(database=name).render_as_string(False)
                    result = run_api(label, url, redis_url, args, tmp)
                finally:
                    asyncio.run(pg_database(args.postgres_url, name, drop=True))
            bare = run_bare(args, tmp)
            show(label, result, bare)
            ratios[label] = result.rps / bare.rps
            worst_p99 = max(worst_p99, result.p99_ms)
            enqueue_rps.append(result.rps)
            bare_rps.append(bare.rps)
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    fields = [f"{k}_ratio={v:.2f}" for k, v in ratios.items()]
    fields += [
        f"enqueue_per_s={min(enqueue_rps):.0f}",
        f"bare_per_s={max(bare_rps):.0f}",
        f"p99_ms={worst_p99:.1f}",
    ]
    print(" ".join(fields))


if __name__ == "__main__":
    main()

"""Benchmark receivers: N minimal HTTP/1.1 servers on 127.0.0.1 in one process (uvloop).

Prints its ports as one JSON line, then records (receiver index, event id, event-to-delivery ms)
for every POST; on SIGTERM writes them as JSON to the path given as argv[2].
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

import orjson
import uvloop

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


async def main(n: int, out_path: str) -> None:
    records: list[tuple[int, str, float]] = []

    def handler(index: int):  # type: ignore[no-untyped-def]
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    lower = head.lower()
                    i = lower.index(b"content-length:")
                    length = int(lower[i + 15 : lower.index(b"\r\n", i)])
                    body = await reader.readexactly(length)
                    now = time.time()
                    doc = orjson.loads(body)
                    sent = datetime.fromisoformat(doc["timestamp"]).timestamp()
                    records.append((index, doc["id"], (now - sent) * 1000))
                    writer.write(OK)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        return handle

    servers = []
    ports = []
    for i in range(n):
        server = await asyncio.start_server(handler(i), "127.0.0.1", 0, backlog=1024)
        servers.append(server)
        ports.append(server.sockets[0].getsockname()[1])
    print(orjson.dumps(ports).decode(), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await asyncio.to_thread(Path(out_path).write_bytes, orjson.dumps(records))


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2]))

"""A watchdog recycle under traffic on a real sandbox stack; prints `recycle_lost=N`.

The sandbox engine is pushed over `[watchdog] engine_max_rss_mb` with the sandbox-only
ballast (`wapp watchdog ballast`) while a careful client sends (a failed send retried with
the same Idempotency-Key); the watchdog recycles the engine; then every accepted message is
looked for in the simulated contacts' received lists. Lost = accepted but never received.
`recycle()` is what scripts/bench/vps_install calls; run alone:
    .venv/bin/python scripts/bench/watchdog_recycle.py [--sessions 5] [--messages 100]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_stack import Stack


@dataclass
class Outcome:
    accepted: int
    lost: int
    duplicated: int
    recycled: bool

    def line(self) -> str:
        return f"recycle_lost={self.lost}"

    def detail(self) -> str:
        return (
            f"recycle: accepted={self.accepted} lost={self.lost} "
            f"duplicated={self.duplicated} recycled={'yes' if self.recycled else 'no'}"
        )


def _wait(what: str, probe: Callable[[], object], timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {what}")


def _engine_pid(stack: Stack) -> int | None:
    body = json.loads(stack.wapp("status", "--json").stdout or "{}")
    for program in body.get("programs", []):
        if program.get("name") == "engine-sandbox":
            return program.get("pid")
    return None


def _send(api: httpx.Client, session: str, to: str, text: str, key: str) -> str | None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            response = api.post(
                f"/v1/sessions/{session}/messages",
                json={"type": "text", "to": to, "text": text},
                headers={"Idempotency-Key": key},
            )
        except httpx.TransportError:
            time.sleep(0.5)
            continue
        if response.status_code == 202:
            return str(response.json()["id"])
        if response.status_code < 500 and response.status_code != 409:
            return None
        time.sleep(0.5)
    return None


def recycle(
    *,
    sessions: int = 5,
    messages: int = 100,
    contacts: int = 3,
    limit_mb: int = 450,
    ballast_mb: int = 600,
    settle_s: float = 240,
) -> Outcome:
    """Run the scenario on a stack of its own, always taken down again."""
    stack = Stack.create(None)
    with stack.config.open("a", encoding="utf-8") as config:
        config.write(
            f"[watchdog]\ninterval_s = 1.0\nengine_max_rss_mb = {limit_mb}\n"
            "over_limit_samples = 2\napi_max_rss_mb = 8192\n"
        )
    try:
        stack.up()
        key = stack.bootstrap_key()
        api = httpx.Client(
            base_url=stack.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        phones = [f"1555700{j:04d}" for j in range(contacts)]
        for phone in phones:
            api.put(f"/v1/sandbox/contacts/{phone}", json={}).raise_for_status()
        names = [f"rc-{i:02d}" for i in range(sessions)]
        for i, name in enumerate(names):
            body = {
                "name": name,
                "upstream": "sandbox",
                "phone": f"4917400{i:04d}",
                "pacing": {"enabled": False},
            }
            api.post("/v1/sessions", json=body).raise_for_status()
        for name in names:
            _wait(
                f"{name} connected",
                lambda n=name: api.get(f"/v1/sessions/{n}").json().get("state") == "connected",
                180,
            )
        old_pid = _engine_pid(stack)
        nonce = uuid.uuid4().hex[:6]
        accepted: dict[str, str] = {}

        def traffic() -> None:
            for i in range(messages):
                text = f"rc {nonce} {i}"
                mid = _send(api, names[i % sessions], phones[i % contacts], text, f"{nonce}-{i}")
                if mid is not None:
                    accepted[text] = mid
                time.sleep(0.1)

        sender = threading.Thread(target=traffic)
        sender.start()
        _wait("a third of the traffic", lambda: len(accepted) >= messages // 3, 180)
        done = stack.wapp("watchdog", "ballast", "--mb", str(ballast_mb))
        if done.returncode != 0:
            raise RuntimeError(f"ballast failed: {done.stderr}")
        recycled = True
        try:
            _wait("the recycle", lambda: _engine_pid(stack) not in (None, old_pid), 90)
        except RuntimeError:
            recycled = False
        sender.join()

        def received() -> collections.Counter[str]:
            counts: collections.Counter[str] = collections.Counter()
            for phone in phones:
                items = api.get(f"/v1/sandbox/contacts/{phone}/messages").json()["items"]
                for item in items:
                    text = item.get("text") or ""
                    if text.startswith(f"rc {nonce} "):
                        counts[text] += 1
            return counts

        deadline = time.monotonic() + settle_s
        counts = received()
        while any(counts[t] == 0 for t in accepted) and time.monotonic() < deadline:
            time.sleep(2)
            counts = received()
        api.close()
        return Outcome(
            accepted=len(accepted),
            lost=sum(1 for t in accepted if counts[t] == 0),
            duplicated=sum(n - 1 for n in counts.values() if n > 1),
            recycled=recycled,
        )
    finally:
        stack.destroy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--messages", type=int, default=100)
    args = parser.parse_args()
    outcome = recycle(sessions=args.sessions, messages=args.messages)
    print(outcome.detail(), file=sys.stderr)
    print(outcome.line())
    ok = outcome.recycled and outcome.lost == 0 and outcome.duplicated == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

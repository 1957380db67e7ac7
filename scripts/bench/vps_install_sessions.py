"""Helper of scripts/bench/vps_install: sandbox sessions paired before an upgrade, and
whether each one is back connected afterwards on the same linked device (no new pairing,
so no QR was needed).

  vps_install_sessions.py pair  API KEY CONTROL_URL N STATE_FILE
  vps_install_sessions.py check API KEY CONTROL_URL STATE_FILE   -> prints "kept/N"
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

PHONE_BASE = 15550100


def _devices(control: str, phone: str) -> Any:
    account = httpx.get(f"{control}/accounts/{phone}", timeout=10).json()
    return account.get("devices")


def _states(api: str, key: str, names: list[str]) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    states = {}
    for name in names:
        body = httpx.get(f"{api}/v1/sessions/{name}", headers=headers, timeout=10).json()
        states[name] = body.get("state", "?")
    return states


def _wait_connected(api: str, key: str, names: list[str], timeout_s: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while True:
        states = _states(api, key, names)
        if all(s == "connected" for s in states.values()) or time.monotonic() > deadline:
            return states
        time.sleep(1)


def pair(api: str, key: str, control: str, count: int, state_file: Path) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    sessions = {f"vps-{i}": str(PHONE_BASE + i) for i in range(count)}
    for name, phone in sessions.items():
        body = {"name": name, "upstream": "sandbox", "phone": phone, "pacing": {"enabled": False}}
        response = httpx.post(f"{api}/v1/sessions", headers=headers, json=body, timeout=30)
        if response.status_code not in (200, 201, 202):
            sys.exit(f"creating {name}: {response.status_code} {response.text}")
    states = _wait_connected(api, key, list(sessions), 180)
    if any(s != "connected" for s in states.values()):
        sys.exit(f"not every session paired: {states}")
    devices = {name: _devices(control, phone) for name, phone in sessions.items()}
    state_file.write_text(json.dumps({"sessions": sessions, "devices": devices}))
    print(f"paired {len(sessions)}")


def check(api: str, key: str, control: str, state_file: Path) -> None:
    saved = json.loads(state_file.read_text())
    sessions: dict[str, str] = saved["sessions"]
    states = _wait_connected(api, key, list(sessions), 180)
    kept = [
        name
        for name, phone in sessions.items()
        if states[name] == "connected" and _devices(control, phone) == saved["devices"][name]
    ]
    lost = sorted(set(sessions) - set(kept))
    if lost:
        print(f"not kept: {lost} states={states}", file=sys.stderr)
    print(f"{len(kept)}/{len(sessions)}")


if __name__ == "__main__":
    command, api, key, control, *rest = sys.argv[1:]
    if command == "pair":
        pair(api, key, control, int(rest[0]), Path(rest[1]))
    else:
        check(api, key, control, Path(rest[0]))

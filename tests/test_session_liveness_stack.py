"""Session liveness on the real stack (`wapp up -d`, HTTP only, signals to real processes).

- The simulator frozen with SIGSTOP: 8 sessions take every handshake slot, /readyz names
  the stuck sandbox engine; all 8 are stopped mid-handshake; after SIGCONT a new session
  connects (before the fix the 8 stops kept their slots forever).
- The engine frozen, then killed -9: its session is not shown `connected` meanwhile; the
  engine alive but not holding the session: not `connected` either.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
import redis

from appliance.contracts import EngineHeartbeat
from appliance.redis_keys import engine_heartbeat_key
from appliance.settings import load_settings
from appliance.stack.layout import StackLayout
from appliance.stack.rpc import connect
from tests.fixtures.stack import StackDir, start_stack
from tests.fixtures.waiting import wait_for

REGISTRY = "wapp:engine:sandbox:sessions"


@pytest.fixture
def stuck_bound_stack(stack_dir: StackDir) -> StackDir:
    # A short bound, so a frozen upstream makes /readyz say so within the test's patience.
    text = stack_dir.config.read_text(encoding="utf-8")
    stack_dir.config.write_text(
        text.replace("[engine]\n", "[engine]\nhandshake_stuck_after_s = 3\n", 1), encoding="utf-8"
    )
    return start_stack(stack_dir)


@pytest.fixture
def api(stuck_bound_stack: StackDir) -> Iterator[httpx.Client]:
    boot = stuck_bound_stack.wapp("keys", "bootstrap-admin")
    assert boot.returncode == 0, boot.stderr
    key = boot.stdout.strip().splitlines()[-1]
    with httpx.Client(
        base_url=f"http://127.0.0.1:{stuck_bound_stack.api_port}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    ) as client:
        yield client


@pytest.fixture
def store(stuck_bound_stack: StackDir) -> Iterator[redis.Redis]:
    settings = load_settings(stuck_bound_stack.config)
    with redis.Redis(unix_socket_path=str(settings.redis_socket_path)) as client:
        yield client


def program_pid(stack: StackDir, name: str) -> int:
    """The program's pid once supervisord has it running (a restart can take a while)."""

    def running_pid() -> int | None:
        supervisor = connect(StackLayout.of(load_settings(stack.config)))
        assert supervisor is not None
        with supervisor:
            (program,) = [p for p in supervisor.status().programs if p.name == name]
        return program.pid if program.running else None

    pid: int = wait_for(f"{name} running", running_pid, timeout=60)
    return pid


def sandbox_beat(store: redis.Redis) -> EngineHeartbeat | None:
    raw = cast("bytes | None", store.get(engine_heartbeat_key("sandbox")))
    return None if raw is None else EngineHeartbeat.model_validate_json(raw)


def create(api: httpx.Client, name: str, phone: str) -> None:
    body = {"name": name, "upstream": "sandbox", "phone": phone, "pacing": {"enabled": False}}
    response = api.post("/v1/sessions", json=body)
    assert response.status_code == 201, response.text


def shown(api: httpx.Client, name: str) -> dict[str, Any]:
    body: dict[str, Any] = api.get(f"/v1/sessions/{name}").json()
    return body


def test_sessions_stopped_mid_handshake_on_a_frozen_simulator_leave_no_slot_behind(
    stuck_bound_stack: StackDir, api: httpx.Client, store: redis.Redis
) -> None:
    wait_for("/readyz 200", lambda: api.get("/readyz").status_code == 200)
    sim = program_pid(stuck_bound_stack, "sim")
    names = [f"frozen-{i}" for i in range(8)]
    os.kill(sim, signal.SIGSTOP)
    try:
        for i, name in enumerate(names):
            create(api, name, f"49172000000{i}")
        wait_for(
            "all 8 handshake slots held",
            lambda: (b := sandbox_beat(store)) and b.handshakes and b.handshakes.active == 8,
        )
        stuck = wait_for(
            "/readyz naming the stuck sandbox engine",
            lambda: (r := api.get("/readyz")).status_code == 503 and r.json(),
            timeout=30,
        )
        check = stuck["error"]["details"]["checks"]["engine.sandbox"]
        assert check.startswith("handshakes stuck at the sandbox upstream: 8 of 8 slots held")
        assert stuck["error"]["details"]["checks"]["engine.whatsapp"] == "ok"
        for name in names:
            assert api.post(f"/v1/sessions/{name}/stop").status_code == 202
        wait_for(
            "every slot given back",
            lambda: (
                (b := sandbox_beat(store))
                and b.handshakes
                and (b.handshakes.active, b.handshakes.waiting) == (0, 0)
                and not b.session_states
            ),
            timeout=45,
        )
    finally:
        os.kill(sim, signal.SIGCONT)
    create(api, "after-thaw", "491720000099")
    wait_for("the new session connected", lambda: shown(api, "after-thaw")["state"] == "connected")
    wait_for("/readyz 200 again", lambda: api.get("/readyz").status_code == 200)
    assert all(shown(api, name)["state"] == "stopped" for name in names)


def test_a_session_no_live_engine_holds_is_never_shown_connected(
    stuck_bound_stack: StackDir, api: httpx.Client, store: redis.Redis
) -> None:
    create(api, "alive", "491720000050")
    wait_for("connected", lambda: shown(api, "alive")["state"] == "connected")
    engine = program_pid(stuck_bound_stack, "engine-sandbox")

    # Frozen: its heartbeat expires (TTL 1.5 s); the row still says connected.
    os.kill(engine, signal.SIGSTOP)
    seen = wait_for(
        "not connected", lambda: (s := shown(api, "alive"))["state"] != "connected" and s
    )
    assert seen["state"] == "reconnecting"
    assert seen["stateReason"] == "the sandbox engine is not running (no fresh heartbeat)"
    assert "engine.sandbox" in api.get("/readyz").json()["error"]["message"]

    # kill -9: supervisor starts a new engine, which restores the session.
    os.kill(engine, signal.SIGKILL)
    wait_for("connected again", lambda: shown(api, "alive")["state"] == "connected", timeout=60)
    engine = program_pid(stuck_bound_stack, "engine-sandbox")

    # A live engine that does not hold the session (its registry entry lost, then killed
    # -9): the row says connected forever, the api must not.
    assert store.hdel(REGISTRY, "alive") == 1
    os.kill(engine, signal.SIGKILL)
    seen = wait_for(
        "shown as not held by the new engine",
        lambda: (
            (s := shown(api, "alive"))["stateReason"] is not None
            and "does not hold this session" in s["stateReason"]
            and s
        ),
        timeout=60,
    )
    assert seen["state"] == "reconnecting"
    new_engine = program_pid(stuck_bound_stack, "engine-sandbox")
    assert seen["stateReason"] == (
        f"the sandbox engine (pid {new_engine}) does not hold this session"
    )
    time.sleep(2)  # a few more heartbeats: it stays so
    assert shown(api, "alive")["state"] == "reconnecting"
    assert api.get("/readyz").status_code == 200

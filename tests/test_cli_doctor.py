"""`wapp doctor` against a real stack: healthy, then each problem found with what to do
and exit 1 (a stopped program, a failed session, a flapping one, dead letters, a changed
config)."""

from __future__ import annotations

import asyncio
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa

from appliance.contracts import SessionStateEvent, SessionStatePayload
from appliance.db.engine import create_db_engine
from appliance.db.models import Session
from appliance.redis_client import create_redis
from appliance.redis_keys import EVENTS_STREAM
from appliance.settings import load_settings
from tests.fixtures.cli_stack import CliStack


def _doctor(cli_stack: CliStack) -> tuple[int, dict[str, Any]]:
    result = cli_stack.wapp("doctor", "--json")
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, orjson.loads(result.stdout)


def _finding(report: dict[str, Any], area: str, check: str) -> dict[str, Any]:
    [found] = [f for f in report["findings"] if f["area"] == area and f["check"] == check]
    return found


def _sql(cli_stack: CliStack, statement: sa.Executable) -> None:
    async def go() -> None:
        engine = create_db_engine(load_settings(cli_stack.stack.config, search=False))
        try:
            async with engine.begin() as conn:
                await conn.execute(statement)
        finally:
            await engine.dispose()

    asyncio.run(go())


def test_a_healthy_box_exits_0_with_versions_and_every_area(cli_stack: CliStack) -> None:
    code, report = _doctor(cli_stack)
    needing = [f for f in report["findings"] if f["needsAction"]]
    # What this test box's environment may give, and nothing else: less memory than the
    # default budget assumes, and no outbound access to fetch the WhatsApp Web version.
    environmental = {"memory", "whatsapp web (whatsapp)"}
    assert all(f["check"] in environmental for f in needing), needing
    assert code == (1 if needing else 0)
    assert _finding(report, "versions", "node")["detail"].startswith("v24")
    assert _finding(report, "versions", "baileys")["detail"].startswith("7.")
    wa = _finding(report, "versions", "whatsapp web (sandbox)")
    assert wa["detail"][0].isdigit()
    assert _finding(report, "redis", "persistence")["level"] == "ok"
    assert _finding(report, "database", "schema")["level"] == "ok"
    for program in ("redis", "api", "engine"):
        assert _finding(report, "programs", program)["level"] == "ok"
    assert _finding(report, "webhooks", "dead letters")["level"] == "ok"
    assert _finding(report, "config", "running vs file")["level"] == "ok"
    human = cli_stack.wapp("doctor")
    assert human.returncode == code
    assert "what to do" in human.stdout


def test_a_failed_session_and_dead_letters_need_action(cli_stack: CliStack) -> None:
    created = cli_stack.wapp("sessions", "create", "broken", "--sandbox")
    assert created.returncode == 0, created.stderr
    cli_stack.wapp("sessions", "stop", "broken")
    # What the event consumer writes when the engine gives up on a session.
    _sql(
        cli_stack,
        sa.update(Session)
        .where(sa.column("display_name") == "broken")
        .values(state="failed", state_reason="3 failures", active=True),
    )
    code, report = _doctor(cli_stack)
    assert code == 1
    found = _finding(report, "sessions", "session broken")
    assert found["level"] == "fail"
    assert "3 failures" in found["detail"]
    assert "wapp sessions restart broken" in found["action"]
    cli_stack.wapp("sessions", "delete", "broken", "--yes")


def test_a_changed_config_and_a_stopped_program_need_action(cli_stack: CliStack) -> None:
    config = cli_stack.stack.config
    original = config.read_text(encoding="utf-8")
    config.write_text(original.replace("[api]", "[api]\nworkers = 2"), encoding="utf-8")
    try:
        code, report = _doctor(cli_stack)
        assert code == 1
        drift = _finding(report, "config", "running vs file")
        assert drift["level"] == "warn"
        assert "wapp reload" in drift["action"]
    finally:
        config.write_text(original, encoding="utf-8")
    supervisorctl = subprocess.run(
        [
            str(cli_stack.stack.argv()[0]).replace("wapp", "supervisorctl"),
            "-s",
            f"unix://{cli_stack.stack.supervisor_socket}",
            "stop",
            "watchdog",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert supervisorctl.returncode == 0, supervisorctl.stdout + supervisorctl.stderr
    try:
        code, report = _doctor(cli_stack)
        assert code == 1
        stopped = _finding(report, "programs", "watchdog")
        assert stopped["level"] == "fail"
        assert "wapp restart watchdog" in stopped["action"]
    finally:
        assert cli_stack.wapp("restart", "watchdog").returncode == 0


def test_doctor_without_a_stack_says_so_and_exits_1(stack_dir: Any) -> None:
    result = stack_dir.wapp("doctor", timeout=120)
    assert result.returncode == 1
    assert "wapp up -d" in result.stdout


def _engine_reports(cli_stack: CliStack, session: str, offsets_s: list[float]) -> None:
    """`session.state reconnecting` events as the engine publishes them on wapp:events,
    one per offset (seconds from now), then waits until the api's consumer has read them."""

    async def go() -> None:
        redis = create_redis(load_settings(cli_stack.stack.config, search=False))
        try:
            now = datetime.now(UTC)
            for attempt, offset in enumerate(offsets_s, start=1):
                event = SessionStateEvent(
                    session=session,
                    timestamp=now + timedelta(seconds=offset),
                    payload=SessionStatePayload(
                        state="reconnecting", attempt=attempt, reason="connection lost"
                    ),
                )
                await redis.xadd(EVENTS_STREAM, {"data": event.model_dump_json()})
            for _ in range(300):
                groups = await redis.xinfo_groups(EVENTS_STREAM)
                [api] = [g for g in groups if g["name"] in ("api", b"api")]
                if not api["lag"] and not api["pending"]:
                    return
                await asyncio.sleep(0.1)
            raise AssertionError(f"the api did not consume the events: {api}")
        finally:
            await redis.aclose()

    asyncio.run(go())


def test_a_flapping_session_needs_action_and_old_reconnects_do_not_count(
    cli_stack: CliStack,
) -> None:
    created = cli_stack.wapp("sessions", "create", "flappy", "--sandbox")
    assert created.returncode == 0, created.stderr
    try:
        # Six reconnects, but 20 to 25 minutes ago: outside the default 15 minute window.
        _engine_reports(cli_stack, "flappy", [-1500, -1440, -1380, -1320, -1260, -1200])
        _, report = _doctor(cli_stack)
        assert not [f for f in report["findings"] if f["check"] == "session flappy flapping"]
        assert _finding(report, "sessions", "flapping")["level"] == "ok"
        # Looking back 30 minutes, they are six: more than the default five.
        wide = cli_stack.wapp("doctor", "--json", "--flap-window", "30")
        assert wide.returncode == 1
        found = _finding(orjson.loads(wide.stdout), "sessions", "session flappy flapping")
        assert found["level"] == "warn"
        assert found["detail"].startswith("6 reconnects in the last 30 min")

        # Six recent ones: flapping by default, with what to do; exit 1.
        _engine_reports(cli_stack, "flappy", [-300, -240, -180, -120, -60, 0])
        code, report = _doctor(cli_stack)
        assert code == 1
        found = _finding(report, "sessions", "session flappy flapping")
        assert found["level"] == "warn"
        assert found["detail"].startswith("6 reconnects in the last 15 min")
        assert "wapp logs engine" in found["action"]
        assert "wapp sessions restart flappy" in found["action"]
        human = cli_stack.wapp("doctor")
        assert "flapping" in human.stdout
        # The threshold is the operator's: six is not more than six.
        _, report = _doctor_with(cli_stack, "--flap-reconnects", "6")
        assert _finding(report, "sessions", "flapping")["level"] == "ok"
        # A window beyond what is kept is refused, not silently cut short.
        refused = cli_stack.wapp("doctor", "--flap-window", "61")
        assert refused.returncode == 2
        assert "Traceback" not in refused.stderr
    finally:
        cli_stack.wapp("sessions", "delete", "flappy", "--yes")


def _doctor_with(cli_stack: CliStack, *args: str) -> tuple[int, dict[str, Any]]:
    result = cli_stack.wapp("doctor", "--json", *args)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, orjson.loads(result.stdout)

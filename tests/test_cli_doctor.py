"""`wapp doctor` against a real stack: healthy, then each problem found with what to do
and exit 1 (a stopped program, a failed session, dead letters, a changed config)."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import orjson
import sqlalchemy as sa

from appliance.db.engine import create_db_engine
from appliance.db.models import Session
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

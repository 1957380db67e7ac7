"""`wapp sessions ...` and `wapp --version` against a real stack (sandbox enabled): a
sandbox session created and paired from the CLI alone, by itself, by QR and by code."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import orjson

from appliance.cli.pairing_view import qr_text
from tests.fixtures.cli_stack import CliStack


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stdout + result.stderr
    return orjson.loads(result.stdout)


def _lines(proc: subprocess.Popen[str], timeout: float = 60) -> Any:
    """The next JSON line the background command prints."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip():
            return orjson.loads(line)
        if proc.poll() is not None:
            break
    raise AssertionError(f"no line from wapp; stderr: {proc.stderr.read() if proc.stderr else ''}")


def test_version_prints_the_installed_version(cli_stack: CliStack) -> None:
    from importlib.metadata import version

    result = cli_stack.wapp("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"wapp {version('wapp')}"


def test_a_sandbox_session_with_a_phone_pairs_itself_and_shows_everywhere(
    cli_stack: CliStack,
) -> None:
    created = _json(
        cli_stack.wapp(
            "sessions",
            "create",
            "alpha",
            "--sandbox",
            "--phone",
            "+1 555 0101",
            "--no-pacing",
            "--wait",
            "--json",
        )
    )
    assert created["name"] == "alpha"
    assert created["state"] == "connected"
    assert created["upstream"] == "sandbox"
    assert created["meJid"].startswith("15550101")

    listed = _json(cli_stack.wapp("sessions", "list", "--json"))
    assert [s["name"] for s in listed["items"]] == ["alpha"]
    shown = _json(cli_stack.wapp("sessions", "show", "alpha", "--json"))
    assert shown["id"] == created["id"]
    assert shown["pacing"] == {"enabled": False}

    table = cli_stack.wapp("sessions", "list")
    assert table.returncode == 0
    assert "alpha" in table.stdout
    assert "connected" in table.stdout


def test_lifecycle_stop_start_restart_logout_delete(cli_stack: CliStack) -> None:
    _json(
        cli_stack.wapp(
            "sessions", "create", "beta", "--sandbox", "--phone", "15550102", "--wait", "--json"
        )
    )
    stopped = _json(cli_stack.wapp("sessions", "stop", "beta", "--json"))
    assert stopped["active"] is False
    started = cli_stack.wapp("sessions", "start", "beta")
    assert started.returncode == 0
    assert "started session beta" in started.stdout
    assert _json(cli_stack.wapp("sessions", "restart", "beta", "--json"))["active"] is True
    assert _json(cli_stack.wapp("sessions", "logout", "beta", "--json"))["active"] is False

    refused = cli_stack.wapp("sessions", "delete", "beta", input_text="n\n")
    assert refused.returncode == 1
    assert _json(cli_stack.wapp("sessions", "show", "beta", "--json"))["name"] == "beta"
    deleted = cli_stack.wapp("sessions", "delete", "beta", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    gone = cli_stack.wapp("sessions", "show", "beta")
    assert gone.returncode == 1
    assert "no session beta" in gone.stderr


def test_unknown_sessions_and_bad_input_exit_with_the_error(cli_stack: CliStack) -> None:
    for args in (
        ("show", "nosuch"),
        ("start", "nosuch"),
        ("stop", "nosuch"),
        ("restart", "nosuch"),
        ("logout", "nosuch"),
        ("delete", "nosuch", "--yes"),
        ("qr", "nosuch"),
    ):
        result = cli_stack.wapp("sessions", *args)
        assert result.returncode == 1, args
        assert "no session nosuch" in result.stderr, args
        assert "Traceback" not in result.stderr
    bad_name = cli_stack.wapp("sessions", "create", "Not A Name")
    assert bad_name.returncode == 2
    assert "not a session name" in bad_name.stderr
    bad_phone = cli_stack.wapp("sessions", "create", "gamma", "--sandbox", "--phone", "12")
    assert bad_phone.returncode == 2
    assert "not a phone number" in bad_phone.stderr
    bad_upstream = cli_stack.wapp("sessions", "create", "gamma", "--upstream", "telegram")
    assert bad_upstream.returncode == 2


def test_a_taken_name_is_a_conflict(cli_stack: CliStack) -> None:
    first = cli_stack.wapp("sessions", "create", "delta", "--sandbox", "--phone", "15550104")
    assert first.returncode == 0, first.stderr
    again = cli_stack.wapp("sessions", "create", "delta", "--sandbox")
    assert again.returncode == 1
    assert "a session named delta exists" in again.stderr


def test_qr_is_drawn_until_a_phone_scans_it_then_says_connected(cli_stack: CliStack) -> None:
    created = cli_stack.wapp("sessions", "create", "qr-json", "--sandbox", "--no-pacing")
    assert created.returncode == 0, created.stderr
    assert "wapp sessions qr qr-json" in created.stdout
    with cli_stack.popen("sessions", "qr", "qr-json", "--json", "--timeout", "60") as proc:
        first = _lines(proc)
        assert first["qr"].count(",") >= 3
        cli_stack.simulator("POST", "/pairing/qr-scan", {"phone": "15550105", "qr": first["qr"]})
        last = _lines(proc)
        while "state" not in last:  # a QR may rotate before the scan lands
            last = _lines(proc)
        assert last == {"state": "connected", "session": "qr-json", "meJid": last["meJid"]}
        assert proc.wait(timeout=30) == 0


def test_qr_in_the_terminal_is_segnos_compact_drawing(cli_stack: CliStack) -> None:
    created = cli_stack.wapp("sessions", "create", "qr-term", "--sandbox", "--no-pacing")
    assert created.returncode == 0, created.stderr
    with cli_stack.popen("sessions", "qr", "qr-term", "--timeout", "60") as proc:
        assert proc.stdout is not None
        lines: list[str] = []
        while not any("waiting for the phone" in line for line in lines):
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            lines.append(line)
        drawn = "".join(lines)
        qr = orjson.loads(
            cli_stack.wapp(
                "sessions", "qr", "qr-term", "--json", "--timeout", "5"
            ).stdout.splitlines()[0]
        )["qr"]
        assert qr_text(qr) in drawn
        assert "Linked devices" in drawn
        cli_stack.simulator("POST", "/pairing/qr-scan", {"phone": "15550106", "qr": qr})
        assert proc.wait(timeout=60) == 0
        out = proc.stdout.read()
        assert "connected" in out
        assert "session qr-term is 15550106" in out


def test_qr_with_phone_pairs_by_code_for_that_number(cli_stack: CliStack) -> None:
    # In the sandbox the engine has the phone enter the code itself (docs/sessions.md);
    # the code may be shown for less than one poll, so only its shape is checked.
    created = cli_stack.wapp("sessions", "create", "by-code", "--sandbox", "--no-pacing")
    assert created.returncode == 0, created.stderr
    with cli_stack.popen("sessions", "qr", "by-code", "--phone", "+1 555 0107", "--json") as proc:
        line = _lines(proc)
        while "state" not in line:
            assert set(line) == {"code", "expiresAt"}
            assert len(line["code"]) == 8
            line = _lines(proc)
        assert line["state"] == "connected"
        assert line["meJid"].startswith("15550107")
        assert proc.wait(timeout=30) == 0
    assert _json(cli_stack.wapp("sessions", "show", "by-code", "--json"))["phone"] == "15550107"


def test_qr_of_a_connected_session_says_so_at_once(cli_stack: CliStack) -> None:
    _json(
        cli_stack.wapp(
            "sessions", "create", "epsilon", "--sandbox", "--phone", "15550108", "--wait", "--json"
        )
    )
    result = cli_stack.wapp("sessions", "qr", "epsilon")
    assert result.returncode == 0
    assert "connected" in result.stdout


def test_qr_times_out_with_exit_1_when_nobody_scans(cli_stack: CliStack) -> None:
    cli_stack.wapp("sessions", "create", "zeta", "--sandbox")
    result = cli_stack.wapp("sessions", "qr", "zeta", "--json", "--timeout", "3")
    assert result.returncode == 1
    assert "not connected" in result.stderr

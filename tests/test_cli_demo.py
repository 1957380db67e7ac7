"""`wapp demo` on a real stack: the whole sandbox tour, twice (it reuses what it made),
and its refusals."""

from __future__ import annotations

from tests.fixtures.cli_stack import CliStack


def test_the_tour_pairs_sends_gets_read_and_a_reply_then_runs_again(cli_stack: CliStack) -> None:
    for _ in range(2):
        result = cli_stack.wapp("demo", timeout=240)
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        assert "contact Carol is +15559000" in out
        assert "session demo is connected as 15550100" in out
        for status in ("queued", "sent", "delivered", "read"):
            assert status in out
        assert 'Carol -> demo: "Hello! Got it."' in out
    listed = cli_stack.wapp("sessions", "list")
    assert listed.stdout.count("demo") == 1


def test_the_tour_refuses_a_non_sandbox_session_and_a_disabled_sandbox(
    cli_stack: CliStack,
) -> None:
    created = cli_stack.wapp("sessions", "create", "real")
    assert created.returncode == 0, created.stderr
    refused = cli_stack.wapp("demo", "--session", "real")
    assert refused.returncode == 1
    assert "not a sandbox session" in refused.stderr
    disabled = cli_stack.stack.wapp("demo", env={"WAPP_SANDBOX__ENABLED": "false"})
    assert disabled.returncode == 1
    assert "sandbox is not enabled" in disabled.stderr
    for result in (refused, disabled):
        assert "Traceback" not in result.stderr

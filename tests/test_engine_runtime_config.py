from __future__ import annotations

import json

from appliance.stack.engine_process import CONFIG_ENV, engine_env, runtime_config
from tests.fixtures.settings import MakeSettings


def test_a_sandbox_engine_is_told_where_the_simulator_is_and_what_to_trust(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings(sandbox={"enabled": True, "port": 9101, "control_port": 9102})
    config = runtime_config(settings, "sandbox")
    assert config.sandbox is not None
    assert config.sandbox.ws_url == "ws://127.0.0.1:9101/ws/chat"
    assert config.sandbox.control_url == "http://127.0.0.1:9102"
    assert config.sandbox.root_key_file == str(settings.sandbox_data_dir / "root-public-key.b64")
    assert config.sandbox.ca_file == str(settings.sandbox_data_dir / "media-ca.pem")


def test_a_whatsapp_engine_never_gets_the_sandbox(make_settings: MakeSettings) -> None:
    config = runtime_config(make_settings(sandbox={"enabled": True}), "whatsapp")
    assert config.sandbox is None


def test_session_and_pacing_settings_reach_the_engine(make_settings: MakeSettings) -> None:
    settings = make_settings(
        engine={"max_concurrent_handshakes": 3, "reconnect_base_s": 0.5, "cache_budget_mb": 9},
        pacing={"enabled": False, "daily_cap": 77},
    )
    config = runtime_config(settings, "whatsapp")
    assert config.sessions.max_concurrent_handshakes == 3
    assert config.sessions.reconnect_base_s == 0.5
    assert config.sessions.reconnect_max_s == 60.0
    assert config.sessions.reconnect_max_attempts == 3
    assert config.sessions.cache_budget_mb == 9
    assert config.pacing.enabled is False
    assert config.pacing.daily_cap == 77
    assert config.pacing.warmup_days == settings.pacing.warmup_days


def test_only_a_sandbox_engine_gets_the_simulator_ca_in_its_environment(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings(sandbox={"enabled": True})
    base = {"PATH": "/bin", "NODE_EXTRA_CA_CERTS": "/elsewhere/ca.pem"}
    sandbox = engine_env(settings, "sandbox", base)
    assert sandbox["NODE_EXTRA_CA_CERTS"] == str(settings.sandbox_data_dir / "media-ca.pem")
    assert json.loads(sandbox[CONFIG_ENV])["sandbox"]["ca_file"] == sandbox["NODE_EXTRA_CA_CERTS"]
    whatsapp = engine_env(settings, "whatsapp", base)
    assert "NODE_EXTRA_CA_CERTS" not in whatsapp
    assert json.loads(whatsapp[CONFIG_ENV])["sandbox"] is None
    assert whatsapp["PATH"] == "/bin"

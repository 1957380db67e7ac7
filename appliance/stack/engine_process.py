"""What the `engine` programs run: Node on the engine's build, configured through one env var."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from appliance.contracts import (
    EnginePacing,
    EngineRuntimeConfig,
    EngineSessions,
    EngineWaVersion,
    SandboxUpstream,
    Upstream,
)
from appliance.errors import CommandFailed
from appliance.node import find_node
from appliance.paths import ENGINE_DIR
from appliance.settings import Settings

ENGINE_MAIN = ENGINE_DIR / "dist" / "src" / "main.js"
CONFIG_ENV = "WAPP_ENGINE_CONFIG"


def runtime_config(settings: Settings, upstream: Upstream) -> EngineRuntimeConfig:
    return EngineRuntimeConfig(
        upstream=upstream,
        redis_url=settings.redis_url,
        log_level=settings.general.log_level,
        data_dir=str(settings.data_dir),
        master_key_file=str(settings.master_key_path),
        heartbeat_interval_s=settings.engine.heartbeat_interval_s,
        heartbeat_ttl_s=settings.engine.heartbeat_ttl_s,
        pacing=EnginePacing(**settings.pacing.model_dump()),
        sessions=EngineSessions(
            max_concurrent_handshakes=settings.engine.max_concurrent_handshakes,
            reconnect_base_s=settings.engine.reconnect_base_s,
            reconnect_max_s=settings.engine.reconnect_max_s,
            reconnect_max_attempts=settings.engine.reconnect_max_attempts,
            cache_budget_mb=settings.engine.cache_budget_mb,
            loop_lag_pause_ms=settings.engine.loop_lag_pause_ms,
        ),
        # Never for whatsapp: only a sandbox engine may trust the simulator's root key.
        sandbox=sandbox_upstream(settings) if upstream == "sandbox" else None,
        wa_version=EngineWaVersion(
            url=settings.engine.wa_version_url,
            timeout_s=settings.engine.wa_version_timeout_s,
            refresh_s=settings.engine.wa_version_refresh_h * 3600,
        ),
    )


def sandbox_upstream(settings: Settings) -> SandboxUpstream:
    """The simulator `wapp up` runs (programs.py): its ports and the trust files it writes."""
    sim_dir = settings.sandbox_data_dir
    return SandboxUpstream(
        ws_url=f"ws://127.0.0.1:{settings.sandbox.port}/ws/chat",
        control_url=f"http://127.0.0.1:{settings.sandbox.control_port}",
        root_key_file=str(sim_dir / "root-public-key.b64"),
        ca_file=str(sim_dir / "media-ca.pem"),
    )


def engine_env(settings: Settings, upstream: Upstream, base: Mapping[str, str]) -> dict[str, str]:
    """The engine's environment: `base` plus its runtime config (and CA, for the sandbox)."""
    config = runtime_config(settings, upstream)
    env = {**base, CONFIG_ENV: config.model_dump_json()}
    # Node reads extra CAs only at process start, so the sandbox's media certificate must be
    # in the environment before exec; a whatsapp engine must not inherit one.
    env.pop("NODE_EXTRA_CA_CERTS", None)
    if config.sandbox is not None:
        env["NODE_EXTRA_CA_CERTS"] = config.sandbox.ca_file
    return env


def engine_argv(settings: Settings, node: Path, main: Path = ENGINE_MAIN) -> list[str]:
    return [str(node), f"--max-old-space-size={settings.engine.max_old_space_size_mb}", str(main)]


def exec_engine(settings: Settings, upstream: Upstream, *, main: Path = ENGINE_MAIN) -> None:
    """Replace this process with Node, so supervisord's signals go straight to the engine."""
    node = find_node(settings.engine.node_path)
    if not main.is_file():
        raise CommandFailed(
            f"the engine is not built: {main} does not exist; run `npm run build` in {ENGINE_DIR}"
        )
    env = engine_env(settings, upstream, os.environ)
    argv = engine_argv(settings, node, main)
    os.execve(argv[0], argv, env)

"""What the `engine` programs run: Node on the engine's build, configured through one env var."""

from __future__ import annotations

import os
from pathlib import Path

from appliance.contracts import EngineRuntimeConfig, Upstream
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
    )


def engine_argv(settings: Settings, node: Path, main: Path = ENGINE_MAIN) -> list[str]:
    return [str(node), f"--max-old-space-size={settings.engine.max_old_space_size_mb}", str(main)]


def exec_engine(settings: Settings, upstream: Upstream, *, main: Path = ENGINE_MAIN) -> None:
    """Replace this process with Node, so supervisord's signals go straight to the engine."""
    node = find_node(settings.engine.node_path)
    if not main.is_file():
        raise CommandFailed(
            f"the engine is not built: {main} does not exist; run `npm run build` in {ENGINE_DIR}"
        )
    env = {**os.environ, CONFIG_ENV: runtime_config(settings, upstream).model_dump_json()}
    argv = engine_argv(settings, node, main)
    os.execve(argv[0], argv, env)

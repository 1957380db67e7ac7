"""What supervisord runs, decided by the settings alone.

Priorities make redis start first and stop last; the engine's stop timeout outlasts its
9 s drain so supervisord never SIGKILLs a draining engine.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from appliance.errors import CommandFailed, ConfigError
from appliance.node import find_node
from appliance.paths import ENGINE_DIR
from appliance.settings import Settings

SIM_MAIN = ENGINE_DIR / "dist" / "sim" / "main.js"


@dataclass(frozen=True)
class Program:
    name: str
    command: tuple[str, ...]
    priority: int
    # Seconds a process must stay up to count as started.
    startsecs: int
    # Seconds between SIGTERM and SIGKILL.
    stopwaitsecs: int


@dataclass(frozen=True)
class Tools:
    """Absolute paths of the executables the programs run, found once at render time."""

    wapp: Path
    redis_server: Path | None
    node: Path | None


def program_names(settings: Settings) -> list[str]:
    """The programs' names in start order, without looking for any executable."""
    sandbox = settings.sandbox.enabled
    names = ["redis"] if settings.redis.managed else []
    names += ["sim"] if sandbox else []
    names += ["engine"]
    names += ["engine-sandbox"] if sandbox else []
    names += ["api"]
    return [*names, "watchdog"] if settings.watchdog.enabled else names


def find_wapp() -> Path:
    # The console script next to this interpreter is the one of this install.
    beside = Path(sys.executable).with_name("wapp")
    if beside.is_file():
        return beside
    found = shutil.which("wapp")
    if found is None:
        raise CommandFailed("cannot find the `wapp` executable next to Python or on PATH")
    return Path(found)


def find_tools(settings: Settings) -> Tools:
    redis_server: Path | None = None
    if settings.redis.managed:
        found = shutil.which(settings.redis.server_binary)
        if found is None:
            raise ConfigError(
                f"redis.server_binary: {settings.redis.server_binary} not found",
                details={"field": "redis.server_binary"},
            )
        redis_server = Path(found)
    node = find_node(settings.engine.node_path) if settings.sandbox.enabled else None
    return Tools(wapp=find_wapp(), redis_server=redis_server, node=node)


def programs(
    settings: Settings, tools: Tools, *, redis_conf: Path, config_path: Path | None
) -> list[Program]:
    def wapp(*args: str) -> tuple[str, ...]:
        config = ("--config", str(config_path)) if config_path is not None else ()
        return (str(tools.wapp), *config, *args)

    result: list[Program] = []
    if settings.redis.managed:
        assert tools.redis_server is not None
        result.append(
            Program(
                name="redis",
                command=(str(tools.redis_server), str(redis_conf)),
                priority=10,
                startsecs=1,
                # Time to fsync the AOF on the way down.
                stopwaitsecs=30,
            )
        )
    if settings.sandbox.enabled:
        assert tools.node is not None
        result.append(
            Program(
                name="sim",
                command=(
                    str(tools.node),
                    str(SIM_MAIN),
                    "--port",
                    str(settings.sandbox.port),
                    "--control-port",
                    str(settings.sandbox.control_port),
                    "--data-dir",
                    str(settings.sandbox_data_dir),
                ),
                priority=20,
                startsecs=2,
                stopwaitsecs=10,
            )
        )
    result.append(
        Program(
            name="engine",
            command=wapp("engine", "--upstream", "whatsapp"),
            priority=30,
            startsecs=2,
            stopwaitsecs=20,
        )
    )
    if settings.sandbox.enabled:
        result.append(
            Program(
                name="engine-sandbox",
                command=wapp("engine", "--upstream", "sandbox"),
                priority=30,
                startsecs=2,
                stopwaitsecs=20,
            )
        )
    # Last to start, first to stop: clients stop talking before the engines drain.
    result.append(
        Program(
            name="api",
            command=wapp("api"),
            priority=40,
            startsecs=2,
            stopwaitsecs=15,
        )
    )
    if settings.watchdog.enabled:
        # Last of all: it starts once the stack is up and stops first, so it never
        # recycles a program supervisord is stopping. Its stop waits for a recycle in hand.
        result.append(
            Program(
                name="watchdog",
                command=wapp("watchdog", "run"),
                priority=50,
                startsecs=2,
                stopwaitsecs=60,
            )
        )
    return result


def settings_inputs(settings: Settings, name: str, *, redis_conf_text: str = "") -> str:
    """What program `name` reads from the settings beyond its command line, as text.

    Its digest goes into the program's rendered section, so a section differs exactly when
    the program would run differently: `wapp reload` restarts those, `wapp status` names
    them. An engine reads only its runtime config and Node flags, Redis only its own config
    file, the simulator only its command line; the api (and any other `wapp` program)
    every setting.
    """
    # Imported here: the contracts module is large and only reload/status/up need it.
    from appliance.stack.engine_process import runtime_config

    if name == "sim":
        return ""
    if name == "redis":
        return redis_conf_text
    if name in ("engine", "engine-sandbox"):
        upstream: Literal["whatsapp", "sandbox"] = (
            "sandbox" if name == "engine-sandbox" else "whatsapp"
        )
        config = runtime_config(settings, upstream).model_dump_json()
        node = f"{settings.engine.node_path}|{settings.engine.max_old_space_size_mb}"
        return f"{config}|{node}"
    # The api, and any other `wapp` program: every setting, to be safe.
    return settings.model_dump_json()

"""Checks that need no running stack: versions, disk, memory against the budget, and the
running config against the file."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
from pathlib import Path

import psutil

from appliance.doctor.findings import Finding, fail, info, ok, warn
from appliance.errors import ConfigError
from appliance.node import find_node
from appliance.paths import ENGINE_DIR
from appliance.settings import Settings
from appliance.stack.layout import StackLayout
from appliance.stack.reload import drift

_MB = 1024 * 1024
# Below either, the box is about to stop writing its database, AOF and media.
MIN_FREE_DISK_RATIO = 0.10
MIN_FREE_DISK_MB = 1024


def versions(settings: Settings) -> list[Finding]:
    found = [info("versions", "python", platform.python_version())]
    try:
        node = find_node(settings.engine.node_path)
        out = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=30)
        found.append(ok("versions", "node", f"{out.stdout.strip()} ({node})"))
    except (ConfigError, OSError, subprocess.SubprocessError) as exc:
        message = exc.message if isinstance(exc, ConfigError) else str(exc)
        found.append(fail("versions", "node", message, "set [engine] node_path to Node 24+"))
    package = ENGINE_DIR / "node_modules" / "@whiskeysockets" / "baileys" / "package.json"
    try:
        baileys = json.loads(package.read_text(encoding="utf-8"))["version"]
        found.append(info("versions", "baileys", str(baileys)))
    except (OSError, ValueError, KeyError):
        found.append(
            fail(
                "versions",
                "baileys",
                f"not installed ({package} missing)",
                f"run `npm ci && npm run build` in {ENGINE_DIR}",
            )
        )
    return found


def disk(settings: Settings) -> Finding:
    path = settings.general.data_dir
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = shutil.disk_usage(path)
    free_mb = usage.free / _MB
    detail = f"{free_mb:.0f} MB free of {usage.total / _MB:.0f} MB ({path})"
    if usage.free / usage.total < MIN_FREE_DISK_RATIO or free_mb < MIN_FREE_DISK_MB:
        return warn(
            "host",
            "disk",
            detail,
            "free space: old media (`[media] retention_max_age_h`), logs, backups",
        )
    return ok("host", "disk", detail)


def memory(settings: Settings) -> Finding:
    """The box's memory against what the configuration lets the programs take."""
    budget_mb = (
        settings.sessions.engine_memory_budget_mb * (2 if settings.sandbox.enabled else 1)
        + settings.redis.maxmemory_mb
        + settings.watchdog.api_max_rss_mb
    )
    total_mb = psutil.virtual_memory().total / _MB
    available_mb = psutil.virtual_memory().available / _MB
    detail = (
        f"{total_mb:.0f} MB total, {available_mb:.0f} MB available; the budget "
        f"(engines {settings.sessions.engine_memory_budget_mb} MB"
        f"{' x2 with the sandbox' if settings.sandbox.enabled else ''}, redis "
        f"{settings.redis.maxmemory_mb} MB, api {settings.watchdog.api_max_rss_mb} MB) "
        f"is {budget_mb} MB"
    )
    if budget_mb > total_mb:
        return warn(
            "host",
            "memory",
            detail,
            "lower [sessions] engine_memory_budget_mb / [redis] maxmemory_mb, or add memory",
        )
    return ok("host", "memory", detail)


def config_drift(settings: Settings, config_path: Path | None) -> Finding:
    layout = StackLayout.of(settings)
    if not layout.supervisord_conf.is_file():
        return info("config", "running vs file", "no running stack to compare with")
    changes = drift(settings, layout, config_path=config_path)
    if changes.names:
        return warn(
            "config",
            "running vs file",
            f"the running stack's settings differ: {changes.describe()}",
            "`wapp reload` applies the file",
        )
    return ok("config", "running vs file", "the running stack runs the file's settings")

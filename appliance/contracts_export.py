"""`wapp contracts export`: JSON Schema and TypeScript types for the engine.

Deterministic output (sorted keys, fixed indentation) so a test can compare the committed
files with a fresh export byte for byte.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import orjson

from appliance import redis_keys
from appliance.contracts import (
    COMMAND_ADAPTER,
    EVENT_ADAPTER,
    REPLY_ADAPTER,
    EngineHeartbeat,
    EngineRuntimeConfig,
)
from appliance.errors import CommandFailed
from appliance.node import wheel_node
from appliance.paths import ENGINE_DIR


def _clean(node: Any, *, is_property: bool = False) -> Any:
    """Drop what the engine side cannot use.

    ajv validates the oneOf by each variant's `type` const and refuses OpenAPI
    discriminator mappings; per-field titles would become one TS alias per field.
    """
    if isinstance(node, dict):
        return {
            k: _clean(v, is_property=False)
            if k != "properties"
            else {name: _clean(prop, is_property=True) for name, prop in v.items()}
            for k, v in node.items()
            if k != "discriminator" and not (is_property and k == "title")
        }
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node


def schemas() -> dict[str, dict[str, Any]]:
    command = COMMAND_ADAPTER.json_schema(mode="serialization")
    event = EVENT_ADAPTER.json_schema(mode="serialization")
    heartbeat = EngineHeartbeat.model_json_schema(mode="serialization")
    reply = REPLY_ADAPTER.json_schema(mode="serialization")
    return {
        "Command": _clean({**command, "title": "Command"}),
        "Event": _clean({**event, "title": "Event"}),
        "Reply": _clean({**reply, "title": "Reply"}),
        "EngineHeartbeat": _clean(heartbeat),
        "EngineRuntimeConfig": _clean(EngineRuntimeConfig.model_json_schema(mode="serialization")),
    }


def _dump(data: Any) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def _typescript(all_schemas: dict[str, dict[str, Any]]) -> bytes:
    proc = subprocess.run(
        [str(wheel_node()), str(ENGINE_DIR / "scripts" / "gen-types.mjs")],
        input=orjson.dumps(all_schemas),
        capture_output=True,
        cwd=ENGINE_DIR,
        timeout=120,
    )
    if proc.returncode != 0:
        raise CommandFailed(
            "TypeScript generation failed (is `npm ci` done in engine/?): "
            + proc.stderr.decode(errors="replace")[-2000:]
        )
    return proc.stdout


def render() -> dict[str, bytes]:
    """File name -> exact bytes of every generated file."""
    all_schemas = schemas()
    files = {
        "command.schema.json": _dump(all_schemas["Command"]),
        "event.schema.json": _dump(all_schemas["Event"]),
        "reply.schema.json": _dump(all_schemas["Reply"]),
        "heartbeat.schema.json": _dump(all_schemas["EngineHeartbeat"]),
        "engine-config.schema.json": _dump(all_schemas["EngineRuntimeConfig"]),
        "redis-keys.json": _dump(redis_keys.TEMPLATES),
        "contracts.ts": _typescript(all_schemas),
    }
    return files


def export(target: Path) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in render().items():
        path = target / name
        path.write_bytes(content)
        written.append(path)
    return written


def stale_files(target: Path) -> list[str]:
    """Names of generated files that differ from (or are missing in) `target`."""
    stale = []
    for name, content in render().items():
        path = target / name
        if not path.is_file() or path.read_bytes() != content:
            stale.append(name)
    return stale

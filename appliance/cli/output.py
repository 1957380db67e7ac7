"""How CLI commands print: JSON for scripts (the API's own shapes, camelCase), rich
tables and lines for people."""

from __future__ import annotations

from typing import Any

import orjson
import typer
from pydantic import BaseModel


def emit_json(value: Any) -> None:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", by_alias=True)
    elif isinstance(value, list):
        value = [
            v.model_dump(mode="json", by_alias=True) if isinstance(v, BaseModel) else v
            for v in value
        ]
    typer.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z).decode())


def state_style(state: str) -> str:
    if state == "connected":
        return "green"
    if state in ("failed", "logged_out"):
        return "red"
    if state in ("stopped", "created"):
        return "dim"
    return "yellow"


JSON_OPTION = typer.Option(False, "--json", help="JSON output (the API's shape).")

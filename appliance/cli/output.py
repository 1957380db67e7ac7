"""How CLI commands print: JSON for scripts (the API's own shapes, camelCase), rich
tables and lines for people."""

from __future__ import annotations

from typing import Any

import orjson
import typer
from pydantic import BaseModel


def _model(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    raise TypeError(type(value).__name__)


def emit_json(value: Any) -> None:
    """`value` (API models anywhere inside it) as indented JSON on stdout."""
    option = orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z
    typer.echo(orjson.dumps(value, default=_model, option=option).decode())


def state_style(state: str) -> str:
    if state == "connected":
        return "green"
    if state in ("failed", "logged_out"):
        return "red"
    if state in ("stopped", "created"):
        return "dim"
    return "yellow"


JSON_OPTION = typer.Option(False, "--json", help="JSON output (the API's shape).")

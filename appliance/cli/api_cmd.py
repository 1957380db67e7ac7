"""`wapp api`: the API program supervisord runs (uvicorn)."""

from __future__ import annotations

from pathlib import Path

import typer

from appliance.api.serve import serve
from appliance.cli.context import settings, state
from appliance.settings import resolve_config_path


def register(app: typer.Typer) -> None:
    @app.command("api")
    def api(ctx: typer.Context) -> None:
        """Serve the REST API in the foreground (supervisord runs it for `wapp up`)."""
        conf = settings(ctx)
        found = resolve_config_path(state(ctx).config_path)
        serve(conf, config_path=Path(found).resolve() if found is not None else None)

"""The import-string entry point for uvicorn worker processes (`[api] workers > 1`).

`wapp api` sets WAPP_CONFIG to the config file it was given; each worker builds its
Settings from it, once, here.
"""

from __future__ import annotations

from fastapi import FastAPI

from appliance.api.app import create_app
from appliance.logs import configure_logging
from appliance.settings import load_settings


def app_factory() -> FastAPI:
    settings = load_settings()
    # A spawned worker starts with logging unconfigured: the same JSON lines as `wapp api`.
    configure_logging(settings.general.log_level, "api")
    return create_app(settings)

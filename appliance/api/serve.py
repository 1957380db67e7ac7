"""What the `api` program runs: uvicorn serving `create_app(settings)`.

In `appliance.api`, not beside `engine_process` in `appliance.stack`: it imports the app,
and nothing below the API layer may (tests/test_layers.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import uvicorn

from appliance.errors import CommandFailed
from appliance.logs import configure_logging
from appliance.settings import ApiSettings, Settings

# Seconds uvicorn waits for open requests after SIGTERM; supervisord waits longer.
GRACEFUL_SHUTDOWN_S = 10
CONFIG_ENV = "WAPP_CONFIG"
SERVICE = "api"


def proxy_options(api: ApiSettings) -> dict[str, Any]:
    """uvicorn's forwarded-header options: only `[api] trusted_proxies` are believed.

    uvicorn's own default believes X-Forwarded-For from 127.0.0.1, where every local
    client connects from: any of them could then claim any address (and dodge the
    bad-key throttle). Without trusted proxies the headers are ignored altogether.
    """
    trusted = list(api.trusted_proxies)
    return {"proxy_headers": bool(trusted), "forwarded_allow_ips": trusted or None}


def serve(settings: Settings, *, config_path: Path | None) -> None:
    api = settings.api
    log_level = settings.general.log_level
    # JSON lines on stdout (supervisord keeps them in logs/api.log); uvicorn's own
    # loggers propagate into them, so it must not install its dictConfig (log_config=None).
    configure_logging(log_level, SERVICE)
    if api.workers == 1:
        from appliance.api.app import create_app

        config = uvicorn.Config(
            app=create_app(settings),
            host=api.host,
            port=api.port,
            log_level=log_level,
            log_config=None,
            # TraceMiddleware writes one structured line per request (with its trace id);
            # uvicorn's own access line would be a second, unstructured one.
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            **proxy_options(api),
        )
        server = uvicorn.Server(config)
        server.run()
        if not server.started:
            raise CommandFailed("the api did not start; the lines above say why")
        return
    # Worker processes import the app themselves, each building Settings from the same file.
    if config_path is not None:
        os.environ[CONFIG_ENV] = str(config_path)
    uvicorn.run(
        "appliance.api.asgi:app_factory",
        factory=True,
        workers=api.workers,
        host=api.host,
        port=api.port,
        log_level=log_level,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        **proxy_options(api),
    )

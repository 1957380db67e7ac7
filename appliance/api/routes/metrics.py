"""`GET /metrics`: the Prometheus exposition, for whom `[api] metrics_access` allows."""

from __future__ import annotations

import ipaddress

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from appliance.api import auth
from appliance.api.schemas import ErrorResponse
from appliance.api.state import AppState, StateDep
from appliance.errors import Forbidden
from appliance.metrics.http import RequestMetrics
from appliance.metrics.scrape import render

router = APIRouter(tags=["metrics"])
# The classic text format (what generate_latest writes), which every Prometheus reads.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def _is_loopback(request: Request) -> bool:
    # With [api] trusted_proxies, uvicorn has already put the proxied client's address
    # here: a request relayed by a local proxy is not loopback.
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _allow(state: AppState, request: Request) -> None:
    mode = state.settings.api.metrics_access
    if mode == "open" or (mode == "loopback" and _is_loopback(request)):
        return
    principal = await auth.principal_of(state, request)
    if not principal.is_admin:
        raise Forbidden("metrics need an admin API key")


@router.get(
    "/metrics",
    summary="Prometheus metrics of the box (text exposition format)",
    description="Who may scrape: `[api] metrics_access` (docs/monitoring.md).",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE: {}}, "description": "The metrics"},
        401: {"model": ErrorResponse, "description": "No or a bad API key"},
        403: {"model": ErrorResponse, "description": "Not an admin key"},
    },
)
async def metrics(request: Request, state: StateDep) -> Response:
    await _allow(state, request)
    # This worker's own counts, up to this very request's predecessors, are in the sums.
    requests: RequestMetrics = request.app.state.request_metrics
    await requests.flush(state.redis)
    body = await render(state.settings, state.reader, state.redis)
    return Response(body, media_type=CONTENT_TYPE)

"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from appliance.api.errors import OrjsonResponse, error_response
from appliance.api.schemas import ApiModel, ErrorResponse
from appliance.api.state import StateDep
from appliance.errors import ServiceUnavailable
from appliance.readiness import check_readiness

router = APIRouter(tags=["health"])


class Health(ApiModel):
    status: str


class Ready(ApiModel):
    status: str
    checks: dict[str, str]


@router.get("/healthz", summary="Liveness: the api process answers")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    summary="Readiness: database, Redis and every engine's heartbeat",
    responses={503: {"model": ErrorResponse, "description": "A named part is not ready"}},
)
async def readyz(state: StateDep) -> Response:
    readiness = await check_readiness(state.settings, state.db, state.redis)
    if readiness.ready:
        return OrjsonResponse(Ready(status="ready", checks=readiness.checks).model_dump())
    failing = sorted(name for name, value in readiness.checks.items() if value != "ok")
    return error_response(
        NotReady(f"not ready: {', '.join(failing)}", details={"checks": readiness.checks})
    )


class NotReady(ServiceUnavailable):
    code = "NOT_READY"

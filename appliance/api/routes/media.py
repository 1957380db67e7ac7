"""`GET /v1/messages/{id}/media`: a received attachment, downloaded through the engine once."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from appliance.api.auth import PrincipalDep
from appliance.api.schemas import ErrorResponse
from appliance.api.state import StateDep
from appliance.services import inbound_media, messages

_ERR = {"model": ErrorResponse}
router = APIRouter(prefix="/v1", tags=["messages"], responses={401: _ERR, 404: _ERR})


@router.get(
    "/messages/{message_id}/media",
    summary="Download a received attachment (cached on disk after the first time)",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The decrypted file"},
        404: {"model": ErrorResponse, "description": "`NO_MEDIA`: no attachment, or not ours"},
        409: {"model": ErrorResponse, "description": "`SESSION_NOT_CONNECTED` (not cached)"},
        502: {"model": ErrorResponse, "description": "`ENGINE_REQUEST_FAILED`"},
        503: {"model": ErrorResponse, "description": "`ENGINE_UNAVAILABLE`"},
        504: {"model": ErrorResponse, "description": "`ENGINE_TIMEOUT`"},
    },
)
async def download_media(message_id: str, state: StateDep, principal: PrincipalDep) -> FileResponse:
    row, session, _ = await messages.get_visible(state.reader, principal, message_id)
    found = await inbound_media.fetch(state.redis, state.settings, row, session)
    return FileResponse(found.path, media_type=found.mimetype, filename=found.filename)

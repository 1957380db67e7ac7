"""The baseline: a bare FastAPI endpoint that answers 202 with nothing behind it."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI()


@app.post("/v1/sessions/{session}/messages", status_code=202)
async def accept(session: str, request: Request) -> Response:
    await request.body()
    return Response(status_code=202)

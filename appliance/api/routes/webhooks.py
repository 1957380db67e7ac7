"""`/v1/webhooks`: endpoints per tenant or per session; secrets shown once; deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status
from pydantic import Field

from appliance.api.auth import PrincipalDep
from appliance.api.schemas import ApiModel, AwareIsoDatetime, ErrorResponse
from appliance.api.state import StateDep, WebhooksDep
from appliance.auth.principal import Principal
from appliance.db.models import Webhook
from appliance.webhooks import service

router = APIRouter(
    prefix="/v1",
    tags=["webhooks"],
    responses={
        401: {"model": ErrorResponse},
        404: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
        503: {"model": ErrorResponse},
    },
)

EventType = Literal[
    "session.state",
    "message.status",
    "message.received",
    "presence.update",
    "command.rejected",
    "session.version_refused",
]


def _scope(principal: Principal) -> service.Scope:
    return service.Scope(key_id=principal.key.id, is_admin=principal.is_admin)


class WebhookCreate(ApiModel):
    url: str = Field(min_length=8, max_length=2048, examples=["https://example.com/hooks/wapp"])
    session: str | None = Field(
        default=None, description="A session id or name: only its events. Unset: all yours."
    )
    event_types: list[EventType] | None = Field(
        default=None, description="Only these event types. Unset: all.", min_length=1
    )
    enabled: bool = True


class WebhookUpdate(ApiModel):
    url: str | None = Field(default=None, min_length=8, max_length=2048)
    event_types: list[EventType] | None = Field(default=None, min_length=1)
    all_event_types: bool = Field(default=False, description="Clear the event-type filter.")
    enabled: bool | None = None


class WebhookPublic(ApiModel):
    id: str
    url: str
    session_id: str | None
    owner_key_id: str | None
    event_types: list[str] | None
    enabled: bool
    disabled_reason: str | None
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, w: Webhook) -> WebhookPublic:
        return cls(
            id=w.id,
            url=w.url,
            session_id=w.session_id,
            owner_key_id=w.owner_key_id,
            event_types=w.event_types,
            enabled=w.enabled,
            disabled_reason=w.disabled_reason,
            previous_secret_expires_at=w.previous_secret_expires_at,
            created_at=w.created_at,
            updated_at=w.updated_at,
        )


class WebhookWithSecret(WebhookPublic):
    secret: str = Field(description="`whsec_...`: shown only in this answer")


class WebhookList(ApiModel):
    items: list[WebhookPublic]


class RotateBody(ApiModel):
    overlap_s: float | None = Field(
        default=None, ge=0, le=7 * 86400, description="Default: webhooks.rotation_overlap_s"
    )


class AttemptPublic(ApiModel):
    attempt: int
    at: datetime
    status_code: int | None
    latency_ms: int | None
    error: str | None


class DeliveryPublic(ApiModel):
    id: str
    event_id: str = Field(description="The `webhook-id` header")
    event_type: str
    session: str | None
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    last_latency_ms: int | None
    created_at: datetime
    delivered_at: datetime | None
    attempt_log: list[AttemptPublic]


class DeliveryList(ApiModel):
    items: list[DeliveryPublic]


class ReplayResult(ApiModel):
    requeued: int


class TestResultPublic(ApiModel):
    ok: bool
    event_id: str
    status_code: int | None
    latency_ms: int
    error: str | None


@router.post("/webhooks", status_code=status.HTTP_201_CREATED, summary="Create a webhook")
async def create_webhook(
    body: WebhookCreate, state: StateDep, runtime: WebhooksDep, principal: PrincipalDep
) -> WebhookWithSecret:
    created = await service.create_webhook(
        state.writer,
        scope=_scope(principal),
        box=runtime.secret_box(),
        settings=state.settings.webhooks,
        url=body.url,
        session=body.session,
        event_types=list(body.event_types) if body.event_types else None,
        enabled=body.enabled,
    )
    return WebhookWithSecret(
        **WebhookPublic.of(created.webhook).model_dump(), secret=created.secret
    )


@router.get("/webhooks", summary="List webhooks (never their secrets)")
async def list_webhooks(state: StateDep, principal: PrincipalDep) -> WebhookList:
    hooks = await service.list_webhooks(state.reader, scope=_scope(principal))
    return WebhookList(items=[WebhookPublic.of(w) for w in hooks])


@router.get("/webhooks/{webhook_id}", summary="One webhook")
async def get_webhook(webhook_id: str, state: StateDep, principal: PrincipalDep) -> WebhookPublic:
    hook = await service.get_webhook(state.reader, scope=_scope(principal), webhook_id=webhook_id)
    return WebhookPublic.of(hook)


@router.patch("/webhooks/{webhook_id}", summary="Change url, event types or enabled")
async def update_webhook(
    webhook_id: str, body: WebhookUpdate, state: StateDep, principal: PrincipalDep
) -> WebhookPublic:
    event_types: list[str] | object | None = service.ALL
    if body.all_event_types:
        event_types = None
    elif body.event_types is not None:
        event_types = list(body.event_types)
    hook = await service.update_webhook(
        state.writer,
        scope=_scope(principal),
        settings=state.settings.webhooks,
        webhook_id=webhook_id,
        url=body.url,
        event_types=event_types,
        enabled=body.enabled,
    )
    return WebhookPublic.of(hook)


@router.delete(
    "/webhooks/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a webhook and its delivery history",
)
async def delete_webhook(
    webhook_id: str, state: StateDep, runtime: WebhooksDep, principal: PrincipalDep
) -> Response:
    await service.delete_webhook(state.writer, scope=_scope(principal), webhook_id=webhook_id)
    # This worker's posts to it stop now; other workers' at their next poll.
    if runtime.dispatcher is not None:
        runtime.dispatcher.forget(webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/webhooks/{webhook_id}/rotate-secret",
    summary="New secret; the old one keeps signing during the overlap window",
)
async def rotate_secret(
    webhook_id: str,
    state: StateDep,
    runtime: WebhooksDep,
    principal: PrincipalDep,
    body: RotateBody | None = None,
) -> WebhookWithSecret:
    rotated = await service.rotate_secret(
        state.writer,
        scope=_scope(principal),
        box=runtime.secret_box(),
        settings=state.settings.webhooks,
        webhook_id=webhook_id,
        overlap_s=body.overlap_s if body else None,
    )
    return WebhookWithSecret(
        **WebhookPublic.of(rotated.webhook).model_dump(), secret=rotated.secret
    )


@router.post(
    "/webhooks/{webhook_id}/replay",
    summary="Send again the deliveries of events since a time (same webhook-id)",
)
async def replay(
    webhook_id: str,
    state: StateDep,
    principal: PrincipalDep,
    # Annotated, not `= Query(...)`: with a Query default FastAPI drops the type's own
    # validator, and `since=0.5` would pass as 1970.
    since: Annotated[AwareIsoDatetime, Query(description="ISO 8601 with an offset")],
    include_delivered: bool = Query(
        default=True, alias="includeDelivered", description="Also re-send delivered ones"
    ),
) -> ReplayResult:
    n = await service.replay(
        state.writer,
        scope=_scope(principal),
        webhook_id=webhook_id,
        since=since,
        include_delivered=include_delivered,
    )
    return ReplayResult(requeued=n)


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    summary="Deliveries, newest first, with every attempt's status code, latency and error",
)
async def list_deliveries(
    webhook_id: str,
    state: StateDep,
    principal: PrincipalDep,
    status_: Literal["pending", "delivered", "failed", "dead"] | None = Query(
        default=None, alias="status"
    ),
    limit: int = Query(default=50, ge=1, le=500),
    before: AwareIsoDatetime | None = Query(
        default=None, description="Cursor: createdAt of the last (ISO 8601 with an offset)"
    ),
) -> DeliveryList:
    views = await service.list_deliveries(
        state.reader,
        scope=_scope(principal),
        webhook_id=webhook_id,
        status=status_,
        limit=limit,
        before=before,
    )
    return DeliveryList(
        items=[
            DeliveryPublic(
                id=v.delivery.id,
                event_id=v.delivery.event_id,
                event_type=v.delivery.event_type,
                session=v.delivery.session,
                status=v.delivery.status,
                attempts=v.delivery.attempts,
                next_attempt_at=v.delivery.next_attempt_at,
                last_status_code=v.delivery.last_status_code,
                last_error=v.delivery.last_error,
                last_latency_ms=v.delivery.last_latency_ms,
                created_at=v.delivery.created_at,
                delivered_at=v.delivery.delivered_at,
                attempt_log=[
                    AttemptPublic(
                        attempt=a.attempt,
                        at=a.at,
                        status_code=a.status_code,
                        latency_ms=a.latency_ms,
                        error=a.error,
                    )
                    for a in v.attempts
                ],
            )
            for v in views
        ]
    )


@router.post("/webhooks/{webhook_id}/test", summary="Send a signed `webhook.test` event now")
async def test_webhook(
    webhook_id: str, state: StateDep, runtime: WebhooksDep, principal: PrincipalDep
) -> TestResultPublic:
    result = await service.send_test(
        state.reader,
        scope=_scope(principal),
        box=runtime.secret_box(),
        settings=state.settings.webhooks,
        webhook_id=webhook_id,
    )
    return TestResultPublic(
        ok=result.ok,
        event_id=result.event_id,
        status_code=result.status_code,
        latency_ms=result.latency_ms,
        error=result.error,
    )

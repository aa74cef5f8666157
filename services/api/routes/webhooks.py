"""Webhook subscriptions: change events POSTed to a URL, signed (`healthscore notify` sends
them; services/notify/). Managing them needs the `admin` scope: a subscription sends account
data to the URL it names."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response, status
from sqlalchemy import ColumnElement, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.api import examples
from services.api.auth import Admin
from services.api.problems import Problem, problem_responses
from services.api.routes.accounts import before_cursor, encode_cursor
from services.api.schemas import (
    DeliveryPageResponse,
    DeliveryResponse,
    WebhookCreatedResponse,
    WebhookRequest,
    WebhookResponse,
    WebhooksResponse,
    WebhookUpdate,
)
from shared.db import WebhookDeliveryRow, WebhookRow
from shared.webhooks import new_secret

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
ERRORS = problem_responses(400, 401, 403, 404, 422)
BODY_ERRORS = problem_responses(400, 401, 403, 404, 413, 422)  # a body past MAX_BODY_BYTES
WebhookId = Annotated[str, Path(min_length=36, max_length=36, pattern=r"^[0-9a-f\-]{36}$")]
EventId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-.:]+$")]


def _engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


def _check_url(request: Request, url: str) -> None:
    settings = request.app.state.settings
    if (
        url.startswith("http://")
        and settings.environment == "production"
        and not settings.notify.allow_http
    ):
        raise Problem(
            422,
            "a webhook URL must be https:// in production (HEALTHSCORE_NOTIFY__ALLOW_HTTP "
            "allows http://)",
            slug="insecure-url",
        )


async def _responses(conn: AsyncConnection, rows: list[Any]) -> list[WebhookResponse]:
    """The subscriptions of `rows`, each with its deliveries counted by status (one query)."""
    d = WebhookDeliveryRow
    counts: dict[str, dict[str, int]] = {row.webhook_id: {} for row in rows}
    for webhook_id, state, n in await conn.execute(
        select(d.webhook_id, d.status, func.count())
        .where(d.webhook_id.in_(list(counts)))
        .group_by(d.webhook_id, d.status)
    ):
        counts[webhook_id][state] = n
    return [
        WebhookResponse.model_validate({**row._mapping, "deliveries": counts[row.webhook_id]})
        for row in rows
    ]


async def _found(conn: AsyncConnection, webhook_id: str) -> Any:
    row = (
        await conn.execute(select(WebhookRow).where(WebhookRow.webhook_id == webhook_id))
    ).first()
    if row is None:
        raise Problem(404, f"no webhook {webhook_id!r}")
    return row


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={**BODY_ERRORS, **examples.ok(examples.WEBHOOK_CREATED, 201)},
    response_model=WebhookCreatedResponse,
)
async def create_webhook(
    request: Request, body: WebhookRequest, caller: Admin
) -> WebhookCreatedResponse:
    """Subscribe a URL to the change events the filter matches, from now on. The answer holds
    the signing secret, which is not shown again: a receiver verifies each request with it
    (Standard Webhooks; e.g. the `standardwebhooks` package)."""
    _check_url(request, body.url)
    now = datetime.now(UTC)
    values = {
        **body.model_dump(),
        "webhook_id": str(uuid.uuid4()),
        "secret": new_secret(),
        "enabled": True,
        "disabled_reason": None,
        "created_by": caller.name,
        "created_at": now,
        "updated_at": now,
    }
    async with _engine(request).begin() as conn:
        await conn.execute(insert(WebhookRow).values(values))
    return WebhookCreatedResponse.model_validate({**values, "deliveries": {}})


@router.get("", responses={**ERRORS, **examples.ok({"items": [examples.WEBHOOK]})})
async def list_webhooks(request: Request, caller: Admin) -> WebhooksResponse:
    """Every subscription, oldest first, with its deliveries counted by status."""
    async with _engine(request).connect() as conn:
        rows = list(await conn.execute(select(WebhookRow).order_by(WebhookRow.created_at)))
        return WebhooksResponse(items=await _responses(conn, rows))


@router.get("/{webhook_id}", responses={**ERRORS, **examples.ok(examples.WEBHOOK)})
async def get_webhook(request: Request, webhook_id: WebhookId, caller: Admin) -> WebhookResponse:
    async with _engine(request).connect() as conn:
        return (await _responses(conn, [await _found(conn, webhook_id)]))[0]


@router.patch("/{webhook_id}", responses={**BODY_ERRORS, **examples.ok(examples.WEBHOOK)})
async def update_webhook(
    request: Request, webhook_id: WebhookId, body: WebhookUpdate, caller: Admin
) -> WebhookResponse:
    """Change the URL, the mode, the filter, or enable or disable it (a field left out or null
    stays as it is; `[]` lets any value through). Deliveries already recorded keep the event
    they carry; a disabled subscription's wait until it is enabled, and the events scored
    while it is disabled are not kept for it."""
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
    if changes.get("url"):
        _check_url(request, changes["url"])
    if changes.get("enabled") is True:
        changes["disabled_reason"] = None
    elif changes.get("enabled") is False:
        changes["disabled_reason"] = f"disabled by {caller.name}"
    async with _engine(request).begin() as conn:
        await _found(conn, webhook_id)
        await conn.execute(
            update(WebhookRow)
            .where(WebhookRow.webhook_id == webhook_id)
            .values(**changes, updated_at=datetime.now(UTC))
        )
        return (await _responses(conn, [await _found(conn, webhook_id)]))[0]


@router.delete("/{webhook_id}", status_code=204, responses=ERRORS)
async def delete_webhook(request: Request, webhook_id: WebhookId, caller: Admin) -> Response:
    """Unsubscribe; its deliveries, sent or not, go with it."""
    async with _engine(request).begin() as conn:
        gone = await conn.execute(delete(WebhookRow).where(WebhookRow.webhook_id == webhook_id))
    if not gone.rowcount:
        raise Problem(404, f"no webhook {webhook_id!r}")
    return Response(status_code=204)


@router.get(
    "/{webhook_id}/deliveries",
    responses={**ERRORS, **examples.ok({"items": [examples.DELIVERY], "next_cursor": None})},
)
async def list_deliveries(
    request: Request,
    webhook_id: WebhookId,
    caller: Admin,
    status: Literal["pending", "delivered", "dead"] | None = None,
    limit: Annotated[int, Query(ge=1)] = 50,
    cursor: Annotated[str | None, Query(max_length=512, pattern=r"^[A-Za-z0-9_\-]+$")] = None,
) -> DeliveryPageResponse:
    """Its deliveries, newest first, in pages: `status=dead` lists the dead-lettered ones,
    each with its last answer or error."""
    limit = min(limit, request.app.state.settings.api.max_page_size)
    d = WebhookDeliveryRow
    conditions: list[ColumnElement[bool]] = [d.webhook_id == webhook_id]
    if status is not None:
        conditions.append(d.status == status)
    if cursor is not None:
        conditions.append(before_cursor(cursor, d.created_at, d.event_id, str))
    async with _engine(request).connect() as conn:
        await _found(conn, webhook_id)
        rows = list(
            await conn.execute(
                select(d)
                .where(*conditions)
                .order_by(d.created_at.desc(), d.event_id.desc())
                .limit(limit + 1)
            )
        )
    items = [_delivery(row) for row in rows[:limit]]
    last = rows[limit - 1] if len(rows) > limit else None
    return DeliveryPageResponse(
        items=items,
        next_cursor=encode_cursor(last.created_at.isoformat(), last.event_id) if last else None,
    )


@router.post(
    "/{webhook_id}/deliveries/{event_id}/retry",
    status_code=202,
    responses={
        **ERRORS,
        **examples.ok({**examples.DELIVERY, "status": "pending", "attempts": 0}, 202),
    },
)
async def retry_delivery(
    request: Request, webhook_id: WebhookId, event_id: EventId, caller: Admin
) -> DeliveryResponse:
    """Send a delivery again from its first attempt (a dead one, once its receiver is back;
    or a delivered one, again)."""
    async with _engine(request).begin() as conn:
        row = (
            await conn.execute(
                update(WebhookDeliveryRow)
                .where(
                    WebhookDeliveryRow.webhook_id == webhook_id,
                    WebhookDeliveryRow.event_id == event_id,
                )
                .values(
                    status="pending",
                    attempts=0,
                    next_attempt_at=datetime.now(UTC),
                    finished_at=None,
                )
                .returning(*WebhookDeliveryRow.__table__.columns)
            )
        ).first()
    if row is None:
        raise Problem(404, f"no delivery of {event_id!r} to webhook {webhook_id!r}")
    return _delivery(row)


def _delivery(row: Any) -> DeliveryResponse:
    pending = row.status == "pending"
    return DeliveryResponse.model_validate(
        {**row._mapping, "next_attempt_at": row.next_attempt_at if pending else None}
    )

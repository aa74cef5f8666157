"""Human overrides: record them for audit and send them to the scorer as signals.

The API never writes scores. One transaction writes the override row, its audit row and an
outbox row holding the override signal; the scorer's relay publishes that to the signals topic,
and the scorer applies it like any other signal (history, change event, expiry).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.api import examples
from services.api.auth import Reader, Writer
from services.api.preview import account_for_preview, preview
from services.api.problems import Problem, problem_responses
from services.api.routes.accounts import AccountId, override_response
from services.api.schemas import (
    NO_CONTROL,
    ObjectivePreview,
    OverrideAcceptedResponse,
    OverridePreviewResponse,
    OverrideRequest,
    OverrideResponse,
)
from shared.db import NOTIFY_CHANGED, AccountRow, OutboxRow, OverrideAuditRow, OverrideRow
from shared.events import OverrideRevoked, OverrideSet, Signal, encode_signal

router = APIRouter(prefix="/v1/accounts", tags=["overrides"])


async def _audit_and_signal(
    conn: AsyncConnection,
    request: Request,
    *,
    override_id: str,
    account_id: str,
    actor: str,
    action: str,
    payload: OverrideSet | OverrideRevoked,
    now: datetime,
) -> None:
    """The audit row, the signal the scorer applies (via the outbox, same transaction), and
    the change notification: the account's health answer lists its active overrides."""
    data = payload.model_dump(mode="json")
    await conn.execute(
        insert(OverrideAuditRow).values(
            override_id=override_id,
            account_id=account_id,
            action=action,
            actor=actor,
            at=now,
            detail=data,
        )
    )
    kind = "override_set" if action == "created" else "override_revoked"
    signal = Signal(
        signal_id=f"{kind}-{override_id}",
        account_id=account_id,
        occurred_at=now,
        source="api",
        kind=kind,
        data=data,
        ingested_at=now,
    )
    await conn.execute(
        insert(OutboxRow).values(
            event_id=signal.signal_id,
            topic=request.app.state.settings.kafka.topics.signals,
            key=account_id,
            payload=encode_signal(signal),
            content_type="application/json",
            created_at=now,
            sent_at=None,
        )
    )
    await conn.exec_driver_sql(NOTIFY_CHANGED, ([account_id],))


def check_override(request: Request, body: OverrideRequest, now: datetime) -> None:
    """What the request model cannot check alone: the expiry's range and the objective."""
    longest = timedelta(days=request.app.state.settings.api.max_override_days)
    if not now < body.expires_at <= now + longest:
        raise Problem(
            422,
            f"expires_at must be in the future and at most {longest.days} days away",
            slug="validation",
        )
    objectives = request.app.state.models["active"].objectives
    if body.objective is not None and body.objective not in objectives:
        raise Problem(422, f"unknown objective {body.objective!r}", slug="validation")


async def preview_override(
    request: Request, account_id: str, body: OverrideRequest, author: str
) -> OverridePreviewResponse:
    """The scores the account would have now with the override (services/api/preview.py)."""
    now = datetime.now(UTC)
    check_override(request, body, now)
    model = request.app.state.models["active"]
    engine: AsyncEngine = request.app.state.engine
    async with engine.connect() as conn:
        found = await account_for_preview(
            conn, model, account_id, now, request.app.state.settings.scorer.news_retention_days
        )
    if found is None:
        raise Problem(404, f"no account {account_id!r}")
    state, bands, news = found
    proposal = {**body.model_dump(), "author": author}
    scores = preview(model, state, proposal, now, bands, news)
    return OverridePreviewResponse(
        account_id=account_id,
        at=now,
        objectives=[
            ObjectivePreview(
                objective=name,
                score=before.score,
                band=before.band,
                preview_score=after.score,
                preview_band=after.band,
                confidence=after.confidence,
            )
            for name, (before, after) in scores.items()
        ],
    )


async def _account_exists(conn: AsyncConnection, account_id: str) -> None:
    found = await conn.scalar(
        select(AccountRow.account_id).where(AccountRow.account_id == account_id)
    )
    if found is None:
        raise Problem(404, f"no account {account_id!r}")


@router.post(
    "/{account_id}/overrides",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        **problem_responses(400, 401, 403, 404, 413, 422),
        **examples.ok(examples.ACCEPTED, 202),
    },
)
async def create_override(
    request: Request, account_id: AccountId, body: OverrideRequest, caller: Writer
) -> OverrideAcceptedResponse:
    """Pin or adjust a score, or record CSM sentiment; applied by the scorer within seconds."""
    override_id = await record_override(request, account_id, body, caller.name)
    return OverrideAcceptedResponse(override_id=override_id)


async def record_override(
    request: Request, account_id: str, body: OverrideRequest, author: str
) -> str:
    """Record an override by `author` (the API and the console both save through here)."""
    now = datetime.now(UTC)
    check_override(request, body, now)
    override_id = str(uuid.uuid4())
    payload = OverrideSet(
        override_id=override_id,
        action=body.action,
        objective=body.objective,
        value=body.value,
        author=author,
        reason=body.reason,
        expires_at=body.expires_at,
    )
    engine: AsyncEngine = request.app.state.engine
    async with engine.begin() as conn:
        await _account_exists(conn, account_id)
        await conn.execute(
            insert(OverrideRow).values(
                **payload.model_dump(), account_id=account_id, created_at=now
            )
        )
        await _audit_and_signal(
            conn,
            request,
            override_id=override_id,
            account_id=account_id,
            actor=author,
            action="created",
            payload=payload,
            now=now,
        )
    request.app.state.health_cache.changed([account_id])  # read your writes at once
    return override_id


@router.post(
    "/{account_id}/overrides/preview",
    responses={**problem_responses(400, 401, 403, 404, 413, 422), **examples.ok(examples.PREVIEW)},
)
async def preview_an_override(
    request: Request, account_id: AccountId, body: OverrideRequest, caller: Writer
) -> OverridePreviewResponse:
    """The account's scores now, and what they would be with this override; saves nothing."""
    return await preview_override(request, account_id, body, caller.name)


@router.get(
    "/{account_id}/overrides",
    responses={**problem_responses(401, 403, 404, 422), **examples.ok([examples.OVERRIDE])},
)
async def list_overrides(
    request: Request, account_id: AccountId, caller: Reader
) -> list[OverrideResponse]:
    """Every override of an account, newest first, with its status."""
    return await read_overrides(request.app.state.engine, account_id, datetime.now(UTC))


async def read_overrides(
    engine: AsyncEngine, account_id: str, now: datetime
) -> list[OverrideResponse]:
    """The account's overrides, newest first, with their status at `now` (the console reads
    through this too); problem 404 for an unknown account."""
    async with engine.connect() as conn:
        await _account_exists(conn, account_id)
        rows = await conn.execute(
            select(OverrideRow)
            .where(OverrideRow.account_id == account_id)
            .order_by(OverrideRow.created_at.desc())
        )
        return [override_response(row, now) for row in rows]


@router.delete(
    "/{account_id}/overrides/{override_id}",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        **problem_responses(401, 403, 404, 409, 422),
        **examples.ok(examples.ACCEPTED, 202),
    },
)
async def revoke_override(
    request: Request,
    account_id: AccountId,
    override_id: Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9\-]+$")],
    caller: Writer,
    reason: Annotated[str, Query(max_length=1000, pattern=NO_CONTROL)] = "",
) -> OverrideAcceptedResponse:
    """Revoke an override; the revocation is audited and sent to the scorer as a signal."""
    await revoke(request, account_id, override_id, caller.name, reason)
    return OverrideAcceptedResponse(
        override_id=override_id, detail="revoked; the scorer applies it within seconds"
    )


async def revoke(
    request: Request, account_id: str, override_id: str, author: str, reason: str
) -> None:
    """Revoke an override as `author` (the API and the console both revoke through here)."""
    now = datetime.now(UTC)
    engine: AsyncEngine = request.app.state.engine
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                select(OverrideRow.revoked_at)
                .where(OverrideRow.override_id == override_id)
                .where(OverrideRow.account_id == account_id)
                .with_for_update()
            )
        ).one_or_none()
        if row is None:
            raise Problem(404, f"no override {override_id!r} on account {account_id!r}")
        if row.revoked_at is not None:
            raise Problem(409, "the override is already revoked", slug="already-revoked")
        await conn.execute(
            update(OverrideRow)
            .where(OverrideRow.override_id == override_id)
            .values(revoked_at=now, revoked_by=author, revoke_reason=reason)
        )
        await _audit_and_signal(
            conn,
            request,
            override_id=override_id,
            account_id=account_id,
            actor=author,
            action="revoked",
            payload=OverrideRevoked(override_id=override_id, author=author, reason=reason),
            now=now,
        )
    request.app.state.health_cache.changed([account_id])

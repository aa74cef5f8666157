"""Outcomes (what happened to accounts) and the live models' quality against them.

The stream's outcomes are recorded by the scorer as it folds the signals that show them (a
cancellation, a return, an expansion: shared/outcomes.py); the rest come here, from a CRM or
a person: a renewal, a churn the billing system does not see. Each is keyed by its source and
the source's id, so a repeat is recorded once and a changed one corrects the record; a wrong
one, the stream's included, is voided and kept for audit. The scorer measures the models
against them (services/scorer/quality.py); `GET /v1/models/quality` serves the figures.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response, status
from sqlalchemy import literal_column, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api import examples
from services.api.auth import Reader, Writer
from services.api.problems import Problem, problem_responses
from services.api.routes.accounts import before_cursor, encode_cursor
from services.api.schemas import (
    NO_CONTROL,
    ModelQuality,
    ModelQualityResponse,
    OutcomeRequest,
    OutcomeResponse,
    OutcomesPage,
    QualityPoint,
)
from shared.db import AccountRow, ModelQualityRow, OutcomeRow
from shared.outcomes import NAME_PATTERN, SOURCE_PATTERN, STREAM

router = APIRouter(tags=["outcomes"])
FUTURE = timedelta(minutes=5)  # clocks differ: an outcome may be this far ahead of ours
OutcomeKey = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_\-.:]+$")]


def _engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


@router.post(
    "/v1/outcomes",
    status_code=status.HTTP_201_CREATED,
    responses={
        **problem_responses(400, 401, 403, 404, 413, 422),
        **examples.ok(examples.OUTCOME, 201),
        200: {
            "model": OutcomeResponse,
            "description": "recorded already: unchanged, corrected or restored",
            "content": {"application/json": {"example": examples.OUTCOME}},
        },
    },
)
async def record_outcome(
    request: Request, response: Response, body: OutcomeRequest, caller: Writer
) -> OutcomeResponse:
    """Record what happened to an account: 201 when new, 200 when it was recorded already
    (unchanged, or corrected by this request; a voided one is restored)."""
    recorded, inserted = await store_outcome(request, body, caller.name)
    if not inserted:
        response.status_code = status.HTTP_200_OK
    return recorded


async def store_outcome(
    request: Request, body: OutcomeRequest, recorded_by: str
) -> tuple[OutcomeResponse, bool]:
    """Record it (the console records through this too); whether it is new. Problem 422 for
    what the request model cannot check alone, 404 for an unknown account."""
    now = datetime.now(UTC)
    if body.source == STREAM:
        raise Problem(
            422,
            "outcomes of source `stream` are the scorer's; void a wrong one with DELETE",
            slug="validation",
        )
    if body.at > now + FUTURE:
        raise Problem(422, "`at` is in the future", slug="validation")
    outcome_id = body.outcome_id or _made_id(body)
    values = {
        **body.model_dump(exclude={"outcome_id"}),
        "outcome_id": outcome_id,
        "recorded_by": recorded_by,
        "recorded_at": now,
    }
    o = OutcomeRow
    changed = (
        o.account_id.is_distinct_from(body.account_id)
        | o.outcome.is_distinct_from(body.outcome)
        | o.at.is_distinct_from(body.at)
        | o.note.is_distinct_from(body.note)
        | o.voided_at.is_not(None)
    )
    statement: Any = (
        insert(o)
        .values(values)
        .on_conflict_do_update(
            index_elements=[o.source, o.outcome_id],
            set_={
                **{k: values[k] for k in ("account_id", "outcome", "at", "note")},
                "recorded_by": recorded_by,
                "recorded_at": now,
                "voided_at": None,
                "voided_by": None,
                "void_reason": None,
            },
            where=changed,
        )
        .returning(literal_column("xmax = 0"))  # inserted, not updated
    )
    async with _engine(request).begin() as conn:
        known = await conn.scalar(
            select(AccountRow.account_id).where(AccountRow.account_id == body.account_id)
        )
        if known is None:
            raise Problem(404, f"no account {body.account_id!r}")
        inserted = bool(await conn.scalar(statement))
        row = (
            await conn.execute(select(o).where(o.source == body.source, o.outcome_id == outcome_id))
        ).one()
    if inserted:
        request.app.state.outcomes.labels(body.outcome, body.source).inc()
    return OutcomeResponse.model_validate(row, from_attributes=True), inserted


def _made_id(body: OutcomeRequest) -> str:
    key = f"{body.account_id}\x1f{body.outcome}\x1f{body.at.astimezone(UTC).isoformat()}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


@router.get(
    "/v1/outcomes",
    responses={
        **problem_responses(400, 401, 403, 422),
        **examples.ok({"items": [examples.OUTCOME], "next_cursor": None}),
    },
)
async def list_outcomes(
    request: Request,
    caller: Reader,
    account_id: Annotated[str | None, Query(max_length=128, pattern=NO_CONTROL)] = None,
    outcome: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    source: Annotated[str | None, Query(pattern=SOURCE_PATTERN)] = None,
    voided: Annotated[bool, Query(description="include voided ones")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> OutcomesPage:
    """Recorded outcomes, newest first."""
    return await read_outcomes(
        _engine(request), account_id, outcome, source, voided=voided, limit=limit, cursor=cursor
    )


async def read_outcomes(
    engine: AsyncEngine,
    account_id: str | None = None,
    outcome: str | None = None,
    source: str | None = None,
    *,
    voided: bool = False,
    limit: int = 100,
    cursor: str | None = None,
) -> OutcomesPage:
    """A page of recorded outcomes, newest first (the console reads these too)."""
    o = OutcomeRow
    query = select(o).order_by(o.at.desc(), o.outcome_id.desc()).limit(limit + 1)
    for column, value in ((o.account_id, account_id), (o.outcome, outcome), (o.source, source)):
        if value is not None:
            query = query.where(column == value)
    if not voided:
        query = query.where(o.voided_at.is_(None))
    if cursor is not None:
        query = query.where(before_cursor(cursor, o.at, o.outcome_id, str))
    async with engine.connect() as conn:
        rows = list(await conn.execute(query))
    page = rows[:limit]
    return OutcomesPage(
        items=[OutcomeResponse.model_validate(r, from_attributes=True) for r in page],
        next_cursor=encode_cursor(page[-1].at.isoformat(), page[-1].outcome_id)
        if len(rows) > limit
        else None,
    )


@router.delete(
    "/v1/outcomes/{source}/{outcome_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401, 403, 404, 422),
)
async def void_outcome(
    request: Request,
    source: Annotated[str, Path(pattern=SOURCE_PATTERN)],
    outcome_id: OutcomeKey,
    caller: Writer,
    reason: Annotated[str, Query(min_length=3, max_length=500, pattern=NO_CONTROL)],
) -> Response:
    """Void a recorded outcome (the stream's too, e.g. a cancellation made by mistake): it no
    longer counts, and stays listed with `voided=true`. Voiding one voided already is a
    no-op; recording it again restores it."""
    o = OutcomeRow
    key = (o.source == source, o.outcome_id == outcome_id)
    async with _engine(request).begin() as conn:
        found = await conn.scalar(select(o.voided_at.is_(None)).where(*key).with_for_update())
        if found is None:
            raise Problem(404, f"no outcome {source}/{outcome_id}")
        if found:
            await conn.execute(
                update(o)
                .where(*key)
                .values(voided_at=datetime.now(UTC), voided_by=caller.name, void_reason=reason)
            )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/v1/models/quality",
    tags=["models"],
    responses={**problem_responses(401, 403, 422), **examples.ok(examples.QUALITY)},
)
async def model_quality(
    request: Request,
    caller: Reader,
    days: Annotated[int, Query(ge=1, le=730, description="how far back the trend goes")] = 30,
) -> ModelQualityResponse:
    """How well each served objective's scores foresaw the outcomes that followed, measured
    by the scorers every hour: the latest figures and their trend."""
    return await read_quality(_engine(request), days)


async def read_quality(engine: AsyncEngine, days: int) -> ModelQualityResponse:
    """The measurements of the last `days`, by objective and role (the console reads these
    too)."""
    q = ModelQualityRow
    since = datetime.now(UTC) - timedelta(days=days)
    async with engine.connect() as conn:
        rows = list(
            await conn.execute(
                select(q)
                .where(q.measured_at >= since)
                .order_by(q.objective, q.model_role, q.measured_at)
            )
        )
    measured: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for row in rows:
        measured[(row.objective, row.model_role)].append(row)
    return ModelQualityResponse(
        items=[
            ModelQuality(
                objective=objective,
                model_role=role,
                outcome=series[-1].outcome,
                window_days=series[-1].window_days,
                horizon_days=series[-1].horizon_days,
                latest=QualityPoint.model_validate(series[-1], from_attributes=True),
                reliability=series[-1].reliability,
                trend=[QualityPoint.model_validate(r, from_attributes=True) for r in series],
            )
            for (objective, role), series in measured.items()
        ]
    )

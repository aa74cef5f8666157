"""Reads: one account's health, its change history, and filtered account lists."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy import (
    ColumnElement,
    and_,
    func,
    literal,
    literal_column,
    or_,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.api import examples
from services.api.auth import Reader
from services.api.cache import HealthCache
from services.api.problems import Problem, problem_responses
from services.api.schemas import (
    NO_CONTROL,
    AccountHealthResponse,
    AccountPageResponse,
    AccountSummaryResponse,
    HistoryItemResponse,
    HistoryPageResponse,
    IsoDatetime,
    Name,
    OverrideResponse,
)
from shared.db import AccountRow, ScoreHistoryRow, ScoreRow, account_views
from shared.events import Region, Tier
from shared.scoring.engine import UNKNOWN_BAND
from shared.scoring.model import Model

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])
AccountId = Annotated[
    str, Path(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$", examples=["acc-000042"])
]
READ_ERRORS = problem_responses(400, 401, 403, 404, 422)


def _engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


def encode_cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(parts)).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    try:
        parts = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise Problem(400, "the cursor is not valid", slug="invalid-cursor") from exc
    if not isinstance(parts, list) or len(parts) != arity:
        raise Problem(400, "the cursor is not valid", slug="invalid-cursor")
    return parts


def before_cursor(
    cursor: str, at: Any, key: Any, key_type: Callable[[Any], Any]
) -> ColumnElement[bool]:
    """The rows after a (time, key) cursor in a newest-first page: (at, key) below it."""
    at_value, key_value = decode_cursor(cursor, 2)
    try:
        after, key_value = datetime.fromisoformat(str(at_value)), key_type(key_value)
        if after.tzinfo is None or (isinstance(key_value, str) and "\x00" in key_value):
            raise ValueError("not a cursor this API wrote")
    except (TypeError, ValueError) as exc:
        raise Problem(400, "the cursor is not valid", slug="invalid-cursor") from exc
    return tuple_(at, key) < tuple_(literal(after), literal(key_value))


def override_response(row: Any, now: datetime) -> OverrideResponse:
    status: Literal["active", "expired", "revoked"] = (
        "revoked" if row.revoked_at else "expired" if row.expires_at <= now else "active"
    )
    return OverrideResponse(**row._mapping, status=status)


@router.get(
    "/{account_id}/health",
    response_model=AccountHealthResponse,
    responses={**READ_ERRORS, **examples.ok(examples.HEALTH)},
)
async def get_health(request: Request, account_id: AccountId, caller: Reader) -> Response:
    """Every objective's score, band, confidence and explanation for one account."""
    cache: HealthCache = request.app.state.health_cache
    document = cache.get(account_id)
    if document is None:
        generation = cache.generation
        health = await request.app.state.health_reader.read(account_id)
        if health is None:
            raise Problem(404, f"no account {account_id!r}")
        document = health.to_json()
        cache.put(account_id, document, generation, health.until)
    return Response(document, media_type="application/json")


@router.get(
    "/{account_id}/health/history", responses={**READ_ERRORS, **examples.ok(examples.HISTORY)}
)
async def get_history(
    request: Request,
    account_id: AccountId,
    caller: Reader,
    from_: Annotated[
        IsoDatetime | None, Query(alias="from", description="inclusive lower bound of `at`")
    ] = None,
    to: Annotated[IsoDatetime | None, Query(description="exclusive upper bound of `at`")] = None,
    objective: Annotated[Name | None, Query()] = None,
    model_role: Literal["active", "shadow"] = "active",
    limit: Annotated[int, Query(ge=1)] = 50,
    cursor: Annotated[str | None, Query(max_length=512, pattern=r"^[A-Za-z0-9_\-]+$")] = None,
) -> HistoryPageResponse:
    """Change history of one account, newest first, in pages."""
    limit = min(limit, request.app.state.settings.api.max_page_size)
    return await read_history(
        _engine(request), account_id, model_role, from_, to, objective, limit, cursor
    )


async def read_history(
    engine: AsyncEngine,
    account_id: str,
    model_role: str = "active",
    from_: datetime | None = None,
    to: datetime | None = None,
    objective: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> HistoryPageResponse:
    """A page of the account's history, newest first (the console reads through this too);
    problem 404 for an unknown account."""
    conditions: list[ColumnElement[bool]] = [
        ScoreHistoryRow.account_id == account_id,
        ScoreHistoryRow.model_role == model_role,
    ]
    if from_ is not None:
        conditions.append(ScoreHistoryRow.at >= from_)
    if to is not None:
        conditions.append(ScoreHistoryRow.at < to)
    if objective is not None:
        conditions.append(ScoreHistoryRow.objective == objective)
    if cursor is not None:
        conditions.append(before_cursor(cursor, ScoreHistoryRow.at, ScoreHistoryRow.id, int))
    async with engine.connect() as conn:
        exists = await conn.scalar(
            select(AccountRow.account_id).where(AccountRow.account_id == account_id)
        )
        if exists is None:
            raise Problem(404, f"no account {account_id!r}")
        rows = list(
            await conn.execute(
                select(ScoreHistoryRow)
                .where(and_(*conditions))
                .order_by(ScoreHistoryRow.at.desc(), ScoreHistoryRow.id.desc())
                .limit(limit + 1)
            )
        )
    items = [HistoryItemResponse.model_validate(row, from_attributes=True) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = encode_cursor(last.at.isoformat(), last.id)
    return HistoryPageResponse(account_id=account_id, items=items, next_cursor=next_cursor)


async def score_trends(
    conn: AsyncConnection, account_ids: list[str], objective: str, since: datetime
) -> dict[str, list[tuple[float, float]]]:
    """Each account's active scores of `objective` since `since`, oldest first, as (epoch
    seconds, score): the console's sparklines of a page of accounts, in one read."""
    rows = await conn.execute(
        select(ScoreHistoryRow.account_id, ScoreHistoryRow.at, ScoreHistoryRow.new_score)
        .where(
            ScoreHistoryRow.account_id.in_(account_ids),
            ScoreHistoryRow.objective == objective,
            ScoreHistoryRow.model_role == "active",
            ScoreHistoryRow.at >= since,
        )
        .order_by(ScoreHistoryRow.account_id, ScoreHistoryRow.at)
    )
    trends: dict[str, list[tuple[float, float]]] = {}
    for account_id, at, score in rows:
        if score is not None:
            trends.setdefault(account_id, []).append((at.timestamp(), score))
    return trends


SortKey = Literal["score", "-score", "change", "-change", "updated", "-updated"]


def known_names(
    model: Model, objective: str, bands: Sequence[str] = (), segment: str | None = None
) -> None:
    """Objective, bands and segment are the active model's names: anything else is a mistake
    worth saying, not an empty page."""
    spec = model.objectives.get(objective)
    if spec is None:
        known = ", ".join(model.objectives)
        raise Problem(422, f"unknown objective {objective!r} (known: {known})", slug="unknown-name")
    names = [b.name for b in spec.bands] + [UNKNOWN_BAND]
    if unknown := sorted(set(bands) - set(names)):
        detail = f"unknown band {unknown} for {objective} (known: {', '.join(names)})"
        raise Problem(422, detail, slug="unknown-name")
    segments = [s.name for s in model.segments] + ["default"]
    if segment is not None and segment.strip().lower() not in segments:
        detail = f"unknown segment {segment!r} (known: {', '.join(segments)})"
        raise Problem(422, detail, slug="unknown-name")


VIEWS = account_views.c


@dataclass(frozen=True)
class AccountQuery:
    """What an account list asks for: the JSON list and the console's page share it."""

    objective: str = "churn_risk"
    band: tuple[str, ...] = ()
    segment: str | None = None
    industry: str | None = None
    tier: str | None = None
    region: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    stale_only: bool = False
    changed_since: datetime | None = None
    q: str | None = None
    owner: str | None = None
    sort: SortKey = "score"


def _conditions(model: Model, query: AccountQuery, *, bands: bool = True) -> list[Any]:
    """Conditions on `scores` alone. The account's attributes and the score are in the list
    indexes (migration 0013), where a candidate that does not match is passed over; the
    conditions only `accounts` can answer (staleness, a name) select account ids in a subquery,
    so that neither the counts nor a page's ordering read the wide `accounts` rows (their state
    documents) of accounts they do not show."""
    known_names(model, query.objective, list(query.band), query.segment)
    conditions: list[Any] = [
        ScoreRow.objective == query.objective,
        ScoreRow.model_role == "active",
        *(
            column == value.strip().lower()
            for column, value in (
                (ScoreRow.segment, query.segment),
                (ScoreRow.industry, query.industry),
                (ScoreRow.tier, query.tier),
                (ScoreRow.region, query.region),
            )
            if value is not None
        ),
    ]
    on_accounts: list[Any] = []
    if query.band and bands:
        conditions.append(ScoreRow.band.in_(query.band))
    if query.min_score is not None:
        conditions.append(ScoreRow.score >= query.min_score)
    if query.max_score is not None:
        conditions.append(ScoreRow.score <= query.max_score)
    if query.stale_only:
        on_accounts.append(VIEWS.stale_sources.is_not(None))
    if query.changed_since is not None:
        conditions.append(ScoreRow.changed_at >= query.changed_since)
    if query.q:  # the start of an id or a name, any case (migration 0010 indexes both)
        like = query.q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        on_accounts.append(
            or_(
                func.lower(VIEWS.account_id).like(like + "%"),
                func.lower(VIEWS.name).like(like + "%"),
            )
        )
    if query.owner:  # any case (migration 0015 indexes lower(owner))
        on_accounts.append(func.lower(VIEWS.owner) == query.owner.strip().lower())
    if on_accounts:
        conditions.append(ScoreRow.account_id.in_(select(VIEWS.account_id).where(*on_accounts)))
    return conditions


async def account_page(
    conn: AsyncConnection, model: Model, query: AccountQuery, limit: int, cursor: str | None
) -> AccountPageResponse:
    """One page of the accounts `query` selects, in its order (keyset paging)."""
    conditions = _conditions(model, query)
    sort = query.sort
    descending = sort.startswith("-")
    key = sort.lstrip("-")
    # written as migration 0010's indexes are, constants in the text, so the planner uses them
    change = func.coalesce(ScoreRow.score - ScoreRow.previous_score, literal_column("0"))
    expressions: dict[str, Any] = {
        "score": func.coalesce(ScoreRow.score, literal_column("-1")),
        "change": change,
        "updated": ScoreRow.changed_at,
    }
    order = expressions[key]
    if cursor is not None:
        cursor_sort, value, after_id = decode_cursor(cursor, 3)
        if cursor_sort != sort or not isinstance(after_id, str):
            raise Problem(400, "the cursor belongs to another sort", slug="invalid-cursor")
        try:
            bound = datetime.fromisoformat(value) if key == "updated" else float(value)
        except (TypeError, ValueError) as exc:
            raise Problem(400, "the cursor is not valid", slug="invalid-cursor") from exc
        pair = tuple_(order, ScoreRow.account_id)
        edge = tuple_(literal(bound), literal(after_id))
        conditions.append(pair < edge if descending else pair > edge)
    directions = (
        order.desc() if descending else order.asc(),
        ScoreRow.account_id.desc() if descending else ScoreRow.account_id.asc(),
    )
    # the page is chosen from `scores` alone; only its rows then meet their accounts
    page = (
        select(
            ScoreRow.account_id,
            ScoreRow.objective,
            ScoreRow.score,
            ScoreRow.band,
            ScoreRow.confidence,
            ScoreRow.probability,
            (ScoreRow.score - ScoreRow.previous_score).label("change"),
            ScoreRow.changed_at,
            order.label("sort_value"),
        )
        .where(and_(*conditions))
        .order_by(*directions)
        .limit(limit + 1)
        .subquery()
    )
    stmt = (
        select(
            page.c.account_id,
            VIEWS.name,
            VIEWS.industry,
            VIEWS.tier,
            VIEWS.region,
            VIEWS.segment,
            VIEWS.owner,
            VIEWS.parent_account_id,
            page.c.objective,
            page.c.score,
            page.c.band,
            page.c.confidence,
            page.c.probability,
            page.c.change,
            page.c.changed_at,
            VIEWS.stale_sources,
            VIEWS.data_at,
            page.c.sort_value,
        )
        .join(account_views, VIEWS.account_id == page.c.account_id)
        .order_by(
            page.c.sort_value.desc() if descending else page.c.sort_value.asc(),
            page.c.account_id.desc() if descending else page.c.account_id.asc(),
        )
    )
    rows = list(await conn.execute(stmt))
    items = [
        AccountSummaryResponse(
            **{
                k: v
                for k, v in row._mapping.items()
                if k not in ("stale_sources", "sort_value", "change")
            },
            # a difference of two scores of 4 decimals, to 4 decimals (not -41.64149999999999)
            change=None if row.change is None else round(row.change, 4),
            stale_sources=list(row.stale_sources or ()),
        )
        for row in rows[:limit]
    ]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        value = last.sort_value.isoformat() if key == "updated" else last.sort_value
        next_cursor = encode_cursor(sort, value, last.account_id)
    return AccountPageResponse(items=items, next_cursor=next_cursor)


async def band_counts(conn: AsyncConnection, model: Model, query: AccountQuery) -> dict[str, int]:
    """How many accounts the query selects in each band, whatever bands it asks for."""
    rows = await conn.execute(
        select(ScoreRow.band, func.count())
        .where(and_(*_conditions(model, query, bands=False)))
        .group_by(ScoreRow.band)
    )
    return {band: count for band, count in rows}


@router.get(
    "", responses={**problem_responses(400, 401, 403, 422), **examples.ok(examples.ACCOUNTS)}
)
async def list_accounts(
    request: Request,
    caller: Reader,
    objective: Annotated[Name, Query()] = "churn_risk",
    band: Annotated[list[Name] | None, Query(max_length=10)] = None,
    segment: Annotated[Name | None, Query()] = None,
    industry: Annotated[Name | None, Query()] = None,
    tier: Annotated[Tier | None, Query()] = None,
    region: Annotated[Region | None, Query()] = None,
    min_score: Annotated[float | None, Query(ge=0, le=100)] = None,
    max_score: Annotated[float | None, Query(ge=0, le=100)] = None,
    stale_only: bool = False,
    changed_since: IsoDatetime | None = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=128,
            pattern=NO_CONTROL,
            description="the start of an account id or of the account's name, any case",
        ),
    ] = None,
    owner: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            pattern=NO_CONTROL,
            description="who looks after the account (its profile's `owner`), any case",
        ),
    ] = None,
    sort: SortKey = "score",
    limit: Annotated[int, Query(ge=1)] = 50,
    cursor: Annotated[str | None, Query(max_length=512, pattern=r"^[A-Za-z0-9_\-]+$")] = None,
) -> AccountPageResponse:
    """Accounts filtered by objective, band, segment, industry, tier, region, score range,
    staleness, recent change, id or name and owner, sorted, in pages. E.g. at-risk enterprise
    healthcare accounts: `?band=at_risk&tier=enterprise&industry=healthcare`; a CSM's own:
    `?owner=dana@example.com`."""
    query = AccountQuery(
        objective=objective,
        band=tuple(band or ()),
        segment=segment,
        industry=industry,
        tier=tier,
        region=region,
        min_score=min_score,
        max_score=max_score,
        stale_only=stale_only,
        changed_since=changed_since,
        q=q,
        owner=owner,
        sort=sort,
    )
    limit = min(limit, request.app.state.settings.api.max_page_size)
    async with _engine(request).connect() as conn:
        return await account_page(conn, request.app.state.models["active"], query, limit, cursor)

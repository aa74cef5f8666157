"""Model changes as people propose, review, promote and restore them (shared/proposals.py),
and what a proposal would do before anything changes.

Anyone with the `model` scope proposes; someone else with it approves, which starts the
proposal as the shadow model; promoting makes it active and retires the active one; any retired
version can be restored. Every scorer and API process follows the active and shadow models
within `SCORER__MODEL_FOLLOW_SECONDS`. The console's Models page takes the same steps through
these functions.
"""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Path, Query, Request, status
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.api import examples
from services.api.auth import Modeller, Reader
from services.api.health import stored_state
from services.api.preview import document_text, recent_news
from services.api.problems import Problem, problem_responses
from services.api.schemas import (
    BandMove,
    MovedAccount,
    ObjectiveImpact,
    ProposalImpact,
    ProposalRequest,
    ProposalResponse,
    ProposalsPage,
    ProposalStepRequest,
)
from shared import proposals
from shared.db import ScoreRow, account_views
from shared.errors import ConfigurationError
from shared.proposals import Proposal, ProposalRefused, Status
from shared.scoring.engine import evaluate, reads_news
from shared.scoring.model import Model, parse_model
from shared.scoring.news import News

router = APIRouter(tags=["models"])
ProposalId = Annotated[int, Path(ge=1, le=2**62)]
IMPACT_ACCOUNTS = 5_000  # evaluated twice each: ~1 s of the API's CPU
MOVED_LISTED = 200
_REFUSED = {
    "unknown": 404,
    "status": 409,
    "reviewer": 403,
    "unchanged": 409,
    "clash": 409,
    "note": 422,
}


def _engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


def response(found: Proposal) -> ProposalResponse:
    return ProposalResponse.model_validate(asdict(found))


async def propose(request: Request, body: ProposalRequest, author: str) -> ProposalResponse:
    """Record a proposal (the console proposes through this too)."""
    try:
        model = (
            parse_model(body.yaml, "yaml")
            if body.yaml is not None
            else Model.model_validate(body.document)
        )
    except (ConfigurationError, ValueError) as exc:
        raise Problem(422, str(exc)[:2000], slug="validation") from exc
    return await transacted(
        request, lambda conn, at: proposals.propose(conn, model, author, body.reason, at)
    )


async def transacted(request: Request, step: Any) -> ProposalResponse:
    """One step in a transaction of its own; a refused step is a problem."""
    try:
        async with _engine(request).begin() as conn:
            return response(await step(conn, datetime.now(UTC)))
    except ProposalRefused as exc:
        raise Problem(_REFUSED[exc.why], exc.detail, slug=f"proposal-{exc.why}") from exc


def step_of(name: str, proposal_id: int, actor: str, note: str) -> Any:
    return lambda conn, at: proposals.take(conn, name, proposal_id, actor, note, at)


@router.post(
    "/v1/models/proposals",
    status_code=status.HTTP_201_CREATED,
    responses={
        **problem_responses(400, 401, 403, 409, 413, 422),
        **examples.ok(examples.PROPOSAL, 201),
    },
)
async def create_proposal(
    request: Request, body: ProposalRequest, caller: Modeller
) -> ProposalResponse:
    """Propose a model change; someone else with the `model` scope approves it."""
    return await propose(request, body, caller.name)


@router.get(
    "/v1/models/proposals",
    responses={**problem_responses(401, 403, 422), **examples.ok({"items": [examples.PROPOSAL]})},
)
async def list_proposals(
    request: Request,
    caller: Reader,
    status_: Annotated[list[Status] | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ProposalsPage:
    """Proposals, newest first: the active and shadow models among them."""
    async with _engine(request).connect() as conn:
        found = await proposals.listed(conn, list(status_ or []), limit)
    return ProposalsPage(items=[response(p) for p in found])


@router.get(
    "/v1/models/proposals/{proposal_id}",
    responses={**problem_responses(401, 403, 404, 422), **examples.ok(examples.PROPOSAL)},
)
async def read_proposal(
    request: Request, proposal_id: ProposalId, caller: Reader
) -> ProposalResponse:
    """One proposal with every step taken on it."""
    return await transacted(request, lambda conn, _: proposals.read(conn, proposal_id))


@router.get(
    "/v1/models/proposals/{proposal_id}/impact",
    responses={**problem_responses(401, 403, 404, 422), **examples.ok(examples.IMPACT)},
)
async def proposal_impact(
    request: Request, proposal_id: ProposalId, caller: Reader
) -> ProposalImpact:
    """What the proposal would do if it were active now: the accounts whose band would move,
    and the diff of its document against the active model's."""
    active = request.app.state.models["active"]
    retention = request.app.state.settings.scorer.news_retention_days
    async with _engine(request).connect() as conn:
        return await impact(conn, active, proposal_id, retention)


@router.post(
    "/v1/models/proposals/{proposal_id}/{step}",
    responses={**problem_responses(400, 401, 403, 404, 409, 422), **examples.ok(examples.PROPOSAL)},
)
async def take_step(
    request: Request,
    proposal_id: ProposalId,
    step: Annotated[str, Path(pattern="^(approve|reject|promote|restore)$")],
    caller: Modeller,
    body: ProposalStepRequest | None = None,
) -> ProposalResponse:
    """`approve` (never the author's own: it starts as the shadow model), `reject`,
    `promote` (to active; the active one is retired) or `restore` (a retired one to active).
    Rejecting and restoring need a `note`."""
    note = body.note if body is not None else ""
    return await transacted(request, step_of(step, proposal_id, caller.name, note))


# --- impact ----------------------------------------------------------------------------------


async def impact(
    conn: AsyncConnection, active: Model, proposal_id: int, news_retention_days: float
) -> ProposalImpact:
    """The proposal against `active`, evaluated now over the stored states."""
    try:
        found = await proposals.read(conn, proposal_id, steps=False)
    except ProposalRefused as exc:
        raise Problem(404, exc.detail) from exc
    proposed = await proposals.document(conn, found.version)
    assert proposed is not None  # registered with the proposal
    at = datetime.now(UTC)
    news: News = ()
    if reads_news(active) or reads_news(proposed):
        news = await recent_news(conn, at, news_retention_days)
    accounts, sampled = await sample(conn)
    shared = [name for name in proposed.objectives if name in active.objectives]
    moves: dict[str, Counter[tuple[str, str]]] = {name: Counter() for name in shared}
    moved: dict[str, list[MovedAccount]] = {name: [] for name in shared}
    t = at.timestamp()
    for account_id, state, bands in accounts:
        now, then = (
            evaluate(active, state, t, bands, news),
            evaluate(proposed, state, t, bands, news),
        )
        for name in shared:
            a, b = now.scores[name], then.scores[name]
            moves[name][(a.band, b.band)] += 1
            if a.band != b.band:
                moved[name].append(
                    MovedAccount(
                        account_id=account_id,
                        from_band=a.band,
                        to_band=b.band,
                        score_before=a.score,
                        score_after=b.score,
                    )
                )
    return ProposalImpact(
        proposal_id=proposal_id,
        against=active.version,
        accounts=len(accounts),
        sampled=sampled,
        objectives=[
            ObjectiveImpact(
                objective=name,
                moves=[
                    BandMove(from_band=f, to_band=t_, accounts=n)
                    for (f, t_), n in sorted(moves[name].items())
                ],
                moved=sorted(moved[name], key=_change, reverse=True)[:MOVED_LISTED],
            )
            for name in shared
        ],
        added=sorted(set(proposed.objectives) - set(active.objectives)),
        removed=sorted(set(active.objectives) - set(proposed.objectives)),
        diff=diff(active, proposed),
    )


def _change(account: MovedAccount) -> float:
    if account.score_before is None or account.score_after is None:
        return float("inf")
    return abs(account.score_after - account.score_before)


def diff(before: Model, after: Model) -> str:
    def lines(model: Model) -> list[str]:
        document = model.model_dump(mode="json", exclude_defaults=True)
        return yaml.safe_dump(document, sort_keys=False, width=100).splitlines(keepends=True)

    return "".join(
        difflib.unified_diff(lines(before), lines(after), before.version, after.version, n=2)
    )


async def sample(conn: AsyncConnection) -> tuple[list[tuple[str, Any, dict[str, str]]], bool]:
    """Up to IMPACT_ACCOUNTS accounts' states and active bands: all of them, or a sample
    spread over the account ids by their hash."""
    views = account_views.c
    total = await conn.scalar(select(func.count()).select_from(account_views))
    query = select(views.account_id, views.state, views.legacy_state)
    if (total or 0) > IMPACT_ACCOUNTS:
        query = query.order_by(func.md5(views.account_id)).limit(IMPACT_ACCOUNTS)
    rows = (await conn.execute(query)).all()
    bands: dict[str, dict[str, str]] = {}
    for account_id, objective, band in await conn.execute(
        select(ScoreRow.account_id, ScoreRow.objective, ScoreRow.band).where(
            ScoreRow.model_role == "active",
            ScoreRow.account_id.in_([r.account_id for r in rows]),
        )
    ):
        bands.setdefault(account_id, {})[objective] = band
    accounts = [
        (
            r.account_id,
            stored_state(r.state, document_text(r.legacy_state)),
            bands.get(r.account_id, {}),
        )
        for r in rows
    ]
    return accounts, (total or 0) > IMPACT_ACCOUNTS

"""Parents and children: a parent's health rolled up from its children's (an account names its
parent in its profile, `parent_account_id`)."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api import examples
from services.api.auth import Reader
from services.api.problems import Problem, problem_responses
from services.api.routes.accounts import AccountId
from services.api.schemas import ChildAccount, ChildrenResponse, Name, Rollup
from shared.events import monthly_revenue
from shared.scoring.engine import UNKNOWN_BAND, band_for
from shared.scoring.model import Model

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])

_CHILDREN = text("""
SELECT a.account_id, a.name, a.owner, a.mrr_cents, a.currency, s.objective, s.score, s.band
FROM accounts a JOIN scores s ON s.account_id = a.account_id AND s.model_role = 'active'
WHERE a.parent_account_id = :parent
ORDER BY s.objective, s.score NULLS FIRST, a.account_id
LIMIT :limit
""")
_EXISTS = text("SELECT 1 FROM accounts WHERE account_id = :parent")


def rollup(model: Model, objective: str, children: list[ChildAccount]) -> Rollup:
    """The children's scores weighted by their MRR, or equally where none reports any."""
    scored = [(c, c.score) for c in children if c.score is not None]
    weights = [c.mrr or 0.0 for c, _ in scored]
    if not any(weights):
        weights = [1.0] * len(scored)
    total = sum(weights)
    weighted = sum(w * s for w, (_, s) in zip(weights, scored, strict=True))
    score = round(weighted / total, 4) if total else None
    spec = model.objectives.get(objective)
    band = band_for(score, spec.bands, None, 0.0) if spec else UNKNOWN_BAND
    weakest = min(scored, key=lambda cs: (cs[1], cs[0].account_id))[0] if scored else None
    return Rollup(
        objective=objective, score=score, band=band, children=len(scored), weakest=weakest
    )


async def read_children(
    engine: AsyncEngine, model: Model, parent: str, objective: str | None, limit: int
) -> ChildrenResponse | None:
    """A parent's children and its rollup per objective (None: no such account or parent)."""
    async with engine.connect() as conn:
        rows = list(await conn.execute(_CHILDREN, {"parent": parent, "limit": limit}))
        if not rows and await conn.scalar(_EXISTS, {"parent": parent}) is None:
            return None
    items = [
        ChildAccount(
            account_id=r.account_id,
            name=r.name,
            owner=r.owner,
            mrr=None if r.mrr_cents is None else monthly_revenue(r.mrr_cents, r.currency),
            currency=r.currency,
            objective=r.objective,
            score=r.score,
            band=r.band,
        )
        for r in rows
        if objective is None or r.objective == objective
    ]
    by_objective: dict[str, list[ChildAccount]] = defaultdict(list)
    for item in items:
        by_objective[item.objective].append(item)
    return ChildrenResponse(
        account_id=parent,
        rollups=[rollup(model, o, children) for o, children in by_objective.items()],
        items=items,
    )


@router.get(
    "/{account_id}/children",
    responses={**problem_responses(400, 401, 403, 404, 422), **examples.ok(examples.CHILDREN)},
)
async def get_children(
    request: Request,
    account_id: AccountId,
    caller: Reader,
    objective: Annotated[Name | None, Query()] = None,
) -> ChildrenResponse:
    """The accounts that name this one their parent, each with its score, and this account's
    health rolled up from theirs: per objective, the children's scores weighted by MRR, its
    band, and the weakest child. 404 when the account is neither known nor anyone's parent."""
    found = await read_children(
        request.app.state.engine,
        request.app.state.models["active"],
        account_id,
        objective,
        10 * request.app.state.settings.api.max_page_size,
    )
    if found is None:
        raise Problem(404, f"no account {account_id!r}")
    return found

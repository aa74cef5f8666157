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
from shared.scoring.model import Model
from shared.scoring.rollup import roll_up

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])

_CHILDREN = text("""
SELECT a.account_id, a.name, a.owner, a.mrr_cents, a.currency, s.objective, s.score, s.band
FROM accounts a JOIN scores s ON s.account_id = a.account_id AND s.model_role = 'active'
WHERE a.parent_account_id = :parent
ORDER BY s.objective, s.score NULLS FIRST, a.account_id
""")
_EXISTS = text("SELECT 1 FROM accounts WHERE account_id = :parent")
# the bands last rolled up (services/scorer/rollups.py), which a band leaves past hysteresis
_BANDS = text("SELECT objective, band FROM parent_rollups WHERE parent_account_id = :parent")


def rollup(
    model: Model, objective: str, children: list[ChildAccount], previous: str | None
) -> Rollup:
    rolled = roll_up(model, objective, children, previous)
    return Rollup(
        objective=objective,
        score=rolled.score,
        band=rolled.band,
        children=rolled.children,
        weakest=rolled.weakest,
    )


async def read_children(
    engine: AsyncEngine, model: Model, parent: str, objective: str | None, limit: int
) -> ChildrenResponse | None:
    """A parent's children (the first `limit`) and its rollup per objective, over them all
    (None: no such account or parent)."""
    async with engine.connect() as conn:
        rows = list(await conn.execute(_CHILDREN, {"parent": parent}))
        if not rows and await conn.scalar(_EXISTS, {"parent": parent}) is None:
            return None
        bands = {r.objective: r.band for r in await conn.execute(_BANDS, {"parent": parent})}
    children = [
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
    for child in children:
        by_objective[child.objective].append(child)
    return ChildrenResponse(
        account_id=parent,
        rollups=[rollup(model, o, c, bands.get(o)) for o, c in by_objective.items()],
        items=children[:limit],
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
    band, and the weakest child. The band leaves the one last rolled up only past the
    objective's hysteresis, and each change of it is sent as an
    `io.account-health.rollup.changed` event. 404 when the account is neither known nor
    anyone's parent."""
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

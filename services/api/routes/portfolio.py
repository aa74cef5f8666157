"""The portfolio: how many accounts and how much recurring revenue sit in each band, grouped
by segment, industry, tier, region or owner; the trend by day; the accounts that got worse."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Query, Request
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api import examples
from services.api.auth import Reader
from services.api.problems import problem_responses
from services.api.routes.accounts import known_names
from services.api.schemas import (
    BandFigure,
    Name,
    PortfolioDay,
    PortfolioGroup,
    PortfolioResponse,
    WorsenedAccount,
)
from shared.events import monthly_revenue
from shared.scoring.engine import UNKNOWN_BAND
from shared.scoring.model import Model

router = APIRouter(prefix="/v1/portfolio", tags=["portfolio"])
By = Literal["segment", "industry", "tier", "region", "owner"]
BY: tuple[str, ...] = get_args(By)
# the column each grouping reads: the score row's copy of the account's attributes where it has
# one (migration 0013), the account's own row for its owner
_KEYS: dict[str | None, str] = {
    None: "NULL",
    "segment": "s.segment",
    "industry": "s.industry",
    "tier": "s.tier",
    "region": "s.region",
    "owner": "a.owner",
}
_NOW = """
SELECT {key} AS key, s.band, coalesce(a.currency, '') AS currency, count(*) AS accounts,
       coalesce(sum(a.mrr_cents), 0)::bigint AS mrr_cents
FROM scores s LEFT JOIN accounts a ON a.account_id = s.account_id
WHERE s.objective = :objective AND s.model_role = 'active'
GROUP BY 1, 2, 3
"""
_DAYS = text("""
SELECT day, band, currency, accounts, mrr_cents FROM portfolio_days
WHERE objective = :objective AND day >= :since ORDER BY day
""")
_WORSENED = text("""
SELECT h.account_id, a.name, a.owner, h.old_band, h.new_band, h.new_score AS score, h.at
FROM score_history h LEFT JOIN accounts a ON a.account_id = h.account_id
WHERE h.objective = :objective AND h.model_role = 'active' AND h.at >= :since
  AND h.old_band IS NOT NULL AND h.old_band <> h.new_band
  AND array_position(CAST(:bands AS VARCHAR[]), h.new_band)
      < array_position(CAST(:bands AS VARCHAR[]), h.old_band)
ORDER BY h.at DESC LIMIT :limit
""")


def _money(cents: dict[str, int]) -> dict[str, float]:
    return {c: monthly_revenue(n, c) for c, n in sorted(cents.items()) if c}


def _figures(rows: list[Any], bands: list[str]) -> tuple[int, dict[str, float], list[BandFigure]]:
    """(accounts, mrr, per band in the objective's order) of rows of (band, currency,
    accounts, mrr_cents)."""
    accounts: dict[str, int] = defaultdict(int)
    mrr: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for band, currency, n, cents in rows:
        accounts[band] += n
        mrr[band][currency] += cents
    order = bands + sorted(set(accounts) - set(bands))
    per_band = [
        BandFigure(band=b, accounts=accounts[b], mrr=_money(mrr[b])) for b in order if b in accounts
    ]
    total: dict[str, int] = defaultdict(int)
    for cents in mrr.values():
        for currency, n in cents.items():
            total[currency] += n
    return sum(accounts.values()), _money(total), per_band


async def read_portfolio(
    engine: AsyncEngine,
    model: Model,
    objective: str,
    by: str | None,
    days: int,
    worsened_days: int,
    limit: int,
) -> PortfolioResponse:
    """The portfolio as `GET /v1/portfolio` answers it (the console's page reads it too)."""
    known_names(model, objective)
    order = [UNKNOWN_BAND, *(b.name for b in model.objectives[objective].bands)]  # worst first
    now = datetime.now(UTC)
    async with engine.connect() as conn:
        rows = list(await conn.execute(text(_NOW.format(key=_KEYS[by])), {"objective": objective}))
        history = list(
            await conn.execute(
                _DAYS, {"objective": objective, "since": (now - timedelta(days=days)).date()}
            )
        )
        worse = list(
            await conn.execute(
                _WORSENED,
                {
                    "objective": objective,
                    "since": now - timedelta(days=worsened_days),
                    "bands": order,
                    "limit": limit,
                },
            )
        )
    accounts, mrr, per_band = _figures([r[1:] for r in rows], order)
    groups: dict[Any, list[Any]] = defaultdict(list)
    for row in rows:
        groups[row.key].append(row[1:])
    grouped = []
    for key, group in groups.items():
        n, money, figures = _figures(group, order)
        grouped.append(PortfolioGroup(key=key, accounts=n, mrr=money, bands=figures))
    grouped.sort(key=lambda g: (-g.accounts, g.key or ""))
    by_day: dict[Any, list[Any]] = defaultdict(list)
    for row in history:
        by_day[row.day].append(row[1:])
    return PortfolioResponse(
        objective=objective,
        bands=order,
        total=PortfolioGroup(key=None, accounts=accounts, mrr=mrr, bands=per_band),
        by=by,
        groups=grouped if by else [],
        days=[PortfolioDay(day=d, bands=_figures(r, order)[2]) for d, r in by_day.items()],
        worsened=[WorsenedAccount.model_validate(r, from_attributes=True) for r in worse],
    )


@router.get("", responses={**problem_responses(401, 403, 422), **examples.ok(examples.PORTFOLIO)})
async def get_portfolio(
    request: Request,
    caller: Reader,
    objective: Annotated[Name, Query()] = "churn_risk",
    by: By | None = None,
    days: Annotated[int, Query(ge=1, le=730, description="days of trend")] = 90,
    worsened_days: Annotated[int, Query(ge=1, le=90)] = 7,
) -> PortfolioResponse:
    """Accounts and MRR per band of the active model for one objective, in all and grouped
    `by` an attribute; each day's figures for the last `days`; and the accounts whose band got
    worse in the last `worsened_days` (newest first, at most a page)."""
    return await read_portfolio(
        request.app.state.engine,
        request.app.state.models["active"],
        objective,
        by,
        days,
        worsened_days,
        request.app.state.settings.api.max_page_size,
    )

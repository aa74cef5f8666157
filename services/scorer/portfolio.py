"""The portfolio by band: how many accounts and how much recurring revenue each band holds.

One scorer counts (the one that also counts the band gauge: relay.py), as often as the band
gauge is refreshed, and records the active model's figures of the day in `portfolio_days`: the
row of today is brought up to date at each count, so a past day keeps its last count, its
figures at the end of that day (UTC). The days are kept as long as the score history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

_COUNT = text("""
SELECT s.objective, s.model_role, s.band, coalesce(a.currency, '') AS currency, count(*),
       coalesce(sum(a.mrr_cents), 0)::bigint AS mrr_cents
FROM scores s LEFT JOIN accounts a ON a.account_id = s.account_id
GROUP BY 1, 2, 3, 4
""")
_RECORD = text("""
INSERT INTO portfolio_days (day, objective, band, currency, accounts, mrr_cents)
SELECT :day, u.objective, u.band, u.currency, u.accounts, u.mrr_cents
FROM unnest(CAST(:objectives AS VARCHAR[]), CAST(:bands AS VARCHAR[]),
            CAST(:currencies AS VARCHAR[]), CAST(:accounts AS INTEGER[]),
            CAST(:mrr AS BIGINT[])) AS u(objective, band, currency, accounts, mrr_cents)
ON CONFLICT (day, objective, band, currency)
DO UPDATE SET accounts = EXCLUDED.accounts, mrr_cents = EXCLUDED.mrr_cents
""")
_FORGET = text("DELETE FROM portfolio_days WHERE day = :day")
_PRUNE = text("DELETE FROM portfolio_days WHERE day < :before")


@dataclass(frozen=True, slots=True)
class BandFigures:
    objective: str
    model_role: str
    band: str
    currency: str  # '' where the account reported no subscription
    accounts: int
    mrr_cents: int


async def count(engine: AsyncEngine, day: date) -> list[BandFigures]:
    """Every score by objective, role, band and currency, with their accounts' MRR; the
    active model's figures recorded as the day's."""
    async with engine.begin() as conn:
        figures = [BandFigures(*row) for row in await conn.execute(_COUNT)]
        active = [f for f in figures if f.model_role == "active"]
        await conn.execute(_FORGET, {"day": day})  # a band emptied since is not left behind
        if active:
            await conn.execute(
                _RECORD,
                {
                    "day": day,
                    "objectives": [f.objective for f in active],
                    "bands": [f.band for f in active],
                    "currencies": [f.currency for f in active],
                    "accounts": [f.accounts for f in active],
                    "mrr": [f.mrr_cents for f in active],
                },
            )
    return figures


async def prune(engine: AsyncEngine, now: datetime, keep_days: int) -> int:
    async with engine.begin() as conn:
        result = await conn.execute(_PRUNE, {"before": now.date() - timedelta(days=keep_days)})
    return int(result.rowcount or 0)

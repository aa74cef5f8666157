"""What an override would do, before anyone saves it: the account's scores evaluated now from
its stored state, once as it stands and once with the proposed override among its active
ones. Nothing is written. The scorer applies a saved override from the same state with the
same engine, so the preview is the score it will set, unless new signals arrive first.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.api.health import stored_state
from shared.db import MarketNewsRow, ScoreRow, account_views
from shared.scoring.engine import ObjectiveScore, evaluate, reads_news
from shared.scoring.model import Model
from shared.scoring.news import News, NewsItem, ordered
from shared.scoring.state import AccountState

PREVIEW_ID = "preview"


def preview(
    model: Model,
    state: AccountState,
    proposal: dict[str, Any],
    at: datetime,
    bands: dict[str, str],
    news: News = (),
) -> dict[str, tuple[ObjectiveScore, ObjectiveScore]]:
    """Per objective: its score now without the proposal, and with it (`proposal` has the
    override's action, objective, value, author, reason and expires_at)."""
    t = at.timestamp()
    before = evaluate(model, state, t, bands, news)
    state.overrides[PREVIEW_ID] = {
        **proposal,
        "override_id": PREVIEW_ID,
        "expires_at": proposal["expires_at"].isoformat(),
        "set_at": t,
    }
    try:
        after = evaluate(model, state, t, bands, news)
    finally:
        del state.overrides[PREVIEW_ID]
    return {name: (score, after.scores[name]) for name, score in before.scores.items()}


async def account_for_preview(
    conn: AsyncConnection, model: Model, account_id: str, at: datetime, retention_days: float
) -> tuple[AccountState, dict[str, str], News] | None:
    """The stored state, the current bands (their hysteresis) and, for a model that reads
    news, the news it would read; None when there is no such account."""
    views = account_views.c
    found = (
        await conn.execute(
            select(views.state, views.legacy_state).where(views.account_id == account_id)
        )
    ).one_or_none()
    if found is None:
        return None
    rows = await conn.execute(
        select(ScoreRow.objective, ScoreRow.band).where(
            ScoreRow.account_id == account_id, ScoreRow.model_role == "active"
        )
    )
    bands = {objective: band for objective, band in rows}
    news = await recent_news(conn, at, retention_days) if reads_news(model) else ()
    return stored_state(found.state, document_text(found.legacy_state)), bands, news


async def recent_news(conn: AsyncConnection, at: datetime, retention_days: float) -> News:
    """The market news a model reading news would read at `at`, in order."""
    rows = await conn.execute(
        select(MarketNewsRow).where(
            MarketNewsRow.occurred_at >= at - timedelta(days=retention_days),
            MarketNewsRow.occurred_at <= at,
        )
    )
    return ordered(
        tuple(
            NewsItem.of(
                r.event_id,
                r.occurred_at.timestamp(),
                {"scope": r.scope, "topic": r.topic, "impact": r.impact, "title": r.title},
            )
            for r in rows
        )
    )


def document_text(document: Any) -> str | None:
    """A document SQLAlchemy decoded, as its JSON text again (None stays None)."""
    return None if document is None else orjson.dumps(document).decode()

"""The score history's months on a real PostgreSQL: created ahead, dropped past retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scorer.history_months import DEFAULT, add_months, maintain, month_name, month_start

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _insert(engine: AsyncEngine, at: datetime) -> str:
    """A history row at `at`; the partition it landed in."""
    async with engine.begin() as conn:
        return str(
            await conn.scalar(
                text(
                    "INSERT INTO score_history (account_id, objective, model_role, model_version,"
                    " at, new_score, new_band, cause, top_movers, signal_ids, recorded_at)"
                    " VALUES ('acc-1', 'churn_risk', 'active', 'v1', :at, 50, 'neutral',"
                    " 'signals', '[]', '[]', now()) RETURNING tableoid::regclass::text"
                ),
                {"at": at},
            )
        )


async def _count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM score_history")) or 0)


async def test_months_are_created_ahead_and_dropped_whole_past_retention(
    engine: AsyncEngine,
) -> None:
    now = datetime.now(UTC)
    first = add_months(month_start(now), 1)  # this month is still the migration's "before"
    done = await maintain(engine, now, retention_days=730)
    assert done.created == [month_name(first), month_name(add_months(first, 1))]
    assert (await maintain(engine, now, retention_days=730)).created == []  # idempotent

    assert await _insert(engine, now - timedelta(days=800)) == "score_history_before"
    assert await _insert(engine, first + timedelta(days=1)) == month_name(first)
    far = month_start(now + timedelta(days=3650)) + timedelta(days=3)
    assert await _insert(engine, far) == DEFAULT  # no month of its own yet
    assert await _count(engine) == 3

    done = await maintain(engine, now, retention_days=730)  # the row 800 days old goes
    assert (done.deleted, done.dropped) == (1, [])
    assert await _count(engine) == 2

    # two years after `first` ended, it is past retention and dropped whole; its successor,
    # which ends a month later, is kept
    later = add_months(first, 1) + timedelta(days=731)
    done = await maintain(engine, later, retention_days=730)
    assert done.dropped == [month_name(first)]
    assert await _count(engine) == 1

    # a month whose rows went to the default partition cannot be created: left as it is, and
    # the months after it are created
    done = await maintain(engine, far, retention_days=730)
    assert month_name(month_start(far)) not in done.created
    assert done.created == [month_name(add_months(month_start(far), n)) for n in (1, 2)]
    assert await _insert(engine, far) == DEFAULT
    assert await _insert(engine, add_months(month_start(far), 1)) == month_name(
        add_months(month_start(far), 1)
    )

"""The score history's months (migration 0012): created ahead, dropped past retention.

`score_history` is partitioned by `at`: a partition per month from the migration on, one for
everything before (`score_history_before`) and a default one for a row that finds no month.
Every scorer runs `maintain` hourly (and on start); an advisory lock lets one at a time do it.
It creates this month and the next MONTHS_AHEAD, drops the months that ended before the
retention cut-off (`scorer.history_retention_days`) whole, and deletes the rows older than the
cut-off from the partitions before and outside the months (indexed by `at` for that).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = structlog.get_logger(__name__)

MONTHS_AHEAD = 2
LOCK = 7_004_912  # the advisory lock key of this job
BEFORE, DEFAULT = "score_history_before", "score_history_default"
_MONTH = re.compile(r"^score_history_(\d{4})_(\d{2})$")
_UPPER = re.compile(r"TO \('([^']+)'\)")


@dataclass
class Maintained:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    deleted: int = 0  # rows, from the partitions before and outside the months
    skipped: bool = False  # another scorer held the lock


def month_start(t: datetime) -> datetime:
    return datetime(t.year, t.month, 1, tzinfo=UTC)


def add_months(start: datetime, n: int) -> datetime:
    months = start.year * 12 + start.month - 1 + n
    return datetime(months // 12, months % 12 + 1, 1, tzinfo=UTC)


def month_name(start: datetime) -> str:
    return f"score_history_{start:%Y_%m}"


async def _partitions(conn: AsyncConnection) -> dict[str, str]:
    """Partition name -> its bounds as PostgreSQL prints them (in UTC)."""
    rows = await conn.execute(
        text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'score_history'::regclass"
        )
    )
    return {r[0]: r[1] for r in rows}


async def maintain(engine: AsyncEngine, now: datetime, retention_days: int) -> Maintained:
    done = Maintained()
    cutoff = now - timedelta(days=retention_days)
    async with engine.begin() as conn:
        if not await conn.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": LOCK}):
            done.skipped = True
            return done
        await conn.execute(text("SET LOCAL TimeZone = 'UTC'"))
        partitions = await _partitions(conn)
        before = _UPPER.search(partitions.get(BEFORE, ""))
        months_from = (
            datetime.fromisoformat(before[1]) if before else datetime.min.replace(tzinfo=UTC)
        )
        for n in range(MONTHS_AHEAD + 1):
            start = add_months(month_start(now), n)
            name = month_name(start)
            if start < months_from or name in partitions:
                continue
            bounds = f"FROM ('{start.isoformat()}') TO ('{add_months(start, 1).isoformat()}')"
            try:
                async with conn.begin_nested():
                    await conn.execute(
                        text(f"CREATE TABLE {name} PARTITION OF score_history FOR VALUES {bounds}")
                    )
                done.created.append(name)
            except DBAPIError as exc:  # the default partition holds rows of that month already
                log.warning("scorer.history_month_not_created", partition=name, error=str(exc.orig))
        for name in partitions:
            if (match := _MONTH.match(name)) is None:
                continue
            start = datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC)
            if add_months(start, 1) <= cutoff:
                await conn.execute(text(f"DROP TABLE {name}"))
                done.dropped.append(name)
        for name in (BEFORE, DEFAULT):
            result = await conn.execute(text(f"DELETE FROM {name} WHERE at < :t"), {"t": cutoff})
            done.deleted += int(result.rowcount or 0)
    if done.created or done.dropped or done.deleted:
        log.info(
            "scorer.history_maintained",
            created=done.created,
            dropped=done.dropped,
            deleted_rows=done.deleted,
            cutoff=cutoff.isoformat(),
        )
    return done

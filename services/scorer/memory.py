"""The de-duplication memory's periods (migration 0015): created ahead, dropped past the horizon.

`seen_signals` holds the ids each account took, a row per account and period of SEEN_PERIOD
(shared/db.py), partitioned by period: a partition per period, and a default one for a row that
finds none (a period not created in time, a test's clock far from now). Every scorer runs
`maintain` hourly (and on start) beside the history's months; an advisory lock lets one at a
time do it. It creates the periods from the oldest within the horizon to PERIODS_AHEAD after
the current one, drops the periods that ended before the horizon (`scorer.dedup_horizon_hours`)
whole, and deletes the rows of such periods from the default partition. Dropping a period is
what lets its ids go: no row is rewritten to forget one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import seen_period

log = structlog.get_logger(__name__)

PERIODS_AHEAD = 2
LOCK = 7_004_913  # the advisory lock key of this job
DEFAULT = "seen_signals_default"
_PERIOD = re.compile(r"^seen_signals_p(\d+)$")


@dataclass
class Maintained:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    deleted: int = 0  # rows, from the default partition
    skipped: bool = False  # another scorer held the lock


def first_kept(now: float, horizon_seconds: float) -> int:
    """The oldest period that may hold an id still within the horizon."""
    return seen_period(now - horizon_seconds)


async def maintain(engine: AsyncEngine, now: datetime, horizon_seconds: float) -> Maintained:
    done = Maintained()
    current, oldest = seen_period(now.timestamp()), first_kept(now.timestamp(), horizon_seconds)
    async with engine.begin() as conn:
        if not await conn.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": LOCK}):
            done.skipped = True
            return done
        names = set(
            await conn.scalars(
                text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                    " WHERE i.inhparent = 'seen_signals'::regclass"
                )
            )
        )
        for period in range(oldest, current + PERIODS_AHEAD + 1):
            name = f"seen_signals_p{period}"
            if name in names:
                continue
            try:
                async with conn.begin_nested():
                    await conn.execute(
                        text(
                            f"CREATE TABLE {name} PARTITION OF seen_signals"
                            f" FOR VALUES FROM ({period}) TO ({period + 1})"
                        )
                    )
                done.created.append(name)
            except DBAPIError as exc:  # the default partition holds rows of that period
                log.warning("scorer.memory_period_not_created", partition=name, error=str(exc.orig))
        for name in names:
            if (match := _PERIOD.match(name)) is not None and int(match[1]) < oldest:
                await conn.execute(text(f"DROP TABLE {name}"))
                done.dropped.append(name)
        result = await conn.execute(
            text(f"DELETE FROM {DEFAULT} WHERE period < :oldest"), {"oldest": oldest}
        )
        done.deleted = int(result.rowcount or 0)
    if done.created or done.dropped or done.deleted:
        log.info(
            "scorer.memory_maintained",
            created=done.created,
            dropped=done.dropped,
            deleted_rows=done.deleted,
            oldest_period=oldest,
        )
    return done

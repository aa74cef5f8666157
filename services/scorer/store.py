"""The scorer's PostgreSQL reads and its one-transaction-per-batch write.

`write_batch` writes, in ONE transaction: the consumed offsets (fenced), changed account state,
current scores, history rows and outbox rows. The offsets row of each partition doubles as the
fence: the update only matches if the stored offset is still the one this scorer read on
assignment (or last wrote); a scorer that lost the partition in a rebalance finds it moved on,
raises FencedOut, and the whole transaction rolls back. The row lock taken by that update also
serialises two writers of one partition until the first commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db import (
    AccountRow,
    ConsumerOffsetRow,
    OutboxRow,
    ScoreHistoryRow,
    ScoreRow,
)
from shared.errors import FencedOut
from shared.scoring.engine import Contributions, contributions


@dataclass
class StoredScore:
    score: float | None
    band: str
    factors: Contributions  # compact: what top_movers needs, not the whole explanation
    recorded_score: float | None
    previous_score: float | None
    alert_baseline: float | None
    model_version: str
    changed_at: datetime


@dataclass
class Batch:
    """Everything one transaction writes. `fences` maps (topic, partition) to the stored
    offset expected now and the offset to store (equal for sweep-only writes)."""

    fences: dict[tuple[str, int], tuple[int | None, int]] = field(default_factory=dict)
    accounts: list[dict[str, Any]] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)


async def load_offsets(
    engine: AsyncEngine, group_id: str, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    wanted = list(partitions)
    if not wanted:
        return {}
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(
                ConsumerOffsetRow.topic, ConsumerOffsetRow.partition, ConsumerOffsetRow.next_offset
            )
            .where(ConsumerOffsetRow.group_id == group_id)
            .where(ConsumerOffsetRow.topic.in_({t for t, _ in wanted}))
        )
        stored = {(r.topic, r.partition): r.next_offset for r in rows}
    return {tp: stored[tp] for tp in wanted if tp in stored}


async def load_accounts(
    engine: AsyncEngine, account_ids: Sequence[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[tuple[str, str], StoredScore]]]:
    """The stored state documents and current scores of these accounts."""
    states: dict[str, dict[str, Any]] = {}
    scores: dict[str, dict[tuple[str, str], StoredScore]] = {}
    if not account_ids:
        return states, scores
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(AccountRow.account_id, AccountRow.state).where(
                AccountRow.account_id.in_(account_ids)
            )
        )
        states = {r.account_id: r.state for r in rows}
        rows = await conn.execute(
            select(
                ScoreRow.account_id,
                ScoreRow.objective,
                ScoreRow.model_role,
                ScoreRow.score,
                ScoreRow.band,
                ScoreRow.explanation["factors"].label("factors"),
                ScoreRow.recorded_score,
                ScoreRow.previous_score,
                ScoreRow.alert_baseline,
                ScoreRow.model_version,
                ScoreRow.changed_at,
            ).where(ScoreRow.account_id.in_(account_ids))
        )
        for r in rows:
            scores.setdefault(r.account_id, {})[(r.objective, r.model_role)] = StoredScore(
                r.score,
                r.band,
                contributions(r.factors or ()),
                r.recorded_score,
                r.previous_score,
                r.alert_baseline,
                r.model_version,
                r.changed_at,
            )
    return states, scores


async def due_for_review(
    engine: AsyncEngine, partitions: Sequence[int], now: datetime, limit: int
) -> list[tuple[str, int]]:
    if not partitions:
        return []
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(AccountRow.account_id, AccountRow.partition)
            .where(AccountRow.partition.in_(partitions))
            .where(AccountRow.next_review_at <= now)
            .order_by(AccountRow.next_review_at)
            .limit(limit)
        )
        return [(r.account_id, r.partition) for r in rows]


async def schedule_model_change(
    engine: AsyncEngine,
    partitions: Sequence[int],
    expected: list[tuple[str, str, str]],
    now: datetime,
) -> int:
    """Make every account of `partitions` whose score rows are not exactly `expected`
    ((role, objective, model version) of the configured models) due for review now, and drop
    score rows of roles or objectives no longer configured. The sweep then re-scores those
    accounts from stored state in batches, between consumed batches. Returns how many."""
    if not partitions:
        return 0
    key = tuple_(ScoreRow.model_role, ScoreRow.objective)
    up_to_date = (
        select(func.count())
        .where(
            ScoreRow.account_id == AccountRow.account_id,
            tuple_(ScoreRow.model_role, ScoreRow.objective, ScoreRow.model_version).in_(expected),
        )
        .scalar_subquery()
    )
    async with engine.begin() as conn:
        owned = select(AccountRow.account_id).where(AccountRow.partition.in_(partitions))
        await conn.execute(
            delete(ScoreRow).where(
                ScoreRow.account_id.in_(owned),
                key.not_in([(role, objective) for role, objective, _ in expected]),
            )
        )
        result = await conn.execute(
            update(AccountRow)
            .where(
                AccountRow.partition.in_(partitions),
                func.coalesce(AccountRow.next_review_at > now, True),
                up_to_date != len(expected),
            )
            .values(next_review_at=now)
        )
        return int(result.rowcount)


async def _fence(
    conn: AsyncConnection,
    group_id: str,
    topic: str,
    partition: int,
    expected: int | None,
    new: int,
    now: datetime,
) -> None:
    if expected is None:
        inserted = await conn.execute(
            insert(ConsumerOffsetRow)
            .values(
                group_id=group_id, topic=topic, partition=partition, next_offset=new, updated_at=now
            )
            .on_conflict_do_nothing()
        )
        if inserted.rowcount == 1:
            return
    result = await conn.execute(
        update(ConsumerOffsetRow)
        .where(
            and_(
                ConsumerOffsetRow.group_id == group_id,
                ConsumerOffsetRow.topic == topic,
                ConsumerOffsetRow.partition == partition,
                ConsumerOffsetRow.next_offset == (expected if expected is not None else -1),
            )
        )
        .values(next_offset=new, updated_at=now)
    )
    if result.rowcount != 1:
        raise FencedOut(
            f"{topic}[{partition}] moved past offset {expected}: another scorer owns it now"
        )


def _upsert(table: Any, keys: Sequence[str], rows: list[dict[str, Any]]) -> Any:
    stmt = insert(table)
    columns = {c: getattr(stmt.excluded, c) for c in rows[0] if c not in keys}
    return stmt.on_conflict_do_update(index_elements=list(keys), set_=columns)


async def write_batch(engine: AsyncEngine, group_id: str, batch: Batch, now: datetime) -> None:
    async with engine.begin() as conn:
        for (topic, partition), (expected, new) in sorted(batch.fences.items()):
            await _fence(conn, group_id, topic, partition, expected, new, now)
        if batch.accounts:
            await conn.execute(_upsert(AccountRow, ["account_id"], batch.accounts), batch.accounts)
        if batch.scores:
            await conn.execute(
                _upsert(ScoreRow, ["account_id", "objective", "model_role"], batch.scores),
                batch.scores,
            )
        if batch.history:
            await conn.execute(insert(ScoreHistoryRow), batch.history)
        if batch.outbox:
            await conn.execute(insert(OutboxRow).on_conflict_do_nothing(), batch.outbox)


# --- outbox relay ---------------------------------------------------------------------------


async def claim_outbox(conn: AsyncConnection, limit: int) -> list[Any]:
    rows = await conn.execute(
        select(
            OutboxRow.id,
            OutboxRow.event_id,
            OutboxRow.topic,
            OutboxRow.key,
            OutboxRow.payload,
            OutboxRow.content_type,
        )
        .where(OutboxRow.sent_at.is_(None))
        .order_by(OutboxRow.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(rows)


async def mark_sent(conn: AsyncConnection, ids: Sequence[int], now: datetime) -> None:
    await conn.execute(update(OutboxRow).where(OutboxRow.id.in_(ids)).values(sent_at=now))


async def outbox_backlog(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            select(func.count()).select_from(OutboxRow).where(OutboxRow.sent_at.is_(None))
        )
    return int(count or 0)


async def prune_outbox(engine: AsyncEngine, older_than: datetime) -> int:
    async with engine.begin() as conn:
        result = await conn.execute(
            text("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < :t"), {"t": older_than}
        )
    return int(result.rowcount or 0)


async def band_counts(engine: AsyncEngine) -> list[tuple[str, str, str, int]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(ScoreRow.objective, ScoreRow.model_role, ScoreRow.band, func.count()).group_by(
                ScoreRow.objective, ScoreRow.model_role, ScoreRow.band
            )
        )
        return [(r[0], r[1], r[2], int(r[3])) for r in rows]

"""Market news in the scorer: stored once, read by every scorer, applied to whom it concerns.

A market event (shared.events.MarketEvent) names no account. The scorer that consumes one
stores it in `market_news` (by its event id, so a re-delivery stores nothing); every scorer
keeps the news of the last `news_retention_days` in memory (`NewsBook.items`) and hands it to
every evaluation. At each sweep, between batches, a scorer reads the news stored since it last
looked and makes the accounts of its partitions that a new item concerns due now, recording in
each partition's offsets row the newest item it has done that for (`news_applied`): the sweep
then re-scores them with the news in hand, and a scorer that takes the partition over later
(or restarts) makes due only what is newer. Until then a batch may score an account with news
up to one sweep interval old; the sweep that follows corrects it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import AccountRow, AccountStateRow, ConsumerOffsetRow, MarketNewsRow
from shared.scoring.news import News, NewsItem, ordered
from shared.scoring.state import Fact


def news_of(facts: Iterable[Fact]) -> list[NewsItem]:
    return [NewsItem.of(f.signal_id, f.t, f.data) for f in facts]


async def store_news(engine: AsyncEngine, items: Sequence[NewsItem], now: datetime) -> None:
    """Store news items, each once (an event id stored already is left as it is)."""
    if not items:
        return
    rows = [
        {
            "event_id": item.event_id,
            "occurred_at": datetime.fromtimestamp(item.t, now.tzinfo),
            "scope": {name: sorted(values) for name, values in item.scope},
            "topic": item.topic,
            "impact": item.impact,
            "title": item.title,
            "stored_at": now,
        }
        for item in items
    ]
    async with engine.begin() as conn:
        await conn.execute(insert(MarketNewsRow).values(rows).on_conflict_do_nothing())


@dataclass
class NewsBook:
    group_id: str  # the scorers' consumer group and topic: whose offsets rows record the news
    topic: str
    retention_days: float
    items: News = ()  # in the order evaluations read them (shared.scoring.news.ordered)
    by_id: dict[str, NewsItem] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)  # event id -> row id
    newest: int = 0  # the newest row id read
    stored: bool = False  # news stored since the last sweep: sweep soon

    async def store(self, engine: AsyncEngine, items: Sequence[NewsItem], now: datetime) -> None:
        await store_news(engine, items, now)
        self.stored = self.stored or bool(items)

    async def refresh(self, engine: AsyncEngine, now: datetime) -> None:
        """Read the news stored since the last look; let go of what is past retention."""
        floor = now - timedelta(days=self.retention_days)
        async with engine.connect() as conn:
            newest = (await conn.execute(select(func.max(MarketNewsRow.id)))).scalar() or 0
            rows = []
            if newest > self.newest:
                rows = list(
                    await conn.execute(
                        select(MarketNewsRow)
                        .where(MarketNewsRow.id > self.newest, MarketNewsRow.occurred_at >= floor)
                        .order_by(MarketNewsRow.id)
                    )
                )
        kept = [item for item in self.items if item.t >= floor.timestamp()]
        for row in rows:
            data = {
                "scope": row.scope,
                "topic": row.topic,
                "impact": row.impact,
                "title": row.title,
            }
            kept.append(NewsItem.of(row.event_id, row.occurred_at.timestamp(), data))
            self.ids[row.event_id] = row.id
        self.items = ordered(kept)
        self.by_id = {item.event_id: item for item in self.items}
        self.ids = {item.event_id: self.ids[item.event_id] for item in self.items}
        self.newest = max(self.newest, newest)

    async def catch_up(self, engine: AsyncEngine, partitions: Sequence[int], now: datetime) -> int:
        """Make the accounts of `partitions` that news they have not had concerns due now, a
        window of accounts per transaction (an item about an industry may concern a tenth of
        the accounts, 100,000 of a million: one UPDATE would hold all their rows locked). The
        partitions record the news as done only once every window is, so a scorer stopped
        halfway does it again. Returns how many accounts."""
        self.stored = False
        await self.refresh(engine, now)
        if not partitions or not self.items:
            return 0
        offsets = ConsumerOffsetRow
        mine = (offsets.group_id == self.group_id, offsets.topic == self.topic)
        async with engine.connect() as conn:
            applied = dict(
                list(
                    await conn.execute(
                        select(offsets.partition, offsets.news_applied).where(
                            *mine, offsets.partition.in_(partitions)
                        )
                    )
                )
            )
        if max(self.ids.values()) <= min(applied.get(p, 0) for p in partitions):
            return 0  # nothing new for any of them
        made_due = 0
        for item in self.items:
            behind = [p for p in partitions if applied.get(p, 0) < self.ids[item.event_id]]
            if behind:
                made_due += await _make_due(engine, behind, item, now)
        async with engine.begin() as conn:
            await conn.execute(
                update(offsets)
                .where(*mine, offsets.partition.in_(partitions))
                .values(
                    news_applied=func.greatest(offsets.news_applied, max(self.ids.values())),
                    fence_epoch=offsets.fence_epoch + 1,  # a write of this release (0015)
                )
            )
        return made_due


NEWS_WINDOW = 5_000  # accounts made due per transaction


async def _make_due(
    engine: AsyncEngine, partitions: list[int], item: NewsItem, now: datetime
) -> int:
    """Make the accounts of `partitions` that `item` concerns due now, in windows of accounts in
    id order; how many were not due already."""
    concerned = [getattr(AccountRow, name).in_(sorted(values)) for name, values in item.scope]
    made_due, after = 0, ""
    while True:
        window = (
            select(AccountRow.account_id)
            .where(AccountRow.partition.in_(partitions), AccountRow.account_id > after, *concerned)
            .order_by(AccountRow.account_id)
            .limit(NEWS_WINDOW)
            .cte("news_window")
        )
        due = (
            update(AccountStateRow)
            .where(
                AccountStateRow.account_id.in_(select(window.c.account_id)),
                AccountStateRow.next_review_at > now,
            )
            .values(next_review_at=now)
            .returning(AccountStateRow.account_id)
            .cte("made_due")
        )
        async with engine.begin() as conn:
            count, last = (
                await conn.execute(
                    select(
                        select(func.count()).select_from(due).scalar_subquery(),
                        select(func.max(window.c.account_id)).scalar_subquery(),
                    )
                )
            ).one()
        made_due += int(count)
        if last is None:
            return made_due
        after = last

"""The outbox relay: change events from PostgreSQL to the changes topic (at-least-once).

Rows are claimed with FOR UPDATE SKIP LOCKED, published, and marked sent in the same
transaction, so two scorers never publish one row at once, and a crash before the mark means
the row is published again with the same CloudEvent id (consumers de-duplicate by it). Then
each turn rolls up the parents due (rollups.py), whose band changes the next one sends. Every
few seconds it also refreshes the outbox and rollup gauges and prunes rows sent long ago, as
often as its cost allows the band gauge, every minute the live model quality's (quality.py),
and every hour it keeps the score history's months (`history_months.maintain`) and the
de-duplication memory's periods (`memory.maintain`).

The band gauge counts every score (half a second at a million accounts), so one scorer counts:
the one that owns partition 0 of the signals topic. The others clear the gauge, so that
`max by (objective, band)` over the scorers reads the one count, not a stale one.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scorer import history_months, memory, portfolio, store
from services.scorer.metrics import ScorerMetrics
from services.scorer.quality import Quality
from services.scorer.rollups import Rollups
from shared.config import ScorerSettings
from shared.events import monthly_revenue
from shared.retry import Backoff

log = structlog.get_logger(__name__)

STATS_EVERY_SECONDS = 10
# the band gauge counts every score (half a second at a million accounts): refreshed no more
# often than keeps that count under 1% of PostgreSQL's time, nor less often than STATS_EVERY
BANDS_SHARE = 0.01
HISTORY_EVERY_SECONDS = 3600
# how often the quality gauges are shown again (and measured, if the interval has passed)
QUALITY_EVERY_SECONDS = 60
KEEP_SENT = timedelta(days=7)


class Relay:
    def __init__(
        self,
        engine: AsyncEngine,
        metrics: ScorerMetrics,
        clock: Callable[[], datetime],
        cfg: ScorerSettings,
        counts_bands: Callable[[], bool],
        rollups: Rollups,
        quality: Quality,
    ) -> None:
        self.engine = engine
        self.rollups = rollups
        self.quality = quality
        self.counts_bands = counts_bands
        self.metrics = metrics
        self.clock = clock
        self.interval = cfg.relay_interval_seconds
        self.history_retention_days = cfg.history_retention_days
        self.dedup_horizon_seconds = cfg.dedup_horizon_hours * 3600

    async def run(self, producer: AIOKafkaProducer, stop: asyncio.Event) -> None:
        try:
            await self._turns(producer, stop)
        finally:
            await self.quality.close()

    async def _turns(self, producer: AIOKafkaProducer, stop: asyncio.Event) -> None:
        last_stats = last_bands = last_history = last_quality = -math.inf  # on the first turn
        counted = False  # whether the last band refresh counted (this scorer owned partition 0)
        shown = False  # whether the last quality refresh showed the figures (the same)
        bands_every = float(STATS_EVERY_SECONDS)
        backoff = Backoff()
        while not stop.is_set():
            try:
                sent = await self.relay_once(producer)
                # after: a rollup's failure slows the relay by the back-off, never stops it
                rolled = await self.rollups.roll_up_due()
                if time.monotonic() - last_stats > STATS_EVERY_SECONDS:
                    last_stats = time.monotonic()
                    await self.refresh_outbox()
                counts = self.counts_bands()
                if time.monotonic() - last_quality > QUALITY_EVERY_SECONDS or counts != shown:
                    last_quality, shown = time.monotonic(), counts
                    await self.quality.refresh(counts)
                if time.monotonic() - last_bands > bands_every or counts != counted:
                    last_bands, counted = time.monotonic(), counts
                    await self.refresh_bands()
                    took = time.monotonic() - last_bands
                    bands_every = max(float(STATS_EVERY_SECONDS), took / BANDS_SHARE)
                if time.monotonic() - last_history > HISTORY_EVERY_SECONDS:
                    last_history = time.monotonic()
                    await self.maintain_history()
                    await memory.maintain(self.engine, self.clock(), self.dedup_horizon_seconds)
                backoff.reset()
                if not sent and not rolled:
                    await asyncio.sleep(self.interval)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the rows stay unsent: published on the next turn
                delay = backoff.next_delay()
                log.warning("scorer.relay_retry", error=repr(exc)[:300], delay=round(delay, 2))
                await asyncio.sleep(delay)

    async def relay_once(self, producer: AIOKafkaProducer, limit: int = 500) -> int:
        async with self.engine.begin() as conn:
            rows = await store.claim_outbox(conn, limit)
            if not rows:
                return 0
            futures = [
                await producer.send(
                    row.topic,
                    value=row.payload,
                    key=row.key.encode(),
                    headers=[("content-type", row.content_type.encode())],
                )
                for row in rows
            ]
            await asyncio.gather(*futures)
            await store.mark_sent(conn, [row.id for row in rows], self.clock())
        self.metrics.published.inc(len(rows))
        return len(rows)

    async def refresh_outbox(self) -> None:
        self.metrics.outbox_backlog.set(await store.outbox_backlog(self.engine))
        self.metrics.parents_due.set(await self.rollups.backlog())
        await store.prune_outbox(self.engine, self.clock() - KEEP_SENT)

    async def refresh_bands(self) -> None:
        """The band and MRR gauges, and the day's portfolio figures (portfolio.py)."""
        if self.counts_bands():
            accounts: dict[tuple[str, str, str], int] = {}
            mrr: dict[tuple[str, str, str], float] = {}
            for f in await portfolio.count(self.engine, self.clock().date()):
                key = (f.objective, f.model_role, f.band)
                accounts[key] = accounts.get(key, 0) + f.accounts
                if f.model_role == "active" and f.currency:
                    mrr[(f.objective, f.band, f.currency)] = monthly_revenue(
                        f.mrr_cents, f.currency
                    )
            self.metrics.accounts.clear()  # a band emptied since is not left at its last count
            for labels, count in accounts.items():
                self.metrics.accounts.labels(*labels).set(count)
            self.metrics.mrr.clear()
            for labels, value in mrr.items():
                self.metrics.mrr.labels(*labels).set(value)
        else:
            self.metrics.accounts.clear()
            self.metrics.mrr.clear()

    async def maintain_history(self) -> None:
        await portfolio.prune(self.engine, self.clock(), self.history_retention_days)
        done = await history_months.maintain(self.engine, self.clock(), self.history_retention_days)
        self.metrics.history_pruned.labels("months").inc(len(done.dropped))
        self.metrics.history_pruned.labels("rows").inc(done.deleted)

"""Change events to deliveries: each event a subscription matches becomes a pending delivery.

The offsets are committed after the deliveries are stored, so a crash reads the events again
and their rows, keyed by (subscription, event id), are not stored twice. A record that is not
a change event is counted and skipped: it cannot stall the partition.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notify.metrics import NotifyMetrics
from shared.db import WebhookDeliveryRow, WebhookRow
from shared.webhooks import Change, Subscription

log = structlog.get_logger(__name__)

REFRESH_SECONDS = 2.0  # how stale the list of subscriptions may be


class Fanout:
    def __init__(
        self, engine: AsyncEngine, metrics: NotifyMetrics, clock: Callable[[], datetime]
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.clock = clock
        self._subscriptions: list[Subscription] = []
        self._read_at = -float("inf")

    async def subscriptions(self) -> list[Subscription]:
        if time.monotonic() - self._read_at > REFRESH_SECONDS:
            async with self.engine.connect() as conn:
                rows = await conn.execute(select(WebhookRow).where(WebhookRow.enabled))
                self._subscriptions = [Subscription.of_row(r) for r in rows]
            self._read_at = time.monotonic()
        return self._subscriptions

    def forget(self) -> None:
        """Read the subscriptions again before the next batch."""
        self._read_at = -float("inf")

    async def store(self, payloads: Sequence[bytes]) -> int:
        """Record the deliveries of these records; the number recorded."""
        subscriptions = await self.subscriptions()
        now = self.clock()
        rows: list[dict[str, Any]] = []
        for payload in payloads:
            try:
                change = Change.parse(payload)
            except ValueError as exc:
                self.metrics.unreadable.inc()
                log.warning("notify.unreadable_event", error=str(exc)[:200])
                continue
            self.metrics.events.inc()
            rows += [
                {
                    "webhook_id": s.webhook_id,
                    "event_id": change.event_id,
                    "event_type": change.type,
                    "account_id": change.account_id,
                    "payload": change.payload,
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
                for s in subscriptions
                if s.matches(change)
            ]
        if not rows:
            return 0
        insert = postgresql.insert(WebhookDeliveryRow).on_conflict_do_nothing()
        async with self.engine.begin() as conn:
            # a subscription deleted since it was read takes its deliveries with it: only
            # those of subscriptions that still exist are stored
            alive = set(
                await conn.scalars(
                    select(WebhookRow.webhook_id).where(
                        WebhookRow.webhook_id.in_({r["webhook_id"] for r in rows})
                    )
                )
            )
            rows = [r for r in rows if r["webhook_id"] in alive]
            if rows:
                await conn.execute(insert, rows)
        self.metrics.queued.inc(len(rows))
        return len(rows)

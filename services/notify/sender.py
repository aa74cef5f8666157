"""POST the due deliveries, signed, and record what became of each.

A sender takes up to `concurrency` due deliveries at a time, each by moving its next attempt
on by the lease (so several senders never POST one delivery at once, and one that dies
mid-request only delays it). A 2xx answer delivers it; a 410 disables the subscription (the
receiver says it is gone) and dead-letters the delivery; any other answer, a timeout or no
connection is retried after the next wait of `retry_seconds` (longer if the receiver's
Retry-After asks), and dead-lettered once they are used up. Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notify.metrics import NotifyMetrics
from shared.config import NotifySettings
from shared.retry import Backoff
from shared.webhooks import request

log = structlog.get_logger(__name__)

STATS_EVERY_SECONDS = 10.0
RETRY_AFTER_MAX_SECONDS = 3600.0
RECORD_TRIES = 8

_CLAIM = text("""
UPDATE webhook_deliveries d
SET next_attempt_at = :lease_until, attempts = d.attempts + 1
FROM webhooks w
WHERE w.webhook_id = d.webhook_id AND (d.webhook_id, d.event_id) IN (
  SELECT d.webhook_id, d.event_id FROM webhook_deliveries d JOIN webhooks w USING (webhook_id)
  WHERE d.status = 'pending' AND d.next_attempt_at <= :now AND w.enabled
  ORDER BY d.next_attempt_at LIMIT :limit FOR UPDATE OF d SKIP LOCKED)
RETURNING d.webhook_id, d.event_id, d.payload, d.attempts, w.url, w.secret, w.mode
""")
_RECORD = text("""
UPDATE webhook_deliveries SET status = :status, next_attempt_at = :next_attempt_at,
  last_status_code = :code, last_error = :error, finished_at = :finished_at
WHERE webhook_id = :webhook_id AND event_id = :event_id
""")
_GONE = text("""
UPDATE webhooks SET enabled = false, updated_at = :now,
  disabled_reason = 'the receiver answered 410 Gone'
WHERE webhook_id = :webhook_id
""")
_STATS = text("""
SELECT count(*) FILTER (WHERE status = 'pending'),
       count(*) FILTER (WHERE status = 'dead'),
       extract(epoch FROM :now - min(created_at) FILTER (WHERE status = 'pending'))
FROM webhook_deliveries
""")
_PRUNE = text("DELETE FROM webhook_deliveries WHERE status <> 'pending' AND finished_at < :before")


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # pending (to retry) | delivered | dead
    code: int | None
    error: str | None
    wait: float = 0.0  # before the next attempt, when pending


class Sender:
    def __init__(
        self,
        engine: AsyncEngine,
        metrics: NotifyMetrics,
        clock: Callable[[], datetime],
        cfg: NotifySettings,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.clock = clock
        self.cfg = cfg
        self.client = httpx.AsyncClient(timeout=cfg.request_timeout_seconds, follow_redirects=False)
        self.in_flight: set[asyncio.Task[None]] = set()
        self.wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        backoff, last_stats = Backoff(), -float("inf")
        try:
            while not stop.is_set():
                try:
                    started = await self.start_due()
                    if time.monotonic() - last_stats > STATS_EVERY_SECONDS:
                        last_stats = time.monotonic()
                        await self.refresh_stats()
                    backoff.reset()
                except Exception as exc:  # the database away, or a statement it refused
                    delay = backoff.next_delay()
                    log.warning("notify.send_retry", error=str(exc)[:300], delay=round(delay, 2))
                    await _sleep(stop, delay)
                    continue
                if not started:
                    self.wake.clear()
                    await _first(stop, self.wake, self.cfg.poll_seconds)
        finally:
            if self.in_flight:
                await asyncio.wait(self.in_flight)
            await self.client.aclose()

    async def start_due(self) -> int:
        """Take the due deliveries there is room for and start POSTing each; how many."""
        room = self.cfg.concurrency - len(self.in_flight)
        if room <= 0:
            await asyncio.wait(self.in_flight, return_when=asyncio.FIRST_COMPLETED)
            return 1
        now = self.clock()
        async with self.engine.begin() as conn:
            claimed = list(
                await conn.execute(
                    _CLAIM,
                    {
                        "now": now,
                        "lease_until": now + timedelta(seconds=self.cfg.lease_seconds),
                        "limit": room,
                    },
                )
            )
        for row in claimed:
            task = asyncio.create_task(self.deliver(row))
            self.in_flight.add(task)
            task.add_done_callback(self._done)
        return len(claimed)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.in_flight.discard(task)
        self.wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("notify.delivery_crashed", error=repr(task.exception()))

    async def deliver(self, row: Any) -> None:
        message = request(row.mode, row.payload, row.secret, row.event_id, time.time())
        began = time.monotonic()
        try:
            answer = await self.client.post(row.url, content=message.body, headers=message.headers)
        except httpx.HTTPError as exc:
            outcome = self.failed(row.attempts, None, f"{type(exc).__name__}: {exc}"[:500], None)
        else:
            self.metrics.latency.observe(time.monotonic() - began)
            if answer.is_success:
                outcome = Outcome("delivered", answer.status_code, None)
            elif answer.status_code == 410:
                outcome = Outcome("dead", 410, "the receiver answered 410 Gone")
            else:
                outcome = self.failed(
                    row.attempts,
                    answer.status_code,
                    f"HTTP {answer.status_code}: {answer.text[:200]}",
                    answer.headers.get("retry-after"),
                )
        await self.record(row, outcome)

    def failed(self, attempts: int, code: int | None, error: str, retry_after: Any) -> Outcome:
        schedule = self.cfg.retry_seconds
        if attempts > len(schedule):
            return Outcome("dead", code, error)
        wait = schedule[attempts - 1] * random.uniform(1.0, 1.2)
        with contextlib.suppress(TypeError, ValueError):  # none, or a date: the schedule's
            wait = max(wait, min(float(retry_after), RETRY_AFTER_MAX_SECONDS))
        return Outcome("pending", code, error, wait)

    async def record(self, row: Any, outcome: Outcome) -> None:
        now = self.clock()
        result = "gone" if outcome.code == 410 else (
            "failed" if outcome.status == "pending" else outcome.status
        )  # fmt: skip
        self.metrics.attempts.labels(result).inc()
        log_fields = {"webhook_id": row.webhook_id, "event_id": row.event_id}
        if outcome.status != "delivered":
            log.warning(
                "notify.delivery_failed",
                **log_fields,
                attempt=row.attempts,
                status=outcome.status,
                error=outcome.error,
                delay=round(outcome.wait, 2),
            )
        values = {
            **log_fields,
            "status": outcome.status,
            "code": outcome.code,
            "error": outcome.error,
            "next_attempt_at": now + timedelta(seconds=outcome.wait),
            "finished_at": None if outcome.status == "pending" else now,
        }
        backoff = Backoff()
        for _ in range(RECORD_TRIES):  # what became of a POST outlives a database that blinks
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(_RECORD, values)
                    if outcome.code == 410:
                        await conn.execute(_GONE, {"now": now, "webhook_id": row.webhook_id})
                return
            except Exception as exc:
                error = str(exc)[:300]
                await asyncio.sleep(backoff.next_delay())
        # once its lease runs out the delivery is sent again: at least once, never lost
        log.error("notify.record_failed", **log_fields, error=error)

    async def refresh_stats(self) -> None:
        now = self.clock()
        async with self.engine.begin() as conn:
            pending, dead, oldest = (await conn.execute(_STATS, {"now": now})).one()
            await conn.execute(_PRUNE, {"before": now - timedelta(days=self.cfg.keep_days)})
        self.metrics.pending.set(pending)
        self.metrics.dead.set(dead)
        self.metrics.oldest_pending.set(float(oldest or 0.0))


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _first(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    """Wait until `stop` or `wake` is set, or `seconds` have passed."""
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()

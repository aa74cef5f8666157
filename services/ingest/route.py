"""Raw records into outgoing records: each message a signal for the signals topic, a
dead-letter record with its reason, or nothing but a count (shared/sources/ decodes them)."""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import structlog
from aiokafka import ConsumerRecord

from shared.config import Settings
from shared.events import encode_signal
from shared.failures import classify
from shared.kafka import dead_letter_headers
from shared.retry import Backoff
from shared.sources import formats_for
from shared.sources.decode import Decoder, Outcome, Skipped
from shared.sources.links import Links, MemoryLinks
from shared.validate import Limits, Rejection, Sentiment

log = structlog.get_logger(__name__)

# (topic, key, value, headers) of a record to produce
Outgoing = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]


class Router:
    """Decodes raw records in their topics' formats and routes what they hold."""

    def __init__(self, settings: Settings, links: Links | None = None) -> None:
        self.settings = settings
        cfg = settings.ingest
        self.limits = Limits(
            max_record_bytes=cfg.max_record_bytes,
            max_future_skew=timedelta(seconds=cfg.max_future_skew_seconds),
            max_age=timedelta(days=cfg.max_age_days),
        )
        self.decoder = Decoder(
            formats_for(settings),
            links or MemoryLinks(cfg.links_cache_size),
            limits=self.limits,
            sentiment=Sentiment(),
        )

    async def route(
        self, records: Sequence[ConsumerRecord[bytes, bytes]], now: datetime
    ) -> tuple[list[Outgoing], Tally[tuple[str, ...]]]:
        """The outgoing records for raw records (signals and DLQ records), and what they count
        as in the metrics."""
        topics = self.settings.kafka.topics
        outgoing: list[Outgoing] = []
        counted: Tally[tuple[str, ...]] = Tally()

        def emit(index: int, _: int, outcome: Outcome) -> None:
            result, record = outcome.result, records[index]
            if isinstance(result, Skipped):
                counted[("skipped", record.topic, result.reason)] += 1
            elif isinstance(result, Rejection):
                headers = dead_letter_headers(
                    record, result.reason, result.detail, now, result.path
                )
                log.info(
                    "ingest.rejected",
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    reason=result.reason,
                    path=result.path,
                    key=record.key.decode("utf-8", "replace")[:128] if record.key else None,
                )
                outgoing.append((topics.dlq, record.key, outcome.value, headers))
                counted[("dlq", result.reason)] += 1
            else:
                key = result.account_id.encode()
                outgoing.append((topics.signals, key, encode_signal(result), []))
                counted[("signal", result.source)] += 1

        await self.decoder.each([(r.topic, r.value) for r in records], now, emit)
        return outgoing, counted

    async def retried(
        self,
        records: list[ConsumerRecord[bytes, bytes]],
        now: datetime,
        stop: asyncio.Event,
        waiting: Callable[[], None],
    ) -> tuple[list[Outgoing], Tally[tuple[str, ...]]] | None:
        """`route`, retried while the link store (PostgreSQL) is away (`waiting` is told of
        each wait, so that health sees a loop alive); None: stopping."""
        backoff = Backoff()
        while True:
            try:
                return await self.route(records, now)
            except Exception as exc:
                if not classify(exc).retriable:
                    raise
                delay = backoff.next_delay()
                log.warning("ingest.links_retry", error=repr(exc), delay=round(delay, 2))
                waiting()
                if stop.is_set():
                    return None  # nothing delivered, nothing committed: read again on start
                await asyncio.sleep(delay)

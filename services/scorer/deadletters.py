"""The scorer's dead-letter topic: what it cannot apply, with why.

A record goes here when it is not a signal at all (`invalid_signal`), or when isolation
(isolation.py) has narrowed a batch's failure down to it: the original bytes and key, and the
reason, detail and source position as headers (shared.kafka.dead_letter_headers), counted and
logged. Its offset is then stored as done, so the partition moves on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from services.scorer.metrics import ScorerMetrics
from shared.kafka import dead_letter_headers

log = structlog.get_logger(__name__)


class DeadLetters:
    def __init__(self, topic: str, metrics: ScorerMetrics, clock: Callable[[], datetime]) -> None:
        self.topic = topic
        self.metrics = metrics
        self.clock = clock

    async def send(
        self, producer: AIOKafkaProducer, records: list[Any], reason: str, detail: str
    ) -> None:
        """Send `records` to the dead-letter topic with why, count and log them."""
        now = self.clock()
        futures = [
            await producer.send(
                self.topic,
                value=r.value,
                key=r.key,
                headers=dead_letter_headers(r, reason, detail, now),
            )
            for r in records
        ]
        await asyncio.gather(*futures)
        self.metrics.dead_lettered.labels(reason).inc(len(records))
        for r in records:
            log.error(
                "scorer.dead_lettered",
                reason=reason,
                detail=detail[:300],
                partition=r.partition,
                offset=r.offset,
                key=r.key.decode("utf-8", "replace")[:128] if r.key else None,
            )

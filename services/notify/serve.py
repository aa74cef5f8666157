"""`healthscore notify`: the fan-out from the changes topic and the sender, with /metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer
from prometheus_client import REGISTRY

from services.notify.fanout import Fanout
from services.notify.metrics import NotifyMetrics
from services.notify.sender import Sender
from shared.config import Settings
from shared.ops import Health
from shared.retry import Backoff

log = structlog.get_logger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


async def consume(
    consumer: AIOKafkaConsumer,
    fanout: Fanout,
    health: Health,
    stop: asyncio.Event,
    stored: Callable[[], None],
) -> None:
    """Read the changes topic for good: store each batch's deliveries, then commit it."""
    backoff, rewind = Backoff(), False
    while not stop.is_set():
        try:
            if rewind:  # a batch was not stored: back to what is committed, to read it again
                await _rewind(consumer)
                rewind = False
            batches = await consumer.getmany(timeout_ms=500, max_records=1_000)
            payloads = [r.value for records in batches.values() for r in records if r.value]
            if payloads and await fanout.store(payloads):
                stored()
            if batches:
                await consumer.commit()
            positions = {tp: await consumer.position(tp) for tp in consumer.assignment()}
            health.observe(
                {
                    f"{tp.topic}/{tp.partition}": (at, (consumer.highwater(tp) or 0) - at)
                    for tp, at in positions.items()
                }
            )
            backoff.reset()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database or the broker away: read the batch again
            delay = backoff.next_delay()
            log.warning("notify.fanout_retry", error=str(exc)[:300], delay=round(delay, 2))
            fanout.forget()
            rewind = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)


async def _rewind(consumer: AIOKafkaConsumer) -> None:
    """Back to the committed offsets, so that the batch not stored is read again."""
    for tp in consumer.assignment():
        committed = await consumer.committed(tp)
        if committed is not None:
            consumer.seek(tp, committed)
        else:
            await consumer.seek_to_beginning(tp)


async def serve(settings: Settings, stop: asyncio.Event, **kwargs: Any) -> None:
    from shared.db import create_engine, ensure_migrated
    from shared.kafka import ensure_topics, leave, make_consumer, reachable
    from shared.ops import OpsServer

    cfg = settings.notify
    registry = kwargs.get("registry", REGISTRY)
    clock = kwargs.get("clock", _now)
    health = Health(stall_after=settings.scorer.stall_after_seconds)
    health.register(registry, "healthscore_notify")
    metrics = NotifyMetrics(registry)
    engine = create_engine(settings.database)
    ops = OpsServer("0.0.0.0", cfg.metrics_port, registry, health)
    await ops.start()
    topic = settings.kafka.topics.changes
    consumer = make_consumer(settings.kafka, cfg.group_id, topic)
    sender = Sender(engine, metrics, clock, cfg)
    try:
        async with health.starting("database"):
            await ensure_migrated(engine, also=())  # the webhook tables are the head's
        async with health.starting("topics"):
            await reachable(lambda: ensure_topics(settings.kafka, [topic]), "topics")
        async with health.starting("group"):
            await reachable(consumer.start, "group")
        health.ready = True
        fanout = Fanout(engine, metrics, clock)
        sending = asyncio.create_task(sender.run(stop))
        try:
            await consume(consumer, fanout, health, stop, sender.wake.set)
        finally:
            stop.set()
            await sending
    finally:
        await leave(consumer)
        await engine.dispose()
        await ops.stop()

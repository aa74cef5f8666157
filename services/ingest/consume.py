"""The ingest loop: raw topics -> account-health.signals or account-health.dlq.

Reads every raw topic in batches in one consumer group, each topic in its configured format
(shared/sources/). Every message a raw record holds becomes one signal (keyed by account id),
one DLQ record (the message's bytes with the record's key; headers with reason, detail, field
path, source topic/partition/offset and rejection time) or, for message types that carry no
signal (a Segment identify, a Stripe customer.created), nothing but a count. Raw offsets are
committed only after every record produced from the batch is acknowledged, so a crash re-reads
at most the batch in flight (at-least-once; the scorer drops duplicates by signal id). Broker
errors back off and retry without committing; SIGTERM drains the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter as Tally
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from prometheus_client import REGISTRY, CollectorRegistry

from services.ingest.deliver import Deliverer
from services.ingest.metrics import IngestMetrics
from services.ingest.route import Outgoing, Router
from shared.config import Settings
from shared.events import utcnow
from shared.failures import classify
from shared.kafka import leave, make_consumer, make_producer, reachable
from shared.ops import Health, unless_stopped
from shared.retry import Backoff
from shared.sources.links import Links

log = structlog.get_logger(__name__)


class Prepared(NamedTuple):
    """A decoded batch waiting to be sent."""

    outgoing: list[Outgoing]
    counted: Tally[tuple[str, ...]]
    commit: dict[TopicPartition, int]
    started: float


class Ingest:
    """One ingest worker. `run(stop)` until `stop` is set; then the batch in flight drains."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry = REGISTRY,
        health: Health | None = None,
        clock: Callable[[], datetime] = utcnow,
        links: Links | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = IngestMetrics(registry)
        self.health = health or Health()
        self.clock = clock
        self.committed: dict[TopicPartition, int] = {}
        self.router = Router(settings, links)
        self.deliverer = Deliverer(self.metrics.retries)

    async def _prepare(
        self,
        consumer: AIOKafkaConsumer,
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
        stop: asyncio.Event,
    ) -> Prepared | None:
        """A polled batch decoded: what to send, what it counts as, what to commit after."""
        started = asyncio.get_running_loop().time()
        commit: dict[TopicPartition, int] = {}
        for tp, records in batch.items():
            self.metrics.consumed.labels(tp.topic).inc(len(records))
            commit[tp] = records[-1].offset + 1
        records = [r for rs in batch.values() for r in rs]
        routed = await self.router.retried(
            records, self.clock(), stop, lambda: self._observe_progress(consumer)
        )
        return None if routed is None else Prepared(*routed, commit, started)

    async def _complete(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        batch: Prepared,
        stop: asyncio.Event,
    ) -> None:
        """Send a prepared batch, wait for every acknowledgement, then commit its offsets."""
        if not await self.deliverer.deliver(producer, batch.outgoing, stop):
            return
        for (what, *labels), count in batch.counted.items():
            if what == "signal":
                self.metrics.signals.labels(*labels).inc(count)
            elif what == "dlq":
                self.metrics.dead_lettered.labels(*labels).inc(count)
            else:
                self.metrics.skipped.labels(*labels).inc(count)
        try:
            await consumer.commit(batch.commit)
        except (CommitFailedError, IllegalStateError) as exc:
            # Partitions moved in a rebalance: their new owner re-reads from the last commit.
            log.warning("ingest.commit_failed", error=repr(exc))
        self.metrics.batch_size.observe(len(batch.outgoing))
        self.metrics.batch_latency.observe(asyncio.get_running_loop().time() - batch.started)
        self.committed.update(batch.commit)
        for tp, next_offset in batch.commit.items():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(
                    max(highwater - next_offset, 0)
                )

    async def run(self, stop: asyncio.Event) -> None:
        kafka = self.settings.kafka
        consumer = make_consumer(kafka, self.settings.ingest.group_id, *kafka.topics.raw)
        producer = make_producer(kafka)
        async with self.health.starting("producer"):
            await reachable(producer.start, "producer")
        try:
            async with self.health.starting("consumer"):
                started = await unless_stopped(reachable(consumer.start, "consumer"), stop)
            try:
                if started:
                    self.health.ready = True
                    log.info("ingest.started", topics=list(kafka.topics.raw))
                    await self._loop(consumer, producer, stop)
            finally:
                self.health.ready = False
                await leave(consumer)
        finally:
            await producer.stop()
        log.info("ingest.stopped")

    async def _loop(
        self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, stop: asyncio.Event
    ) -> None:
        """Poll and decode the next batch while the last one's records are acknowledged: at
        most two batches in hand, committed in order, each only once all its output is
        acknowledged."""
        cfg = self.settings.ingest
        sending: asyncio.Task[None] | None = None
        polling = Backoff()
        try:
            while not stop.is_set():
                try:
                    batch = await consumer.getmany(
                        timeout_ms=cfg.batch_timeout_ms, max_records=cfg.batch_max_records
                    )
                except Exception as exc:
                    if not classify(exc).retriable:
                        raise
                    delay = polling.next_delay()
                    log.warning("ingest.poll_retry", error=repr(exc), delay=round(delay, 2))
                    await asyncio.sleep(delay)
                    continue
                polling.reset()
                prepared = await self._prepare(consumer, batch, stop) if batch else None
                if sending is not None and (prepared is not None or sending.done()):
                    await sending  # commits stay in order; raises what sending raised
                    sending = None
                if prepared is not None:
                    sending = asyncio.create_task(
                        self._complete(consumer, producer, prepared, stop)
                    )
                self._observe_progress(consumer)
        finally:
            if sending is not None:
                await sending

    def _observe_progress(self, consumer: AIOKafkaConsumer) -> None:
        progress: dict[str, tuple[int, int]] = {}
        fetched: list[float] = []
        for tp in consumer.assignment():
            highwater, done = consumer.highwater(tp), self.committed.get(tp)
            if highwater is not None and done is not None:
                progress[f"{tp.topic}/{tp.partition}"] = (done, max(highwater - done, 0))
            if (polled := consumer.last_poll_timestamp(tp)) is not None:
                fetched.append(polled / 1000)
        self.health.observe(progress, min(fetched, default=None))


async def serve(settings: Settings, stop: asyncio.Event, **kwargs: Any) -> None:
    """Entry point body: the ops endpoint plus the ingest loop."""
    from services.ingest.links import PostgresLinks
    from shared.db import create_engine, ensure_migrated
    from shared.kafka import ensure_topics
    from shared.ops import STREAM_YOUNG_GC_THRESHOLD, OpsServer, settle_heap
    from shared.sources import uses_links

    cfg = settings.ingest
    health = Health(stall_after=cfg.stall_after_seconds)
    health.register(kwargs.get("registry", REGISTRY), "healthscore_ingest")
    # only the vendor formats tie users, charges and tickets to accounts: a deployment of v1
    # topics and mappings needs no database
    engine = create_engine(settings.database) if uses_links(settings) else None
    links = (
        PostgresLinks(
            engine,
            cache_size=cfg.links_cache_size,
            cache_seconds=cfg.links_cache_seconds,
            retention_days=cfg.links_retention_days,
        )
        if engine is not None
        else None
    )
    ingest = Ingest(settings, health=health, links=links, **kwargs)
    ops = OpsServer("0.0.0.0", cfg.metrics_port, kwargs.get("registry", REGISTRY), health)
    await ops.start()  # first: /healthz and /metrics answer while the rest starts
    pruning: asyncio.Task[None] | None = None
    try:
        if engine is not None and links is not None:
            async with health.starting("database"):
                await ensure_migrated(engine)
            pruning = asyncio.create_task(links.prune_forever(stop))
        async with health.starting("topics"):
            topics = settings.kafka.topics
            await reachable(
                lambda: ensure_topics(settings.kafka, [*topics.raw, topics.signals, topics.dlq]),
                "topics",
            )
        settle_heap(STREAM_YOUNG_GC_THRESHOLD)
        await ingest.run(stop)
    finally:
        if pruning is not None:
            pruning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruning
        if engine is not None:
            await engine.dispose()
        await ops.stop()

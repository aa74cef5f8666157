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
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from shared.config import Settings
from shared.events import encode_signal, utcnow
from shared.failures import classify
from shared.kafka import dead_letter_headers, leave, make_consumer, make_producer, reachable
from shared.ops import Health, unless_stopped
from shared.retry import Backoff
from shared.sources import formats_for
from shared.sources.decode import Decoder, Outcome, Skipped
from shared.sources.links import Links, MemoryLinks
from shared.validate import Limits, Rejection, Sentiment

log = structlog.get_logger(__name__)

Outgoing = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]


class Prepared(NamedTuple):
    """A decoded batch waiting to be sent."""

    outgoing: list[Outgoing]
    counted: Tally[tuple[str, ...]]
    commit: dict[TopicPartition, int]
    started: float


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.consumed = Counter(
            "healthscore_ingest_records_consumed_total",
            "Raw records read, by source topic",
            ["topic"],
            registry=registry,
        )
        self.signals = Counter(
            "healthscore_ingest_signals_produced_total",
            "Canonical signals produced, by source",
            ["source"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "healthscore_ingest_dlq_records_total",
            "Raw records (or messages of a batch) dead-lettered, by reason",
            ["reason"],
            registry=registry,
        )
        self.skipped = Counter(
            "healthscore_ingest_messages_skipped_total",
            "Messages that carry no signal (not_scored: a type the format does not score; "
            "link_only: it only ties a user to an account), by topic",
            ["topic", "reason"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "healthscore_ingest_batch_records",
            "Records per batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
            registry=registry,
        )
        self.batch_latency = Histogram(
            "healthscore_ingest_batch_duration_seconds",
            "Time from poll to commit of one batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.retries = Counter(
            "healthscore_ingest_delivery_retries_total",
            "Batches re-sent after a retriable broker error",
            registry=registry,
        )
        self.lag = Gauge(
            "healthscore_ingest_consumer_lag_records",
            "Records behind the partition high-water mark",
            ["topic", "partition"],
            registry=registry,
        )


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
        cfg = settings.ingest
        self.limits = Limits(
            max_record_bytes=cfg.max_record_bytes,
            max_future_skew=timedelta(seconds=cfg.max_future_skew_seconds),
            max_age=timedelta(days=cfg.max_age_days),
        )
        self._partitions: dict[tuple[bytes, int], int] = {}  # (key, partitions) -> partition
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

    async def _route(
        self,
        consumer: AIOKafkaConsumer,
        records: list[ConsumerRecord[bytes, bytes]],
        now: datetime,
        stop: asyncio.Event,
    ) -> tuple[list[Outgoing], Tally[tuple[str, ...]]] | None:
        """`route`, retried while the link store (PostgreSQL) is away; None: stopping."""
        backoff = Backoff()
        while True:
            try:
                return await self.route(records, now)
            except Exception as exc:
                if not classify(exc).retriable:
                    raise
                delay = backoff.next_delay()
                log.warning("ingest.links_retry", error=repr(exc), delay=round(delay, 2))
                self._observe_progress(consumer)
                if stop.is_set():
                    return None  # nothing delivered, nothing committed: read again on start
                await asyncio.sleep(delay)

    async def _send_all(self, producer: AIOKafkaProducer, outgoing: Sequence[Outgoing]) -> None:
        """Send as whole batches per partition (far less per-record overhead than send()),
        partitioned like the Java client (murmur2 of the key), and wait for every ack."""
        partitions = {
            topic: sorted(await producer.partitions_for(topic))
            for topic in {o[0] for o in outgoing}
        }
        grouped: dict[tuple[str, int], list[Outgoing]] = defaultdict(list)
        partitioner, known = DefaultPartitioner(), self._partitions
        if len(known) > 200_000:  # keys seen: accounts, mostly; murmur2 in Python is 1.5 µs
            known.clear()
        for record in outgoing:
            topic, key = record[0], record[1]
            choices = partitions[topic]
            if key is None:
                partition = partitioner(key, choices, choices)
            elif (partition := known.get((key, len(choices)), -1)) < 0:
                partition = known[(key, len(choices))] = partitioner(key, choices, choices)
            grouped[(topic, partition)].append(record)
        futures = []
        for (topic, partition), records in grouped.items():
            batch = producer.create_batch()
            for _, key, value, headers in records:
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None, headers=headers)
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)

    async def _deliver(
        self, producer: AIOKafkaProducer, outgoing: Sequence[Outgoing], stop: asyncio.Event
    ) -> bool:
        """Send everything and wait for every ack; retry the lot on broker errors."""
        backoff = Backoff()
        while True:
            try:
                await self._send_all(producer, outgoing)
                return True
            except Exception as exc:
                if not classify(exc).retriable:
                    raise
                self.metrics.retries.inc()
                delay = backoff.next_delay()
                log.warning("ingest.delivery_retry", error=repr(exc), delay=round(delay, 2))
                if stop.is_set() and backoff.failures > 5:
                    return False  # shutting down while the broker is away: commit nothing
                await asyncio.sleep(delay)

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
        routed = await self._route(consumer, records, self.clock(), stop)
        return None if routed is None else Prepared(*routed, commit, started)

    async def _complete(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        batch: Prepared,
        stop: asyncio.Event,
    ) -> None:
        """Send a prepared batch, wait for every acknowledgement, then commit its offsets."""
        if not await self._deliver(producer, batch.outgoing, stop):
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

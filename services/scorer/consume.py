"""The scorer loop: account-health.signals -> PostgreSQL (exactly-once effect) -> outbox.

Consumes signals in a consumer group; each batch's state, scores, history, outbox rows and
consumed offsets are written in ONE transaction (`commit`, `store`). Kafka offsets are never
committed: on partition assignment the scorer seeks to the offsets stored in PostgreSQL, so a
crash at any point replays exactly the signals whose effects were not committed. Between
batches, the sweep re-scores accounts whose score is due to move because time passed.

What goes wrong is classified once (`shared.failures.classify`): a retriable failure rolls back,
backs off (shared/retry.py, reset only by a commit) and reads again from the stored offsets; a
batch that fails for any other reason is isolated record by record, so one poison signal is
dead-lettered and never stalls its partition. The parts: `poll` and `batching` (collecting,
and pure cutting), `assignment` (the rebalance listener: taking and giving up partitions),
`partitions` (ownership and positions), `cache` (account state), `prepare` (records -> rows,
through `rows`), `commit`, `isolation`, `sweep` (time alone, and model switches), `relay`
(outbox -> changes topic), `models` (the served models), `news`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import REGISTRY, CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scorer.assignment import Assignment
from services.scorer.batching import Records
from services.scorer.cache import StateCache
from services.scorer.commit import Committer
from services.scorer.context import ScorerContext
from services.scorer.deadletters import DeadLetters
from services.scorer.isolation import Isolator
from services.scorer.metrics import ScorerMetrics
from services.scorer.news import NewsBook
from services.scorer.partitions import Partitions
from services.scorer.poll import Poller
from services.scorer.prepare import Prepared, Preparer
from services.scorer.quality import Quality
from services.scorer.relay import Relay
from services.scorer.rollups import Rollups
from services.scorer.rows import Rescorer
from services.scorer.serving import ModelSet
from services.scorer.sweep import Sweeper
from shared.config import Settings
from shared.errors import FencedOut
from shared.events import utcnow
from shared.failures import classify
from shared.kafka import leave, make_consumer, make_producer, reachable
from shared.ops import Health, gc_paused, unless_stopped
from shared.retry import Backoff
from shared.scoring.model import Model

log = structlog.get_logger(__name__)


class BatchFailed(Exception):
    """A batch's preparation or commit failed: the records are the batch's, for isolation."""

    def __init__(self, records: Records, cause: BaseException) -> None:
        super().__init__(repr(cause)[:300])
        self.records = records
        self.cause = cause


class Scorer:
    """One scorer worker; `run(stop)` until `stop` is set, finishing the batch in flight."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        *,
        registry: CollectorRegistry = REGISTRY,
        health: Health | None = None,
        clock: Callable[[], datetime] = utcnow,
        models: dict[str, Model] | None = None,
    ) -> None:
        self.settings = settings
        self.cfg = settings.scorer
        self.engine = engine
        self.metrics = ScorerMetrics(registry)
        self.health = health or Health()
        self.clock = clock
        self.models = ModelSet(self.cfg, self.metrics, models)
        self.partitions = Partitions()
        self.cache = StateCache(engine, self.cfg.state_cache_size)
        self.news = NewsBook(
            self.cfg.group_id, settings.kafka.topics.signals, self.cfg.news_retention_days
        )
        ctx = ScorerContext(
            settings,
            engine,
            self.models,
            self.cache,
            self.partitions,
            self.news,
            self.metrics,
            clock,
        )
        dead_letters = DeadLetters(settings.kafka.topics.dlq, self.metrics, clock)
        rescorer = Rescorer(ctx)
        self.preparer = Preparer(ctx, rescorer, dead_letters)
        self.committer = Committer(ctx)
        self.isolator = Isolator(ctx, self.preparer, self.committer, dead_letters)
        self.sweeper = Sweeper(ctx, rescorer, self.committer)
        self.relay = _relay(ctx, registry)
        self.poller = Poller(self.cfg, self.partitions)
        self.assignment = Assignment(ctx, self.poller, self.sweeper, self.health)
        self.consumer: AIOKafkaConsumer | None = None
        self._inflight: asyncio.Task[None] | None = None  # the commit of the last batch
        self._backoff = Backoff()  # retriable failures since the last commit

    # --- models ----------------------------------------------------------------------------

    async def follow_models(self) -> None:
        """Serve the database's active and shadow models if they changed (shared/proposals.py);
        accounts scored by other versions are then re-scored a window at a time."""
        found = await self.models.look(self.engine)
        if found is None:
            return
        await self._settle()  # the batch in flight was scored with the models before
        if self.models.switch(found):
            self.cache.clear()
            self.sweeper.rescheduling.restart(tp.partition for tp in self.partitions.owned())

    async def sweep(self) -> int:
        """Re-score accounts whose scores are due to move with time alone, or with news."""
        return await self.sweeper.turn(sweep_due=True)

    # --- the loop -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        kafka = self.settings.kafka
        producer = make_producer(kafka)
        async with self.health.starting("producer"):
            await reachable(producer.start, "producer")
        self.consumer = make_consumer(kafka, self.cfg.group_id)
        self.consumer.subscribe([kafka.topics.signals], listener=self.assignment)
        self.poller.consumer = self.assignment.consumer = self.consumer
        relay = asyncio.create_task(self.relay.run(producer, stop))
        try:
            async with self.health.starting("consumer"):
                started = await unless_stopped(reachable(self.consumer.start, "consumer"), stop)
            if started:
                await self.news.refresh(self.engine, self.clock())
                await self.follow_models()
                await self.models.register(self.engine)
                self.health.ready = True
                log.info("scorer.started", models=self.models.served())
                await self._loop(producer, stop)
        finally:
            self.health.ready = False
            if self._inflight is not None:
                self._inflight.cancel()
            await leave(self.consumer)
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay
            await producer.stop()
            log.info("scorer.stopped")

    async def _loop(self, producer: AIOKafkaProducer, stop: asyncio.Event) -> None:
        """Poll, prepare, commit; the commit of one batch runs while the next is polled and
        prepared, so the CPU work of the one overlaps PostgreSQL's work on the other. Commits
        stay in order: a batch is committed only after the one before it."""
        while not stop.is_set():
            try:
                records = await self.poller.poll()
                if records:
                    try:
                        with gc_paused():
                            prepared = await self.preparer.prepare(records, producer)
                    except Exception as exc:
                        raise BatchFailed(records, exc) from exc
                    await self._settle()
                    self.cache.trim(keep=len(prepared.batch.states))
                    self._inflight = asyncio.create_task(self._commit(prepared))
                sweep_due = self.sweeper.due()
                between = self.sweeper.rescheduling.pending
                if not records or between or sweep_due:
                    await self._settle()
                if beyond := self.assignment.beyond_end():
                    await self._settle()
                    await self.assignment.reset(beyond)
                if self.models.due():
                    await self.follow_models()
                if await self.sweeper.turn(sweep_due):
                    self._backoff.reset()  # it committed
                self.assignment.observe_progress()
            except Exception as exc:
                await self._recover(exc, producer)
        try:
            await self._settle()
        except Exception as exc:  # stopping: the batch is read again by whoever resumes
            log.warning("scorer.last_commit_failed", error=repr(exc)[:300])

    async def _commit(self, prepared: Prepared) -> None:
        try:
            await self.committer.commit(prepared)
        except Exception as exc:
            raise BatchFailed(prepared.records, exc) from exc
        self._backoff.reset()

    async def _settle(self) -> None:
        """Wait for the commit in flight, if any; its error, if any, is raised here."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            await inflight

    async def _recover(self, exc: Exception, producer: AIOKafkaProducer) -> None:
        """After a failure: the earliest failed batch decides (the commit in flight is older
        than the batch being prepared). Retriable: back off, read again from the stored
        offsets. A batch failing otherwise: isolate what it cannot take. Anything else (a
        defect no batch is to blame for) stops the scorer."""
        try:
            await self._settle()  # nothing may be in flight while we rewind
        except Exception as earlier:
            exc = earlier
        cause = exc.cause if isinstance(exc, BatchFailed) else exc
        failure = classify(cause)
        try:
            if not failure.retriable:
                if not isinstance(exc, BatchFailed):
                    raise failure from cause
                await self.assignment.rewind()
                await self.isolator.isolate(exc.records, producer)
                self._backoff.reset()
                await self.assignment.rewind()
                return
        except Exception as during:  # the isolation met one of its own: the database away?
            failure = classify(during)
            if not failure.retriable:
                raise
        if isinstance(failure, FencedOut):
            self.metrics.fenced.inc()
        else:
            self.metrics.retries.inc()
        delay = self._backoff.next_delay()
        log.warning("scorer.batch_retry", error=str(failure)[:300], delay=round(delay, 2))
        self.assignment.observe_progress()
        await asyncio.sleep(delay)
        with contextlib.suppress(Exception):  # if this fails too, the next batch retries
            await self.assignment.rewind()


def _relay(ctx: ScorerContext, registry: CollectorRegistry) -> Relay:
    """The relay and the turns it takes besides the outbox: parents' rollups and the live
    models' quality, both of the models served now."""
    cfg, models = ctx.settings.scorer, ctx.models
    rollups = Rollups(
        ctx.engine, lambda: models.models["active"], ctx.settings.kafka.topics.changes, ctx.clock
    )
    quality = Quality(
        ctx.engine,
        lambda: models.models,
        cfg.quality,
        registry,
        ctx.clock,
        cfg.history_retention_days,
    )
    return Relay(
        ctx.engine, ctx.metrics, ctx.clock, cfg, ctx.partitions.owns_first, rollups, quality
    )


async def serve(settings: Settings, stop: asyncio.Event, **kwargs: Any) -> None:
    """Entry point body: check the database, serve /metrics, run the scorer."""
    from shared.db import create_engine, ensure_migrated
    from shared.kafka import ensure_topics
    from shared.ops import STREAM_YOUNG_GC_THRESHOLD, OpsServer, settle_heap

    engine = create_engine(settings.database)
    health = Health(stall_after=settings.scorer.stall_after_seconds)
    health.register(kwargs.get("registry", REGISTRY), "healthscore_scorer")
    ops = OpsServer(
        "0.0.0.0", settings.scorer.metrics_port, kwargs.get("registry", REGISTRY), health
    )
    await ops.start()  # first: /healthz and /metrics answer while the rest starts
    try:
        async with health.starting("database"):
            await ensure_migrated(engine)
        scorer = Scorer(settings, engine, health=health, **kwargs)
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, scorer.models.hurry)
        async with health.starting("topics"):
            topics = settings.kafka.topics
            await reachable(
                lambda: ensure_topics(settings.kafka, [topics.signals, topics.changes, topics.dlq]),
                "topics",
            )
        settle_heap(STREAM_YOUNG_GC_THRESHOLD)
        await scorer.run(stop)
    finally:
        await ops.stop()
        await engine.dispose()

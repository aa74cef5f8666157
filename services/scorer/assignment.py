"""The partitions a scorer owns: taken from the offsets stored in PostgreSQL when a rebalance
assigns them, given up when it revokes them, taken again to read from the stored offsets
after a failure, started again from a log's beginning when the stored offset is past its end
(offsets.py); and the lag and progress each shows."""

from __future__ import annotations

import contextlib
import time

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from services.scorer import legacy, offsets, poll
from services.scorer.context import ScorerContext
from services.scorer.poll import Poller
from services.scorer.sweep import Sweeper
from shared.ops import Health

log = structlog.get_logger(__name__)


class Assignment(ConsumerRebalanceListener):  # type: ignore[misc]
    """The consumer's rebalance listener and what follows from owning a partition."""

    def __init__(
        self, ctx: ScorerContext, poller: Poller, sweeper: Sweeper, health: Health
    ) -> None:
        self.ctx = ctx
        self.poller = poller
        self.sweeper = sweeper
        self.health = health
        self.consumer: AIOKafkaConsumer | None = None
        self._taken_at: dict[TopicPartition, float] = {}  # epoch ms each partition was taken

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.forget(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.ctx.metrics.rebalances.inc()
        await self.adopt(assigned)

    def forget(self, revoked: list[TopicPartition]) -> None:
        self.ctx.partitions.forget(revoked)
        for tp in revoked:
            self.poller.carry.pop(tp, None)
            with contextlib.suppress(KeyError):
                self.ctx.metrics.lag.remove(str(tp.partition))
        self.ctx.cache.clear()  # other scorers may write these accounts from now on

    async def adopt(self, assigned: list[TopicPartition]) -> None:
        """Own `assigned` from the offsets stored in PostgreSQL (the beginning if none)."""
        ctx = self.ctx
        ctx.cache.clear()
        self.poller.carry.clear()  # the consumer is repositioned at the stored offsets
        assert self.consumer is not None
        group = ctx.settings.scorer.group_id
        positions = await offsets.starting(
            self.consumer, ctx.engine, group, assigned, ctx.metrics, ctx.clock()
        )
        await legacy.take_over(ctx.engine, group, positions)
        self._taken_at.update({tp: time.time() * 1000 for tp in assigned})
        # owned before the seeks; a poll that spans this (a new generation) is voided
        # (Poller.poll), and the scorer reads again from here
        ctx.partitions.adopt(positions)
        poll.seek(self.consumer, positions)
        log.info(
            "scorer.assigned",
            partitions=sorted(tp.partition for tp in assigned),
            offsets={tp.partition: offset for tp, offset in positions.items()},
        )
        self.sweeper.rescheduling.restart(tp.partition for tp in ctx.partitions.owned())

    async def rewind(self) -> None:
        """Forget what is in memory and read again from the offsets stored in PostgreSQL."""
        await self.adopt(self.ctx.partitions.owned())

    def beyond_end(self) -> offsets.Outside:
        """The owned partitions whose stored offset is past their log's end (offsets.py)."""
        return offsets.beyond_end(self.consumer, self.ctx.partitions.committed, self._taken_at)

    async def reset(self, outside: offsets.Outside) -> None:
        """Start these partitions again from the start of their logs, and read from there."""
        assert self.consumer is not None
        ctx = self.ctx
        group = ctx.settings.scorer.group_id
        await offsets.reset(self.consumer, ctx.engine, group, outside, ctx.metrics, ctx.clock())
        await self.rewind()

    def observe_progress(self) -> None:
        """Lag and progress of each owned partition, from its committed position only."""
        consumer = self.consumer
        assert consumer is not None
        progress: dict[str, tuple[int, int]] = {}
        fetched: list[float] = []
        assigned = consumer.assignment()
        for tp, position in self.ctx.partitions.committed.items():
            if tp not in assigned:
                continue  # mid-rebalance
            highwater = consumer.highwater(tp)
            lag = 0 if highwater is None else max(highwater - position, 0)
            self.ctx.metrics.lag.labels(str(tp.partition)).set(lag)
            progress[f"{tp.topic}/{tp.partition}"] = (position, lag)
            if (polled := consumer.last_poll_timestamp(tp)) is not None:
                fetched.append(polled / 1000)
        self.health.observe(progress, min(fetched, default=None))

"""Isolating what a batch cannot take: halving until the record to blame is found.

When a batch fails for a reason that is not retriable (`shared.failures.classify`), `isolate`
finds the records it came from by halving: each half is prepared afresh from stored state and
committed on its own; a single record that still fails is dead-lettered with the reason and the
database's message, and its offset committed. The partition moves on, and every other signal of
the batch is applied exactly once (docs/adr/0006).
"""

from __future__ import annotations

import structlog
from aiokafka import AIOKafkaProducer

from services.scorer.batching import Records, count, halves
from services.scorer.commit import Committer
from services.scorer.context import ScorerContext
from services.scorer.deadletters import DeadLetters
from services.scorer.prepare import Preparer
from services.scorer.store import Batch
from shared.errors import RecordRefused
from shared.failures import classify

log = structlog.get_logger(__name__)


class Isolator:
    def __init__(
        self,
        ctx: ScorerContext,
        preparer: Preparer,
        committer: Committer,
        dead_letters: DeadLetters,
    ) -> None:
        self.cache = ctx.cache
        self.partitions = ctx.partitions
        self.metrics = ctx.metrics
        self.clock = ctx.clock
        self.preparer = preparer
        self.committer = committer
        self.dead_letters = dead_letters

    async def isolate(self, records: Records, producer: AIOKafkaProducer) -> None:
        """Apply `records`, a batch that failed for a non-retriable reason, halving it until
        every part commits or is a single record, which is dead-lettered. The stored offsets
        must be where `records` start (the caller rewinds first). A retriable error is raised:
        the caller backs off and reads the batch again."""
        self.metrics.isolations.inc()
        log.warning("scorer.isolating", records=count(records))
        pending = [records]
        while pending:
            part = pending.pop()
            self.cache.clear()  # prepared afresh from what is stored
            try:
                await self.committer.commit(await self.preparer.prepare(part, producer))
                continue
            except Exception as exc:
                failure = classify(exc)
                if failure.retriable:
                    raise
            self.partitions.prepared.update(self.partitions.committed)
            if count(part) > 1:
                first, second = halves(part)
                pending += [second, first]  # first is popped first: offsets stay in order
                continue
            if not isinstance(failure, RecordRefused):
                raise failure  # a defect no record is to blame for
            ((tp, (record,)),) = [(tp, rs) for tp, rs in part.items() if rs]
            if tp not in self.partitions:
                continue  # revoked meanwhile: its new owner isolates it
            await self.dead_letters.send(producer, [record], failure.reason, failure.detail)
            fences = self.partitions.fences({tp: record.offset + 1})
            generation = self.partitions.generation
            await self.committer.write(Batch(fences), self.clock())
            self.partitions.committed_to(fences, generation)
            self.partitions.prepared_to(fences)
        self.cache.clear()

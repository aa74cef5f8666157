"""Which partitions of the signals topic this scorer owns, and how far each is read and stored.

Two positions per partition: `prepared`, the next offset to read (the end of the last batch
prepared, which may still be committing), and `committed`, the next offset stored in PostgreSQL
(the end of the last batch committed). Lag, progress and /healthz follow `committed` only, so a
partition whose writes fail shows as stuck however busy its batches look. Every rebalance bumps
`generation`, which voids what a batch read from memory before it (`still`).
"""

from __future__ import annotations

from collections.abc import Mapping

from aiokafka import TopicPartition

from shared.errors import FencedOut

Fences = dict[tuple[str, int], tuple[int | None, int]]  # (topic, partition) -> (expected, next)


class Partitions:
    def __init__(self) -> None:
        self.generation = 0
        self.prepared: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}

    def __contains__(self, tp: object) -> bool:
        return tp in self.prepared

    def owned(self) -> list[TopicPartition]:
        return list(self.prepared)

    def owns_first(self) -> bool:
        """Partition 0 is here: this scorer does the jobs that one scorer of the group does."""
        return any(tp.partition == 0 for tp in self.prepared)

    def forget(self, revoked: list[TopicPartition]) -> None:
        self.generation += 1
        for tp in revoked:
            self.prepared.pop(tp, None)
            self.committed.pop(tp, None)

    def adopt(self, stored: Mapping[TopicPartition, int]) -> None:
        """Own these partitions from their offsets stored in PostgreSQL."""
        self.generation += 1
        self.prepared.update(stored)
        self.committed.update(stored)

    def still(self, generation: int) -> None:
        """After an await: a rebalance meanwhile voids what a batch read from memory."""
        if self.generation != generation:
            raise FencedOut("partitions were reassigned while the batch was being prepared")

    def fences(self, ends: dict[TopicPartition, int]) -> Fences:
        """A batch's fences: each owned partition moves from where the batch before it ended
        (which may still be committing) to `ends`."""
        return {(tp.topic, tp.partition): (self.prepared[tp], end) for tp, end in ends.items()}

    def hold(self) -> Fences:
        """Fences that move nothing, for a write of time alone (the sweep), between batches."""
        return {(tp.topic, tp.partition): (at, at) for tp, at in self.committed.items()}

    def prepared_to(self, fences: Fences) -> None:
        for (topic, partition), (_, end) in fences.items():
            self.prepared[TopicPartition(topic, partition)] = end

    def committed_to(self, fences: Fences, generation: int) -> None:
        if generation != self.generation:
            return  # reassigned meanwhile: adopt() read the stored offsets afresh
        for (topic, partition), (_, end) in fences.items():
            tp = TopicPartition(topic, partition)
            if tp in self.committed:
                self.committed[tp] = end

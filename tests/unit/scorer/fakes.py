"""Records and partitions as the scorer's unit tests hand them out."""

from __future__ import annotations

from types import SimpleNamespace

from aiokafka import TopicPartition

P0, P1, P2 = (TopicPartition("s", p) for p in range(3))


def records(partition: int, keys: str) -> list[SimpleNamespace]:
    """Records of one partition, one per key, at offsets from 0."""
    return [SimpleNamespace(key=k.encode(), offset=i) for i, k in enumerate(keys)]

"""Stored offsets checked against the broker's log when the scorer takes a partition.

PostgreSQL holds where the scorer is in each partition (docs/adr/0002); the broker may no longer
have that place: a topic deleted and created again, a new cluster, or retention that passed
records never scored. Following such an offset would skip records silently (a fetch past the
end returns nothing until the new log grows past it), so it is reset, logged and counted.
"""

from __future__ import annotations

from datetime import datetime

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scorer import store
from services.scorer.metrics import ScorerMetrics
from services.scorer.partitions import Fences
from services.scorer.store import Batch

log = structlog.get_logger(__name__)


async def within_the_log(
    consumer: AIOKafkaConsumer,
    engine: AsyncEngine,
    group_id: str,
    stored: dict[TopicPartition, int | None],
    metrics: ScorerMetrics,
    now: datetime,
) -> dict[TopicPartition, int | None]:
    """The stored offsets, each checked against the partition's log on the broker. One
    past its end (the topic was deleted and created again, or the cluster is new) or
    before its start (retention removed what was never scored) is never followed
    silently: the partition starts again from its earliest record (re-delivered signals
    are dropped by id), its stored offset is moved there in PostgreSQL, and the reset is
    logged and counted (`healthscore_scorer_offset_resets_total`, an alert)."""
    known = {tp: offset for tp, offset in stored.items() if offset is not None}
    if not known:
        return stored
    starts = await consumer.beginning_offsets(list(known))
    ends = await consumer.end_offsets(list(known))
    fences: Fences = {}
    for tp, offset in known.items():
        start, end = starts[tp], ends[tp]
        reason = "beyond_end" if offset > end else "before_start" if offset < start else None
        if reason is None:
            continue
        fences[(tp.topic, tp.partition)] = (offset, start)
        metrics.offset_resets.labels(reason).inc()
        log.error(
            "scorer.offset_reset",
            partition=tp.partition,
            reason=reason,
            stored=offset,
            log_start=start,
            log_end=end,
            now_from=start,
        )
    if fences:
        await store.write_batch(engine, group_id, Batch(fences), now)
    return {**stored, **{TopicPartition(t, p): new for (t, p), (_, new) in fences.items()}}

"""Stored offsets checked against the broker's log: never followed outside it, silently.

PostgreSQL holds where the scorer is in each partition (docs/adr/0002); the broker may no longer
have that place. Past the log's end (the topic was deleted and created again, or the cluster is
new) a fetch returns nothing until the new log grows past the stored offset, so everything
below it would be skipped; before the log's start, retention removed records never scored. An
offset before the start is seen when a partition is taken (the log's beginning offset); one past
the end by the high-water mark of the first fetch after it (the broker's end-offset answer is
not trusted: the dev broker's is stale). Either way the partition starts again from its earliest
record (re-sent signals are dropped by id), its stored offset is moved there, and the reset is
logged and counted (`healthscore_scorer_offset_resets_total`, an alert).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scorer import store
from services.scorer.metrics import ScorerMetrics
from services.scorer.partitions import Fences
from services.scorer.store import Batch

log = structlog.get_logger(__name__)

Outside = dict[TopicPartition, tuple[int, str]]  # partition -> (stored offset, reason)


async def starting(
    consumer: AIOKafkaConsumer,
    engine: AsyncEngine,
    group_id: str,
    taken: list[TopicPartition],
    metrics: ScorerMetrics,
    now: datetime,
) -> dict[TopicPartition, int]:
    """Where to read the partitions just taken: from their offsets stored in PostgreSQL,
    unless retention has passed one (then reset to the log's start). A partition that never
    had one stored gets its log's start stored now: from then on it has a fence, which a write
    of time alone (the sweep, a model change) holds, even before its first record comes."""
    keys = {tp: (tp.topic, tp.partition) for tp in taken}
    stored = await store.load_offsets(engine, group_id, keys.values())
    starts = await consumer.beginning_offsets(taken)
    if new := {keys[tp]: starts[tp] for tp in taken if keys[tp] not in stored}:
        await store.store_first_offsets(engine, group_id, new, now)
        stored = await store.load_offsets(engine, group_id, keys.values())
    positions = {tp: stored[keys[tp]] for tp in taken}
    passed = {tp: (at, "before_start") for tp, at in positions.items() if at < starts[tp]}
    if passed:
        positions.update(await reset(consumer, engine, group_id, passed, metrics, now))
    return positions


def beyond_end(
    consumer: AIOKafkaConsumer,
    committed: Mapping[TopicPartition, int | None],
    taken_at: Mapping[TopicPartition, float],
) -> Outside:
    """Stored offsets past the end of the log, by the high-water mark of a fetch made after the
    partition was taken (`taken_at`, epoch ms): an older one may be another owner's past."""
    outside: Outside = {}
    for tp, offset in committed.items():
        highwater, polled = consumer.highwater(tp), consumer.last_poll_timestamp(tp)
        if offset is None or highwater is None or polled is None:
            continue
        if polled > taken_at.get(tp, float("inf")) and highwater < offset:
            outside[tp] = (offset, "beyond_end")
    return outside


async def reset(
    consumer: AIOKafkaConsumer,
    engine: AsyncEngine,
    group_id: str,
    outside: Outside,
    metrics: ScorerMetrics,
    now: datetime,
) -> dict[TopicPartition, int]:
    """Move each partition's stored offset to the start of its log; the new positions."""
    starts = await consumer.beginning_offsets(list(outside))
    fences: Fences = {}
    for tp, (offset, reason) in outside.items():
        fences[(tp.topic, tp.partition)] = (offset, starts[tp])
        metrics.offset_resets.labels(reason).inc()
        log.error(
            "scorer.offset_reset",
            partition=tp.partition,
            reason=reason,
            stored=offset,
            highwater=consumer.highwater(tp),
            now_from=starts[tp],
        )
    await store.write_batch(engine, group_id, Batch(fences), now)
    return {tp: starts[tp] for tp in outside}

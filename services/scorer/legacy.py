"""Partitions taken while the database is at revision 0015, beside scorers of release 0014.

A partition still written by release 0014 (`store_format` 1) is taken in three steps: its
offsets row moves to 2, which fences release 0014's writers out (migration 0015: their fence no
longer holds, and they back off as scorers that lost the partition do); its accounts are
converted, a chunk at a time (shared/legacy.py); it is marked 3. A scorer that loses the
partition halfway leaves the rest to the next owner, which goes on from what is converted.
From revision 0016 on every partition is at 3 and this does nothing. It goes with the release
after this one.
"""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from aiokafka import TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.errors import FencedOut
from shared.legacy import CHUNK, CONVERT, TO_CONVERT, convert_parameters

log = structlog.get_logger(__name__)

_FORMATS = text(
    "SELECT partition, store_format FROM consumer_offsets"
    " WHERE group_id = :group AND topic = :topic AND partition = ANY(:partitions)"
)
_FENCE = text(
    "UPDATE consumer_offsets SET store_format = 2, fence_epoch = fence_epoch + 1"
    " WHERE group_id = :group AND topic = :topic AND partition = :partition"
    " AND next_offset = :offset AND store_format < 2"
)
_CONVERTED = text(
    "UPDATE consumer_offsets SET store_format = 3, fence_epoch = fence_epoch + 1"
    " WHERE group_id = :group AND topic = :topic AND partition = :partition"
)


async def take_over(
    engine: AsyncEngine, group_id: str, positions: dict[TopicPartition, int]
) -> None:
    """Make the partitions just taken (at their stored `positions`) this release's alone."""
    by_topic: dict[str, list[int]] = {}
    for tp in positions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    for topic, partitions in by_topic.items():
        async with engine.connect() as conn:
            formats: dict[int, int] = dict(
                list(
                    await conn.execute(
                        _FORMATS, {"group": group_id, "topic": topic, "partitions": partitions}
                    )
                )
            )
        for partition in partitions:
            if formats.get(partition, 3) >= 3:
                continue
            key = {"group": group_id, "topic": topic, "partition": partition}
            if formats[partition] < 2:
                offset = positions[TopicPartition(topic, partition)]
                async with engine.begin() as conn:
                    fenced = await conn.execute(_FENCE, {**key, "offset": offset})
                if fenced.rowcount != 1:
                    raise FencedOut(f"{topic}[{partition}] moved on while being taken over")
            converted = await _convert(engine, partition)
            async with engine.begin() as conn:
                await conn.execute(_CONVERTED, key)
            log.info("scorer.partition_converted", partition=partition, accounts=converted)


async def _convert(engine: AsyncEngine, partition: int) -> int:
    done, after = 0, None
    while True:
        async with engine.begin() as conn:
            rows = list(
                await conn.execute(
                    TO_CONVERT, {"partitions": [partition], "after": after, "limit": CHUNK}
                )
            )
            if not rows:
                return done
            await conn.execute(CONVERT, convert_parameters(rows, datetime.now(UTC)))
        done += len(rows)
        after = rows[-1].account_id

"""Inspect and re-inject dead letters (`healthscore dlq list|replay`).

`list` reads account-health.dlq from the beginning (no consumer group, nothing committed) and
describes each record: reason, detail, field path, where it came from and a preview of its
bytes. `replay` re-produces the selected records, byte for byte with their original key, to
the topic they came from, so that ingest (or, for what the scorer dead-lettered, the scorer)
takes them again after a fix (a schema upgrade, a corrected limit). Replayed records carry a
`replayed_from` header.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRecord

from shared.config import KafkaSettings
from shared.kafka import make_producer, read_all


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @classmethod
    def from_record(cls, record: ConsumerRecord[bytes, bytes]) -> DeadLetter:
        headers = {k: v.decode("utf-8", "replace") for k, v in record.headers or ()}
        return cls(record.partition, record.offset, record.key, record.value, headers)

    @property
    def reason(self) -> str:
        return self.headers.get("reason", "")

    @property
    def source_topic(self) -> str:
        return self.headers.get("source_topic", "")

    def describe(self, preview: int = 160) -> dict[str, Any]:
        value = self.value or b""
        return {
            "dlq_partition": self.partition,
            "dlq_offset": self.offset,
            "reason": self.reason,
            "detail": self.headers.get("detail"),
            "path": self.headers.get("path"),
            "source_topic": self.source_topic,
            "source_partition": self.headers.get("source_partition"),
            "source_offset": self.headers.get("source_offset"),
            "rejected_at": self.headers.get("rejected_at"),
            "key": self.key.decode("utf-8", "replace") if self.key is not None else None,
            "bytes": len(value),
            "preview": value[:preview].decode("utf-8", "replace"),
        }


async def dead_letters(
    settings: KafkaSettings,
    *,
    reason: str | None = None,
    source_topic: str | None = None,
    positions: set[tuple[int, int]] | None = None,
) -> list[DeadLetter]:
    """The dead letters matching every given filter, oldest first per partition."""
    records = await read_all(settings, settings.topics.dlq)
    letters = [DeadLetter.from_record(r) for r in records]
    return [
        d
        for d in letters
        if (reason is None or d.reason == reason)
        and (source_topic is None or d.source_topic == source_topic)
        and (positions is None or (d.partition, d.offset) in positions)
    ]


async def replay(settings: KafkaSettings, letters: list[DeadLetter]) -> int:
    """Re-produce each dead letter to its source topic (a raw topic, or the signals topic for
    what the scorer dead-lettered); returns how many were sent."""
    inputs = {*settings.topics.raw, settings.topics.signals}
    unknown = {d.source_topic for d in letters} - inputs
    if unknown:
        raise ValueError(f"not input topics of this deployment: {sorted(unknown)}")
    producer = make_producer(settings)
    await producer.start()
    try:
        futures = [
            await producer.send(
                d.source_topic,
                value=d.value,
                key=d.key,
                headers=[("replayed_from", f"dlq:{d.partition}:{d.offset}".encode())],
            )
            for d in letters
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(letters)

"""Plain Kafka producer/reader helpers for tests (no consumer group, no commits)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import ConsumerRecord

from shared.config import Settings
from shared.kafka import ensure_topics, make_producer, read_all


async def produce(
    settings: Settings, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]
) -> int:
    await ensure_topics(settings.kafka, [topic])
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key) for key, value in records]
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


async def read_topic(
    settings: Settings,
    topic: str,
    *,
    expect: int | None = None,
    timeout: float = 60.0,
    settle: float = 1.0,
) -> list[ConsumerRecord]:
    await ensure_topics(settings.kafka, [topic])
    return await read_all(settings.kafka, topic, expect=expect, timeout=timeout, settle=settle)


def header(record: ConsumerRecord, name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return value.decode()
    return None

"""Kafka clients built one way for every service, and the topics they need.

The dev/test broker (tansu) does not support idempotent or transactional producers, and
`end_offsets()` / `auto_offset_reset="latest"` are unreliable on it; nothing here uses them.
Delivery guarantees come from the design instead: ingest commits raw offsets only after its
output is acknowledged; the scorer stores its offsets in PostgreSQL with its writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from shared.config import KafkaSettings
from shared.retry import Backoff

log = structlog.get_logger(__name__)
T = TypeVar("T")


async def reachable(connect: Callable[[], Awaitable[T]], what: str) -> T:
    """`connect()`, again while the broker cannot be reached (restarting, or not up yet),
    backing off as every loop does (shared/retry.py). The start-up step around it bounds how
    long: a process started while the broker is away waits for it instead of exiting."""
    backoff = Backoff()
    while True:
        try:
            return await connect()
        except KafkaConnectionError as exc:
            delay = backoff.next_delay()
            log.warning("kafka.unreachable", step=what, error=str(exc), delay=round(delay, 2))
            await asyncio.sleep(delay)


def make_producer(settings: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "acks": "all",
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "max_request_size": 4 * 1024 * 1024,
        "request_timeout_ms": settings.request_timeout_ms,
        "enable_idempotence": False,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def make_consumer(
    settings: KafkaSettings, group_id: str | None, *topics: str, **overrides: Any
) -> AIOKafkaConsumer:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": max(settings.session_timeout_ms // 5, 500),
        "request_timeout_ms": settings.request_timeout_ms,
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        "fetch_max_bytes": 16 * 1024 * 1024,
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


async def leave(client: AIOKafkaConsumer | AIOKafkaProducer, seconds: float = 10.0) -> None:
    """Stop a client when its worker stops, bounded: leaving a group the broker does not answer
    for must not keep the process from exiting (its partitions are reassigned after the
    session timeout anyway)."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.stop(), seconds)


def dead_letter_headers(
    record: ConsumerRecord[bytes, bytes],
    reason: str,
    detail: str,
    rejected_at: datetime,
    path: str | None = None,
) -> list[tuple[str, bytes]]:
    """The headers of a dead letter, whichever service rejects the record: a machine-readable
    reason, a human-readable detail, where the record came from (so `healthscore dlq replay`
    can send it back there) and when; then the record's own headers, prefixed `original_`."""
    headers = [
        ("reason", reason.encode()),
        ("detail", detail.encode("utf-8", "replace")),
        ("source_topic", record.topic.encode()),
        ("source_partition", str(record.partition).encode()),
        ("source_offset", str(record.offset).encode()),
        ("rejected_at", rejected_at.isoformat().encode()),
    ]
    if path is not None:
        headers.append(("path", path.encode("utf-8", "replace")))
    return headers + [(f"original_{k}", v) for k, v in record.headers or ()]


async def ensure_topics(
    settings: KafkaSettings, topics: Iterable[str], partitions: int | None = None
) -> None:
    """Create the topics that do not exist yet (dev and tests; production pre-creates them)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, client_id=settings.client_id
    )
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if not missing:
            return
        new = [
            NewTopic(t, partitions or settings.partitions, settings.replication_factor)
            for t in missing
        ]
        with contextlib.suppress(TopicAlreadyExistsError):  # created concurrently
            await admin.create_topics(new)
    finally:
        await admin.close()


async def read_all(
    settings: KafkaSettings,
    topic: str,
    *,
    expect: int | None = None,
    timeout: float = 60.0,  # noqa: ASYNC109 - a bound on reading, not a cancellation scope
    settle: float = 1.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topic` from the beginning, without a consumer group: until `expect`
    records arrived, or (expect=None) until nothing new came for `settle` seconds."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=settings.client_id,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    try:
        await consumer.topics()  # refresh metadata
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            got = [r for rs in batch.values() for r in rs]
            records += got
            if got:
                quiet_since = time.monotonic()
            if expect is not None and len(records) >= expect:
                break
            if expect is None and time.monotonic() - quiet_since > settle:
                break
        return records
    finally:
        await consumer.stop()

"""Outgoing records to the broker: as whole batches per partition, every acknowledgement
awaited, the lot sent again after a retriable broker error."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import Counter

from services.ingest.route import Outgoing
from shared.failures import classify
from shared.retry import Backoff

log = structlog.get_logger(__name__)


class Deliverer:
    """Sends a batch's outgoing records and waits for them; `retries` counts the re-sends."""

    def __init__(self, retries: Counter) -> None:
        self.retries = retries
        self._partitions: dict[tuple[bytes, int], int] = {}  # (key, partitions) -> partition

    async def _send_all(self, producer: AIOKafkaProducer, outgoing: Sequence[Outgoing]) -> None:
        """Send as whole batches per partition (far less per-record overhead than send()),
        partitioned like the Java client (murmur2 of the key), and wait for every ack."""
        partitions = {
            topic: sorted(await producer.partitions_for(topic))
            for topic in {o[0] for o in outgoing}
        }
        grouped: dict[tuple[str, int], list[Outgoing]] = defaultdict(list)
        partitioner, known = DefaultPartitioner(), self._partitions
        if len(known) > 200_000:  # keys seen: accounts, mostly; murmur2 in Python is 1.5 µs
            known.clear()
        for record in outgoing:
            topic, key = record[0], record[1]
            choices = partitions[topic]
            if key is None:
                partition = partitioner(key, choices, choices)
            elif (partition := known.get((key, len(choices)), -1)) < 0:
                partition = known[(key, len(choices))] = partitioner(key, choices, choices)
            grouped[(topic, partition)].append(record)
        futures = []
        for (topic, partition), records in grouped.items():
            batch = producer.create_batch()
            for _, key, value, headers in records:
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None, headers=headers)
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)

    async def deliver(
        self, producer: AIOKafkaProducer, outgoing: Sequence[Outgoing], stop: asyncio.Event
    ) -> bool:
        """Send everything and wait for every ack; retry the lot on broker errors."""
        backoff = Backoff()
        while True:
            try:
                await self._send_all(producer, outgoing)
                return True
            except Exception as exc:
                if not classify(exc).retriable:
                    raise
                self.retries.inc()
                delay = backoff.next_delay()
                log.warning("ingest.delivery_retry", error=repr(exc), delay=round(delay, 2))
                if stop.is_set() and backoff.failures > 5:
                    return False  # shutting down while the broker is away: commit nothing
                await asyncio.sleep(delay)

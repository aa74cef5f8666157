"""Ingest throughput end to end, against the raw produce rate of the same messages.

1. Generates a fixed set of realistic raw events (the simulator, 1% malformed).
2. Reference: produces them with a plain aiokafka producer to a scratch topic (events/s).
3. Produces them to the raw topics, starts ingest, and measures from its first consumed record
   to the commit of the last batch (every signal and DLQ record acknowledged first).
Last line: {"bench": "ingest", "events": N, "ingest_eps": ..., "raw_produce_eps": ..., ...}
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta

import orjson
from common import infrastructure, report, run
from prometheus_client import CollectorRegistry

from services.ingest.consume import Ingest
from services.simulator.world import World, malformed
from shared.config import Settings
from shared.events import EVENT_TYPE_SOURCE
from shared.kafka import ensure_topics, make_producer

EVENTS = 60_000


def raw_events(count: int) -> list[tuple[str, bytes, bytes]]:
    now = datetime.now(UTC)
    world = World(21, 1500, start=now - timedelta(days=30), days=30)
    rng = random.Random(1)
    out: list[tuple[str, bytes, bytes]] = []
    for day in range(30):
        for account in world.accounts:
            for event in world.day_events(account, day):
                value = malformed(rng, event) if rng.random() < 0.01 else orjson.dumps(event)
                out.append((EVENT_TYPE_SOURCE[event["type"]], event["account_id"].encode(), value))
                if len(out) == count:
                    return out
    return out


async def produce_all(
    settings: Settings, records: list[tuple[str, bytes, bytes]], topic_of
) -> float:  # type: ignore[no-untyped-def]
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        started = time.perf_counter()
        futures = []
        for source, key, value in records:
            futures.append(await producer.send(topic_of(source), value, key=key))
            if len(futures) >= 5000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def main() -> None:
    records = raw_events(EVENTS)
    with infrastructure(database=False) as settings:
        topics = settings.kafka.topics
        scratch = f"{topics.signals}-reference"
        await ensure_topics(settings.kafka, [*topics.raw, topics.signals, topics.dlq, scratch])
        # warm-up, then the reference: the same messages, produced as fast as aiokafka can
        await produce_all(settings, records[:2000], lambda _: scratch)
        raw_seconds = await produce_all(settings, records, lambda _: scratch)
        by_source = {"usage": topics.usage, "support": topics.support, "billing": topics.billing}
        await produce_all(settings, records, by_source.__getitem__)

        ingest = Ingest(settings, registry=CollectorRegistry())
        stop = asyncio.Event()
        task = asyncio.create_task(ingest.run(stop))

        def consumed() -> float:
            return sum(ingest.metrics.consumed.labels(t)._value.get() for t in topics.raw)

        def committed() -> float:  # records of batches whose output was acked and committed
            return ingest.metrics.batch_size._sum.get()

        while consumed() == 0:
            await asyncio.sleep(0.005)
        started = time.perf_counter()
        while committed() < len(records):
            await asyncio.sleep(0.005)
        ingest_seconds = time.perf_counter() - started
        stop.set()
        await task
        dead = sum(
            s.value
            for m in ingest.metrics.dead_lettered.collect()
            for s in m.samples
            if s.name.endswith("_total")
        )
    raw_eps = len(records) / raw_seconds
    ingest_eps = len(records) / ingest_seconds
    print(
        f"raw produce: {raw_eps:,.0f} events/s; ingest end to end: {ingest_eps:,.0f} events/s "
        f"({dead:.0f} dead-lettered)"
    )
    report(
        {
            "bench": "ingest",
            "events": len(records),
            "ingest_eps": round(ingest_eps),
            "raw_produce_eps": round(raw_eps),
            "ratio": round(ingest_eps / raw_eps, 3),
            "dead_lettered": int(dead),
        }
    )


if __name__ == "__main__":
    run(main)

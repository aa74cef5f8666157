"""Ingest throughput end to end per source format, against the raw produce rate of the same
records.

1. Generates a fixed set of realistic raw records (the simulator, 1% malformed): v1 events, and
   the same world as Segment calls, Stripe events and Zendesk webhooks.
2. Per format, the reference: the same records produced with a plain aiokafka producer to a
   scratch topic (records/s).
3. Produces them to a topic of that format, starts ingest (vendor formats with their link store
   in PostgreSQL, as deployed), and measures from its first consumed record to the commit of
   the last batch (every signal and DLQ record acknowledged first).
Last line: {"bench": "ingest", "formats": {fmt: {"records", "ingest_eps", "raw_produce_eps",
"ratio", ...}}, "min_ratio": ...}
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import orjson
from common import infrastructure, report, run
from prometheus_client import CollectorRegistry

from services.ingest.consume import Ingest
from services.ingest.links import PostgresLinks
from services.simulator.vendors import Vendors
from services.simulator.world import World, malformed
from shared.config import Settings
from shared.db import create_engine
from shared.kafka import ensure_topics, make_producer
from shared.ops import STREAM_YOUNG_GC_THRESHOLD, settle_heap

FORMATS = ("v1", "segment", "stripe", "zendesk")
PER_FORMAT = 40_000

Record = tuple[bytes, bytes]


def raw_records() -> dict[str, list[Record]]:
    """Up to PER_FORMAT records of each format from one simulated world: day by day until
    every format has its share (billing and support events are sparser than usage)."""
    now = datetime.now(UTC)
    days = 240
    world = World(21, 3000, start=now - timedelta(days=days), days=days)
    vendors = Vendors({"segment", "stripe", "zendesk"})
    rng = random.Random(1)
    out: dict[str, list[Record]] = {fmt: [] for fmt in FORMATS}

    def add(fmt: str, key: str, record: dict[str, object], own: bool) -> None:
        if len(out[fmt]) < PER_FORMAT:
            broken = own and rng.random() < 0.01
            value = malformed(rng, record) if broken else orjson.dumps(record)
            out[fmt].append((key.encode(), value))

    for day in range(days):
        if all(len(records) >= PER_FORMAT for records in out.values()):
            break
        for account in world.accounts:
            for event in world.day_events(account, day):
                add("v1", event["account_id"], event, True)
                converted = vendors.convert(event)
                for fmt, key, record in converted:
                    if fmt != "v1":
                        add(fmt, key, record, record is converted[-1][2])
    return out


async def produce_all(settings: Settings, topic: str, records: Sequence[Record]) -> float:
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        started = time.perf_counter()
        futures = []
        for key, value in records:
            futures.append(await producer.send(topic, value, key=key))
            if len(futures) >= 5000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


def for_format(settings: Settings, fmt: str, label: str) -> Settings:
    """Settings reading one topic of format `fmt` in a consumer group of its own."""
    base = settings.kafka.topics
    tag = f"{label}-{base.usage}"
    topics = base.model_copy(
        update={
            "usage": f"{tag}-usage",
            "support": f"{tag}-support",
            "billing": f"{tag}-billing",
            "sources": {} if fmt == "v1" else {f"{tag}-raw": fmt},
        }
    )
    kafka = settings.kafka.model_copy(update={"topics": topics})
    ingest = settings.ingest.model_copy(update={"group_id": f"bench-ingest-{tag}"})
    return settings.model_copy(update={"kafka": kafka, "ingest": ingest})


async def measure(
    settings: Settings, fmt: str, records: list[Record], *, sentiment: bool = True
) -> dict[str, object]:
    settings = for_format(settings, fmt, fmt if sentiment else f"{fmt}-bare")
    topics = settings.kafka.topics
    topic = topics.usage if fmt == "v1" else next(iter(topics.sources))
    scratch = f"{topic}-reference"
    await ensure_topics(settings.kafka, [*topics.raw, topics.signals, topics.dlq, scratch])
    # warm-up, then the reference: the same records, produced as fast as aiokafka can
    await produce_all(settings, scratch, records[:2000])
    raw_seconds = await produce_all(settings, scratch, records)
    await produce_all(settings, topic, records)

    engine = create_engine(settings.database) if fmt != "v1" else None
    links = PostgresLinks(engine) if engine is not None else None
    ingest = Ingest(settings, registry=CollectorRegistry(), links=links)
    if not sentiment:
        ingest.router.decoder.sentiment = None
    settle_heap(STREAM_YOUNG_GC_THRESHOLD)  # as `serve` does before the loop
    stop = asyncio.Event()
    task = asyncio.create_task(ingest.run(stop))

    def consumed() -> float:
        return sum(ingest.metrics.consumed.labels(t)._value.get() for t in topics.raw)

    while consumed() == 0:
        await asyncio.sleep(0.005)
    started = time.perf_counter()
    # committed offsets: records whose every output was acknowledged (fresh topics start at 0)
    while sum(ingest.committed.values()) < len(records):
        await asyncio.sleep(0.005)
    ingest_seconds = time.perf_counter() - started
    stop.set()
    await task
    if engine is not None:
        await engine.dispose()

    def total(counter: object) -> int:
        return int(
            sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))  # type: ignore[attr-defined]
        )

    raw_eps, ingest_eps = len(records) / raw_seconds, len(records) / ingest_seconds
    label = fmt if sentiment else f"{fmt} (no sentiment)"
    print(
        f"{label:8} {len(records):>6} records: raw produce {raw_eps:>8,.0f}/s, ingest end to end "
        f"{ingest_eps:>8,.0f}/s, ratio {ingest_eps / raw_eps:.3f}",
        flush=True,
    )
    return {
        "records": len(records),
        "ingest_eps": round(ingest_eps),
        "raw_produce_eps": round(raw_eps),
        "ratio": round(ingest_eps / raw_eps, 3),
        "signals": total(ingest.metrics.signals),
        "dead_lettered": total(ingest.metrics.dead_lettered),
        "skipped": total(ingest.metrics.skipped),
    }


async def main() -> None:
    records = raw_records()
    with infrastructure(database=True) as settings:
        figures = {fmt: await measure(settings, fmt, records[fmt]) for fmt in FORMATS}
        # what the Zendesk adapter costs apart from scoring every ticket text's sentiment
        bare = await measure(settings, "zendesk", records["zendesk"], sentiment=False)
    report(
        {
            "bench": "ingest",
            "formats": figures,
            "min_ratio": min(f["ratio"] for f in figures.values()),  # type: ignore[type-var]
            "zendesk_without_sentiment_ratio": bare["ratio"],
        }
    )


if __name__ == "__main__":
    run(main)

"""Scorer: durable throughput vs raw consume-and-decode, freshness at a steady rate, RSS.

1. Pre-loads the signals topic with simulated signals.
2. Reference: reads the same topic with a plain consumer and decodes every signal (signals/s).
3. Scorer throughput: signals/s committed to PostgreSQL (state, scores, history, outbox,
   offsets in one transaction per batch), from its first records in hand to the commit of the
   last, in a catch-up of the whole topic from an empty database.
   Three rounds of a reference read followed by a catch-up; the ratio is the median of the
   rounds' ratios, each catch-up against the read made just before it.
4. Freshness: a separate process produces fresh signals at a steady 5,000/s; the scorer records
   commit time minus event time of every signal; p50/p99.
5. RSS of a `healthscore scorer` process after it has scored 100,000 accounts.
Last line: {"bench": "scorer", "signals": N, "scorer_eps": ..., "raw_consume_eps": ..., ...}
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median

from aiokafka import AIOKafkaConsumer, TopicPartition
from common import infrastructure, own_group, own_topic, peak_rss_mb, report, run
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scorer.consume import Scorer
from shared.config import Settings
from shared.db import create_engine
from shared.events import Signal, decode_signal, encode_signal
from shared.ops import STREAM_YOUNG_GC_THRESHOLD, settle_heap
from tests.support.infra import settings_env
from tests.support.kafka_io import produce
from tests.support.signals import consumed, simulated_signals

ROUNDS = 3
# everything a scorer writes: a round left with the last one's state and de-duplication memory
# would drop every signal as a duplicate
SCORER_TABLES = (
    "accounts",
    "account_states",
    "seen_signals",
    "scores",
    "score_history",
    "outbox",
    "consumer_offsets",
)
STEADY_RATE = 5_000
STEADY_SECONDS = 20
RSS_ACCOUNTS = 100_000


class Measured:
    """A scorer's run as measured: the exact freshness of every signal it commits, when it
    first had records in hand and when it last committed."""

    def __init__(self, scorer: Scorer) -> None:
        self.freshness: list[float] = []
        self.first_records: float | None = None
        self.last_commit = 0.0
        prepare, observe = scorer.preparer.prepare, scorer.committer.observe
        partitions = scorer.partitions

        async def measured_prepare(records, producer):  # type: ignore[no-untyped-def]
            if self.first_records is None and any(tp in partitions for tp in records):
                self.first_records = time.perf_counter()  # records it owns, not ones it drops
            return await prepare(records, producer)

        def measured_observe(prepared):  # type: ignore[no-untyped-def]
            self.last_commit = time.perf_counter()
            committed = time.time()
            self.freshness.extend(committed - t for t in prepared.event_times)
            observe(prepared)

        scorer.preparer.prepare = measured_prepare  # type: ignore[method-assign]
        scorer.committer.observe = measured_observe  # type: ignore[method-assign]


class MeasuredScorer(Scorer):
    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.measured = Measured(self)


async def raw_consume(settings: Settings, total: int) -> float:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        topic = settings.kafka.topics.signals
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        started, seen = time.perf_counter(), 0
        while seen < total:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batch.values():
                for record in records:
                    decode_signal(record.value)
                seen += len(records)
        return total / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def fresh_copies(signals: list[Signal]) -> list[Signal]:
    return [
        s.model_copy(update={"signal_id": f"fresh-{i}-{s.signal_id}"})
        for i, s in enumerate(signals)
    ]


STEADY_PRODUCER = """
import asyncio, sys, time, orjson
from datetime import UTC, datetime
from shared.config import Settings
from shared.kafka import make_producer

async def main():
    settings = Settings()
    lines = sys.stdin.buffer.read().splitlines()
    producer = make_producer(settings.kafka, linger_ms=1)
    await producer.start()
    rate, started, pending = {rate}, time.monotonic(), []
    for i, line in enumerate(lines):
        doc = orjson.loads(line)
        doc["occurred_at"] = datetime.now(UTC).isoformat()
        pending.append(await producer.send(settings.kafka.topics.signals, orjson.dumps(doc),
                                           key=doc["account_id"].encode()))
        ahead = (i + 1) / rate - (time.monotonic() - started)
        if ahead > 0:
            await asyncio.sleep(ahead)
    await asyncio.gather(*pending)
    await producer.stop()

asyncio.run(main())
"""


async def steady_freshness(
    settings: Settings, scorer: MeasuredScorer, template: list[Signal], already: int
) -> tuple[float, float, float]:
    scorer.measured.freshness = []
    count = STEADY_RATE * STEADY_SECONDS
    lines = b"\n".join(encode_signal(s) for s in fresh_copies((template * 3)[:count]))
    env = settings_env(settings)
    started = time.monotonic()
    # a separate process, so that producing does not share the scorer's event loop or core
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        STEADY_PRODUCER.replace("{rate}", str(STEADY_RATE)),
        stdin=asyncio.subprocess.PIPE,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
    )
    await proc.communicate(lines)
    achieved = count / (time.monotonic() - started)
    assert proc.returncode == 0
    while len(scorer.measured.freshness) < count:
        await asyncio.sleep(0.1)
    ordered = sorted(scorer.measured.freshness)
    return (ordered[len(ordered) // 2] * 1000, ordered[int(len(ordered) * 0.99)] * 1000, achieved)


async def rss_at(settings: Settings, accounts: int) -> float:
    """VmHWM (peak RSS) of a real scorer process that scored `accounts` accounts."""
    now = datetime.now(UTC)
    signals = []
    for i in range(accounts):
        account = f"rss-{i:06d}"
        for n, (kind, data) in enumerate(
            [
                (
                    "account_profile_updated",
                    {
                        "name": account,
                        "industry": "retail",
                        "region": "emea",
                        "tier": "growth",
                        "lifecycle_stage": "mature",
                    },
                ),
                ("session_started", {"user_id": "u1", "duration_seconds": 60}),
                ("seats_used_reported", {"seats_in_use": 7}),
            ]
        ):
            signals.append(
                Signal(
                    signal_id=f"{account}-{n}",
                    account_id=account,
                    occurred_at=now - timedelta(hours=n),
                    source="usage" if kind != "account_profile_updated" else "billing",
                    kind=kind,
                    data=data,
                    ingested_at=now,
                )
            )
    rss_settings = own_topic(settings, "rss")
    total = await produce(
        rss_settings,
        rss_settings.kafka.topics.signals,
        [(s.account_id.encode(), encode_signal(s)) for s in signals],
    )
    engine = create_engine(settings.database)
    env = settings_env(rss_settings)
    env.update(os.environ)  # e.g. HEALTHSCORE_SCORER__STATE_CACHE_SIZE to see its effect
    proc = subprocess.Popen(
        [sys.executable, "-m", "healthscore", "scorer"], env=env, stderr=subprocess.DEVNULL
    )
    try:
        while await consumed(engine, rss_settings) < total:
            assert proc.poll() is None
            await asyncio.sleep(0.5)
        return peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
        await engine.dispose()


async def catch_up(
    settings: Settings, engine: AsyncEngine, total: int
) -> tuple[float, MeasuredScorer, asyncio.Event, asyncio.Task[None]]:
    """A scorer started on the pre-loaded topic: signals/s from its first records in hand (after
    it joined the group) to the commit that covers the whole topic. It keeps running (stop it
    with the event returned)."""
    scorer = MeasuredScorer(settings, engine, registry=CollectorRegistry())
    scorer.measured.freshness = []
    stop = asyncio.Event()
    task = asyncio.create_task(scorer.run(stop))
    while await consumed(engine, settings) < total:
        # the scorer times its own last commit: looking seldom takes less of its event loop
        await asyncio.sleep(0.25)
    assert scorer.measured.first_records is not None
    return total / (scorer.measured.last_commit - scorer.measured.first_records), scorer, stop, task


async def main() -> None:
    signals = simulated_signals(2000, 10, seed=3)
    with infrastructure() as settings:
        total = await produce(
            settings,
            settings.kafka.topics.signals,
            [(s.account_id.encode(), encode_signal(s)) for s in signals],
        )
        await raw_consume(settings, min(total, 5000))  # warm-up
        engine = create_engine(settings.database)
        settle_heap(STREAM_YOUNG_GC_THRESHOLD)  # as `healthscore scorer` does once started
        # Rounds of a reference read followed by a catch-up from an empty database, so that each
        # catch-up is compared with a read made moments before it: a noisy machine's slow or
        # fast spells then move both. Both run with the collector settings above (the reference
        # read ~40% faster with them than with Python's defaults). The medians of the rounds
        # are reported; the last scorer stays on for the steady rate.
        raw_rates: list[float] = []
        rates: list[float] = []
        for attempt in range(ROUNDS):
            raw_rates.append(await raw_consume(settings, total))
            # a group of its own: no rebalance when the previous scorer's leaving is seen late
            own = own_group(settings, str(attempt))
            rate, scorer, stop, task = await catch_up(own, engine, total)
            rates.append(rate)
            if attempt < ROUNDS - 1:
                stop.set()
                await task
                async with engine.begin() as conn:
                    await conn.execute(text(f"TRUNCATE {', '.join(SCORER_TABLES)}"))
        raw_eps, scorer_eps = median(raw_rates), median(rates)
        ratio = median(r / raw for r, raw in zip(rates, raw_rates, strict=True))
        p50, p99, achieved = await steady_freshness(settings, scorer, signals, total)
        stop.set()
        await task
        await engine.dispose()
        rss_mb = await rss_at(settings, RSS_ACCOUNTS)
    rounds = ", ".join(f"{r:,.0f}/{w:,.0f}" for r, w in zip(rates, raw_rates, strict=True))
    print(
        f"raw consume+decode {raw_eps:,.0f}/s; scorer durable {scorer_eps:,.0f}/s; "
        f"rounds (scorer/raw): {rounds}; "
        f"freshness at {achieved:,.0f}/s p50 {p50:.0f} ms p99 {p99:.0f} ms; "
        f"peak RSS with {RSS_ACCOUNTS:,} accounts {rss_mb:.0f} MB"
    )
    report(
        {
            "bench": "scorer",
            "signals": total,
            "scorer_eps": round(scorer_eps),
            "raw_consume_eps": round(raw_eps),
            "ratio": round(ratio, 3),
            "steady_rate": round(achieved),
            "freshness_p50_ms": round(p50),
            "freshness_p99_ms": round(p99),
            "rss_mb_100k_accounts": round(rss_mb),
        }
    )


if __name__ == "__main__":
    run(main)

"""Drive a World onto the raw topics (live), or into files (events JSONL + outcomes CSV).

Live mode first back-fills `history_days` of events with their own past event times, a
group of accounts' whole history after another's (as fast as the broker takes them; `rate`
applies to the live phase), so that each account the scorer has caught up on shows its health
as of now, not as of the first days of the back-fill; then it keeps
going in real time: every `day_seconds` of wall time the world advances one day and that day's
events are produced with event times spread over the interval, so trajectories (declines,
shocks, silences) play out in minutes. Everything is deterministic for a seed except the wall
clock the live phase maps onto.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import structlog

from services.simulator.vendors import Vendors
from services.simulator.world import World, malformed
from shared.config import Settings
from shared.errors import ConfigurationError
from shared.events import EVENT_TYPE_SOURCE
from shared.kafka import ensure_topics, make_producer

log = structlog.get_logger(__name__)

# accounts back-filled together (make run's first screen: 2,000 accounts at 2 cores, measured
# in docs/performance.md): fewer, fewer shown at risk while caught up on; more, done sooner
BACKFILL_GROUP = 50


def midnight(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def history(world: World, days: range, accounts: int | None = None) -> Iterator[dict[str, Any]]:
    """The world's events of `days`, day by day; `accounts` at a time (all: None), each
    group's whole history after the last's."""
    group = accounts or len(world.accounts) or 1
    for first in range(0, len(world.accounts), group):
        members = world.accounts[first : first + group]
        for day in days:
            for account in members:
                yield from world.day_events(account, day)


def write_files(world: World, out_dir: Path, vendors: Vendors | None = None) -> tuple[int, int]:
    """events.jsonl (one raw v1 event per line, time order per day) and outcomes.csv; with
    `vendors`, what they carry goes to segment.jsonl, stripe.jsonl, zendesk.jsonl instead."""
    out_dir.mkdir(parents=True, exist_ok=True)
    events = 0
    with contextlib.ExitStack() as files:
        handles: dict[str, Any] = {}
        for event in history(world, range(world.days)):
            for fmt, _, record in vendors.convert(event) if vendors else [("v1", "", event)]:
                name = "events" if fmt == "v1" else fmt
                if name not in handles:
                    handles[name] = files.enter_context((out_dir / f"{name}.jsonl").open("wb"))
                handles[name].write(orjson.dumps(record) + b"\n")
                events += 1
    churned = 0
    with (out_dir / "outcomes.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["account_id", "churned_at", "industry", "tier", "trajectory"])
        for account in world.accounts:
            at = world.churned_at(account)
            churned += at is not None
            writer.writerow(
                [
                    account.account_id,
                    at.isoformat() if at else "",
                    account.industry,
                    account.tier,
                    account.trajectory,
                ]
            )
    return events, churned


class RateLimiter:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.started = time.monotonic()
        self.sent = 0

    async def acquire(self, n: int = 1) -> None:
        self.sent += n
        if self.rate > 0:
            ahead = self.sent / self.rate - (time.monotonic() - self.started)
            if ahead > 0:
                await asyncio.sleep(ahead)


async def produce_live(
    settings: Settings,
    world: World,
    *,
    history_days: int,
    day_seconds: float,
    rate: float,
    malformed_fraction: float,
    max_events: int | None,
    stop: asyncio.Event,
    vendors: Vendors | None = None,
) -> int:
    topics = settings.kafka.topics
    by_source = {"usage": topics.usage, "support": topics.support, "billing": topics.billing}
    by_format = {fmt: topic for topic, fmt in topics.sources.items()}
    missing = (vendors.formats if vendors else set()) - set(by_format)
    if missing:
        raise ConfigurationError(
            f"no raw topic has format {sorted(missing)}: set HEALTHSCORE_KAFKA__TOPICS__SOURCES"
        )
    await ensure_topics(settings.kafka, [*topics.raw])
    producer = make_producer(settings.kafka)
    await producer.start()
    rng = random.Random(f"{world.seed}:malformed")
    limiter = RateLimiter(0)  # the back-fill goes as fast as it can; `rate` paces the live days
    produced = 0
    pending: list[asyncio.Future[Any]] = []

    async def send(event: dict[str, Any], occurred_at: datetime | None = None) -> None:
        nonlocal produced
        if occurred_at is not None:
            event = {**event, "occurred_at": occurred_at.isoformat()}
        converted = vendors.convert(event) if vendors else [("v1", "", event)]
        for fmt, key, record in converted:
            if fmt == "v1":
                topic = by_source.get(EVENT_TYPE_SOURCE[event["type"]], topics.usage)
                key = event["account_id"]
            else:
                topic = by_format[fmt]
            # the event's own record may be broken; a group call tying a user stays intact
            own = record is converted[-1][2]
            if own and malformed_fraction and rng.random() < malformed_fraction:
                value = malformed(rng, record)
            else:
                value = orjson.dumps(record)
            pending.append(await producer.send(topic, value, key=key.encode()))
            produced += 1
        if len(pending) >= 1000:
            await asyncio.gather(*pending)
            pending.clear()
        await limiter.acquire()

    try:
        # BACKFILL_GROUP accounts at a time: over every partition, each group scored as of now
        for event in history(world, range(history_days), accounts=BACKFILL_GROUP):
            if stop.is_set() or (max_events is not None and produced >= max_events):
                return produced
            await send(event)
        log.info("simulate.history_done", events=produced, days=history_days)
        limiter = RateLimiter(rate)
        day = history_days
        while not stop.is_set() and (max_events is None or produced < max_events):
            began = datetime.now(UTC)
            for account in world.accounts:
                for event in world.day_events(account, day):
                    offset = datetime.fromisoformat(event["occurred_at"]) - (
                        world.start + timedelta(days=day)
                    )
                    at = began + offset * (day_seconds / 86_400)
                    await send(event, min(at, datetime.now(UTC)))
                    if stop.is_set():
                        return produced
            await asyncio.gather(*pending)
            pending.clear()
            log.info("simulate.day_done", day=day, events=produced)
            spare = day_seconds - (datetime.now(UTC) - began).total_seconds()
            if spare > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), spare)
            day += 1
        return produced
    finally:
        await asyncio.gather(*pending, return_exceptions=True)
        await producer.stop()

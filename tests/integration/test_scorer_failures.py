"""The scorer meeting records the database refuses, a partition whose writes hang, a sweep
that cannot store an account, and stored offsets the broker no longer has."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scorer.consume import Scorer
from shared.config import Settings
from shared.events import Signal
from shared.kafka import ensure_topics
from shared.ops import Health, ops_app
from shared.scoring.state import AccountState
from tests.support.infra import connect, running
from tests.support.kafka_io import header, read_topic
from tests.support.signals import (
    consumed,
    mismatches,
    produce_signals,
    simulated_signals,
    wait_consumed,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


def poison(template: Signal, n: int) -> list[Signal]:
    """Signals the scorer decodes but PostgreSQL refuses to store, one of each kind: NUL in each
    attribute that lands in a text column (as the account's newest profile, so that it is the
    current value), NUL in an id that lands in JSONB history (an account's first signal is
    always history), values longer than their columns."""
    newest = template.occurred_at + timedelta(days=30)

    def like(suffix: str, **changes: object) -> Signal:
        return template.model_copy(update={"signal_id": f"poison-{n}-{suffix}", **changes})

    def profile(suffix: str, **data: str) -> Signal:
        update = {"kind": "account_profile_updated", "source": "billing", "data": data}
        return like(suffix, occurred_at=newest + timedelta(seconds=n), **update)

    return [
        profile("name", name="Acme\x00Corp"),
        profile("industry", industry="soft\x00ware"),
        profile("region", region="emea\x00"),
        profile("tier", tier="x" * 40),
        profile("stage", lifecycle_stage="\x00"),
        like("id\x00nul", account_id=f"poison-new-{n}"),
        like("long-account", account_id="a" * 200),
        like("nul-account", account_id="acc\x00nul"),
    ]


async def test_poison_signals_are_dead_lettered_and_the_partitions_move_on(
    settings: Settings, engine: AsyncEngine
) -> None:
    """Poison in the middle of a stream: every offset is committed (no partition stalls), each
    poison signal is on the dead-letter topic with the database's reason, and every other
    signal is applied exactly once (the state equals the offline reference without them)."""
    good = simulated_signals(40, 20, seed=21, duplicate_share=0.02)
    rng = random.Random(5)
    stream = list(good)
    bad: list[Signal] = []
    for n in range(3):  # three rounds of every kind, at random places in the middle
        for signal in poison(rng.choice(good), n):
            stream.insert(rng.randrange(len(stream) // 4, 3 * len(stream) // 4), signal)
            bad.append(signal)
    total = await produce_signals(settings, stream)
    scorer = Scorer(settings, engine, registry=CollectorRegistry())
    async with running(scorer):
        await wait_consumed(engine, settings, total)
        dead = await read_topic(settings, settings.kafka.topics.dlq, expect=len(bad))
    assert sorted(d.value for d in dead) == sorted(s.model_dump_json().encode() for s in bad)
    for record in dead:
        assert header(record, "reason") == "refused_by_database"
        assert (header(record, "detail") or "").startswith("SQLSTATE 22")
        assert header(record, "source_topic") == settings.kafka.topics.signals
        assert header(record, "source_offset") is not None
    refused = scorer.metrics.dead_lettered.labels("refused_by_database")._value.get()
    assert refused == len(bad)
    assert scorer.metrics.isolations._value.get() >= 1
    assert await mismatches(engine, good) == []


async def test_an_isolation_that_finds_the_database_away_backs_off_and_goes_on(
    settings: Settings, engine: AsyncEngine
) -> None:
    """A batch that fails for a reason no retry fixes is isolated, which first reads the
    stored offsets again. If the database is away just then (a restart under way), that is a
    failure to back off from, not one to stop the scorer for: it isolates the batch once the
    database is back, and everything else is applied exactly once."""
    good = simulated_signals(20, 10, seed=22)
    bad = poison(good[0], 9)
    half = len(good) // 2
    total = await produce_signals(settings, [*good[:half], *bad, *good[half:]])
    scorer = Scorer(settings, engine, registry=CollectorRegistry())
    real, away = scorer.assignment.rewind, [True]

    async def rewind() -> None:
        if away:  # the first, the isolation's: the database restarting
            away.clear()
            raise ConnectionRefusedError("the database system is shutting down")
        await real()

    scorer.assignment.rewind = rewind  # type: ignore[method-assign]
    async with running(scorer):
        await wait_consumed(engine, settings, total)
        dead = await read_topic(settings, settings.kafka.topics.dlq, expect=len(bad))
    assert not away and scorer.metrics.retries._value.get() >= 1
    assert sorted(d.value for d in dead) == sorted(s.model_dump_json().encode() for s in bad)
    assert await mismatches(engine, good) == []


async def test_a_partition_whose_writes_hang_shows_in_healthz_and_the_metric(
    settings: Settings, engine: AsyncEngine
) -> None:
    """The offsets row of one partition is locked by another session: the scorer's batches
    wait on it. Within the stall window /healthz answers 503 naming the partition, and the
    per-partition gauge passes the threshold the alert compares it with; once the lock goes,
    everything is committed and /healthz is 200 again."""
    settings = settings.model_copy(
        update={"scorer": settings.scorer.model_copy(update={"stall_after_seconds": 3})}
    )
    registry = CollectorRegistry()
    health = Health(stall_after=3)
    health.register(registry, "healthscore_scorer")
    scorer = Scorer(settings, engine, registry=registry, health=health)
    signals = simulated_signals(40, 10, seed=22)
    half = len(signals) // 2
    async with (
        running(scorer),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=ops_app(registry, health)), base_url="http://ops"
        ) as ops,
    ):
        first = await produce_signals(settings, signals[:half])
        await wait_consumed(engine, settings, first)
        assert (await ops.get("/healthz")).status_code == 200
        blocker = await connect(settings.database)
        try:
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute(
                "SELECT 1 FROM consumer_offsets WHERE topic = $1 AND partition = 1 FOR UPDATE",
                settings.kafka.topics.signals,
            )
            total = first + await produce_signals(settings, signals[half:])
            stuck = f"{settings.kafka.topics.signals}/1"
            response = await ops.get("/healthz")
            for _ in range(100):  # the stall window is 3 s; look for up to 10
                if response.status_code == 503:
                    break
                await asyncio.sleep(0.1)
                response = await ops.get("/healthz")
            assert response.status_code == 503, response.json()
            assert stuck in response.json()["stalled_partitions"]
            gauge = registry.get_sample_value(
                "healthscore_scorer_partition_seconds_since_progress", {"partition": stuck}
            )
            threshold = registry.get_sample_value("healthscore_scorer_stall_after_seconds")
            assert gauge is not None and threshold == 3 and gauge > threshold  # the alert's expr
            assert await consumed(engine, settings) < total
            await tx.rollback()
        finally:
            await blocker.close()
        await wait_consumed(engine, settings, total)
        for _ in range(50):
            if (await ops.get("/healthz")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert (await ops.get("/healthz")).json()["status"] == "ok"
    assert await mismatches(engine, signals) == []


async def test_the_sweep_leaves_an_account_it_cannot_store_and_scores_the_others(
    settings: Settings, engine: AsyncEngine
) -> None:
    """A state stored before ingest refused NUL (a state holds it; the account's name column
    does not): the sweep re-scores every other due account and counts the one it could not
    store."""
    now = [datetime.now(UTC)]
    signals = simulated_signals(20, 30, seed=23, end=now[0])
    total = await produce_signals(settings, signals)
    scorer = Scorer(settings, engine, registry=CollectorRegistry(), clock=lambda: now[0])
    async with running(scorer):
        await wait_consumed(engine, settings, total)
        async with engine.begin() as conn:
            stored = await conn.scalar(
                text("SELECT state FROM account_states WHERE account_id = 'acc-000003'")
            )
            poisoned = AccountState.from_bytes(stored)
            poisoned.attributes["name"] = (now[0].timestamp(), "old-import", "Acme\x00Corp")
            await conn.execute(
                text("UPDATE account_states SET state = :s WHERE account_id = 'acc-000003'"),
                {"s": poisoned.to_bytes()},
            )
            await conn.execute(
                text("UPDATE account_states SET next_review_at = now() - interval '1 h'")
            )
        scorer.cache.clear()
        now[0] += timedelta(days=1)
        assert await scorer.sweep() == 20
        assert scorer.metrics.sweep_refused._value.get() == 1
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT account_id, updated_at FROM account_states"))
            swept = {r.account_id for r in rows if r.updated_at >= now[0]}
    assert swept == {s.account_id for s in signals} - {"acc-000003"}


async def test_offsets_the_recreated_topic_never_had_are_reset_and_nothing_is_skipped(
    settings: Settings, engine: AsyncEngine
) -> None:
    """PostgreSQL holds offsets past the end of the signals topic (as after the topic was
    deleted and created again, or a new cluster): the scorer starts each partition again from
    its earliest record, counts the reset, and scores every signal, including an override sent
    right after it started."""
    signals = simulated_signals(30, 10, seed=24)
    await ensure_topics(settings.kafka, [settings.kafka.topics.signals])
    async with engine.begin() as conn:
        for partition in range(settings.kafka.partitions):
            await conn.execute(
                text(
                    "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset,"
                    " updated_at) VALUES (:g, :t, :p, 311769, now())"
                ),
                {"g": settings.scorer.group_id, "t": settings.kafka.topics.signals, "p": partition},
            )
    total = await produce_signals(settings, signals[: len(signals) // 2])
    scorer = Scorer(settings, engine, registry=CollectorRegistry())
    async with running(scorer):
        override = signals[0].model_copy(
            update={
                "signal_id": "override-after-restart",
                "source": "api",
                "kind": "override_set",
                "occurred_at": datetime.now(UTC),
                "data": {
                    "override_id": "o-1",
                    "action": "pin",
                    "objective": "churn_risk",
                    "value": 12.0,
                    "author": "csm@example.com",
                    "reason": "renewal call went badly",
                    "expires_at": (datetime.now(UTC) + timedelta(days=7)).isoformat(),
                },
            }
        )
        rest = [*signals[len(signals) // 2 :], override]
        total += await produce_signals(settings, rest)
        deadline = asyncio.get_running_loop().time() + 60
        while (done := await consumed(engine, settings)) != total:  # the stored sum starts high
            assert asyncio.get_running_loop().time() < deadline, f"offsets sum {done} of {total}"
            await asyncio.sleep(0.2)
    resets = scorer.metrics.offset_resets.labels("beyond_end")._value.get()
    assert resets == settings.kafka.partitions
    assert await mismatches(engine, [*signals, override]) == []
    async with engine.connect() as conn:
        pinned = await conn.scalar(
            text(
                "SELECT score FROM scores WHERE account_id = :a AND objective = 'churn_risk'"
                " AND model_role = 'active'"
            ),
            {"a": signals[0].account_id},
        )
    assert pinned == 12.0

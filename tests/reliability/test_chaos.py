"""Faults injected into the running pipeline (simulator stream -> ingest -> scorer -> PostgreSQL
-> changes topic); afterwards the end state must equal the offline reference exactly.

Each scenario reports events in, signals, DLQ records, duplicates dropped, accounts checked,
mismatches, records lost and recovery times, in its assertions and in the summary table.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from healthscore.devstack import Broker, ObjectStore
from shared.config import Settings
from shared.db import create_engine
from shared.scoring.state import PROFILE
from tests.reliability.conftest import Controlled, Scale
from tests.support.infra import Infra, fresh_settings, run_cli
from tests.support.pipeline import (
    Outcome,
    Pipeline,
    Service,
    flowing,
    produce_stream,
    raw_stream,
    settle_and_check,
    wait_for,
)
from tests.support.signals import consumed

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]


@contextlib.asynccontextmanager
async def scenario(report: Any, name: str) -> AsyncIterator[Outcome]:
    """One scenario's outcome, in the summary table as `name`: timed, and checked for nothing
    lost or counted twice once the scenario's block ends (a failure inside it reports as
    itself). A new fault is the block: start the pipeline, flow the stream, inject, count."""
    outcome = report(Outcome(name))
    started = time.monotonic()
    yield outcome
    outcome.seconds = time.monotonic() - started
    assert_nothing_lost(outcome)


def assert_nothing_lost(outcome: Outcome) -> None:
    assert outcome.incomplete is None, f"timed out: {outcome.incomplete}"
    assert outcome.lost == 0, outcome.notes
    assert outcome.mismatches == 0, outcome.notes
    assert outcome.unplanned_exits == 0, outcome.notes
    assert not outcome.notes
    assert outcome.signals > 0 and outcome.accounts_checked > 0


async def progressed(
    service: Service, settings: Settings, engine: AsyncEngine, producing: asyncio.Task[None]
) -> float:
    """Seconds until `service` makes progress again (or, once the stream has ended and there
    may be nothing left for it, until it is ready)."""
    baseline = await consumed(engine, settings)

    async def moving() -> bool:
        if service.command == "scorer":
            if await consumed(engine, settings) > baseline:
                return True
        elif (service.metric("healthscore_ingest_records_consumed_total") or 0) > 0:
            return True
        return producing.done() and service.healthz() == 200

    return await wait_for(moving, timeout=90)


async def test_kill_minus_nine_of_ingest_and_the_scorer(
    settings: Settings, engine: AsyncEngine, scale: Scale, report, tmp_path: Path
) -> None:
    stream = raw_stream(
        settings, accounts=scale.accounts, days=scale.days, hostile=scale.hostile // 10,
        seed=scale.seed,
    )  # fmt: skip
    async with scenario(report, "kill -9 ingest and scorer") as outcome:
        pipeline = Pipeline(settings, tmp_path)
        services = {"ingest": pipeline.ingest(), "scorer": pipeline.scorer()}
        rng = random.Random(scale.seed)
        kills: Counter[str] = Counter()
        async with flowing(pipeline, engine, stream, outcome, scale.rate) as producing:
            while min(kills["ingest"], kills["scorer"]) < scale.kills:
                await asyncio.sleep(rng.uniform(0.2, 2.0))
                name = rng.choice([n for n in services if kills[n] < scale.kills])
                services[name].kill()
                services[name].start()
                kills[name] += 1
                outcome.faults[f"kill -9 {name}"] += 1
                outcome.recovery_seconds.append(
                    await progressed(services[name], settings, engine, producing)
                )
        assert kills == {"ingest": scale.kills, "scorer": scale.kills}


async def test_postgres_restart_under_load(
    controlled: Controlled, scale: Scale, report, tmp_path: Path
) -> None:
    infra, settings, engine = controlled.infra, controlled.settings, controlled.engine
    assert infra.postgres is not None
    stream = raw_stream(settings, accounts=scale.accounts // 2, days=scale.days, hostile=0,
                        seed=scale.seed + 1)  # fmt: skip
    async with scenario(report, "PostgreSQL restart") as outcome:
        pipeline = Pipeline(settings, tmp_path)
        pipeline.ingest()
        scorer = pipeline.scorer()
        rate = len(stream.records) / 30
        async with flowing(pipeline, engine, stream, outcome, rate) as producing:
            await wait_for(lambda: consumed(engine, settings), timeout=60)  # under load
            await asyncio.to_thread(infra.postgres.stop)  # fast shutdown: sessions are cut
            outcome.faults["PostgreSQL fast stop + start"] += 1
            await asyncio.sleep(5)
            await asyncio.to_thread(infra.postgres.start)
            outcome.recovery_seconds.append(await progressed(scorer, settings, engine, producing))


async def test_a_frozen_broker_is_noticed_and_survived(
    controlled: Controlled, scale: Scale, report, tmp_path: Path
) -> None:
    """SIGSTOP the broker for 15 s: /healthz reports the stall (progress-based liveness), and
    after SIGCONT every client recovers by itself and nothing is lost."""
    infra, settings, engine = controlled.infra, controlled.settings, controlled.engine
    assert infra.broker is not None and infra.broker.proc is not None
    stream = raw_stream(settings, accounts=scale.accounts // 2, days=scale.days, hostile=0,
                        seed=scale.seed + 2)  # fmt: skip
    stall = {"HEALTHSCORE_INGEST__STALL_AFTER_SECONDS": "5",
             "HEALTHSCORE_SCORER__STALL_AFTER_SECONDS": "5"}  # fmt: skip
    async with scenario(report, "broker frozen 15 s") as outcome:
        pipeline = Pipeline(settings, tmp_path, **stall)
        ingest, scorer = pipeline.ingest(), pipeline.scorer()
        seen_stalled: set[str] = set()
        async with flowing(pipeline, engine, stream, outcome, len(stream.records) / 40):
            await wait_for(lambda: consumed(engine, settings), timeout=60)
            infra.broker.proc.signal(signal.SIGSTOP)
            outcome.faults["broker SIGSTOP 15 s"] += 1
            try:
                frozen_until = time.monotonic() + 15
                while time.monotonic() < frozen_until:
                    for service in (ingest, scorer):
                        if service.healthz() == 503:
                            seen_stalled.add(service.name)
                    await asyncio.sleep(0.5)
            finally:
                infra.broker.proc.signal(signal.SIGCONT)
            outcome.recovery_seconds.append(
                await wait_for(
                    lambda: all(s.healthz() == 200 for s in (ingest, scorer)), timeout=120
                )
            )
        outcome.notes += [] if seen_stalled else ["no /healthz reported the stall"]
        assert seen_stalled, "a frozen broker with records waiting must show as a stall"


async def test_the_broker_killed_and_started_again_under_load(
    infra: Infra, scale: Scale, report, tmp_path: Path
) -> None:
    """kill -9 the broker (its data in S3, so it survives) and start it again, under load.
    Ingest and the scorer must come back by themselves. A process whose client hangs after the
    broker's return (a known aiokafka failure) must say so on /healthz; the test then acts as
    its supervisor and replaces it, and reports how often that was needed."""
    rng = random.Random(scale.seed + 5)
    replaced: list[str] = []
    async with (
        scenario(report, f"broker kill -9 ×{scale.broker_kills}") as outcome,
        durable_broker(infra, tmp_path) as (durable, broker),
        fresh_settings(durable) as settings,
    ):
        engine = create_engine(settings.database)
        stream = raw_stream(settings, accounts=scale.accounts // 2, days=scale.days,
                            hostile=0, seed=scale.seed + 5)  # fmt: skip
        stall = {"HEALTHSCORE_INGEST__STALL_AFTER_SECONDS": "20",
                 "HEALTHSCORE_SCORER__STALL_AFTER_SECONDS": "20"}  # fmt: skip
        pipeline = Pipeline(settings, tmp_path, **stall)
        services = [pipeline.ingest(), pipeline.scorer()]
        rate = len(stream.records) / (scale.broker_kills * 8 + 10)
        try:
            async with flowing(pipeline, engine, stream, outcome, rate) as producing:
                await wait_for(lambda: consumed(engine, settings), timeout=90)
                for _ in range(scale.broker_kills):
                    await asyncio.sleep(rng.uniform(1.0, 4.0))
                    await asyncio.to_thread(broker.kill)
                    outcome.faults["broker kill -9 + start"] += 1
                    await asyncio.sleep(rng.uniform(0.2, 2.0))
                    await asyncio.to_thread(broker.start)
                    outcome.recovery_seconds.append(
                        await supervised_recovery(services, settings, engine, producing, replaced)
                    )
        finally:
            await engine.dispose()
        if replaced:
            outcome.faults["hung client replaced after /healthz 503"] = len(replaced)
        # replacing a hung process is the supervisor's job, done only after liveness said so
        assert all(s.starts == 1 + replaced.count(s.name) for s in services)


@contextlib.asynccontextmanager
async def durable_broker(infra: Infra, tmp_path: Path) -> AsyncIterator[tuple[Infra, Broker]]:
    """A broker of its own whose data lives in S3 (moto), so that it survives kill -9; the
    session's infrastructure with it in place of the session's broker."""
    store = ObjectStore(log_path=tmp_path / "s3.log").start()
    broker = Broker(log_path=tmp_path / "broker.log", store=store).start()
    try:
        yield Infra(broker.bootstrap_servers, infra.database, infra.postgres, broker), broker
    finally:
        broker.stop()
        store.stop()


async def supervised_recovery(
    services: list[Service],
    settings: Settings,
    engine: AsyncEngine,
    producing: asyncio.Task[None],
    replaced: list[str],
) -> float:
    """Seconds until the scorer commits again after a broker restart (end to end: records flow
    through ingest into it), acting as a supervisor meanwhile: a service whose /healthz says
    503 (no progress for STALL_AFTER_SECONDS) is killed and started again, as Kubernetes'
    liveness probe would, and named in `replaced`."""
    baseline = await consumed(engine, settings)
    began = time.monotonic()
    while time.monotonic() - began < 300:
        if await consumed(engine, settings) > baseline:
            return time.monotonic() - began
        if producing.done() and all(s.healthz() == 200 for s in services):
            return time.monotonic() - began
        for service in services:
            if service.healthz() == 503:
                service.kill()
                service.start()
                replaced.append(service.name)
        await asyncio.sleep(0.2)
    raise TimeoutError("no progress within 300 s of the broker's return")


async def test_scorers_joining_and_leaving_under_load(
    settings: Settings, engine: AsyncEngine, scale: Scale, report, tmp_path: Path
) -> None:
    stream = raw_stream(settings, accounts=scale.accounts // 2, days=scale.days, hostile=0,
                        seed=scale.seed + 3)  # fmt: skip
    async with scenario(report, "scorer rebalances") as outcome:
        pipeline = Pipeline(settings, tmp_path)
        pipeline.ingest()
        running = [pipeline.scorer()]
        rate = len(stream.records) / (scale.rebalances * 5 + 10)
        rng = random.Random(scale.seed)
        async with flowing(pipeline, engine, stream, outcome, rate) as producing:
            for _ in range(scale.rebalances):
                running.append(pipeline.scorer())
                outcome.faults["scorer joins"] += 1
                await asyncio.sleep(rng.uniform(2, 5))
                leaving = running.pop(rng.randrange(len(running)))
                assert leaving.stop() == 0, "a scorer leaving the group exits cleanly"
                outcome.faults["scorer leaves"] += 1
                outcome.recovery_seconds.append(
                    await progressed(running[0], settings, engine, producing)
                )


async def test_a_rolling_upgrade_from_release_0014_under_load(
    infra: Infra, scale: Scale, report, tmp_path: Path, release_0014: Path
) -> None:
    """Release 0014 runs (ingest and two scorers) on its schema while events flow; the
    database is migrated to the lean store's first half (0015) under load; each scorer is
    replaced by one of this release in turn (each takes its partitions over, fencing release
    0014's writers out and converting their accounts); then the database is migrated to the
    head. Nothing is lost or counted twice."""
    async with (
        scenario(report, "rolling upgrade from release 0014") as outcome,
        fresh_settings(infra, revision="0014") as settings,
    ):
        engine = create_engine(settings.database)
        stream = raw_stream(settings, accounts=scale.accounts // 2, days=scale.days, hostile=0,
                            seed=scale.seed + 6)  # fmt: skip
        pipeline = Pipeline(settings, tmp_path)
        pipeline.ingest(release=release_0014)  # it stays: nothing it writes changes
        scorers = [pipeline.scorer(release=release_0014) for _ in range(2)]
        rate = len(stream.records) / 40
        try:
            # release 0014 kept no owner or MRR: an account it folded has them from its next
            # profile and subscription events on (docs/runbook.md, the upgrade)
            async with flowing(pipeline, engine, stream, outcome, rate, PROFILE) as producing:
                await wait_for(lambda: consumed(engine, settings), timeout=90)
                await asyncio.to_thread(run_cli, settings, "migrate", "--to", "0015")
                outcome.faults["migrated to 0015 under load"] += 1
                for old in scorers:
                    assert old.stop() == 0, "a release 0014 scorer leaving exits cleanly"
                    new = pipeline.scorer()
                    outcome.faults["release 0014 scorer replaced"] += 1
                    recovery = await progressed(new, settings, engine, producing)
                    outcome.recovery_seconds.append(recovery)
                await asyncio.to_thread(run_cli, settings, "migrate")
                outcome.faults["migrated to the head under load"] += 1
        finally:
            await engine.dispose()


async def test_hostile_input_at_scale_is_dead_lettered_without_a_restart(
    settings: Settings, engine: AsyncEngine, scale: Scale, report, tmp_path: Path
) -> None:
    stream = raw_stream(settings, accounts=scale.accounts // 4, days=scale.days,
                        hostile=scale.hostile, seed=scale.seed + 4)  # fmt: skip
    async with scenario(report, f"{scale.hostile} hostile records") as outcome:
        pipeline = Pipeline(settings, tmp_path)
        ingest, scorer = pipeline.ingest(), pipeline.scorer()
        try:
            await produce_stream(settings, stream, scale.rate)
            await settle_and_check(settings, engine, stream, outcome)
            counted = {
                name: ingest.metric(f"healthscore_ingest_{name}_total")
                for name in ("records_consumed", "signals_produced", "dlq_records")
            }
            outcome.unplanned_exits = len(pipeline.unplanned_exits())
            assert ingest.starts == scorer.starts == 1 and ingest.alive and scorer.alive
        finally:
            pipeline.stop()
        outcome.faults["hostile records"] = scale.hostile
        # one process, no crash: its own counters balance exactly
        assert counted["records_consumed"] == len(stream.records)
        assert counted["signals_produced"] + counted["dlq_records"] == len(stream.records)
        assert counted["dlq_records"] == outcome.dlq == sum(stream.reasons.values())
        # hostile copies that reuse a real event id are duplicates for the scorer to drop
        ids = [s.signal_id for s in stream.signals]
        assert outcome.duplicates_dropped == len(ids) - len(set(ids))
        assert len(stream.reasons) >= 8, stream.reasons  # many distinct reasons exercised

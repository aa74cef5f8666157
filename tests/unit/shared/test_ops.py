"""Liveness is progress: the position moving, or nothing waiting."""

from __future__ import annotations

import pytest

from shared import ops
from shared.ops import Health


def test_a_consumer_that_polls_without_moving_while_records_wait_is_stalled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(ops.time, "monotonic", lambda: clock[0])
    health = Health(stall_after=60)
    health.observe({"s/0": (100, 50)})
    clock[0] += 30
    health.observe({"s/0": (150, 20)})  # moved: progress
    clock[0] += 59
    health.observe({"s/0": (150, 20)})  # polled, did not move, records wait
    assert health.alive and health.stalled_for == 59
    clock[0] += 2
    health.observe({"s/0": (150, 20)})
    assert not health.alive and health.stalled_for == 61
    health.observe({"s/0": (151, 19)})
    assert health.alive and health.stalled_for == 0


def test_an_idle_consumer_with_nothing_to_read_is_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(ops.time, "monotonic", lambda: clock[0])
    health = Health(stall_after=60)
    for _ in range(10):
        clock[0] += 30
        health.observe({"s/0": (7, 0)})
    assert health.alive
    clock[0] += 61  # a loop that stops observing at all (stuck) stalls too
    assert not health.alive


def test_idle_without_hearing_from_the_broker_is_a_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(ops.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(ops.time, "time", lambda: 1_000_000 + clock[0])
    health = Health(stall_after=60)
    last_fetch = 1_000_000.0
    for _ in range(4):  # nothing waits as far as it knows, but fetches stopped coming back
        clock[0] += 20
        health.observe({"s/0": (7, 0)}, fetched_at=last_fetch)
    assert not health.alive and health.stalled_for == 60  # idle counted only while heard (30 s)
    health.observe({"s/0": (7, 0)}, fetched_at=1_000_000 + clock[0])
    assert health.alive


def test_one_blocked_partition_stalls_the_worker_while_the_others_flow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prometheus_client import CollectorRegistry

    clock = [0.0]
    monkeypatch.setattr(ops.time, "monotonic", lambda: clock[0])
    health = Health(stall_after=60)
    registry = CollectorRegistry()
    health.register(registry, "w")
    for step in range(1, 8):
        clock[0] += 10
        health.observe({"s/0": (100 * step, 5), "s/1": (40, 5), "s/2": (9, 0)})
    assert health.stalled() == {"s/0": 0.0, "s/1": 60.0, "s/2": 0.0}
    assert not health.alive and health.stalled_for == 60
    stalled = registry.get_sample_value("w_partition_seconds_since_progress", {"partition": "s/1"})
    assert stalled == 60
    assert registry.get_sample_value("w_seconds_since_progress") == 60
    health.observe({"s/0": (800, 5), "s/2": (9, 0)})  # s/1 revoked: no longer this worker's
    assert health.alive and set(health.stalled()) == {"s/0", "s/2"}


def test_observe_many_counts_what_observe_counts() -> None:
    from prometheus_client import CollectorRegistry, Histogram

    values = [0.0, 0.05, 0.07, 0.1, 3.0, 3.0, 86400.0, 1e9, 0.25]
    one, many = CollectorRegistry(), CollectorRegistry()
    buckets = (0.05, 0.1, 0.25, 1, 5, 86400)
    single = Histogram("h", "h", buckets=buckets, registry=one)
    for v in values:
        single.observe(v)
    ops.observe_many(Histogram("h", "h", buckets=buckets, registry=many), values)

    def samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
        return [
            (s.name, s.labels, s.value)
            for m in registry.collect()
            for s in m.samples
            if not s.name.endswith("_created")
        ]

    assert samples(many) == samples(one)
    assert ("h_bucket", {"le": "0.05"}, 2.0) in samples(many)  # bounds are inclusive
    assert ("h_count", {}, 9.0) in samples(many)


def test_gc_paused_pauses_collection_and_restores_what_it_found() -> None:
    import gc

    assert gc.isenabled()
    with pytest.raises(RuntimeError), ops.gc_paused():
        assert not gc.isenabled()
        raise RuntimeError("the batch failed")
    assert gc.isenabled()  # on failure too
    gc.disable()
    try:
        with ops.gc_paused():
            pass
        assert not gc.isenabled()  # not turned on behind the back of whoever turned it off
    finally:
        gc.enable()


async def test_a_start_up_step_is_shown_while_it_runs_and_fails_loudly_past_its_bound() -> None:
    import asyncio

    import httpx
    from prometheus_client import CollectorRegistry

    from shared.errors import StartupTimedOut
    from shared.ops import ops_app

    health = Health(stall_after=60, startup_timeout=0.2)
    transport = httpx.ASGITransport(app=ops_app(CollectorRegistry(), health))
    async with httpx.AsyncClient(transport=transport, base_url="http://ops") as ops:
        async with health.starting("database"):
            during = (await ops.get("/healthz")).json()
        assert during == {"status": "starting", "step": "database"}
        assert (await ops.get("/healthz")).json()["status"] == "ok"
        with pytest.raises(StartupTimedOut, match="'consumer' took longer than 0 s"):
            async with health.starting("consumer"):
                await asyncio.sleep(5)  # a join that never completes
        assert health.step is None
        with pytest.raises(TimeoutError):  # a time-out of the step's own is not the bound's
            async with health.starting("topics"):
                raise TimeoutError("the broker did not answer")


async def test_a_stop_during_a_start_up_step_ends_it_at_once() -> None:
    import asyncio

    from shared.ops import unless_stopped

    stop = asyncio.Event()
    cancelled = asyncio.Event()

    async def join_that_never_answers() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    asyncio.get_running_loop().call_later(0.05, stop.set)  # SIGTERM while joining
    assert await asyncio.wait_for(unless_stopped(join_that_never_answers(), stop), 5) is False
    assert cancelled.is_set()
    assert await unless_stopped(asyncio.sleep(0), asyncio.Event()) is True
    with pytest.raises(ValueError, match="refused"):  # a step's own error is the step's
        await unless_stopped(_raises(), asyncio.Event())


async def _raises() -> None:
    raise ValueError("refused")


async def test_a_broker_that_is_not_up_yet_is_waited_for_within_the_step() -> None:
    import socket

    from aiokafka.errors import KafkaConnectionError

    from shared.config import KafkaSettings
    from shared.errors import StartupTimedOut
    from shared.kafka import ensure_topics, reachable

    attempts = []

    async def up_on_the_third_try() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise KafkaConnectionError("Unable to bootstrap")
        return "connected"

    assert await reachable(up_on_the_third_try, "producer") == "connected"
    assert len(attempts) == 3
    with socket.socket() as closed:  # a port nothing listens on: connection refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}")
    health = Health(stall_after=60, startup_timeout=1.5)
    with pytest.raises(StartupTimedOut, match="'topics'"):  # still trying when the bound hit
        async with health.starting("topics"):
            await reachable(lambda: ensure_topics(settings, ["t"]), "topics")

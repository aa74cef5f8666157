"""The operations endpoint every worker serves: /metrics, /healthz (progress), /readyz.

/healthz is about progress, not about the process being up. Progress is the consumed position
moving, or nothing waiting to be consumed while the broker answers fetches: a loop that is
stuck, a broker that does not answer, or a fetcher that silently stopped (a known aiokafka
failure mode after broker trouble) all stop progressing. After `stall_after` seconds of that
/healthz answers 503, so the orchestrator restarts the worker, and
`<service>_seconds_since_progress` lets the alert fire.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
import uvicorn
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shared.errors import StartupTimedOut

log = structlog.get_logger(__name__)

STREAM_YOUNG_GC_THRESHOLD = 50_000  # measured by bench/scorer.py: about 15% more signals/s


def settle_heap(young_threshold: int | None = None) -> None:
    """After start-up: everything alive now lives as long as the process, so keep it out of
    the garbage collector's full passes (which otherwise show up as latency spikes). A stream
    worker also passes a `young_threshold`: it allocates many short-lived objects per record
    and keeps a large cache of long-lived ones, and collecting the young generation every 700
    allocations (the default) re-examines that cache far too often."""
    gc.collect()
    gc.freeze()
    if young_threshold is not None:
        _, middle, old = gc.get_threshold()
        gc.set_threshold(young_threshold, middle, old)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: for a stream worker's batch, which allocates
    hundreds of thousands of short-lived, acyclic objects. Collections in the middle of it
    would only re-scan the batch's live objects; the next one after it sees them once."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


async def unless_stopped(step: Awaitable[Any], stop: asyncio.Event) -> bool:
    """Await `step` unless `stop` is set first (SIGTERM while joining a group that does not
    answer): then `step` is cancelled and False returned, so that the process can exit at once
    instead of after the step's own time-outs."""
    task = asyncio.ensure_future(step)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if task.done():
        task.result()  # its error, if any
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    return False


def observe_many(histogram: Histogram, values: Iterable[float]) -> None:
    """`histogram.observe(v)` for every value, with one increment per bucket rather than per
    value (prometheus_client has no bulk observe; a stream worker observes every record)."""
    # private parts of prometheus_client's Histogram (stable for years); a unit test checks
    # that this gives what observe() gives
    bounds = histogram._upper_bounds
    counts: Counter[int] = Counter()
    total = 0.0
    for value in values:
        counts[bisect_left(bounds, value)] += 1  # the first bound >= value, as observe does
        total += value
    histogram._sum.inc(total)
    for i, n in counts.items():
        histogram._buckets[i].inc(n)


@dataclass
class Health:
    """Progress per partition. Each owned partition (any label naming it, e.g. "signals/2")
    progresses while its committed position moves, or while nothing waits behind it and the
    broker is heard from; the worker is as stalled as its most stalled partition, so one
    blocked partition shows even while the others flow."""

    stall_after: float = 120.0
    ready: bool = False
    step: str | None = None  # the start-up step under way, if any
    # the bound of each start-up step: at least a minute, since a broker or database that is
    # starting too can take that long to answer, whatever the stall bar once running
    startup_timeout: float | None = None
    _progress: dict[str, tuple[int, float]] = field(default_factory=dict)  # position, when

    @contextlib.asynccontextmanager
    async def starting(self, step: str) -> AsyncIterator[None]:
        """One start-up step (connecting to the database, to the broker, joining the group):
        logged when it begins and ends, named by /healthz while it runs, and bounded by
        `startup_timeout` (default: `stall_after`, at least 60 s): a step that takes longer
        fails the start loudly (StartupTimedOut), so that a supervisor starts the process
        again instead of it waiting unseen."""
        self.step = step
        began = time.monotonic()
        log.info("startup.step", step=step)
        limit = self.startup_timeout or max(self.stall_after, 60.0)
        bound = asyncio.timeout(limit)
        try:
            async with bound:
                yield
        except TimeoutError as exc:
            if bound.expired():
                log.error("startup.step_timed_out", step=step, seconds=limit)
                raise StartupTimedOut(
                    f"start-up step {step!r} took longer than {limit:.0f} s"
                ) from exc
            raise
        finally:
            self.step = None
        log.info("startup.step_done", step=step, seconds=round(time.monotonic() - began, 3))

    def observe(
        self, partitions: Mapping[str, tuple[int, int]], fetched_at: float | None = None
    ) -> None:
        """After each poll: each owned partition's (committed position, records known to wait
        behind it), and `fetched_at` = wall time (epoch s) of the stalest partition's last
        fetch response. Idle counts as progress only while the broker is heard from: a consumer
        cut off from it cannot know what waits. With no partitions, the loop turning is the
        progress (a loop that hangs stops observing, and stalls)."""
        now = time.monotonic()
        heard = fetched_at is None or time.time() - fetched_at < self.stall_after / 2
        progress: dict[str, tuple[int, float]] = {}
        for key, (position, backlog) in (partitions or {"": (0, 0)}).items():
            before = self._progress.get(key)
            moved = before is None or position != before[0] or (backlog <= 0 and heard)
            progress[key] = (position, now if moved or before is None else before[1])
        self._progress = progress

    def register(self, registry: CollectorRegistry, prefix: str) -> None:
        Gauge(
            f"{prefix}_seconds_since_progress",
            "Seconds since the most stalled owned partition last progressed (its committed "
            "position moved, or nothing waited behind it)",
            registry=registry,
        ).set_function(lambda: round(self.stalled_for, 3))
        registry.register(_PartitionProgress(self, f"{prefix}_partition_seconds_since_progress"))
        Gauge(
            f"{prefix}_stall_after_seconds",
            "Seconds without progress after which /healthz answers 503 (the stall alert's bar)",
            registry=registry,
        ).set(self.stall_after)

    def stalled(self) -> dict[str, float]:
        """Seconds since each owned partition last progressed."""
        now = time.monotonic()
        return {key: now - since for key, (_, since) in self._progress.items() if key}

    @property
    def stalled_for(self) -> float:
        now = time.monotonic()
        return max((now - since for _, since in self._progress.values()), default=0.0)

    @property
    def alive(self) -> bool:
        return self.stalled_for < self.stall_after


class _PartitionProgress(Collector):
    """`<prefix>_partition_seconds_since_progress{partition}`, read at scrape time."""

    def __init__(self, health: Health, name: str) -> None:
        self.health, self.name = health, name

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            self.name,
            "Seconds since this partition's committed position last moved while records "
            "waited behind it (0-ish when it is caught up)",
            labels=["partition"],
        )
        for key, seconds in sorted(self.health.stalled().items()):
            family.add_metric([key], round(seconds, 3))
        yield family


def ops_app(registry: CollectorRegistry, health: Health) -> Starlette:
    async def healthz(_: Request) -> JSONResponse:
        if health.step is not None:  # bounded by StartupTimedOut, so alive meanwhile
            return JSONResponse({"status": "starting", "step": health.step}, status_code=200)
        body = {
            "status": "ok" if health.alive else "stalled",
            "seconds_since_progress": round(health.stalled_for, 3),
            "stalled_partitions": sorted(
                key for key, seconds in health.stalled().items() if seconds >= health.stall_after
            ),
        }
        return JSONResponse(body, status_code=200 if health.alive else 503)

    async def readyz(_: Request) -> JSONResponse:
        ok = health.ready and health.alive
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ]
    )


class OpsServer:
    """uvicorn serving `ops_app` inside the worker's own event loop."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: Health):
        config = uvicorn.Config(
            ops_app(registry, health),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task

"""The sweep (sweep.py): parts of one partition each, taken in turn; a stored part lets go of
its cache entries."""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from services.scorer import store
from services.scorer.cache import StateCache
from services.scorer.metrics import ScorerMetrics
from services.scorer.partitions import Partitions
from services.scorer.sweep import SWEEP_PART, Sweeper, Writing, sweep_parts
from shared.config import ScorerSettings, Settings
from tests.unit.scorer.fakes import P0


def test_a_sweep_writes_parts_of_one_partition_each_taking_the_partitions_in_turn() -> None:
    """So that its two writes in flight are of different partitions, and neither waits on the
    other's fence."""
    accounts = {f"a{i:04}": i % 3 for i in range(2600)} | {f"b{i:04}": 3 for i in range(10)}
    parts = list(sweep_parts(accounts))
    assert [p for p, _ in parts] == [0, 1, 2, 3, 0, 1, 2]
    assert all(set(part.values()) == {p} and len(part) <= SWEEP_PART for p, part in parts)
    assert sorted(a for _, part in parts for a in part) == sorted(accounts)


async def test_a_sweep_part_stored_lets_go_of_its_entries_beyond_the_cache_but_not_of_unstored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A model switch re-scores a window of thousands of accounts; once a part is stored, the
    cache goes back to its size, keeping the entries of the parts still to be stored."""

    async def load_accounts(engine: object, account_ids: list[str], memory_from: object) -> dict:  # type: ignore[type-arg]
        return {}

    monkeypatch.setattr(store, "load_accounts", load_accounts)
    partitions = Partitions()
    partitions.adopt({P0: 0})
    cache = StateCache(engine=None, size=2)  # type: ignore[arg-type]
    parts = [[f"acc-{part}{i}" for i in range(3)] for part in "abc"]
    for part in parts:  # as a sweep loads them: parts a and b written, c scored
        await cache.get(dict.fromkeys(part, 0), partitions)

    def part_batch(part: list[str]) -> store.Batch:
        return store.Batch(states=[{"account_id": a} for a in part])  # type: ignore[misc]

    done = asyncio.get_running_loop().create_future()
    done.set_result(None)
    writing: Writing = deque([(done, part_batch(parts[0])), (done, part_batch(parts[1]))])
    ctx = SimpleNamespace(
        settings=Settings(environment="test"),
        cfg=ScorerSettings(),
        engine=None,
        models=None,
        cache=cache,
        partitions=partitions,
        news=None,
        metrics=ScorerMetrics(CollectorRegistry()),
        clock=lambda: datetime.now(UTC),
    )
    sweeper = Sweeper(ctx, None, None)  # type: ignore[arg-type]
    await sweeper._stored(writing, scored=len(parts[2]))
    assert list(cache.entries) == parts[1] + parts[2]  # a let go; b in flight, c to be written
    await sweeper._stored(writing)
    assert list(cache.entries) == parts[2][-2:]  # nothing in flight: back to the cache's size
    assert not writing

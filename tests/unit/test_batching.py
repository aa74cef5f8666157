"""Scorer batches: whole partitions up to a number of distinct accounts, the rest carried over in
order; void after a rebalance; halved in order to isolate a poison record. One scorer counts
bands."""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from services.scorer import portfolio, store
from services.scorer.batching import behind, count, cut, halves, onward
from services.scorer.cache import StateCache
from services.scorer.metrics import ScorerMetrics
from services.scorer.partitions import Partitions
from services.scorer.poll import Poller
from services.scorer.relay import Relay
from services.scorer.sweep import SWEEP_PART, Sweeper, Writing, sweep_parts
from shared.config import ScorerSettings, Settings
from shared.errors import FencedOut


def records(partition: int, keys: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(key=k.encode(), offset=i) for i, k in enumerate(keys)]


P0, P1, P2 = (TopicPartition("s", p) for p in range(3))


def test_whole_partitions_are_taken_while_their_accounts_fit_and_the_rest_wait_whole() -> None:
    taken, carried = cut({P0: records(0, "abab"), P1: records(1, "ccdc"), P2: records(2, "ee")}, 3)
    # p0 (a, b) fits; p1 would make four accounts: it waits, whole; p2 (e) still fits
    assert {tp: [r.key for r in rs] for tp, rs in taken.items()} == {
        P0: [b"a", b"b", b"a", b"b"],
        P2: [b"e", b"e"],
    }
    assert list(carried) == [P1]
    assert [r.offset for r in carried[P1]] == [0, 1, 2, 3]


def test_a_partition_over_the_cap_on_its_own_is_cut_before_the_first_account_too_many() -> None:
    taken, carried = cut({P0: records(0, "aabac"), P1: records(1, "bb"), P2: records(2, "d")}, 2)
    # a, a, b, a fit (2 accounts); c is a third: p0 stops before it, in order
    assert [r.key for r in taken[P0]] == [b"a", b"a", b"b", b"a"]
    assert [r.offset for r in carried[P0]] == [4]
    # p1 adds no account beyond those: it still fits, whole; p2 would add one and waits
    assert [r.key for r in taken[P1]] == [b"b", b"b"] and list(carried) == [P0, P2]


def test_carried_partitions_come_first_in_the_next_batch() -> None:
    _, carried = cut({P0: records(0, "aa"), P1: records(1, "bc"), P2: records(2, "d")}, 1)
    assert list(carried) == [P1, P2]
    taken, carried = cut({**carried, P0: records(0, "a")}, 1)
    assert list(taken) == [P1] and [r.key for r in taken[P1]] == [b"b"]
    assert list(carried) == [P1, P2, P0]


def test_the_scorer_is_behind_while_the_broker_reported_records_past_those_in_hand() -> None:
    """Then a batch waits for the next fetch instead of ending at the first quiet moment."""
    highwater: dict[TopicPartition, int | None] = {P0: 4, P1: None}
    positions: dict[TopicPartition, int | None] = {P0: 2, P1: None}
    in_hand = {P0: records(0, "abcd")[2:]}  # offsets 2 and 3
    # p0 read up to its high-water mark; p1 not fetched
    assert not behind(in_hand, positions, highwater.get)
    assert behind({P0: in_hand[P0][:1]}, positions, highwater.get)  # offset 3 is on the broker
    highwater[P1] = 1
    assert behind(in_hand, positions, highwater.get)  # p1: offset 0 waits, none of it in hand
    positions[P1] = 1
    assert not behind(in_hand, positions, highwater.get)  # a batch before this one took it


async def test_a_rebalance_while_accounts_load_voids_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cache is cleared by a rebalance during the await: the batch must be retried, not
    continue with entries that are gone (it used to crash with a KeyError)."""
    partitions = Partitions()
    partitions.adopt({TopicPartition("s", 0): 10})
    cache = StateCache(engine=None, size=10)  # type: ignore[arg-type]

    async def load_accounts(engine: object, account_ids: list[str], memory_from: object) -> dict:  # type: ignore[type-arg]
        partitions.forget([TopicPartition("s", 0)])  # the rebalance callback runs meanwhile
        cache.clear()
        return {}

    monkeypatch.setattr(store, "load_accounts", load_accounts)
    with pytest.raises(FencedOut, match="reassigned"):
        await cache.get({"acc-1": 0}, partitions)


def test_halving_keeps_each_partitions_records_in_order_and_loses_none() -> None:
    batch = {P0: records(0, "abcde"), P1: records(1, "fg"), P2: records(2, "h")}
    first, second = halves(batch)
    assert list(first) == [P0] and list(second) == [P1, P2]  # whole partitions while several
    first, second = halves({P0: batch[P0]})
    assert [r.offset for r in first[P0]] == [0, 1] and [r.offset for r in second[P0]] == [2, 3, 4]
    # halving down to single records visits every record once, in offset order
    pending, singles = [batch], []
    while pending:
        part = pending.pop()
        if count(part) == 1:
            singles += [(tp.partition, r.offset) for tp, rs in part.items() for r in rs]
            continue
        a, b = halves(part)
        pending += [b, a]
    assert singles == [(0, i) for i in range(5)] + [(1, 0), (1, 1), (2, 0)]


def test_positions_chain_from_prepared_and_progress_follows_committed() -> None:
    partitions = Partitions()
    partitions.adopt({P0: 0, P1: 7})
    fences = partitions.fences({P0: 5, P1: 9})
    assert fences == {("s", 0): (0, 5), ("s", 1): (7, 9)}
    partitions.prepared_to(fences)
    assert partitions.fences({P1: 12}) == {("s", 1): (9, 12)}  # chains on before the commit
    assert partitions.committed == {P0: 0, P1: 7}  # nothing is stored yet
    generation = partitions.generation
    partitions.committed_to(fences, generation)
    assert partitions.committed == {P0: 5, P1: 9}
    assert partitions.hold() == {("s", 0): (5, 5), ("s", 1): (9, 9)}
    partitions.forget([P0])
    partitions.committed_to({("s", 1): (9, 20)}, generation)  # voided by the rebalance
    assert partitions.committed == {P1: 9}


def test_records_handed_out_again_are_dropped_by_offset() -> None:
    fetched = [SimpleNamespace(key=b"a", offset=o) for o in (5, 6, 7, 6, 7, 8, 3, 9)]
    kept, dropped = onward(fetched, 4)
    assert [r.offset for r in kept] == [5, 6, 7, 8, 9] and dropped == 3
    kept, dropped = onward(fetched, 8)  # before the position prepared: stored already
    assert [r.offset for r in kept] == [8, 9] and dropped == 6
    assert onward(fetched[:3], None) == (fetched[:3], 0)


class _Fetched:
    """A consumer that hands out what it was given, one answer per getmany (a stand-in for
    the broker's fetches; the poll's own logic is under test)."""

    def __init__(self, *answers: dict[TopicPartition, list[SimpleNamespace]]) -> None:
        self.answers = list(answers)

    async def getmany(self, **_: object) -> dict[TopicPartition, list[SimpleNamespace]]:
        return self.answers.pop(0) if self.answers else {}

    def highwater(self, tp: TopicPartition) -> None:
        return None


async def test_records_of_a_partition_not_yet_adopted_are_neither_taken_nor_carried() -> None:
    """The consumer may fetch a partition it was given while the scorer is still reading its
    stored offset. Those records are dropped, not carried into the next batch: carried, they
    would start it past the offset adopt() seeks to, and the records before them would be
    skipped (an account's signals lost, seen as state mismatches in the outage test)."""
    partitions = Partitions()
    partitions.adopt({P1: 0})
    poller = Poller(ScorerSettings(batch_max_accounts=1, batch_timeout_ms=1), partitions)
    poller.consumer = _Fetched({P0: records(0, "aabb"), P1: records(1, "cc")})  # type: ignore[assignment]
    taken = await poller.poll()
    assert {tp: [r.key for r in rs] for tp, rs in taken.items()} == {P1: [b"c", b"c"]}
    assert poller.carry == {}


def test_a_sweep_writes_parts_of_one_partition_each_taking_the_partitions_in_turn() -> None:
    """So that its two writes in flight are of different partitions, and neither waits on the
    other's fence."""
    accounts = {f"a{i:04}": i % 3 for i in range(2600)} | {f"b{i:04}": 3 for i in range(10)}
    parts = list(sweep_parts(accounts))
    assert [p for p, _ in parts] == [0, 1, 2, 3, 0, 1, 2]
    assert all(set(part.values()) == {p} and len(part) <= SWEEP_PART for p, part in parts)
    assert sorted(a for _, part in parts for a in part) == sorted(accounts)


async def test_only_the_owner_of_partition_0_counts_bands_and_the_others_clear_the_gauge(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counted: list[int] = []

    async def count(engine: object, day: object) -> list[portfolio.BandFigures]:
        counted.append(1)
        return [
            portfolio.BandFigures("churn", "active", "healthy", "USD", 5, 1_000_00),
            portfolio.BandFigures("churn", "active", "healthy", "", 2, 0),
        ]

    async def nothing(*args: object) -> int:
        return 0

    monkeypatch.setattr(portfolio, "count", count)
    monkeypatch.setattr(store, "outbox_backlog", nothing)
    monkeypatch.setattr(store, "prune_outbox", nothing)
    registry = CollectorRegistry()
    partitions = Partitions()
    relay = Relay(
        None,  # type: ignore[arg-type]
        ScorerMetrics(registry),
        lambda: datetime.now(UTC),
        ScorerSettings(),
        partitions.owns_first,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
    )
    labels = {"objective": "churn", "model_role": "active", "band": "healthy"}

    partitions.adopt({P0: 0, P1: 0})
    await relay.refresh_bands()
    assert registry.get_sample_value("healthscore_scorer_accounts", labels) == 7
    mrr = {"objective": "churn", "band": "healthy", "currency": "USD"}
    assert registry.get_sample_value("healthscore_scorer_mrr", mrr) == 1000.0

    partitions.forget([P0])  # a rebalance gives partition 0 to another scorer
    await relay.refresh_bands()
    assert registry.get_sample_value("healthscore_scorer_accounts", labels) is None
    assert registry.get_sample_value("healthscore_scorer_mrr", mrr) is None
    assert len(counted) == 1


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

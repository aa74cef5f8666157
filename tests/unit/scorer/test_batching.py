"""Scorer batches (batching.py): whole partitions up to a number of distinct accounts, the rest
carried over in order; records handed out again dropped; halved in order to isolate a poison
record."""

from __future__ import annotations

from types import SimpleNamespace

from aiokafka import TopicPartition

from services.scorer.batching import behind, count, cut, halves, onward
from tests.unit.scorer.fakes import P0, P1, P2, records


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


def test_records_handed_out_again_are_dropped_by_offset() -> None:
    fetched = [SimpleNamespace(key=b"a", offset=o) for o in (5, 6, 7, 6, 7, 8, 3, 9)]
    kept, dropped = onward(fetched, 4)
    assert [r.offset for r in kept] == [5, 6, 7, 8, 9] and dropped == 3
    kept, dropped = onward(fetched, 8)  # before the position prepared: stored already
    assert [r.offset for r in kept] == [8, 9] and dropped == 6
    assert onward(fetched[:3], None) == (fetched[:3], 0)

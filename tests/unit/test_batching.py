"""Scorer batches: whole partitions up to a number of distinct accounts, the rest carried over in
order; void after a rebalance."""

from __future__ import annotations

from collections import OrderedDict
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition

from services.scorer import store
from services.scorer.consume import Scorer
from shared.config import ScorerSettings
from shared.errors import FencedOut


def records(partition: int, keys: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(key=k.encode(), offset=i) for i, k in enumerate(keys)]


def cutter(cap: int) -> Scorer:
    scorer = Scorer.__new__(Scorer)  # only the batching: no broker, no database
    scorer.cfg = ScorerSettings(batch_max_accounts=cap)
    scorer._carry = {}
    return scorer


P0, P1, P2 = (TopicPartition("s", p) for p in range(3))


def test_whole_partitions_are_taken_while_their_accounts_fit_and_the_rest_wait_whole() -> None:
    scorer = cutter(3)
    taken = scorer._cut({P0: records(0, "abab"), P1: records(1, "ccdc"), P2: records(2, "ee")})
    # p0 (a, b) fits; p1 would make four accounts: it waits, whole; p2 (e) still fits
    assert {tp: [r.key for r in rs] for tp, rs in taken.items()} == {
        P0: [b"a", b"b", b"a", b"b"],
        P2: [b"e", b"e"],
    }
    assert list(scorer._carry) == [P1]
    assert [r.offset for r in scorer._carry[P1]] == [0, 1, 2, 3]


def test_a_partition_over_the_cap_on_its_own_is_cut_before_the_first_account_too_many() -> None:
    scorer = cutter(2)
    taken = scorer._cut({P0: records(0, "aabac"), P1: records(1, "bb"), P2: records(2, "d")})
    # a, a, b, a fit (2 accounts); c is a third: p0 stops before it, in order
    assert [r.key for r in taken[P0]] == [b"a", b"a", b"b", b"a"]
    assert [r.offset for r in scorer._carry[P0]] == [4]
    # p1 adds no account beyond those: it still fits, whole; p2 would add one and waits
    assert [r.key for r in taken[P1]] == [b"b", b"b"] and list(scorer._carry) == [P0, P2]


def test_carried_partitions_come_first_in_the_next_batch() -> None:
    scorer = cutter(1)
    scorer._cut({P0: records(0, "aa"), P1: records(1, "bc"), P2: records(2, "d")})
    assert list(scorer._carry) == [P1, P2]
    carried, scorer._carry = scorer._carry, {}
    taken = scorer._cut({**carried, P0: records(0, "a")})
    assert list(taken) == [P1] and [r.key for r in taken[P1]] == [b"b"]
    assert list(scorer._carry) == [P1, P2, P0]


def test_the_scorer_is_behind_while_the_broker_reported_records_past_those_in_hand() -> None:
    """Then a batch waits for the next fetch instead of ending at the first quiet moment."""
    scorer = cutter(10)
    highwater = {P0: 4, P1: None}
    scorer.consumer = SimpleNamespace(highwater=highwater.get)
    scorer.positions = {P0: 2, P1: None}
    in_hand = {P0: records(0, "abcd")[2:]}  # offsets 2 and 3
    assert not scorer._behind(in_hand)  # p0 read up to its high-water mark; p1 not fetched
    assert scorer._behind({P0: in_hand[P0][:1]})  # offset 3 is still on the broker
    highwater[P1] = 1
    assert scorer._behind(in_hand)  # p1: offset 0 waits, and nothing of p1 is in hand
    scorer.positions[P1] = 1
    assert not scorer._behind(in_hand)  # a batch before this one took it


async def test_a_rebalance_while_accounts_load_voids_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cache is cleared by a rebalance during the await: the batch must be retried, not
    continue with entries that are gone (it used to crash with a KeyError)."""
    scorer = Scorer.__new__(Scorer)
    scorer.cache = OrderedDict()
    scorer.positions, scorer._carry, scorer._generation = {}, {}, 0

    async def load_accounts(engine: object, account_ids: list[str]) -> tuple[dict, dict]:  # type: ignore[type-arg]
        scorer.forget([TopicPartition("s", 0)])  # the rebalance callback runs meanwhile
        return {}, {}

    monkeypatch.setattr(store, "load_accounts", load_accounts)
    scorer.engine = None
    with pytest.raises(FencedOut, match="reassigned"):
        await scorer._entries({"acc-1": 0})

"""Scorer batches: cut at a number of distinct accounts in partition order; void after a
rebalance."""

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


def test_a_batch_is_cut_at_the_account_cap_and_the_rest_carried_over_in_order() -> None:
    scorer = Scorer.__new__(Scorer)  # only the batching: no broker, no database
    scorer.cfg = ScorerSettings(batch_max_accounts=2)
    scorer._carry = {}
    p0, p1 = TopicPartition("s", 0), TopicPartition("s", 1)
    taken = scorer._cut({p0: records(0, "aabac"), p1: records(1, "bbdb")})
    # p0: a, a, b fit (2 accounts); c is a third account, so p0 stops before it
    assert [r.key for r in taken[p0]] == [b"a", b"a", b"b", b"a"]
    assert [r.offset for r in scorer._carry[p0]] == [4]
    # p1: b is already in; d would be a third account: p1 stops there, in order
    assert [r.key for r in taken[p1]] == [b"b", b"b"]
    assert [r.offset for r in scorer._carry[p1]] == [2, 3]


def test_a_partition_with_nothing_taken_is_left_out_of_the_batch() -> None:
    scorer = Scorer.__new__(Scorer)
    scorer.cfg = ScorerSettings(batch_max_accounts=1)
    scorer._carry = {}
    p0, p1 = TopicPartition("s", 0), TopicPartition("s", 1)
    taken = scorer._cut({p0: records(0, "aa"), p1: records(1, "bc")})
    assert list(taken) == [p0] and [r.offset for r in scorer._carry[p1]] == [0, 1]


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

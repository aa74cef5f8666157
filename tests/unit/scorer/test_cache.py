"""The scorer's state cache (cache.py): a rebalance while accounts load voids the batch."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition

from services.scorer import store
from services.scorer.cache import StateCache
from services.scorer.partitions import Partitions
from shared.errors import FencedOut


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

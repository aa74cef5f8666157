"""Account state between batches: the scorer's LRU of the accounts it owns.

A batch reads the entries of its accounts from here, and what is missing from PostgreSQL in one
round trip. Entries of a batch that is not yet committed are never evicted (their state exists
nowhere else); a rebalance or a failed batch clears everything, since other scorers may write
those accounts from then on, or the state in memory holds what was never stored.
"""

from __future__ import annotations

from collections import OrderedDict

from sqlalchemy.ext.asyncio import AsyncEngine

from services.scorer import store
from services.scorer.partitions import Partitions
from services.scorer.rescore import AccountEntry
from shared.scoring.state import AccountState


class StateCache:
    def __init__(self, engine: AsyncEngine, size: int) -> None:
        self.engine = engine
        self.size = size
        self.entries: OrderedDict[str, AccountEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self.entries)

    def clear(self) -> None:
        self.entries.clear()

    async def get(self, wanted: dict[str, int], partitions: Partitions) -> dict[str, AccountEntry]:
        """The entries of `wanted` (account id -> partition), the missing ones loaded. FencedOut
        if a rebalance came while loading: the cache was cleared meanwhile."""
        missing = [a for a in wanted if a not in self.entries]
        generation = partitions.generation
        states, scores = await store.load_accounts(self.engine, missing)
        partitions.still(generation)
        for account_id in missing:
            doc = states.get(account_id)
            self.entries[account_id] = AccountEntry(
                AccountState.from_json(doc) if doc else AccountState(),
                wanted[account_id],
                scores.get(account_id, {}),
            )
        found = {}
        for account_id, partition in wanted.items():
            self.entries.move_to_end(account_id)
            entry = self.entries[account_id]
            entry.partition = partition
            found[account_id] = entry
        return found

    def trim(self, keep: int) -> None:
        """Evict the least recently used entries beyond `size`, but never the `keep` most
        recent: those of a batch not yet committed, whose state is not in the database."""
        while len(self.entries) > max(self.size, keep):
            self.entries.popitem(last=False)

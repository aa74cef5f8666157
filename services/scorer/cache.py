"""Account state between batches: the scorer's LRU of the accounts it owns.

A batch reads the entries of its accounts from here, and what is missing from PostgreSQL in one
round trip: the state, the profile and the current scores; with the de-duplication memory when
signals are to be applied (a re-score of time alone, the sweep's, reads none, and an entry read
that way gets its memory when a signal first comes). Entries of a batch that is not yet
committed are never evicted (their state exists nowhere else); a rebalance or a failed batch
clears everything, since other scorers may write those accounts from then on, or the state in
memory holds what was never stored.
"""

from __future__ import annotations

from collections import OrderedDict

from sqlalchemy.ext.asyncio import AsyncEngine

from services.scorer import store
from services.scorer.partitions import Partitions
from services.scorer.rescore import AccountEntry
from shared.db import SEEN_PERIOD
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

    async def get(
        self, wanted: dict[str, int], partitions: Partitions, memory_from: int | None = None
    ) -> dict[str, AccountEntry]:
        """The entries of `wanted` (account id -> partition), the missing ones loaded, with
        their memory of the periods from `memory_from` on (None: without it). FencedOut if a
        rebalance came while loading: the cache was cleared meanwhile."""
        missing = [a for a in wanted if a not in self.entries]
        generation = partitions.generation
        found = await store.load_accounts(self.engine, missing, memory_from)
        without: dict[str, set[int]] = {}
        memories: dict[str, list[tuple[int, bytes]]] = {}
        if memory_from is not None:
            without = {
                a: self.entries[a].periods
                for a in wanted
                if a in self.entries and not self.entries[a].memory_loaded
            }
            memories = await store.load_memory(self.engine, without, memory_from)
        partitions.still(generation)
        for account_id in missing:
            stored = found.get(account_id) or store.Stored()
            state = AccountState.from_bytes(stored.state) if stored.state else AccountState()
            if memory_from is not None:
                state.memory.remember_stored(stored.memory, SEEN_PERIOD)
            self.entries[account_id] = AccountEntry(
                state,
                wanted[account_id],
                stored.scores,
                stored.profile,
                stored.state,
                memory_loaded=memory_from is not None,
                periods=set(stored.periods),
            )
        for account_id in without:
            entry = self.entries[account_id]
            entry.state.memory.remember_stored(memories[account_id], SEEN_PERIOD)
            entry.memory_loaded = True
        entries = {}
        for account_id, partition in wanted.items():
            self.entries.move_to_end(account_id)
            entry = self.entries[account_id]
            entry.partition = partition
            entries[account_id] = entry
        return entries

    def trim(self, keep: int) -> None:
        """Evict the least recently used entries beyond `size`, but never the `keep` most
        recent: those of a batch not yet committed, whose state is not in the database."""
        while len(self.entries) > max(self.size, keep):
            self.entries.popitem(last=False)

"""Account state between batches: the scorer's LRU of the accounts it owns.

A batch reads the entries of its accounts from here, and what is missing from PostgreSQL in one
round trip. Entries of a batch that is not yet committed are never evicted (their state exists
nowhere else); a rebalance or a failed batch clears everything, since other scorers may write
those accounts from then on, or the state in memory holds what was never stored.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from services.scorer import store
from services.scorer.partitions import Partitions
from services.scorer.rescore import AccountEntry
from shared.scoring.state import AccountState


@dataclass(frozen=True, slots=True)
class Loaded:
    """Stored entries read for a `StateCache.get` to come."""

    generation: int  # the partitions' generation when the reading began
    entries: dict[str, AccountEntry]


class StateCache:
    def __init__(self, engine: AsyncEngine, size: int) -> None:
        self.engine = engine
        self.size = size
        self.entries: OrderedDict[str, AccountEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self.entries)

    def clear(self) -> None:
        self.entries.clear()

    async def load(self, wanted: dict[str, int], partitions: Partitions) -> Loaded:
        """Read the stored entries of the accounts of `wanted` (account id -> partition) that
        the cache lacks, without holding them yet: a sweep reads its next part while it scores
        this one, and hands what was read to `get`."""
        generation = partitions.generation
        missing = [a for a in wanted if a not in self.entries]
        states, scores = await store.load_accounts(self.engine, missing)
        return Loaded(
            generation,
            {
                account_id: AccountEntry(
                    AccountState.from_json(doc)
                    if (doc := states.get(account_id))
                    else AccountState(),
                    wanted[account_id],
                    scores.get(account_id, {}),
                )
                for account_id in missing
            },
        )

    async def get(
        self, wanted: dict[str, int], partitions: Partitions, loaded: Loaded | None = None
    ) -> dict[str, AccountEntry]:
        """The entries of `wanted` (account id -> partition), the missing ones loaded, or taken
        from `loaded` (read before: an entry the cache holds meanwhile is the newer one, and
        one evicted meanwhile is read again). FencedOut if a rebalance came since the reading
        began: the cache was cleared meanwhile."""
        loaded = loaded or await self.load(wanted, partitions)
        partitions.still(loaded.generation)
        for account_id, entry in loaded.entries.items():
            self.entries.setdefault(account_id, entry)
        if any(account_id not in self.entries for account_id in wanted):
            return await self.get(wanted, partitions)
        found = {}
        for account_id, partition in wanted.items():
            self.entries.move_to_end(account_id)
            entry = self.entries[account_id]
            entry.partition = partition
            found[account_id] = entry
        return found

    async def parts(
        self, parts: list[tuple[int, dict[str, int]]], partitions: Partitions
    ) -> AsyncGenerator[tuple[int, dict[str, int], dict[str, AccountEntry]]]:
        """Each of `parts` (partition, account id -> partition) with its entries (`get`), the
        next part read while the caller scores this one: PostgreSQL's work, not the scorer's.
        Use under `contextlib.aclosing`, so that a read in flight is let go of when the caller
        stops early."""
        reading: asyncio.Task[Loaded] | None = None
        try:
            for n, (partition, part) in enumerate(parts):
                entries = await self.get(part, partitions, await reading if reading else None)
                reading = None
                if n + 1 < len(parts):
                    reading = asyncio.create_task(self.load(parts[n + 1][1], partitions))
                yield partition, part, entries
        finally:
            if reading:
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)

    def trim(self, keep: int) -> None:
        """Evict the least recently used entries beyond `size`, but never the `keep` most
        recent: those of a batch not yet committed, whose state is not in the database."""
        while len(self.entries) > max(self.size, keep):
            self.entries.popitem(last=False)

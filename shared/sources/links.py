"""Where a user, a charge or a ticket belongs: the associations source formats learn and use.

`MemoryLinks` keeps them in one process (the `healthscore validate` dry run, tests) and is the
bounded cache in front of the durable store ingest uses (services/ingest/links.py, a PostgreSQL
table every ingest process shares). Every store keeps, per key, the association with the latest
event time, so the order in which processes or batches learn them does not matter.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Collection, Sequence
from typing import Protocol

from shared.sources.base import Link, LinkKey


class Links(Protocol):
    async def learn(self, links: Sequence[Link]) -> None:
        """Keep each link unless the store holds a later one for its key."""

    async def find(self, keys: Collection[LinkKey]) -> dict[LinkKey, str]:
        """The account of each key that has one."""


class MemoryLinks:
    """At most `size` links, least recently used let go first; with `ttl` seconds, an entry is
    also forgotten after that long (a cache in front of a store other processes write)."""

    def __init__(self, size: int = 100_000, ttl: float | None = None) -> None:
        self.size, self.ttl = size, ttl
        self._entries: OrderedDict[LinkKey, tuple[str, float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def keep(self, links: Sequence[Link]) -> None:
        now = time.monotonic()
        for link in links:
            held = self._entries.get(link.key)
            if held is None or link.at >= held[1]:
                self._entries[link.key] = (link.account_id, link.at, now)
            self._entries.move_to_end(link.key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def known(self, keys: Collection[LinkKey]) -> tuple[dict[LinkKey, str], set[LinkKey]]:
        """What is held for `keys`, and the keys not held (or held too long)."""
        found: dict[LinkKey, str] = {}
        unknown: set[LinkKey] = set()
        oldest = time.monotonic() - self.ttl if self.ttl is not None else None
        for key in keys:
            held = self._entries.get(key)
            if held is None or (oldest is not None and held[2] < oldest):
                unknown.add(key)
            else:
                found[key] = held[0]
                self._entries.move_to_end(key)
        return found, unknown

    def holds(self, link: Link) -> bool:
        """Whether the cache knows `link` already (same account, as late or later), recently
        enough that storing it again would change nothing but its last-seen time."""
        held = self._entries.get(link.key)
        if held is None or held[0] != link.account_id or held[1] < link.at:
            return False
        return self.ttl is None or held[2] >= time.monotonic() - self.ttl

    async def learn(self, links: Sequence[Link]) -> None:
        self.keep(links)

    async def find(self, keys: Collection[LinkKey]) -> dict[LinkKey, str]:
        return self.known(keys)[0]

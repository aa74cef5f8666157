"""The durable link store: user, charge and ticket -> account, in PostgreSQL.

Every ingest process reads and writes the same table, so an association one process learned
attributes what another reads, and survives restarts. Per key the association with the latest
event time wins (an upsert guarded by `at`), so batches and processes may learn in any order.
A bounded in-process cache answers repeated lookups; an entry is read again after
`cache_seconds`, which bounds how long another process's newer association goes unseen. Rows
not taught for `retention_days` are pruned (hourly), which bounds the table; a link this
process stored less than `cache_seconds` ago is not stored again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.sources.base import Link, LinkKey
from shared.sources.links import MemoryLinks

log = structlog.get_logger(__name__)

_LEARN = text(
    """INSERT INTO source_links (namespace, key, account_id, at, seen_at)
SELECT * FROM unnest(CAST(:namespaces AS text[]), CAST(:keys AS text[]),
                     CAST(:accounts AS text[]), CAST(:ats AS timestamptz[]),
                     CAST(:seen AS timestamptz[]))
ON CONFLICT (namespace, key) DO UPDATE
SET account_id = CASE WHEN excluded.at >= source_links.at
                      THEN excluded.account_id ELSE source_links.account_id END,
    at = greatest(excluded.at, source_links.at),
    seen_at = excluded.seen_at
RETURNING namespace, key, account_id, at"""
)
_FIND = text(
    """SELECT l.namespace, l.key, l.account_id, l.at FROM source_links l
JOIN unnest(CAST(:namespaces AS text[]), CAST(:keys AS text[])) AS w(namespace, key)
  ON l.namespace = w.namespace AND l.key = w.key"""
)
_PRUNE = text("DELETE FROM source_links WHERE seen_at < :before")


def _key(link: Link) -> LinkKey:
    return link.key


class PostgresLinks:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        cache_size: int = 100_000,
        cache_seconds: float = 300.0,
        retention_days: int = 400,
    ) -> None:
        self.engine = engine
        self.cache = MemoryLinks(cache_size, ttl=cache_seconds)
        self.retention = timedelta(days=retention_days)

    async def learn(self, links: Sequence[Link]) -> None:
        # what this process stored within the cache's time limit need not be stored again: a
        # ticket's every event, a user's every group call would otherwise rewrite its row
        # sorted: two processes upserting overlapping keys take row locks in the same order
        ordered = sorted((link for link in links if not self.cache.holds(link)), key=_key)
        if not ordered:
            return
        seen = datetime.now(UTC)
        async with self.engine.begin() as conn:
            rows = await conn.execute(
                _LEARN,
                {
                    "namespaces": [link.key[0] for link in ordered],
                    "keys": [link.key[1] for link in ordered],
                    "accounts": [link.account_id for link in ordered],
                    "ats": [datetime.fromtimestamp(link.at, UTC) for link in ordered],
                    "seen": [seen] * len(ordered),
                },
            )
            # what the table holds now: ours, or another process's later association
            held = [Link((ns, key), account, at.timestamp()) for ns, key, account, at in rows]
        self.cache.keep(held)

    async def find(self, keys: Collection[LinkKey]) -> dict[LinkKey, str]:
        found, unknown = self.cache.known(keys)
        if unknown:
            wanted = sorted(unknown)
            async with self.engine.connect() as conn:
                rows = await conn.execute(
                    _FIND,
                    {"namespaces": [k[0] for k in wanted], "keys": [k[1] for k in wanted]},
                )
                read = [Link((ns, key), account, at.timestamp()) for ns, key, account, at in rows]
            self.cache.keep(read)
            found.update({link.key: link.account_id for link in read})
        return found

    async def prune(self) -> int:
        async with self.engine.begin() as conn:
            result = await conn.execute(_PRUNE, {"before": datetime.now(UTC) - self.retention})
        return int(result.rowcount or 0)

    async def prune_forever(self, stop: asyncio.Event, every: float = 3600.0) -> None:
        while not stop.is_set():
            try:
                pruned = await self.prune()
                if pruned:
                    log.info("ingest.links_pruned", rows=pruned)
            except Exception as exc:  # the next round tries again; lookups do not depend on it
                log.warning("ingest.links_prune_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

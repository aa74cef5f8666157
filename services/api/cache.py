"""The finished `GET .../health` documents of recently read accounts, kept until they change.

Every writer of what that answer shows (the scorer's batches and sweeps, its model-change
clean-up, the API's overrides) runs `shared.db.NOTIFY_CHANGED` in its transaction; PostgreSQL
delivers the notification on commit to every API process LISTENing on `HEALTH_CHANNEL`, which
drops those accounts' documents. So a cached answer is exactly as fresh as a read from the
database, without the read.

- A document read while a notification arrives is not kept (it may predate that commit): each
  notification bumps `generation`, and `put` keeps only what was read within one generation.
- A document listing an active override expires when that override does (the query says when).
- When the listening connection is lost the cache empties and keeps nothing until it listens
  again (retrying every second), since notifications sent meanwhile are lost.
- Bounded by the bytes of the documents held; the least recently read go first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from shared.db import HEALTH_CHANNEL
from shared.retry import Backoff

log = structlog.get_logger(__name__)


class HealthCache:
    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        max_bytes: int,
        registry: CollectorRegistry,
    ) -> None:
        self._connect = connect
        self.max_bytes = max_bytes
        self.generation = 0
        self.listening = False
        self._documents: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0
        self._connection: asyncpg.Connection | None = None
        self._reconnect: asyncio.Task[None] | None = None
        self._closed = False
        self.lookups = Counter(
            "healthscore_api_health_cache_lookups_total",
            "GET .../health answers looked up in the cache, by result (hit, miss)",
            ["result"],
            registry=registry,
        )
        self._hit, self._miss = self.lookups.labels("hit"), self.lookups.labels("miss")
        self.invalidated = Counter(
            "healthscore_api_health_cache_invalidations_total",
            "Account change notifications received from PostgreSQL",
            registry=registry,
        )
        self.held = Gauge(
            "healthscore_api_health_cache_bytes",
            "Bytes of health documents held in the cache",
            registry=registry,
        )
        self.held.set_function(lambda: self._bytes)
        if self.enabled:  # a cache turned off is not one that cannot hear: no series, no alert
            Gauge(
                "healthscore_api_health_cache_listening",
                "1 while the cache hears PostgreSQL's change notifications (else it is bypassed)",
                registry=registry,
            ).set_function(lambda: int(self.listening))

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    async def start(self) -> None:
        if self.enabled:
            await self._listen()

    async def close(self) -> None:
        self._closed = True
        if self._reconnect is not None:
            self._reconnect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect
        if self._connection is not None:
            await self._connection.close()

    # --- lookups ------------------------------------------------------------------------

    def get(self, account_id: str) -> bytes | None:
        found = self._documents.get(account_id)
        if found is None or found[1] <= time.time():
            self._miss.inc()
            return None
        self._documents.move_to_end(account_id)
        self._hit.inc()
        return found[0]

    def put(self, account_id: str, document: bytes, generation: int, expires: float) -> None:
        """Keep a document read since `generation` was current, until `expires` (epoch s)."""
        if generation != self.generation or not self.listening:
            return
        self._forget(account_id)
        self._documents[account_id] = (document, expires)
        self._bytes += len(document)
        while self._bytes > self.max_bytes:
            _, (dropped, _) = self._documents.popitem(last=False)
            self._bytes -= len(dropped)

    def changed(self, account_ids: list[str]) -> None:
        """These accounts changed: drop their documents, and any read still in flight."""
        self.generation += 1
        for account_id in account_ids:
            self._forget(account_id)

    def _forget(self, account_id: str) -> None:
        found = self._documents.pop(account_id, None)
        if found is not None:
            self._bytes -= len(found[0])

    def clear(self) -> None:
        self.generation += 1
        self._documents.clear()
        self._bytes = 0

    # --- notifications ------------------------------------------------------------------

    def _notified(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        self.invalidated.inc()
        self.changed(orjson.loads(payload))

    def _lost(self, connection: Any) -> None:
        self.listening = False
        self.clear()
        self._connection = None
        if not self._closed:
            log.warning("api.health_cache_bypassed", reason="notification connection lost")
            self._reconnect = asyncio.get_running_loop().create_task(self._relisten())

    async def _listen(self) -> None:
        connection = await self._connect()
        try:
            await connection.add_listener(HEALTH_CHANNEL, self._notified)
        except BaseException:
            connection.terminate()
            raise
        connection.add_termination_listener(self._lost)
        self._connection = connection
        self.clear()  # whatever changed before LISTEN took effect went unheard
        self.listening = True

    async def _relisten(self) -> None:
        backoff = Backoff()
        while True:
            await asyncio.sleep(backoff.next_delay())
            try:
                await self._listen()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("api.health_cache_listen_failed", error=type(exc).__name__)
                continue
            log.info("api.health_cache_listening")
            return

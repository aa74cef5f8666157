"""The health cache's bookkeeping: byte bound, recency, generations, expiry (no database)."""

from __future__ import annotations

import math
import time

from prometheus_client import CollectorRegistry

from services.api.cache import HealthCache


def listening_cache(max_bytes: int) -> HealthCache:
    cache = HealthCache(connect=None, max_bytes=max_bytes, registry=CollectorRegistry())  # type: ignore[arg-type]
    cache.listening = True  # as once LISTEN took effect
    return cache


def test_the_least_recently_read_go_first_when_over_the_byte_bound() -> None:
    cache = listening_cache(max_bytes=30)
    for account in "abc":
        cache.put(account, account.encode() * 10, cache.generation, math.inf)
    assert cache.get("a") == b"a" * 10  # now the most recently read
    cache.put("d", b"d" * 10, cache.generation, math.inf)
    assert cache.get("b") is None
    assert [cache.get(k) for k in "acd"] == [b"a" * 10, b"c" * 10, b"d" * 10]
    cache.put("a", b"A" * 25, cache.generation, math.inf)  # replaced: only its new size counts
    assert cache.get("a") == b"A" * 25
    assert cache.get("c") is None and cache.get("d") is None


def test_a_read_overtaken_by_a_change_is_not_kept() -> None:
    cache = listening_cache(max_bytes=1000)
    before = cache.generation
    cache.changed(["someone-else"])  # a notification arrives while "a" is being read
    cache.put("a", b"old", before, math.inf)
    assert cache.get("a") is None
    cache.put("a", b"new", cache.generation, math.inf)
    assert cache.get("a") == b"new"
    cache.changed(["a"])
    assert cache.get("a") is None


def test_nothing_is_kept_while_not_listening_or_past_its_expiry() -> None:
    cache = listening_cache(max_bytes=1000)
    cache.put("soon", b"x", cache.generation, time.time() - 0.001)
    assert cache.get("soon") is None
    cache.listening = False
    cache.put("a", b"x", cache.generation, math.inf)
    assert cache.get("a") is None
    lookups = {
        s.labels["result"]: s.value
        for m in cache.lookups.collect()
        for s in m.samples
        if s.name.endswith("_total")
    }
    assert lookups == {"hit": 0.0, "miss": 2.0}

"""An account's de-duplication memory: the ids of the signals it took, so that a re-delivery
is dropped. It is the one part of an account's state that is not a function of the set of
its signals alone: it remembers the ids of signals ingested within `horizon` of the newest
one (at most `max_ids`). It holds a 64-bit digest of each id (a false match among 512 ids of
one account: about 1 in 3e16) and the ingestion time in whole seconds: 12 bytes an id. The
digests are one byte string and their times an array beside it, so that a search (a few kB)
takes about a microsecond and a stored period is taken whole, not an id at a time; only
letting old ids go unpacks them, every 32 ids.

Stored apart from the state (docs/adr/0018): as the digests the account took in each period
of `seen_signals` (`unstored_ids` hands over those since the last write, by the period they
were ingested in), read back with `remember_stored`, each id as of its period's end.
"""

from __future__ import annotations

import hashlib
import math
import struct
from array import array
from dataclasses import dataclass, field
from itertools import repeat


@dataclass(frozen=True, slots=True)
class DedupPolicy:
    horizon_seconds: float = 48 * 3600.0
    max_ids: int = 512


DEFAULT_DEDUP = DedupPolicy()


@dataclass
class SeenIds:
    digests: bytearray = field(default_factory=bytearray)
    ingested: array[int] = field(default_factory=lambda: array("I"))  # at the digest's index
    # what the memory took since it was last stored: ingested at -> digests
    unstored: dict[int, bytearray] = field(default_factory=dict)

    @property
    def seen(self) -> dict[int, int]:
        """The memory as id digest -> ingested at (s)."""
        return dict(zip(_ids(self.digests), self.ingested, strict=True))

    def knows(self, digest: int) -> bool:
        key, digests = digest.to_bytes(8), self.digests
        at = digests.find(key)
        while at % 8 and at != -1:  # a match across two digests is no match
            at = digests.find(key, at + 1)
        return at != -1

    def remember(self, digest: int, ingested_at: float, dedup: DedupPolicy) -> None:
        ingested = whole_seconds(ingested_at)
        key = digest.to_bytes(8)
        self.digests += key
        self.ingested.append(ingested)
        self.unstored.setdefault(ingested, bytearray()).extend(key)
        # every 32 ids: forget those ingested longer than the horizon ago, and the oldest
        # beyond three quarters of max_ids (re-deliveries come soon after the original,
        # whatever its event time)
        count, keep = len(self.ingested), max(dedup.max_ids * 3 // 4, 1)
        if count % 32 == 0 or count > dedup.max_ids:
            floor = max(self.ingested) - dedup.horizon_seconds
            if count > keep or min(self.ingested) < floor:
                self._keep(floor, keep)

    def _keep(self, floor: float, keep: int) -> None:
        """Let go of the ids ingested before `floor`, and of the oldest beyond `keep`."""
        seen = zip(self.ingested, _keys(self.digests), strict=True)
        kept = sorted(((t, key) for t, key in seen if t >= floor), reverse=True)[:keep]
        kept.reverse()  # oldest first again
        self.digests = bytearray(b"".join(key for _, key in kept))
        self.ingested = array("I", (t for t, _ in kept))
        if self.unstored:  # what is let go is not stored either
            known = {key for _, key in kept}
            unstored: dict[int, bytearray] = {}
            for t, keys in self.unstored.items():
                still = b"".join(key for key in _keys(keys) if key in known)
                if still:
                    unstored[t] = bytearray(still)
            self.unstored = unstored

    def remember_stored(self, periods: list[tuple[int, bytes]], period_seconds: float) -> None:
        """Take the memory stored apart: the digests of each period, each id remembered as of
        its period's end (so never let go before its time)."""
        digests, ingested = bytearray(), array("I")
        for period, ids in sorted(periods):
            digests += ids
            ingested.extend(repeat(whole_seconds((period + 1) * period_seconds), len(ids) // 8))
        self.digests[:0] = digests
        self.ingested[:0] = ingested

    def unstored_ids(self, period_seconds: float, at: float | None = None) -> dict[int, bytes]:
        """The digests remembered since the last call (or load), for the store, by the period
        they are stored in: that of `at` (when they are written), or with no `at` each id's
        own ingestion's (as if each had been stored when it was ingested); then none."""
        periods: dict[int, bytearray] = {}
        for t, keys in self.unstored.items():
            period = int((t if at is None else at) // period_seconds)
            periods.setdefault(period, bytearray()).extend(keys)
        self.unstored = {}
        return {period: bytes(keys) for period, keys in periods.items()}


_DIGEST = struct.Struct(">Q")


def id_digest(signal_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(signal_id.encode(), digest_size=8).digest())


def whole_seconds(t: float) -> int:
    return max(math.ceil(t), 0)


def _keys(digests: bytes | bytearray) -> list[bytes]:
    """The 8-byte digests, each as bytes."""
    view = bytes(digests)
    return [view[i : i + 8] for i in range(0, len(view), 8)]


def _ids(digests: bytes | bytearray) -> list[int]:
    return [d for (d,) in _DIGEST.iter_unpack(digests)]

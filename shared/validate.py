"""Raw record bytes -> one canonical Signal, or one Rejection with a machine-readable reason.

Pure and synchronous: no I/O, the clock is an argument. Two steps: `parse` turns bytes into a
JSON object (the checks run cheapest first, so that hostile input, huge, not UTF-8, not JSON,
is refused before any real parsing); `to_signal` turns one event in this project's own v1 form
into a signal. Every source format (shared/sources/) ends in `to_signal`: a Segment call or a
Stripe event is translated into v1 events first, so the limits, the text rules and the
normalisation are the same whatever the source. `validate` is both steps for a v1 record.

Text: PostgreSQL cannot store NUL, and JSON can carry it only escaped. In free text (subjects,
ticket text, comments, reasons, names) NUL is removed, since what a person wrote is still worth
its sentiment; any other string holding one (ids, enums, features) is refused with its field.
Unpaired surrogates cannot get past `parse`: the JSON parser refuses them (`invalid_json`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, Final

import orjson
from pydantic import ValidationError

from shared.events import (
    EVENT_MODEL,
    EVENT_TYPE_SOURCE,
    SCHEMA_VERSION,
    MarketEvent,
    RawEvent,
    Signal,
    built_signal,
    minor_units,
)

# Every reason a raw record can be dead-lettered for (the `reason` header on the DLQ).
REASONS: Final = (
    "too_large",
    "invalid_utf8",
    "invalid_json",
    "not_an_object",
    "unknown_event_type",
    "unsupported_schema_version",
    "missing_account_id",
    "schema_violation",
    "occurred_at_in_future",
    "occurred_at_too_old",
    "unattributed",
    "mapping_failed",
)

ENVELOPE: Final = frozenset({"event_id", "account_id", "occurred_at", "type", "schema_version"})
_ENVELOPE: Final = set(ENVELOPE)
TEXT_FIELDS: Final = ("subject", "text", "comment")
MONEY_FIELDS: Final = {"mrr": "mrr_cents", "amount": "amount_cents"}


@dataclass(frozen=True, slots=True)
class Limits:
    max_record_bytes: int = 256 * 1024
    max_future_skew: timedelta = timedelta(minutes=5)
    max_age: timedelta = timedelta(days=400)


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    detail: str
    path: str | None = None


def _upgrade_v0(event: dict[str, Any]) -> dict[str, Any]:
    """v0, the pre-1.0 envelope: `id`, `account`, `ts` (epoch milliseconds)."""
    upgraded = {k: v for k, v in event.items() if k not in {"id", "account", "ts"}}
    upgraded.setdefault("event_id", event.get("id"))
    upgraded.setdefault("account_id", event.get("account"))
    ts = event.get("ts")
    if isinstance(ts, int | float) and not isinstance(ts, bool) and 0 <= ts < 1e14:
        upgraded.setdefault("occurred_at", datetime.fromtimestamp(ts / 1000, UTC).isoformat())
    else:
        upgraded.setdefault("occurred_at", ts)
    upgraded["schema_version"] = 1
    return upgraded


# schema_version -> function producing the next version; applied until SCHEMA_VERSION.
UPGRADES: Final[dict[int, Callable[[dict[str, Any]], dict[str, Any]]]] = {0: _upgrade_v0}


class Sentiment:
    """VADER compound sentiment (-1..1) of an event's free text, built once per process."""

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    def __call__(self, text: str) -> float:
        return float(self._analyzer.polarity_scores(text[:5_000])["compound"])


def _path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "$"


@cache
def _text_fields(model: type[RawEvent]) -> tuple[str, ...]:
    return tuple(f for f in TEXT_FIELDS if f in model.model_fields)


def _normalised_data(event: RawEvent) -> dict[str, Any]:
    """The type's own fields in JSON form; money as integer minor units of its currency."""
    data: dict[str, Any] = event.model_dump(mode="json", exclude=_ENVELOPE)
    for name, renamed in MONEY_FIELDS.items():
        if name in data:
            del data[name]
            data[renamed] = minor_units(getattr(event, name), data.get("currency", "USD"))
    return data


def parse(raw: bytes | None, limits: Limits = Limits()) -> dict[str, Any] | Rejection:
    """The JSON object a raw record holds, or why it holds none."""
    if raw is None:
        return Rejection("invalid_json", "record has no value (tombstone)")
    if len(raw) > limits.max_record_bytes:
        return Rejection("too_large", f"{len(raw)} bytes > limit {limits.max_record_bytes}")
    try:
        event = orjson.loads(raw)  # it refuses invalid UTF-8 too: tell which, when it fails
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            return Rejection("invalid_utf8", f"byte {bad.start}: {bad.reason}")
        return Rejection("invalid_json", str(exc)[:200])
    if not isinstance(event, dict):
        return Rejection("not_an_object", f"top-level JSON is {type(event).__name__}", "$")
    return event


def to_signal(
    event: dict[str, Any],
    *,
    now: datetime,
    limits: Limits = Limits(),
    sentiment: Callable[[str], float] | None = None,
    may_hold_nul: bool = True,
) -> Signal | Rejection:
    """Decide what one v1 event becomes. `may_hold_nul=False` (the record's bytes hold no
    escaped NUL) skips looking for one."""
    kind = event.get("type")
    model = EVENT_MODEL.get(kind) if isinstance(kind, str) else None
    if model is None or not isinstance(kind, str):
        return Rejection("unknown_event_type", f"type {repr(kind)[:64]} is not known", "type")

    version = event.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        return Rejection(
            "unsupported_schema_version", "schema_version must be an integer", "schema_version"
        )
    if version != SCHEMA_VERSION:
        if version not in UPGRADES:
            return Rejection(
                "unsupported_schema_version",
                f"schema_version {version} of {kind} is not supported",
                "schema_version",
            )
        while version != SCHEMA_VERSION:
            event = UPGRADES[version](event)
            version = event["schema_version"]

    account_id = event.get("account_id")
    if model is not MarketEvent and (
        account_id is None or (isinstance(account_id, str) and not account_id.strip())
    ):
        return Rejection("missing_account_id", "account_id is absent or empty", "account_id")

    try:
        parsed: RawEvent = model.model_validate(event)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        return Rejection("schema_violation", first["msg"][:200], _path(first["loc"]))

    if may_hold_nul:  # free text lost its NUL in validation; any other string is refused
        for name, value in parsed:
            if isinstance(value, str) and "\x00" in value:
                return Rejection("schema_violation", "NUL characters are not allowed here", name)

    if parsed.occurred_at > now + limits.max_future_skew:
        return Rejection(
            "occurred_at_in_future",
            f"occurred_at {parsed.occurred_at.isoformat()} is after {now.isoformat()}",
            "occurred_at",
        )
    if parsed.occurred_at < now - limits.max_age:
        return Rejection(
            "occurred_at_too_old",
            f"occurred_at {parsed.occurred_at.isoformat()} is older than "
            f"{limits.max_age.days} days",
            "occurred_at",
        )

    score = None
    text_fields = _text_fields(model)
    if sentiment is not None and text_fields:
        text = " ".join(t for f in text_fields if (t := getattr(parsed, f)))
        if text.strip():
            score = sentiment(text)

    # every field was validated above: build the signal without validating it again
    return built_signal(
        parsed.event_id,
        parsed.scope.key() if isinstance(parsed, MarketEvent) else parsed.account_id,
        parsed.occurred_at,
        EVENT_TYPE_SOURCE[kind],
        kind,
        _normalised_data(parsed),
        score,
        now,
    )


def validate(
    raw: bytes | None,
    *,
    now: datetime,
    limits: Limits = Limits(),
    sentiment: Callable[[str], float] | None = None,
) -> Signal | Rejection:
    """Decide what one raw record in the v1 format becomes."""
    event = parse(raw, limits)
    if isinstance(event, Rejection):
        return event
    assert raw is not None
    return to_signal(
        event, now=now, limits=limits, sentiment=sentiment, may_hold_nul=b"\\u0000" in raw
    )

"""Subscriptions, the change events they match, and the signed HTTP requests that carry them.

A request is the CloudEvent in HTTP structured mode (the event as JSON, as the topic carries
it) or binary mode (its attributes as `ce-` headers, its data as the body: a receiver that
reads only the body, such as a Slack incoming webhook, finds the data's `text` there). Either
way it is signed as the Standard Webhooks specification says: `webhook-id` (the event id, the
same on every attempt: a receiver de-duplicates by it), `webhook-timestamp` (seconds, this
attempt's) and `webhook-signature` (`v1,` + base64 of the HMAC-SHA256, keyed by the secret,
of `id.timestamp.body`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from cloudevents.core.bindings.http import HTTPMessage, to_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

SECRET_PREFIX = "whsec_"
_FORMAT = JSONFormat()


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


@dataclass(frozen=True, slots=True)
class Change:
    """What a subscription's filter reads of a change event, and the event as published."""

    event_id: str
    type: str
    account_id: str
    objective: str | None
    old_band: str | None
    new_band: str | None
    segment: str | None
    owner: str | None
    replay: bool
    scored_at: datetime
    payload: bytes  # the CloudEvent, structured JSON

    @classmethod
    def parse(cls, payload: bytes) -> Change:
        """ValueError when `payload` is not a change event (whatever else it is)."""
        try:
            event = orjson.loads(payload)
            data = event.get("data") or {}
            scored_at = datetime.fromisoformat(event.get("scoredat") or event["time"])
            if scored_at.tzinfo is None or not isinstance(data, dict):
                raise ValueError("no time zone, or data that is not an object")
            # as long as the delivery row's columns hold (webhook_deliveries)
            event_id, kind, subject = str(event["id"]), str(event["type"]), str(event["subject"])
            if len(event_id) > 64 or len(kind) > 128 or not 0 < len(subject) <= 128:
                raise ValueError("an id, type or subject longer than a change event's")
            if "\x00" in event_id + kind + subject:  # PostgreSQL text cannot hold it
                raise ValueError("NUL in an id, type or subject")
            return cls(
                event_id=event_id,
                type=kind,
                account_id=subject,
                objective=_text(data.get("objective")),
                old_band=_text(data.get("old_band")),
                new_band=_text(data.get("new_band")),
                segment=_text(data.get("segment")),
                owner=_text(data.get("owner")),
                replay=event.get("replay") is True,
                scored_at=scored_at,
                payload=payload,
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"not a change event: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Subscription:
    webhook_id: str
    url: str
    secret: str
    mode: str  # structured | binary
    types: tuple[str, ...]
    objectives: tuple[str, ...]
    from_bands: tuple[str, ...]
    to_bands: tuple[str, ...]
    segments: tuple[str, ...]
    owners: tuple[str, ...]  # lower case
    replays: bool
    created_at: datetime

    @classmethod
    def of_row(cls, row: Any) -> Subscription:
        return cls(
            row.webhook_id,
            row.url,
            row.secret,
            row.mode,
            tuple(row.types),
            tuple(row.objectives),
            tuple(row.from_bands),
            tuple(row.to_bands),
            tuple(row.segments),
            tuple(o.lower() for o in row.owners),
            row.replays,
            row.created_at,
        )

    def matches(self, change: Change) -> bool:
        """Whether this subscription wants `change`: one scored since it was created, whose
        every filtered field is among the listed values (an empty list: any value)."""
        return (
            change.scored_at >= self.created_at
            and (self.replays or not change.replay)
            and _among(change.type, self.types)
            and _among(change.objective, self.objectives)
            and _among(change.old_band, self.from_bands)
            and _among(change.new_band, self.to_bands)
            and _among(change.segment, self.segments)
            and _among(change.owner and change.owner.lower(), self.owners)
        )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _among(value: str | None, allowed: tuple[str, ...]) -> bool:
    return not allowed or value in allowed


def request(mode: str, payload: bytes, secret: str, event_id: str, now: float) -> HTTPMessage:
    """The signed HTTP request carrying the stored structured event `payload`."""
    if mode == "binary":
        event = _FORMAT.read(CloudEvent, payload)
        message = to_binary(event, _FORMAT)
        headers, body = dict(message.headers), message.body
    else:
        headers, body = {"content-type": "application/cloudevents+json"}, payload
    timestamp = int(now)
    headers["webhook-id"] = event_id
    headers["webhook-timestamp"] = str(timestamp)
    headers["webhook-signature"] = signature(secret, event_id, timestamp, body)
    return HTTPMessage(headers=headers, body=body)

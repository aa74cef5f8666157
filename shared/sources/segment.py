"""The Segment Spec (also sent by RudderStack, Jitsu and Snowplow's Segment-compatible
endpoints): `track`, `page`, `screen`, `identify`, `group`, `alias` and batch envelopes.

- `track` -> `session_started` for the event names configured as sessions, otherwise
  `feature_used` (the event name is the feature; `properties.count` or `quantity` the count).
- `page` / `screen` -> `page_viewed`.
- `group` -> `account_profile_updated` from the traits the scoring reads (name, industry, plan or
  tier, region, lifecycle stage; a trait outside the schema is left out, not refused) and who
  looks after it (`owner`, `owner_email` or `account_owner`; `parent_id` or `parentId`), and it
  ties its user to the group.
- `identify` -> ties its user to an account (`context.groupId`, `traits.company.id`, or the
  configured property); no signal.
- The account of a call is `context.groupId`, else the configured property, else the account
  the user was last tied to (`unattributed` until one is known).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Final

import orjson

from shared.sources.base import (
    LINK_ONLY,
    NOT_SCORED,
    Link,
    Piece,
    Translation,
    envelope,
    epoch,
    key,
    members,
    rejected,
    skipped,
    text,
)

USER: Final = "segment:user"
MAX_BATCH: Final = 2_500  # Segment's own batch limit is 500 KB; ingest's record limit applies too
_TIER_VALUES: Final = {"free", "starter", "growth", "enterprise"}
_REGION_VALUES: Final = {"na", "latam", "emea", "apac"}
_STAGES: Final = {"onboarding", "adopting", "mature", "renewing", "churned"}


def _norm(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    return value.strip().lower().replace(" ", "_").replace("-", "_") or None


class SegmentFormat:
    name = "segment"

    def __init__(
        self, *, account_property: str | None = None, session_events: tuple[str, ...] = ()
    ) -> None:
        self.account_property = account_property
        self.sessions = {e.strip().lower() for e in session_events}

    def translate(self, record: dict[str, Any], raw: bytes) -> Translation:
        batch = record.get("batch")
        if "type" in record or batch is None:
            return self._message(record, raw)
        if not isinstance(batch, list):
            return Translation([rejected(raw, "schema_violation", "batch must be a list", "batch")])
        if len(batch) > MAX_BATCH:
            detail = f"batch of {len(batch)} messages > limit {MAX_BATCH}"
            return Translation([rejected(raw, "too_large", detail, "batch")])
        shared = members(record.get("context"))
        out = Translation([])
        for message in batch:
            if isinstance(message, dict) and shared:
                own = message.get("context")
                message = {
                    **message,
                    "context": {**shared, **members(own)},
                }
            value = orjson.dumps(message)
            if not isinstance(message, dict):
                out.pieces.append(rejected(value, "not_an_object", "batch message", "$"))
                continue
            one = self._message(message, value)
            out.pieces += one.pieces
            out.links += one.links
        return out

    def _message(self, message: dict[str, Any], value: bytes) -> Translation:
        kind = message.get("type")
        if kind not in ("track", "page", "screen", "identify", "group", "alias"):
            detail = f"type {repr(kind)[:64]} is not a Segment call"
            return Translation([rejected(value, "unknown_event_type", detail, "type")])
        if kind == "alias":
            return Translation([skipped(value)])
        user_id = key(message.get("userId"))
        user = user_id or key(message.get("anonymousId"))
        user_path = "anonymousId" if user and not user_id else "userId"
        at = (
            message.get("timestamp")
            or message.get("originalTimestamp")
            or message.get("receivedAt")
        )
        context = members(message.get("context"))
        properties = members(message.get("properties"))
        traits = members(message.get("traits"))

        account = key(message.get("groupId")) if kind == "group" else None
        account = account or key(context.get("groupId"))
        if account is None and self.account_property:
            account = key(properties.get(self.account_property)) or key(
                traits.get(self.account_property)
            )
        if account is None and kind == "identify" and isinstance(traits.get("company"), dict):
            account = key(traits["company"].get("id"))
        links = []
        if user is not None and account is not None and (seconds := epoch(at)) is not None:
            links.append(Link((USER, user), account, seconds))
        paths = {"event_id": "messageId", "occurred_at": "timestamp", "user_id": user_path}
        # the tracking libraries set messageId; a raw HTTP API call may not: the message's
        # own digest then names it, so a re-sent copy is still one signal
        message_id = message.get("messageId") or "segment-" + hashlib.sha256(value).hexdigest()[:32]

        if kind == "identify":
            return Translation([skipped(value, LINK_ONLY if links else NOT_SCORED)], links)
        if kind == "group":
            if account is None:
                detail = "a group call needs a groupId"
                return Translation([rejected(value, "missing_account_id", detail, "groupId")])
            profile = self._profile(traits)
            if not profile:
                return Translation([skipped(value, LINK_ONLY if links else NOT_SCORED)], links)
            event = envelope("account_profile_updated", message_id, account, at)
            return Translation([Piece(value, {**event, **profile}, paths=paths)], links)

        fields: dict[str, Any]

        if kind == "track":
            name = message.get("event")
            if not isinstance(name, str) or not name.strip():
                detail = "a track call needs an event name"
                return Translation([rejected(value, "schema_violation", detail, "event")])
            if name.strip().lower() in self.sessions:
                event = envelope("session_started", message_id, account, at)
                fields = {"user_id": user}
            else:
                event = envelope("feature_used", message_id, account, at)
                fields = {"user_id": user, "feature": name[:64], "count": _count(properties)}
                paths["feature"] = "event"
        else:  # page, screen
            event = envelope("page_viewed", message_id, account, at)
            title = message.get("name") or properties.get("name") or properties.get("path")
            fields = {"user_id": user, "name": text(title, 200)}
        piece = Piece(value, {**event, **fields}, paths=paths)
        if account is None:
            if user is None:
                detail = "the call names no account, user or anonymous id"
                return Translation([rejected(value, "unattributed", detail, "userId")])
            piece.needs = (USER, user)
            piece.paths["account_id"] = user_path
        return Translation([piece], links)

    @staticmethod
    def _profile(traits: dict[str, Any]) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if isinstance(traits.get("name"), str):
            fields["name"] = text(traits["name"], 200)
        industry = _norm(traits.get("industry"))
        if industry and len(industry) <= 64 and re.fullmatch(r"[a-z0-9_&]+", industry):
            fields["industry"] = industry
        tier = _norm(traits.get("tier")) or _norm(traits.get("plan"))
        if tier in _TIER_VALUES:
            fields["tier"] = tier
        region = _norm(traits.get("region"))
        if region in _REGION_VALUES:
            fields["region"] = region
        stage = _norm(traits.get("lifecycle_stage") or traits.get("lifecycleStage"))
        if stage in _STAGES:
            fields["lifecycle_stage"] = stage
        owner = traits.get("owner") or traits.get("owner_email") or traits.get("account_owner")
        if isinstance(owner, str) and owner.strip():
            fields["owner"] = text(owner.strip(), 200)
        parent = key(traits.get("parent_id") or traits.get("parentId"))
        if parent is not None:
            fields["parent_account_id"] = parent
        return fields


def _count(properties: dict[str, Any]) -> int:
    for name in ("count", "quantity"):
        value = properties.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 100_000:
            return value
    return 1

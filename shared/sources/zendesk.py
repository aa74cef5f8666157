"""Zendesk ticket events, as its event webhooks send them (`"type":
"zen:event-type:ticket.<event>"`, the ticket in `detail`, the change in `event`), and
satisfaction ratings as the Satisfaction Ratings API gives them (`{"satisfaction_rating":
{...}}`, which a trigger's webhook can send on "Satisfaction changed").

- ticket.created -> ticket_opened (subject and description are its text)
- ticket.status_changed -> ticket_resolved when it becomes solved or closed (resolution time
  from the ticket's creation), otherwise ticket_updated
- ticket.priority_changed -> ticket_updated, escalated when the priority rose
- ticket.comment_added -> ticket_updated with the comment as text, for public comments by the
  customer; an agent's comment is not a signal about the customer
- satisfaction rating good / bad (or a 1-5 score) -> csat_submitted 5 / 1 (or the score)

The account is the ticket's organization id, or with `account_tag_prefix` the ticket tag that
starts with it (`account:acme` -> `acme`). Every ticket event ties the ticket to its account, so
a rating (which names only its ticket) finds it.
"""

from __future__ import annotations

from typing import Any, Final

from shared.sources.base import (
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

TICKET: Final = "zendesk:ticket"
_PREFIX: Final = "zen:event-type:ticket."
_RANK: Final = {"low": 0, "normal": 1, "high": 2, "urgent": 3}
_DONE: Final = {"solved", "closed"}


def _lower(value: Any) -> str | None:
    return value.strip().lower() if isinstance(value, str) else None


class ZendeskFormat:
    name = "zendesk"

    def __init__(self, *, account_tag_prefix: str | None = None) -> None:
        self.tag_prefix = account_tag_prefix

    def translate(self, record: dict[str, Any], raw: bytes) -> Translation:
        if isinstance(record.get("satisfaction_rating"), dict):
            return self._rating(record["satisfaction_rating"], raw)
        kind = record.get("type")
        detail = record.get("detail")
        if not isinstance(kind, str) or not kind.startswith("zen:event-type:"):
            why = f"type {repr(kind)[:64]} is not a Zendesk event type"
            return Translation([rejected(raw, "unknown_event_type", why, "type")])
        if not kind.startswith(_PREFIX) or not isinstance(detail, dict):
            return Translation([skipped(raw, NOT_SCORED)])
        ticket = key(detail.get("id"))
        account, account_path = self._account(detail)
        seconds = epoch(record.get("time"))
        links = (
            [Link((TICKET, ticket), account, seconds)]
            if ticket and account and seconds is not None
            else []
        )
        fields = self._fields(kind[len(_PREFIX) :], record, detail)
        if fields is None:
            return Translation([skipped(raw, NOT_SCORED)], links)
        event = {
            **envelope(fields.pop("type"), record.get("id"), account, record.get("time")),
            "ticket_id": ticket,
            **fields,
        }
        paths = {
            "event_id": "id",
            "occurred_at": "time",
            "ticket_id": "detail.id",
            "account_id": account_path,
            "priority": "detail.priority",
            "text": "event",
        }
        piece = Piece(raw, event, paths=paths)
        if account is None and ticket is not None:
            piece.needs = (TICKET, ticket)
        return Translation([piece], links)

    def _account(self, detail: dict[str, Any]) -> tuple[str | None, str]:
        if self.tag_prefix is None:
            organization = key(detail.get("organization_id"))
            return (None if organization in (None, "0") else organization), "detail.organization_id"
        tags = detail.get("tags")
        for tag in tags if isinstance(tags, list) else ():
            if isinstance(tag, str) and tag.startswith(self.tag_prefix):
                return key(tag[len(self.tag_prefix) :]), "detail.tags"
        return None, "detail.tags"

    @staticmethod
    def _fields(name: str, record: dict[str, Any], detail: dict[str, Any]) -> dict[str, Any] | None:
        change = members(record.get("event"))
        if name == "created":
            out: dict[str, Any] = {
                "type": "ticket_opened",
                "subject": text(detail.get("subject"), 500),
                "text": text(detail.get("description"), 20_000),
            }
            if _lower(detail.get("priority")):  # null: Zendesk's "no priority"
                out["priority"] = _lower(detail.get("priority"))
            return out
        if name == "status_changed":
            current = change.get("current")
            status = _lower(current.get("status") if isinstance(current, dict) else current)
            if status in _DONE:
                out = {"type": "ticket_resolved"}
                opened, now = epoch(detail.get("created_at")), epoch(record.get("time"))
                if opened is not None and now is not None and now >= opened:
                    out["resolution_hours"] = round((now - opened) / 3600, 3)
                return out
            return {"type": "ticket_updated"}
        if name == "priority_changed":
            current, previous = _lower(change.get("current")), _lower(change.get("previous"))
            out = {"type": "ticket_updated", "priority": current}
            out["escalated"] = _RANK.get(current or "", -1) > _RANK.get(previous or "", 99)
            return out
        if name == "comment_added":
            comment = members(change.get("comment"))
            author = members(comment.get("author"))
            if author.get("is_staff") is not False or comment.get("is_public") is False:
                return None
            return {"type": "ticket_updated", "text": text(comment.get("body"), 20_000)}
        return None

    @staticmethod
    def _rating(rating: dict[str, Any], raw: bytes) -> Translation:
        score = rating.get("score")
        stars = {"good": 5, "bad": 1}.get(_lower(score) or "") if isinstance(score, str) else score
        if stars is None:  # "offered", "unoffered": asked, not answered
            return Translation([skipped(raw, NOT_SCORED)])
        ticket = key(rating.get("ticket_id"))
        at = rating.get("updated_at") or rating.get("created_at")
        rating_id = key(rating.get("id"))
        event_id = f"zendesk-satisfaction-{rating_id}-{at}" if rating_id else None
        event = {
            **envelope("csat_submitted", event_id, None, at),
            "ticket_id": ticket,
            "rating": stars,
            "comment": text(rating.get("comment"), 20_000),
        }
        paths = {
            "event_id": "satisfaction_rating.id",
            "occurred_at": "satisfaction_rating.updated_at",
            "rating": "satisfaction_rating.score",
            "ticket_id": "satisfaction_rating.ticket_id",
            "account_id": "satisfaction_rating.ticket_id",
        }
        if ticket is None:
            why = "a satisfaction rating needs its ticket_id"
            return Translation(
                [rejected(raw, "unattributed", why, "satisfaction_rating.ticket_id")]
            )
        return Translation([Piece(raw, event, needs=(TICKET, ticket), paths=paths)])

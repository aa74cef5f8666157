"""The simulated world's v1 events as the vendors send them: Segment calls for product use,
Stripe events for billing, Zendesk events and ratings for support (`healthscore simulate
--format segment,stripe,zendesk`). What a vendor does not carry (daily roll-ups, NPS, the CRM
profile when Segment is not chosen) stays v1.

Segment calls name only their user, as real track calls do: the first time a user appears a
`group` call ties it to its account, and calls are keyed by user so they stay in order.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.events import EVENT_TYPE_SOURCE, minor_units

VENDORS = ("segment", "stripe", "zendesk")
_SESSION = "Signed In"


def _epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp())


class Vendors:
    """Turns v1 events into (format, key, record) in the chosen vendors' formats."""

    def __init__(self, formats: set[str]) -> None:
        unknown = formats - set(VENDORS)
        if unknown:
            raise ValueError(f"simulated formats are {', '.join(VENDORS)}; not {sorted(unknown)}")
        self.formats = formats
        self.grouped: set[str] = set()

    def convert(self, event: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
        kind = event["type"]
        if "segment" in self.formats and kind in (
            "session_started",
            "feature_used",
            "account_profile_updated",
        ):
            return self._segment(event)
        if (
            "stripe" in self.formats
            and EVENT_TYPE_SOURCE[kind] == "billing"
            and kind != "account_profile_updated"
        ):
            return [("stripe", event["account_id"], stripe_event(event))]
        if "zendesk" in self.formats and kind in (
            "ticket_opened",
            "ticket_updated",
            "ticket_resolved",
            "csat_submitted",
        ):
            return [("zendesk", event["account_id"], e) for e in zendesk_events(event)]
        return [("v1", event["account_id"], event)]

    # --- Segment ------------------------------------------------------------------------

    def _segment(self, event: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
        account = event["account_id"]
        common = {"messageId": event["event_id"], "timestamp": event["occurred_at"]}
        if event["type"] == "account_profile_updated":
            user = f"{account}-admin"
            self.grouped.add(user)
            traits = {
                "name": event["name"],
                "industry": event["industry"],
                "plan": event["tier"].title(),
                "region": event["region"],
                "lifecycle_stage": event["lifecycle_stage"],
                "owner_email": event["owner"],
            }
            if "parent_account_id" in event:
                traits["parentId"] = event["parent_account_id"]
            call = {**common, "type": "group", "userId": user, "groupId": account, "traits": traits}
            return [("segment", user, call)]
        user = f"{account}-{event['user_id']}"
        out: list[tuple[str, str, dict[str, Any]]] = []
        if user not in self.grouped:
            self.grouped.add(user)
            tie = {
                "type": "group",
                "messageId": f"{event['event_id']}-group",
                "timestamp": event["occurred_at"],
                "userId": user,
                "groupId": account,
                "traits": {},
            }
            out.append(("segment", user, tie))
        if event["type"] == "session_started":
            props: dict[str, Any] = {"duration": event.get("duration_seconds")}
            name = _SESSION
        else:
            props = {"count": event["count"]}
            name = f"{event['feature'].title()} Used"
        call = {**common, "type": "track", "userId": user, "event": name, "properties": props}
        out.append(("segment", user, call))
        return out


# --- Stripe -----------------------------------------------------------------------------


def stripe_event(event: dict[str, Any]) -> dict[str, Any]:
    kind, account, created = event["type"], event["account_id"], _epoch(event["occurred_at"])
    currency = event.get("currency", "USD")

    def cents(field: str) -> int:
        return minor_units(Decimal(str(event[field])), currency)

    if kind in ("subscription_created", "subscription_changed"):
        seats = max(event["seats_purchased"], 1)
        renews = (
            int(datetime.fromisoformat(event["renewal_date"] + "T00:00:00+00:00").timestamp())
            if event.get("renewal_date")
            else None
        )
        obj: dict[str, Any] = {
            "id": f"sub_{account}",
            "object": "subscription",
            "customer": account,
            "currency": currency.lower(),
            "status": "active",
            "current_period_end": renews,
            "metadata": {"tier": event["tier"]},
            "items": {
                "object": "list",
                "data": [
                    {
                        "object": "subscription_item",
                        "quantity": seats,
                        "price": {
                            "object": "price",
                            "id": f"price_{event['plan']}",
                            "nickname": event["plan"],
                            "currency": currency.lower(),
                            "unit_amount_decimal": str(Decimal(cents("mrr")) / seats),
                            "recurring": {"interval": "month", "interval_count": 1},
                        },
                    }
                ],
            },
        }
        stripe_type = "customer.subscription." + (
            "created" if kind.endswith("created") else "updated"
        )
    elif kind == "subscription_cancelled":
        obj = {
            "id": f"sub_{account}",
            "object": "subscription",
            "customer": account,
            "status": "canceled",
            "ended_at": created,
            "cancellation_details": {
                "reason": "cancellation_requested",
                "feedback": event.get("reason"),
            },
        }
        stripe_type = "customer.subscription.deleted"
    elif kind in ("invoice_paid", "invoice_overdue", "payment_failed"):
        days_late = event.get("days_late", 0)
        due = created - 86_400 * (event.get("days_overdue", days_late))
        obj = {
            "id": event.get("invoice_id") or f"in_{event['event_id']}",
            "object": "invoice",
            "customer": account,
            "currency": currency.lower(),
            "due_date": due,
            "amount_due": cents("amount"),
            "amount_paid": cents("amount") if kind == "invoice_paid" else 0,
            "amount_remaining": 0 if kind == "invoice_paid" else cents("amount"),
            "status_transitions": {"paid_at": created if kind == "invoice_paid" else None},
        }
        stripe_type = {
            "invoice_paid": "invoice.paid",
            "invoice_overdue": "invoice.overdue",
            "payment_failed": "invoice.payment_failed",
        }[kind]
    elif kind == "refund_issued":
        obj = {
            "id": f"ch_{event['event_id']}",
            "object": "charge",
            "customer": account,
            "currency": currency.lower(),
            "amount_refunded": cents("amount"),
            "refunds": {
                "object": "list",
                "data": [
                    {
                        "object": "refund",
                        "amount": cents("amount"),
                        "reason": event.get("reason") or None,
                    }
                ],
            },
        }
        stripe_type = "charge.refunded"
    else:  # payment_disputed
        obj = {
            "id": f"du_{event['event_id']}",
            "object": "dispute",
            "amount": cents("amount"),
            "currency": currency.lower(),
            "metadata": {},
            "charge": None,
            "reason": event.get("reason", "general"),
            "customer": account,
        }
        stripe_type = "charge.dispute.created"
    return {
        "id": f"evt_{event['event_id']}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": created,
        "data": {"object": obj},
        "livemode": False,
        "type": stripe_type,
    }


# --- Zendesk ----------------------------------------------------------------------------


def zendesk_events(event: dict[str, Any]) -> list[dict[str, Any]]:
    kind, at = event["type"], event["occurred_at"]
    if kind == "csat_submitted":
        if not event.get("ticket_id"):
            return [event]  # a rating of no ticket: Zendesk has none; it stays v1
        return [
            {
                "satisfaction_rating": {
                    "id": event["event_id"],
                    "ticket_id": event["ticket_id"],
                    "score": "good" if event["rating"] >= 4 else "bad",
                    "comment": event.get("comment", ""),
                    "created_at": at,
                    "updated_at": at,
                }
            }
        ]
    detail = {
        "id": event["ticket_id"],
        "organization_id": event["account_id"],
        "created_at": at,
        "priority": (event.get("priority") or "normal").upper(),
        "status": "OPEN",
        "subject": event.get("subject", ""),
        "description": event.get("text", ""),
    }

    def webhook(name: str, suffix: str, change: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": f"zen:event-type:ticket.{name}",
            "id": f"{event['event_id']}{suffix}",
            "time": at,
            "subject": f"zen:ticket:{event['ticket_id']}",
            "zendesk_event_version": "2022-11-06",
            "detail": detail,
            "event": change,
        }

    if kind == "ticket_opened":
        return [webhook("created", "", {})]
    if kind == "ticket_resolved":
        opened = datetime.fromisoformat(at) - timedelta(hours=event.get("resolution_hours") or 0)
        detail["created_at"] = opened.isoformat()
        detail["status"] = "SOLVED"
        return [webhook("status_changed", "", {"current": "SOLVED", "previous": "OPEN"})]
    out = []
    if event.get("priority"):
        previous = "NORMAL" if event.get("escalated") else event["priority"].upper()
        out.append(
            webhook(
                "priority_changed",
                "",
                {"current": event["priority"].upper(), "previous": previous},
            )
        )
    if event.get("text"):
        comment = {"body": event["text"], "is_public": True, "author": {"is_staff": False}}
        out.append(webhook("comment_added", "-comment", {"comment": comment}))
    return out

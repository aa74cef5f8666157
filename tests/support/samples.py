"""One valid raw v1 event of every type, for tests."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson


def valid_events(now: datetime, account_id: str = "acc-1") -> dict[str, dict[str, Any]]:
    at = (now - timedelta(hours=1)).isoformat()

    def base(kind: str, n: int) -> dict[str, Any]:
        return {
            "event_id": f"evt-{kind}-{n}",
            "account_id": account_id,
            "occurred_at": at,
            "type": kind,
            "schema_version": 1,
        }

    events = {
        "session_started": {"user_id": "u1", "duration_seconds": 600},
        "feature_used": {"user_id": "u1", "feature": "Reports", "count": 3},
        "active_users_reported": {"active_users": 42},
        "seats_used_reported": {"seats_in_use": 40},
        "page_viewed": {"user_id": "u1", "name": "Billing settings"},
        "ticket_opened": {
            "ticket_id": "t1",
            "priority": "HIGH",
            "subject": "Broken",
            "text": "The dashboard is broken and we are very frustrated.",
        },
        "ticket_updated": {
            "ticket_id": "t1",
            "priority": "urgent",
            "escalated": True,
            "text": "Still broken.",
        },
        "ticket_resolved": {"ticket_id": "t1", "resolution_hours": 5.5},
        "csat_submitted": {"ticket_id": "t1", "rating": 2, "comment": "Slow, unhelpful."},
        "nps_submitted": {"user_id": "u1", "score": 9, "comment": "Love it, great product!"},
        "subscription_created": {
            "plan": "Growth-Annual",
            "tier": "growth",
            "mrr": "1250.50",
            "currency": "usd",
            "seats_purchased": 50,
            "renewal_date": "2027-06-30",
        },
        "subscription_changed": {
            "plan": "growth-annual",
            "tier": "enterprise",
            "mrr": 2000,
            "seats_purchased": 80,
        },
        "subscription_cancelled": {"reason": "budget"},
        "invoice_paid": {"invoice_id": "inv-1", "amount": "99.99", "days_late": 3},
        "invoice_overdue": {"invoice_id": "inv-2", "amount": "120", "days_overdue": 14},
        "payment_failed": {"invoice_id": "inv-2", "amount": "120", "reason": "card_declined"},
        "refund_issued": {"amount": "10.5", "reason": "outage credit"},
        "payment_disputed": {"amount": "49", "currency": "eur", "reason": "fraudulent"},
        "social_mentioned": {
            "channel": "Reddit",
            "text": "Their support has been awful lately, thinking of switching.",
            "url": "https://example.com/r/saas/1",
            "reach": 1200,
        },
        "marketing_engaged": {"channel": "Webinar", "action": "attended", "campaign": "Q4 launch"},
        "account_profile_updated": {
            "name": "Acme",
            "industry": "Healthcare",
            "region": "EMEA",
            "tier": "Enterprise",
            "lifecycle_stage": "mature",
            "owner": "dana@example.com",
        },
    }
    return {kind: {**base(kind, i), **fields} for i, (kind, fields) in enumerate(events.items())}


def crafted_rejections(now: datetime) -> dict[str, tuple[str, bytes]]:
    """One raw record per DLQ reason: (the format of the topic it goes to, its bytes). The
    mapping is docs/examples/mappings.yaml's `email_platform`."""
    good = valid_events(now)["session_started"]
    at = (now - timedelta(hours=1)).isoformat()
    return {
        "too_large": ("v1", orjson.dumps({**good, "padding": "x" * 300_000})),
        "invalid_utf8": ("v1", b'{"type": "\xff\xfe"}'),
        "invalid_json": ("v1", b'{"event_id": "e1", '),
        "not_an_object": ("v1", b"[1, 2, 3]"),
        "unknown_event_type": ("v1", orjson.dumps({**good, "type": "ticket_teleported"})),
        "unsupported_schema_version": ("v1", orjson.dumps({**good, "schema_version": 7})),
        "missing_account_id": ("v1", orjson.dumps({**good, "account_id": "  "})),
        "schema_violation": ("v1", orjson.dumps({**good, "duration_seconds": "long"})),
        "occurred_at_in_future": (
            "v1",
            orjson.dumps({**good, "occurred_at": (now + timedelta(days=2)).isoformat()}),
        ),
        "occurred_at_too_old": (
            "v1",
            orjson.dumps({**good, "occurred_at": (now - timedelta(days=900)).isoformat()}),
        ),
        "unattributed": (
            "segment",
            orjson.dumps(
                {
                    "type": "track",
                    "event": "Report Exported",
                    "userId": "nobody-knows-me",
                    "messageId": "m-unattributed",
                    "timestamp": at,
                }
            ),
        ),
        "mapping_failed": (
            "mapping:email_platform",
            orjson.dumps({"id": "m-1", "event": "email_opened", "ts": 1, "contact": {}}),
        ),
    }

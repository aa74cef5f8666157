"""Which change events a subscription matches, and how a request is signed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import standardwebhooks

from shared.webhooks import Change, Subscription, new_secret, request

CREATED = datetime(2026, 12, 1, tzinfo=UTC)


def change(**data: Any) -> Change:
    event = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "/account-health/scorer",
        "type": "io.account-health.band.changed",
        "subject": "acc-1",
        "time": "2026-12-02T10:00:00Z",
        "scoredat": "2026-12-02T10:00:01Z",
        "replay": data.pop("replay", False),
        "datacontenttype": "application/json",
        "data": {
            "account_id": "acc-1",
            "objective": "churn_risk",
            "old_band": "healthy",
            "new_band": "at_risk",
            "segment": "enterprise",
            "owner": "Dana@Example.com",
            "text": "*acc-1*: churn_risk healthy → at_risk (score 71.0 → 35.0).",
            **data,
        },
    }
    return Change.parse(orjson.dumps(event))


def subscription(**filters: Any) -> Subscription:
    fields: dict[str, Any] = {
        "types": (),
        "objectives": (),
        "from_bands": (),
        "to_bands": (),
        "segments": (),
        "owners": (),
        "replays": True,
        "created_at": CREATED,
        **filters,
    }
    return Subscription("w-1", "https://example.com/hook", new_secret(), "structured", **fields)


@pytest.mark.parametrize(
    ("filters", "matches"),
    [
        ({}, True),  # no filter: every event
        ({"objectives": ("churn_risk",), "to_bands": ("at_risk", "neutral")}, True),
        ({"objectives": ("expansion",)}, False),
        ({"from_bands": ("neutral",)}, False),
        ({"to_bands": ("healthy",)}, False),
        ({"segments": ("enterprise",)}, True),
        ({"segments": ("healthcare",)}, False),
        ({"owners": ("dana@example.com",)}, True),  # any case
        ({"owners": ("lee@example.com",)}, False),
        ({"types": ("io.account-health.score.dropped",)}, False),
        ({"created_at": CREATED + timedelta(days=2)}, False),  # scored before it existed
    ],
)
def test_every_listed_field_must_match_and_an_empty_list_matches_any(
    filters: dict[str, Any], matches: bool
) -> None:
    assert subscription(**filters).matches(change()) is matches


def test_replays_are_left_out_only_when_asked() -> None:
    assert subscription().matches(change(replay=True))
    assert not subscription(replays=False).matches(change(replay=True))
    assert subscription(replays=False).matches(change())


def test_a_record_that_is_no_change_event_is_refused_whatever_it_is() -> None:
    event = orjson.loads(change().payload)
    for payload in (
        b"not json",
        b"{}",
        b"[1, 2]",
        orjson.dumps({"id": "x", "type": "t"}),
        orjson.dumps({**event, "data": [1]}),
        orjson.dumps({**event, "scoredat": "2026-12-02T10:00:01"}),  # no time zone
        orjson.dumps({**event, "scoredat": 17}),
        orjson.dumps({**event, "id": "x" * 65}),  # longer than any event id the scorer writes
        orjson.dumps({**event, "subject": "acc\x00-1"}),
    ):
        with pytest.raises(ValueError, match="not a change event"):
            Change.parse(payload)


@pytest.mark.parametrize("mode", ["structured", "binary"])
def test_the_reference_implementation_verifies_each_mode(mode: str) -> None:
    secret, event = new_secret(), change()
    message = request(mode, event.payload, secret, event.event_id, 1_764_669_600)
    with pytest.raises(standardwebhooks.WebhookVerificationError):  # too old by now
        standardwebhooks.Webhook(secret).verify(message.body, message.headers)
    now = datetime.now(UTC).timestamp()
    message = request(mode, event.payload, secret, event.event_id, now)
    verified = standardwebhooks.Webhook(secret).verify(message.body, message.headers)
    published = orjson.loads(event.payload)
    assert verified == (published if mode == "structured" else published["data"])
    assert message.headers["webhook-id"] == "e-1"
    tampered = message.body.replace(b"at_risk", b"healthy")
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(tampered, message.headers)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(new_secret()).verify(message.body, message.headers)

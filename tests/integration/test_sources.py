"""Vendor formats end to end: Segment, Stripe and Zendesk events for one account, through a
real ingest process (restarted in between) and the scorer, into that account's score."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.config import Settings
from shared.events import decode_signal
from shared.validate import Rejection
from tests.support.infra import ingest_process, source_topic, with_sources
from tests.support.kafka_io import produce, read_topic
from tests.support.pipeline import wait_for
from tests.support.signals import health_documents, running_scorer
from tests.support.vendor import sample

pytestmark = pytest.mark.asyncio(loop_scope="session")

ACCOUNT = "acme-e2e"


def _events(now: datetime) -> dict[str, list[dict[str, object]]]:
    def at(hours: float) -> str:
        return (now - timedelta(hours=hours)).isoformat()

    tracks = [
        {
            **sample("segment", "track"),
            "userId": "u-7",
            "messageId": f"t-{i}",
            "timestamp": at(2 - i / 10),
        }
        for i in range(5)
    ]
    page = {**sample("segment", "page"), "userId": "u-7", "messageId": "p-1", "timestamp": at(1.5)}
    paid = sample("stripe", "invoice.paid")
    paid["created"] = int((now - timedelta(hours=1)).timestamp())
    paid["data"]["object"]["customer"] = ACCOUNT
    failed = sample("stripe", "invoice.payment_failed")
    failed["created"] = int((now - timedelta(minutes=50)).timestamp())
    failed["data"]["object"]["customer"] = ACCOUNT
    ticket = sample("zendesk", "ticket.created")
    ticket["detail"].update(organization_id=ACCOUNT, id="9001", created_at=at(3))
    ticket["time"] = at(3)
    comment = sample("zendesk", "ticket.comment_added")
    comment["detail"].update(organization_id=ACCOUNT, id="9001")
    comment["time"] = at(2.5)
    rating = sample("zendesk", "satisfaction_rating")
    rating["satisfaction_rating"].update(ticket_id=9001, score="bad", updated_at=at(0.5))
    return {
        "segment": [*tracks, page],
        "stripe": [paid, failed],
        "zendesk": [ticket, comment, rating],
    }


async def test_segment_stripe_and_zendesk_events_reach_one_accounts_score_across_a_restart(
    settings: Settings, engine: AsyncEngine
) -> None:
    settings = with_sources(settings, ["segment", "stripe", "zendesk"])
    now = datetime.now(UTC)
    group = {
        **sample("segment", "group"),
        "userId": "u-7",
        "groupId": ACCOUNT,
        "messageId": "g-1",
        "timestamp": (now - timedelta(hours=4)).isoformat(),
        "traits": {"name": "Acme", "industry": "Software", "plan": "Growth"},
    }
    segment = source_topic(settings, "segment")
    await produce(settings, segment, [(b"u-7", orjson.dumps(group))])
    with ingest_process(settings):
        await read_topic(settings, settings.kafka.topics.signals, expect=1, timeout=60)
    # the first ingest process is gone: the user's account must come from the shared store

    events = _events(now)
    for fmt, records in events.items():
        await produce(
            settings, source_topic(settings, fmt), [(None, orjson.dumps(r)) for r in records]
        )
    expected = 1 + sum(len(r) for r in events.values())
    with ingest_process(settings):
        records = await read_topic(
            settings, settings.kafka.topics.signals, expect=expected, timeout=90, settle=0.5
        )
        dead = await read_topic(settings, settings.kafka.topics.dlq, settle=0.2)
    signals = [decode_signal(r.value) for r in records]
    assert dead == [], [r.headers for r in dead]
    assert len(signals) == expected, f"consumed {len(signals)} of {expected} signals"
    assert {s.account_id for s in signals} == {ACCOUNT}
    assert sorted(s.kind for s in signals) == sorted(
        [
            "account_profile_updated",
            *["feature_used"] * 5,
            "page_viewed",
            "invoice_paid",
            "payment_failed",
            "ticket_opened",
            "ticket_updated",
            "csat_submitted",
        ]
    )

    async with engine.connect() as conn:
        links = dict(
            (
                await conn.execute(
                    text("SELECT namespace || ' ' || key, account_id FROM source_links")
                )
            ).all()
        )
    assert links["segment:user u-7"] == ACCOUNT and links["zendesk:ticket 9001"] == ACCOUNT

    async def scored() -> dict[str, Any] | None:
        return (await health_documents(settings.database, [ACCOUNT])).get(ACCOUNT)

    async def every_source_scored() -> bool:
        account = await scored()
        freshness = account["freshness"] if account else {}
        sources = {s for s, f in freshness.items() if f["last_data_at"] is not None}
        return {"usage", "support", "billing"} <= sources

    async with running_scorer(settings, engine):
        try:
            await wait_for(every_source_scored, timeout=60)
        except TimeoutError:
            pytest.fail(f"after 60 s the account holds {await scored()}")
    account = await scored()
    assert account is not None
    assert (account["industry"], account["tier"]) == ("software", "growth")
    freshness = account["freshness"]
    assert isinstance(freshness, dict)
    assert {"usage", "support", "billing"} <= set(freshness), freshness


async def test_whatever_validates_the_scorer_stores(engine: AsyncEngine) -> None:
    """Hostile text in every string field of every kind (NUL, escapes, emoji, BOM, long
    strings): every record that validates becomes a signal PostgreSQL takes, through the
    scorer's own writes (state, attributes such as the account name, scores, history)."""
    import random

    from shared.validate import validate
    from tests.support.samples import valid_events
    from tests.support.signals import score_and_store

    now = datetime.now(UTC)
    rng = random.Random(18)
    nasty = ["\x00", "a\x00b", "\ufeff", "\U0001f600", "\\u0000", "'; DROP TABLE x;--", "é" * 300]
    signals = []
    rejected = 0
    for n in range(400):
        _, event = rng.choice(sorted(valid_events(now).items()))
        event = {**event, "event_id": f"e-{n}", "account_id": f"acc-{n % 40}"}
        for name, value in list(event.items()):
            if (
                isinstance(value, str)
                and name not in ("type", "occurred_at")
                and rng.random() < 0.5
            ):
                event[name] = value[:3] + rng.choice(nasty) + value[3:]
        outcome = validate(orjson.dumps(event), now=now)
        if isinstance(outcome, Rejection):
            rejected += 1
        else:
            signals.append(outcome)
    assert len(signals) > 100 and rejected > 20  # both sides of the rule are exercised
    stored = await score_and_store(engine, signals, [now])
    assert len(stored) == len({s.account_id for s in signals})

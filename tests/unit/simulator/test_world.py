from __future__ import annotations

from datetime import UTC, datetime

import orjson

from services.simulator.world import World
from shared.events import Signal
from shared.validate import validate

START = datetime(2026, 5, 1, tzinfo=UTC)


def test_same_seed_same_events() -> None:
    a = World(11, 20, start=START, days=60)
    b = World(11, 20, start=START, days=60)
    events_a = [e for acc in a.accounts for d in range(60) for e in a.day_events(acc, d)]
    events_b = [e for acc in b.accounts for d in range(60) for e in b.day_events(acc, d)]
    assert events_a == events_b and len(events_a) > 1000
    c = World(12, 20, start=START, days=60)
    assert [e for acc in c.accounts for e in c.day_events(acc, 5)] != [
        e for acc in a.accounts for e in a.day_events(acc, 5)
    ]


def test_every_simulated_event_is_valid_and_churners_cancel() -> None:
    world = World(3, 60, start=START, days=150)
    now = datetime(2026, 10, 1, tzinfo=UTC)
    kinds = set()
    for account in world.accounts:
        cancelled = []
        for day in range(150):
            for event in world.day_events(account, day):
                signal = validate(orjson.dumps(event), now=now)
                assert isinstance(signal, Signal), (event, signal)
                kinds.add(event["type"])
                if event["type"] == "subscription_cancelled":
                    cancelled.append(day)
        churned = world.churned_at(account)
        assert (churned is not None) == bool(cancelled)
        if cancelled:
            assert world.day_events(account, cancelled[0] + 1) == []
    assert len(kinds) >= 14
    trajectories = {a.trajectory for a in world.accounts}
    assert trajectories == {"healthy", "declining", "shock", "recovering", "silent"}


async def test_the_world_in_vendor_formats_reads_back_as_the_same_signals() -> None:
    """`simulate --format segment,stripe,zendesk`: every record ingest takes, attributed to the
    same account, one signal per v1 event for every kind a vendor carries one to one."""
    from collections import Counter

    from services.simulator.vendors import Vendors
    from shared.sources.decode import Skipped
    from shared.sources.links import MemoryLinks
    from tests.support.vendor import decode, decoder

    world = World(5, 40, start=START, days=60)
    now = datetime(2026, 7, 15, tzinfo=UTC)
    vendors = Vendors({"segment", "stripe", "zendesk"})
    links = MemoryLinks()
    decoders = {f: decoder(f, links=links) for f in ("v1", "segment", "stripe", "zendesk")}
    v1: Counter[tuple[str, str]] = Counter()
    read: Counter[tuple[str, str]] = Counter()
    for day in range(60):
        for account in world.accounts:
            for event in world.day_events(account, day):
                v1[(event["account_id"], event["type"])] += 1
                for fmt, _, record in vendors.convert(event):
                    for outcome in await decode(decoders[fmt], record, now=now):
                        result = outcome.result
                        assert isinstance(result, Signal) or result == Skipped("link_only"), (
                            fmt,
                            record,
                            result,
                        )
                        if isinstance(result, Signal):
                            read[(result.account_id, result.kind)] += 1
    one_to_one = {
        "session_started",
        "feature_used",
        "subscription_created",
        "subscription_cancelled",
        "invoice_paid",
        "invoice_overdue",
        "payment_failed",
        "ticket_opened",
        "ticket_resolved",
        "csat_submitted",
        "account_profile_updated",
        "active_users_reported",
    }
    assert {k: n for k, n in v1.items() if k[1] in one_to_one} == {
        k: n for k, n in read.items() if k[1] in one_to_one
    }
    assert sum(read.values()) >= sum(v1.values())


def test_the_back_fill_gives_each_group_of_accounts_its_whole_history_in_turn() -> None:
    """`make run`'s back-fill: a group's events all together and day by day, so each
    account caught up on is scored as of now; the same events as the history in time order."""
    from services.simulator.produce import history

    world = World(5, 12, start=START, days=30)
    filled = list(history(world, range(20), accounts=5))
    assert sorted(map(orjson.dumps, filled)) == sorted(map(orjson.dumps, history(world, range(20))))
    ids = [a.account_id for a in world.accounts]
    groups = [ids.index(e["account_id"]) // 5 for e in filled]
    assert groups == sorted(groups)  # the groups in turn, each whole
    for group in set(groups):
        days = [e["occurred_at"][:10] for e, g in zip(filled, groups, strict=True) if g == group]
        assert days == sorted(days)

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

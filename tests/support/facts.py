"""Facts and account states made the way ingest makes them, for the pure core's tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from shared.config import DEFAULT_MODEL_PATH
from shared.events import Signal
from shared.scoring.model import Model, load_model
from shared.scoring.state import AccountState, Fact
from shared.validate import validate
from tests.support.samples import valid_events

MODEL = load_model(DEFAULT_MODEL_PATH)
NOW = datetime(2026, 11, 1, tzinfo=UTC)
DAY = 86_400.0
TEMPLATES = valid_events(NOW)
KINDS = sorted(TEMPLATES)


def make_fact(
    kind: str, n: int, age_days: float, variant: int = 0, account_id: str = "acc-1"
) -> Fact:
    event = dict(TEMPLATES[kind])
    event.update(
        event_id=f"{kind}-{n}",
        account_id=account_id,
        occurred_at=(NOW - timedelta(days=age_days)).isoformat(),
    )
    if kind == "nps_submitted":
        event["score"] = variant % 11
    if kind == "csat_submitted":
        event["rating"] = 1 + variant % 5
    if kind == "seats_used_reported":
        event["seats_in_use"] = variant % 60
    signal = validate(
        orjson.dumps(event),
        now=NOW,
        sentiment=lambda text: round((len(text) % 7 - 3) / 3, 3),
    )
    assert isinstance(signal, Signal), signal
    return Fact.from_signal(signal)


def fold(
    facts: list[Fact], state: AccountState | None = None, model: Model = MODEL
) -> AccountState:
    state = state or AccountState()
    for fact in facts:
        state.apply(model, fact)
    return state


def active_account(days: int = 60) -> AccountState:
    facts = []
    n = 0
    for day in range(days):
        for _ in range(4):
            n += 1
            facts.append(make_fact("session_started", n, day + 0.1))
            facts.append(make_fact("feature_used", n, day + 0.2))
    facts.append(make_fact("subscription_created", 0, days))
    facts.append(make_fact("seats_used_reported", 0, 1, variant=45))
    facts.append(make_fact("nps_submitted", 0, 5, variant=9))
    return fold(facts)

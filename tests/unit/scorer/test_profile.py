"""Whose an account is and what it brings in: kept from profile and subscription events like
the other attributes (the newest by event time wins, in any order)."""

from __future__ import annotations

import itertools
from typing import Any

from services.scorer.rescore import AccountEntry, parents
from shared.scoring.state import AccountState, Fact
from shared.sources.segment import SegmentFormat
from tests.support.facts import DAY, MODEL, NOW


def fact(n: int, kind: str, age_days: float, **data: Any) -> Fact:
    return Fact(f"f-{n}", "acc-1", NOW.timestamp() - age_days * DAY, "billing", kind, data)


FACTS = [
    fact(1, "account_profile_updated", 30, name="Acme", owner="lee@example.com"),
    fact(2, "subscription_created", 20, tier="growth", mrr_cents=125_050, currency="USD"),
    fact(3, "account_profile_updated", 10, owner="dana@example.com", parent_account_id="acme"),
    fact(4, "subscription_changed", 5, tier="growth", mrr_cents=99_000, currency="EUR"),
]


def profile(facts: list[Fact]) -> tuple[Any, ...]:
    state = AccountState()
    for f in facts:
        state.apply(MODEL, f)
    names = ("name", "owner", "parent_account_id", "mrr_cents", "currency", "tier")
    return tuple(state.attribute(n) for n in names)


def test_the_newest_owner_parent_and_mrr_win_in_any_order() -> None:
    expected = ("Acme", "dana@example.com", "acme", 99_000, "EUR", "growth")
    for order in itertools.permutations(FACTS):
        assert profile(list(order)) == expected


def test_a_cancelled_subscription_brings_in_nothing_until_a_newer_one() -> None:
    cancelled = fact(5, "subscription_cancelled", 2, reason="budget")
    assert profile([*FACTS, cancelled])[3:5] == (0, "EUR")
    older = fact(6, "subscription_cancelled", 25, reason="budget")  # before the changes
    assert profile([older, *FACTS])[3] == 99_000
    again = fact(7, "subscription_created", 1, tier="growth", mrr_cents=50_000, currency="USD")
    assert profile([*FACTS, cancelled, again])[3:5] == (50_000, "USD")


def test_segment_group_traits_name_the_owner_and_the_parent() -> None:
    traits = {"name": "Acme", "owner_email": " dana@example.com ", "parentId": "acme-group"}
    assert SegmentFormat._profile(traits) == {
        "name": "Acme",
        "owner": "dana@example.com",
        "parent_account_id": "acme-group",
    }
    assert "owner" not in SegmentFormat._profile({"owner": 42, "parent_id": ""})


def test_a_child_moved_to_another_parent_makes_both_parents_due() -> None:
    entry = AccountEntry(AccountState(), 0)
    assert parents(entry) == ()
    for f in FACTS[:3]:
        entry.state.apply(MODEL, f)
    assert parents(entry) == ("acme",)  # not stored yet
    entry.profile = (*(None,) * 7, "acme", None, None, 0)  # as profile_row stores it
    moved = fact(8, "account_profile_updated", 1, parent_account_id="globex")
    entry.state.apply(MODEL, moved)
    assert parents(entry) == ("globex", "acme")

"""Outcomes: what happened to an account, which a score should have foreseen.

An outcome is named (`churn`, `return`, `renewal`, `expansion`, or any other name a CRM
uses) and timed. A favourable one (renewal, expansion, return) is what a higher score should
make likelier; any other is adverse. An account is out of the population that a score is
judged on from a churn until a return (`lapsed`).

The stream shows three of them as they happen (`shown_by`), read against the account's state
before the signal: a cancellation is a churn; a new subscription after a cancellation is a
return; a subscription change that raises the recurring revenue by at least a share of it is an
expansion. A renewal, and anything the stream cannot see, comes from a CRM or a person: the
API, the console, or an `outcome_recorded` event on any v1 topic.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from shared.scoring.state import AccountState, Fact

FAVOURABLE: Final = frozenset({"renewal", "expansion", "return"})
NAME: Final = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
STREAM: Final = "stream"  # the source of the outcomes the scorer records
KINDS: Final = frozenset({"subscription_cancelled", "subscription_created", "subscription_changed"})


def shown_by(state: AccountState, fact: Fact, expansion_share: float) -> str | None:
    """The outcome `fact` shows, against `state` before it is applied; None if none. A signal
    older than the account's newest subscription figure shows nothing: it is no news."""
    if fact.kind == "subscription_cancelled":
        return "churn"
    if fact.kind not in ("subscription_created", "subscription_changed"):
        return None
    before = state.attributes.get("mrr_cents")
    now = fact.data.get("mrr_cents")
    if before is None or fact.t <= before[0] or not isinstance(now, int):
        return None
    previous = before[2]
    if fact.kind == "subscription_created":
        return "return" if previous == 0 else None
    if isinstance(previous, int) and previous > 0 and now >= previous * (1 + expansion_share):
        return "expansion"
    return None


Timeline = Sequence[tuple[float, str]]  # one account's outcomes: (epoch seconds, name), in order


def lapsed(timeline: Timeline, at: float) -> bool:
    """Whether the account had churned by `at` and not come back."""
    out = False
    for t, name in timeline:
        if t > at:
            break
        if name == "churn":
            out = True
        elif name == "return":
            out = False
    return out


def within(timeline: Timeline, name: str, after: float, until: float) -> bool:
    """Whether `name` happened in (after, until]."""
    return any(after < t <= until and e == name for t, e in timeline)

"""The outcomes the stream shows as they happen, read against the account's state before the
signal (the names and what they mean: shared/outcomes.py). The scorer records them in the
batch that folds the signal in, so exactly once, as the state is (prepare.py)."""

from __future__ import annotations

from typing import Final

from shared.scoring.state import AccountState, Fact

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

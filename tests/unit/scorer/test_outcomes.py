"""The outcomes the stream shows (services/scorer/outcomes.py), read against the state before
each signal."""

from __future__ import annotations

from services.scorer.outcomes import shown_by
from shared.config import DEFAULT_MODEL_PATH
from shared.scoring.model import load_model
from shared.scoring.state import AccountState, Fact


def _fact(kind: str, t: float, **data: object) -> Fact:
    return Fact(f"{kind}-{t}", "acc-1", t, "billing", kind, dict(data))


def test_the_stream_shows_churn_return_and_expansion() -> None:
    model = load_model(DEFAULT_MODEL_PATH)
    state = AccountState()
    created = _fact("subscription_created", 100, mrr_cents=10_000, tier="growth")
    assert shown_by(state, created, 0.1) is None  # a first subscription is no outcome
    state.apply(model, created)
    small = _fact("subscription_changed", 200, mrr_cents=10_500)
    assert shown_by(state, small, 0.1) is None  # up 5%: below the share
    state.apply(model, small)
    grown = _fact("subscription_changed", 300, mrr_cents=11_600)
    assert shown_by(state, grown, 0.1) == "expansion"
    older = _fact("subscription_changed", 150, mrr_cents=99_000)
    assert shown_by(state, older, 0.1) is None  # older than what the state knows: no news
    state.apply(model, grown)
    cancelled = _fact("subscription_cancelled", 400)
    assert shown_by(state, cancelled, 0.1) == "churn"
    state.apply(model, cancelled)
    back = _fact("subscription_created", 500, mrr_cents=5_000)
    assert shown_by(state, back, 0.1) == "return"

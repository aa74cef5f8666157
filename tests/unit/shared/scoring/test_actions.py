"""What would help an account: actions computed by hand for a small model."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import orjson
import pytest

from shared.scoring.engine import actions, evaluate
from shared.scoring.model import Model
from shared.scoring.state import AccountState, Fact
from tests.support.facts import DAY, MODEL, NOW, fold, make_fact

# Two factors of equal weight; the NPS one caps the score at 40 while its sub-score is below 30.
SMALL = Model.model_validate(
    {
        "name": "small",
        "stale_after_days": {"usage": 30, "billing": 3650, "support": 365},
        "aggregates": {
            "nps_latest": {"kind": "latest", "signals": ["nps_submitted"], "field": "score"},
            "seats_in_use": {
                "kind": "latest",
                "signals": ["seats_used_reported"],
                "field": "seats_in_use",
            },
            "seats_purchased": {
                "kind": "latest",
                "signals": ["subscription_created"],
                "field": "seats_purchased",
            },
        },
        "factors": {
            "nps": {
                "group": "sentiment",
                "aggregate": "nps_latest",
                "transform": {"piecewise": [[0, 0], [10, 100]]},
                "advice": "Call the detractors back.",
            },
            "seats": {
                "group": "usage",
                "ratio": ["seats_in_use", "seats_purchased"],
                "transform": {"piecewise": [[0, 0], [1, 80]]},  # its best is 80
            },
        },
        "objectives": {
            "health": {
                "groups": {"sentiment": 1, "usage": 1},
                "factors": {"nps": 1, "seats": 1},
                "bands": [{"name": "at_risk", "min": 0}, {"name": "healthy", "min": 60}],
                "caps": [{"factor": "nps", "below": 30, "max": 40, "reason": "a detractor"}],
            }
        },
    }
)


def account(nps: int | None, seats_in_use: int) -> AccountState:
    """50 seats purchased (the sample subscription), `seats_in_use` of them used."""
    facts = [
        make_fact("subscription_created", 0, 10),
        make_fact("seats_used_reported", 0, 1, variant=seats_in_use),
    ]
    if nps is not None:
        facts.append(make_fact("nps_submitted", 0, 2, variant=nps))
    return fold(facts, model=SMALL)


def helps(state: AccountState) -> list[tuple[str, float]]:
    evaluation = evaluate(SMALL, state, NOW.timestamp())
    return [(a["factor"], a["points"]) for a in actions(SMALL, evaluation, "health")]


def test_each_factor_is_worth_its_weight_times_its_gap_through_the_caps() -> None:
    # nps 2 -> 20, seats 25/50 -> 40: 30, under the cap's 40.
    # nps at 100: 30 + 0.5 * 80 = 70, and the cap no longer applies: +40.
    # seats at 80: 30 + 0.5 * 40 = 50, but nps still caps it at 40: +10.
    state = account(nps=2, seats_in_use=25)
    assert evaluate(SMALL, state, NOW.timestamp()).scores["health"].score == 30
    assert helps(state) == [("nps", 40.0), ("seats", 10.0)]


def test_the_factor_that_lifts_a_binding_cap_gets_the_whole_lift() -> None:
    # nps 2 -> 20, seats 50/50 -> 80 (its best): 50, capped at 40. Only nps would help:
    # 50 + 0.5 * 80 = 90, uncapped: +50.
    state = account(nps=2, seats_in_use=50)
    assert evaluate(SMALL, state, NOW.timestamp()).scores["health"].score == 40
    assert helps(state) == [("nps", 50.0)]


def test_advice_and_targets_come_from_the_model() -> None:
    evaluation = evaluate(SMALL, account(nps=2, seats_in_use=25), NOW.timestamp())
    first, second = actions(SMALL, evaluation, "health")
    assert first == {
        "factor": "nps",
        "group": "sentiment",
        "points": 40.0,
        "sub_score": 20.0,
        "target_sub_score": 100.0,
        "advice": "Call the detractors back.",
    }
    assert second["target_sub_score"] == 80.0 and second["advice"] is None


def test_a_missing_factor_is_not_an_action_and_weights_follow_confidence() -> None:
    # no NPS: seats alone at half the weight, confidence 0.5; 25/50 -> 40.
    # seats at 80: 40 + 0.5 / 0.5 * 40 = 80: +40.
    assert helps(account(nps=None, seats_in_use=25)) == [("seats", 40.0)]


def _override(action: str, value: float) -> Fact:
    return Fact(
        f"ov-{action}",
        "acc-1",
        NOW.timestamp() - DAY,
        "api",
        "override_set",
        {
            "override_id": f"o-{action}",
            "action": action,
            "objective": "health",
            "value": value,
            "author": "csm@example.com",
            "reason": "knows better",
            "expires_at": (NOW + timedelta(days=5)).isoformat(),
        },
    )


def test_an_adjustment_carries_over_and_a_pin_leaves_nothing_to_do() -> None:
    state = account(nps=2, seats_in_use=25)
    state.apply(SMALL, _override("adjust", 5))  # 35; nps: 70 + 5 = 75
    assert helps(state) == [("nps", 40.0), ("seats", 10.0)]
    state.apply(SMALL, _override("pin", 55))
    assert evaluate(SMALL, state, NOW.timestamp()).scores["health"].score == 55
    assert helps(state) == []


def test_an_account_at_its_best_needs_nothing() -> None:
    assert helps(account(nps=10, seats_in_use=50)) == []


def test_advice_and_outcomes_are_part_of_the_model_version_only_where_written() -> None:
    def advising(advice: str) -> Model:
        nps = SMALL.factors["nps"].model_copy(update={"advice": advice})
        return SMALL.model_copy(update={"factors": {**SMALL.factors, "nps": nps}})

    plain, reworded = advising(""), advising("Ask what would change their answer.")
    assert len({SMALL.version, plain.version, reworded.version}) == 3
    # a model that writes no advice keeps the version it had before advice existed
    document = SMALL.model_dump(mode="json")
    del document["factors"]["nps"]["advice"]
    document["factors"]["seats"].pop("advice")
    for objective in document["objectives"].values():  # nor one that names no outcome
        del objective["outcome"]
    canonical = orjson.dumps(
        {**document, "factors": {**document["factors"]}}, option=orjson.OPT_SORT_KEYS
    )
    assert plain.version == f"small@{hashlib.sha256(canonical).hexdigest()[:12]}"
    name, objective = next(iter(SMALL.objectives.items()))
    naming = SMALL.model_copy(
        update={
            "objectives": {
                **SMALL.objectives,
                name: objective.model_copy(update={"outcome": "renewal"}),
            }
        }
    )
    assert naming.version != SMALL.version and naming.objectives[name].foresees == "renewal"


@pytest.mark.parametrize("objective", ["churn_risk", "expansion"])
def test_the_default_model_advises_on_every_factor_it_weighs(objective: str) -> None:
    for factor in MODEL.objectives[objective].factors:
        assert MODEL.factors[factor].advice, factor

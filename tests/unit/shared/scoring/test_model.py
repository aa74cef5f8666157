from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import yaml

from shared.config import DEFAULT_MODEL_PATH
from shared.errors import ConfigurationError
from shared.scoring.document import fingerprint, from_document, to_document
from shared.scoring.engine import evaluate
from shared.scoring.model import load_model
from shared.scoring.state import AccountState
from tests.support.facts import NOW, active_account


def test_default_model_loads_with_two_objectives() -> None:
    model = load_model(DEFAULT_MODEL_PATH)
    assert set(model.objectives) == {"churn_risk", "expansion"}
    assert model.version.startswith("default@") and len(model.version) == len("default@") + 12
    assert [b.name for b in model.objectives["churn_risk"].bands] == [
        "at_risk",
        "neutral",
        "healthy",
    ]


def _write(tmp_path: Path, doc: dict) -> Path:  # type: ignore[type-arg]
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_version_follows_content_not_formatting(tmp_path: Path) -> None:
    doc = yaml.safe_load(DEFAULT_MODEL_PATH.read_text())
    same = load_model(_write(tmp_path, doc)).version
    assert same == load_model(DEFAULT_MODEL_PATH).version
    doc["objectives"]["churn_risk"]["hysteresis"] = 4
    assert load_model(_write(tmp_path, doc)).version != same


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["factors"]["nps"].update(aggregate="nope"), "reads unknown aggregate 'nope'"),
        (
            lambda d: d["aggregates"]["sessions_7d"].pop("half_life_days"),
            "aggregates.sessions_7d: Value error, decayed_count needs half_life_days",
        ),
        (lambda d: d["objectives"]["churn_risk"]["bands"].reverse(), "bands go from lowest"),
        (
            lambda d: d["factors"]["csat"]["transform"].update(piecewise=[[1, 0], [0, 50]]),
            "x values must increase",
        ),
        (
            lambda d: d["objectives"]["expansion"].update(hysteresis=-1),
            "objectives.expansion.hysteresis",
        ),
        (
            lambda d: d["objectives"]["churn_risk"]["groups"].update(usgae=1),
            "objectives.churn_risk weights group 'usgae', which no factor is in",
        ),
        (lambda d: d["factors"]["nps"].update(group="Voice Of Customer"), "factors.nps.group"),
    ],
)
def test_invalid_models_name_file_path_and_problem(tmp_path: Path, mutate, message) -> None:  # type: ignore[no-untyped-def]
    doc = yaml.safe_load(DEFAULT_MODEL_PATH.read_text())
    mutate(doc)
    path = _write(tmp_path, doc)
    with pytest.raises(ConfigurationError) as err:
        load_model(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_unreadable_yaml_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("factors: [unclosed")
    with pytest.raises(ConfigurationError, match="cannot read model"):
        load_model(path)


def test_a_model_scores_marketing_engagement_and_social_mentions_like_any_kind(
    tmp_path: Path,
) -> None:
    """The new kinds need nothing but a model that reads them: an engagement group."""
    from shared.scoring.engine import evaluate
    from tests.support.facts import NOW, fold, make_fact

    doc = yaml.safe_load(DEFAULT_MODEL_PATH.read_text())
    doc["aggregates"]["marketing_30d"] = {
        "kind": "decayed_count",
        "signals": ["marketing_engaged"],
        "where": {"action": "attended"},
        "half_life_days": 30,
    }
    doc["aggregates"]["mentions_30d"] = {
        "kind": "decayed_count",
        "signals": ["social_mentioned"],
        "half_life_days": 30,
    }
    doc["factors"]["webinars"] = {
        "group": "engagement",
        "description": "webinars attended, 30-day half-life",
        "aggregate": "marketing_30d",
        "transform": {"piecewise": [[0, 0], [3, 100]]},
    }
    doc["factors"]["mentions"] = {
        "group": "engagement",
        "description": "public mentions, 30-day half-life",
        "aggregate": "mentions_30d",
        "transform": {"piecewise": [[0, 50], [5, 100]]},
    }
    churn = doc["objectives"]["churn_risk"]
    churn["groups"]["engagement"] = 1  # group names are free: any a factor is in
    churn["factors"].update(webinars=1, mentions=1)
    model = load_model(_write(tmp_path, doc))
    facts = [make_fact("marketing_engaged", n, n) for n in range(3)]
    facts += [make_fact("social_mentioned", 10 + n, n) for n in range(2)]
    state = fold(facts, model=model)
    factors = {
        f.factor: f for f in evaluate(model, state, NOW.timestamp()).scores["churn_risk"].factors
    }
    assert factors["webinars"].status == factors["mentions"].status == "ok"
    assert factors["webinars"].raw is not None and 2.5 < factors["webinars"].raw < 3
    assert factors["mentions"].raw is not None and 1.9 < factors["mentions"].raw < 2
    assert state.decayed and state.sources.keys() == {"engagement"}


def test_tenure_and_exact_lifetime_counts_in_any_order(tmp_path: Path) -> None:
    """first_seen gives tenure through days_since; count is exact; both are order-independent,
    survive the state document, and leave documents of models that do not use them as they
    were."""
    import random

    from shared.scoring.engine import evaluate
    from tests.support.facts import NOW, fold, make_fact

    doc = yaml.safe_load(DEFAULT_MODEL_PATH.read_text())
    doc["aggregates"]["first_session"] = {"kind": "first_seen", "signals": ["session_started"]}
    doc["aggregates"]["tickets_ever"] = {"kind": "count", "signals": ["ticket_opened"]}
    doc["factors"]["tenure"] = {
        "group": "usage",
        "days_since": "first_session",
        "transform": {"piecewise": [[0, 0], [365, 100]]},
    }
    doc["factors"]["lifetime_tickets"] = {
        "group": "support",
        "aggregate": "tickets_ever",
        "transform": {"piecewise": [[0, 100], [50, 0]]},
    }
    doc["objectives"]["churn_risk"]["factors"].update(tenure=1, lifetime_tickets=1)
    model = load_model(_write(tmp_path, doc))
    facts = [make_fact("session_started", n, 200 - n) for n in range(0, 200, 10)]
    facts += [make_fact("ticket_opened", 500 + n, n) for n in range(7)]
    facts += facts[:3]  # re-deliveries: counted once
    shuffled = random.Random(4).sample(facts, len(facts))
    state, other = fold(facts, model=model), fold(shuffled, model=model)
    assert fingerprint(state) == fingerprint(other)
    assert state.counts == {"tickets_ever": 7}
    factors = {
        f.factor: f for f in evaluate(model, state, NOW.timestamp()).scores["churn_risk"].factors
    }
    assert factors["tenure"].raw is not None and 199 < factors["tenure"].raw < 201
    assert factors["lifetime_tickets"].raw == 7
    again = from_document(to_document(state))
    assert fingerprint(again) == fingerprint(state)
    plain = fold(facts)  # the default model reads neither: its documents have no such keys
    assert "first" not in to_document(plain) and "counts" not in to_document(plain)


def test_fixed_windows_are_exact_and_cadence_is_the_accounts_own(tmp_path: Path) -> None:
    """window_count / window_sum over the last N UTC days, exact and order-independent;
    overdue: days since the newest signal over the account's own average gap."""
    import random

    from shared.scoring.engine import evaluate
    from tests.support.facts import DAY, NOW, fold, make_fact

    doc = yaml.safe_load(DEFAULT_MODEL_PATH.read_text())
    doc["aggregates"]["tickets_30d"] = {
        "kind": "window_count",
        "signals": ["ticket_opened"],
        "window_days": 30,
    }
    doc["aggregates"]["features_7d"] = {
        "kind": "window_sum",
        "signals": ["feature_used"],
        "field": "count",
        "window_days": 7,
    }
    doc["aggregates"]["invoices"] = {"kind": "count", "signals": ["invoice_paid"]}
    doc["factors"]["tickets_month"] = {
        "group": "support",
        "aggregate": "tickets_30d",
        "transform": {"piecewise": [[0, 100], [10, 0]]},
    }
    doc["factors"]["features_week"] = {
        "group": "usage",
        "aggregate": "features_7d",
        "transform": {"piecewise": [[0, 0], [30, 100]]},
    }
    doc["factors"]["invoice_overdue_ratio"] = {
        "group": "billing",
        "overdue": "invoices",
        "transform": {"piecewise": [[1, 100], [3, 0]]},
    }
    doc["objectives"]["churn_risk"]["factors"].update(
        tickets_month=1, features_week=1, invoice_overdue_ratio=1
    )
    model = load_model(_write(tmp_path, doc))
    # tickets 1..60 days old (one a day): 29 of them in the 30-day window ending today
    facts = [make_fact("ticket_opened", n, n + 0.5) for n in range(1, 61)]
    # features: 3 uses each, 10 days; 7 of them in the 7-day window
    facts += [make_fact("feature_used", 100 + n, n + 0.5) for n in range(10)]
    # invoices every 30 days, the newest 45 days ago: 1.5 of its usual gaps overdue
    facts += [make_fact("invoice_paid", 200 + n, 45 + 30 * n) for n in range(4)]
    shuffled = random.Random(9).sample(facts, len(facts))
    state, other = fold(facts, model=model), fold(shuffled, model=model)
    assert fingerprint(state) == fingerprint(other)
    at = NOW.timestamp()
    factors = {f.factor: f for f in evaluate(model, state, at).scores["churn_risk"].factors}
    in_window = sum(1 for n in range(1, 61) if int((at - (n + 0.5) * DAY) // DAY) > at // DAY - 30)
    assert factors["tickets_month"].raw == in_window
    assert factors["features_week"].raw == 3 * sum(
        1 for n in range(10) if int((at - (n + 0.5) * DAY) // DAY) > at // DAY - 7
    )
    assert factors["invoice_overdue_ratio"].raw == pytest.approx(1.5)
    again = from_document(orjson.loads(orjson.dumps(to_document(state))))
    assert fingerprint(again) == fingerprint(state)
    assert max(len(days) for _, days in state.windows.values()) <= 31  # old days let go


def test_an_interaction_makes_one_factors_weight_depend_on_another(tmp_path: Path) -> None:
    """Recency matters less for frequent users: days_since_last_use weighs a quarter as much
    while login_frequency's sub-score is at least 50."""
    from shared.scoring.engine import evaluate
    from tests.support.facts import NOW, active_account

    doc = yaml.safe_load(DEFAULT_MODEL_PATH.read_text())
    plain = load_model(_write(tmp_path, doc))
    doc["objectives"]["churn_risk"]["interactions"] = [
        {
            "factor": "days_since_last_use",
            "when": "login_frequency",
            "at_least": 50,
            "multiply": 0.25,
        }
    ]
    model = load_model(_write(tmp_path, doc))
    state = active_account()
    at = NOW.timestamp()
    before = {f.factor: f for f in evaluate(plain, state, at).scores["churn_risk"].factors}
    after = {f.factor: f for f in evaluate(model, state, at).scores["churn_risk"].factors}
    assert before["login_frequency"].sub_score is not None
    assert before["login_frequency"].sub_score >= 50  # an active account: the rule applies
    assert after["days_since_last_use"].weight < before["days_since_last_use"].weight
    assert sum(f.weight for f in after.values()) == pytest.approx(1, abs=1e-4)
    quiet = AccountState()  # no data: the rule does not apply, weights as before
    # (by name: models of equal content share one plan, in the order first loaded)
    assert {
        f.factor: f.weight for f in evaluate(model, quiet, at).scores["churn_risk"].factors
    } == {f.factor: f.weight for f in evaluate(plain, quiet, at).scores["churn_risk"].factors}
    doc["objectives"]["churn_risk"]["interactions"] = [
        {"factor": "days_since_last_use", "when": "nps", "at_least": 50, "below": 10, "multiply": 1}
    ]
    with pytest.raises(ConfigurationError, match="one of at_least and below"):
        load_model(_write(tmp_path, doc))


def test_an_objectives_own_transform_shapes_its_factor_and_no_other(tmp_path: Path) -> None:
    """What `fit` learns for one objective (its own piecewise shape of a shared factor) beats
    the factor's and a segment's transform there, and leaves the other objective alone."""
    from shared.scoring.engine import evaluate
    from tests.support.facts import NOW, active_account

    doc = yaml.safe_load(DEFAULT_MODEL_PATH.read_text())
    plain = load_model(_write(tmp_path, doc))
    doc["objectives"]["churn_risk"]["transforms"] = {
        "login_frequency": {"piecewise": [[0, 100], [1000, 0]]}  # reversed on purpose
    }
    doc["segments"][0]["transforms"] = {"login_frequency": {"piecewise": [[0, 0], [1, 100]]}}
    model = load_model(_write(tmp_path, doc))
    state = active_account()
    at = NOW.timestamp()
    for tier in (None, "enterprise"):
        if tier:
            state.attributes["tier"] = (at, "t", tier)
        evaluation = evaluate(model, state, at)
        assert evaluation.segment == (tier or "default")
        churn = {f.factor: f for f in evaluation.scores["churn_risk"].factors}["login_frequency"]
        assert churn.raw is not None and churn.raw > 0
        assert churn.sub_score == pytest.approx(100 - churn.raw / 10)
        # expansion reads the same factor with the segment's shape, or the factor's own
        shape = (
            model.segments[0].transforms["login_frequency"]
            if tier
            else model.factors["login_frequency"].transform
        )
        expansion = {f.factor: f for f in evaluation.scores["expansion"].factors}
        assert expansion["login_frequency"].sub_score == pytest.approx(shape(churn.raw))
        if not tier:  # by name: models of equal content share one plan, in the order first loaded
            plain_expansion = evaluate(plain, state, at).scores["expansion"]
            assert evaluation.scores["expansion"].score == plain_expansion.score
            assert expansion == {f.factor: f for f in plain_expansion.factors}
    doc["objectives"]["churn_risk"]["transforms"] = {"nps_typo": {"piecewise": [[0, 0], [1, 1]]}}
    with pytest.raises(ConfigurationError, match="transforms unweighted factor"):
        load_model(_write(tmp_path, doc))


def test_a_copy_with_other_content_has_its_own_version_and_plans() -> None:
    model = load_model(DEFAULT_MODEL_PATH)
    evaluate(model, active_account(), NOW.timestamp())  # derives its plans
    objectives = {**model.objectives}
    objectives["churn_risk"] = objectives["churn_risk"].model_copy(update={"hysteresis": 9.0})
    copied = model.model_copy(update={"objectives": objectives})
    assert copied.version != model.version and not copied.derived
    assert copied.model_copy().version == copied.version

"""What the scorer records for a new evaluation: history, change events, shadow models."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import yaml

from services.scorer.rescore import AccountEntry, profile_row, rescore, state_row
from shared.config import DEFAULT_MODEL_PATH
from shared.scoring.model import Model
from tests.support.facts import DAY, MODEL, NOW, active_account, make_fact


def shadow_model() -> Model:
    doc = yaml.safe_load(DEFAULT_MODEL_PATH.read_text())
    doc["name"] = "candidate"
    doc["objectives"]["churn_risk"]["groups"]["usage"] = 0.8
    return Model.model_validate(doc)


def scored(entry: AccountEntry, at: float, models: dict[str, Model]):  # type: ignore[no-untyped-def]
    """The rows and the active model's evaluation."""
    return rescore(
        models=models,
        account_id="acc-1",
        entry=entry,
        at=at,
        cause="signals",
        signal_ids=["s1"],
        history_min_delta=5.0,
        changes_topic="changes",
        recorded_at=datetime.fromtimestamp(at, UTC),
    )


def score(entry: AccountEntry, at: float, models: dict[str, Model]):  # type: ignore[no-untyped-def]
    return scored(entry, at, models)[0]


def test_first_score_is_history_not_news_then_a_band_change_is_both() -> None:
    entry = AccountEntry(active_account(), 0)
    first = score(entry, NOW.timestamp(), {"active": MODEL})
    assert {h["objective"] for h in first.history} == {"churn_risk", "expansion"}
    assert all(h["old_band"] is None for h in first.history) and first.outbox == []
    later = score(entry, NOW.timestamp() + 45 * DAY, {"active": MODEL})
    churn = [h for h in later.history if h["objective"] == "churn_risk"]
    assert [(h["old_band"], h["new_band"]) for h in churn] == [("healthy", "at_risk")]
    assert churn[0]["top_movers"] and churn[0]["signal_ids"] == ["s1"]
    assert len(later.outbox) >= 1
    assert all(row["content_type"] == "application/cloudevents+json" for row in later.outbox)
    again = score(entry, NOW.timestamp() + 45 * DAY + 60, {"active": MODEL})
    assert again.history == [] and again.outbox == []  # nothing moved: nothing recorded


def test_a_shadow_model_is_scored_and_stored_but_never_emits_change_events() -> None:
    models = {"active": MODEL, "shadow": shadow_model()}
    entry = AccountEntry(active_account(), 0)
    score(entry, NOW.timestamp(), models)
    later = score(entry, NOW.timestamp() + 45 * DAY, models)
    roles = {row["model_role"] for row in later.scores}
    assert roles == {"active", "shadow"}
    shadow_history = [h for h in later.history if h["model_role"] == "shadow"]
    assert shadow_history and shadow_history[0]["model_version"].startswith("candidate@")
    events = later.outbox
    assert events and all(b"candidate@" not in row["payload"] for row in events)
    assert all(MODEL.version.encode() in row["payload"] for row in events)


def test_every_score_carries_the_attributes_its_account_row_has_then_and_after_a_change() -> None:
    """The lists filter on the scores' copy of the account's attributes: it is written from
    the same state as the `accounts` row, so it follows a change of tier."""
    models = {"active": MODEL, "shadow": shadow_model()}
    entry = AccountEntry(active_account(), 0)
    copied = ("industry", "region", "tier", "segment")
    tiers = []
    for change in (None, make_fact("subscription_changed", 1, 0.5)):
        if change is not None:
            entry.state.apply(MODEL, change)
        at = NOW.timestamp()
        rows, active = scored(entry, at, models)
        account = profile_row("acc-1", entry, NOW, active)
        assert account is not None  # new, then changed: written both times
        assert len(rows.scores) == 4  # two objectives, two models
        assert [{c: r[c] for c in copied} for r in rows.scores] == [
            {c: account[c] for c in copied}
        ] * 4
        tiers.append(account["tier"])
    assert tiers == ["growth", "enterprise"]


def test_a_model_change_is_recorded_as_such() -> None:
    entry = AccountEntry(active_account(), 0)
    score(entry, NOW.timestamp(), {"active": MODEL})
    switched = score(entry, NOW.timestamp() + 60, {"active": shadow_model()})
    causes = {h["cause"] for h in switched.history}
    assert causes == {"model_change"}  # a config change is never mistaken for a customer's


def test_what_the_scorer_stores_for_the_lists_and_derives_for_the_document() -> None:
    """The explanation, as the engine makes it, validates against shared/health.py with no
    field missing or extra, its times RFC 3339; the state row carries the stale sources and
    the newest data the lists show, and the profile is written only when it changes."""
    import orjson

    from shared.health import Explanation
    from shared.scoring.engine import evaluate

    entry = AccountEntry(active_account(), 0)
    evaluation = evaluate(MODEL, entry.state, NOW.timestamp())
    for objective in evaluation.scores.values():
        stored = orjson.loads(orjson.dumps(objective.explanation()))
        Explanation.model_validate(stored, extra="forbid")
        times = [f["last_data_at"] for f in stored["factors"] if f["last_data_at"]]
        assert times and all(datetime.fromisoformat(t).tzinfo is not None for t in times)
    row = state_row("acc-1", entry, NOW, NOW.timestamp(), evaluation)
    stale = sorted(s for s, f in evaluation.freshness.items() if f["stale"])
    assert row["stale_sources"] == (stale or None)
    newest = max(f["last_data_at"] for f in evaluation.freshness.values() if f["last_data_at"])
    assert row["data_at"] == datetime.fromtimestamp(newest, UTC)
    assert row["state"] and state_row("acc-1", entry, NOW, 0, evaluation, False)["state"] == b""
    assert profile_row("acc-1", entry, NOW, evaluation) is not None
    assert profile_row("acc-1", entry, NOW, evaluation) is None  # as stored: not written again


def replayed(entry: AccountEntry, fact_kind: str, n: int, *, replay: bool = True):  # type: ignore[no-untyped-def]
    """Fold one signal of an hour ago into `entry` and rescore it as the scorer would."""
    fact = make_fact(fact_kind, n, 1 / 24)
    entry.state.apply(MODEL, fact)
    return rescore(
        models={"active": MODEL},
        account_id="acc-1",
        entry=entry,
        at=NOW.timestamp(),
        cause="signals",
        signal_ids=[fact.signal_id],
        history_min_delta=5.0,
        changes_topic="changes",
        recorded_at=NOW,
        reflects=fact.t,
        replay=replay,
    )[0]


def churn_band(entry: AccountEntry) -> str:
    return entry.scores[("churn_risk", "active")].band


def test_a_catch_up_holds_its_changes_and_sends_the_net_one() -> None:
    entry = AccountEntry(active_account(), 0)
    score(entry, NOW.timestamp(), {"active": MODEL})
    assert churn_band(entry) == "healthy"
    cancelled = replayed(entry, "subscription_cancelled", 1)
    assert churn_band(entry) == "at_risk" and cancelled.outbox == []  # held
    assert [h["new_band"] for h in cancelled.history if h["objective"] == "churn_risk"] == [
        "at_risk"
    ]
    held = entry.scores[("churn_risk", "active")].held
    assert held is not None and held.band == "healthy"
    # the sweep, once the account is quiet: one event from what was heard, marked replay
    swept = rescore(
        models={"active": MODEL},
        account_id="acc-1",
        entry=entry,
        at=NOW.timestamp() + 60,
        cause="time",
        signal_ids=[],
        history_min_delta=5.0,
        changes_topic="changes",
        recorded_at=NOW,
    )[0]
    events = [orjson.loads(row["payload"]) for row in swept.outbox]
    churn = [e for e in events if e["data"]["objective"] == "churn_risk"]
    assert [(e["data"]["old_band"], e["data"]["new_band"], e["replay"]) for e in churn] == [
        ("healthy", "at_risk", True)
    ]
    assert churn[0]["data"]["signal_ids"] == ["subscription_cancelled-1"]
    assert churn[0]["data"]["top_movers"]
    assert entry.scores[("churn_risk", "active")].held is None


def test_an_account_that_flips_and_comes_back_during_a_catch_up_sends_nothing() -> None:
    entry = AccountEntry(active_account(), 0)
    score(entry, NOW.timestamp(), {"active": MODEL})
    assert replayed(entry, "subscription_cancelled", 1).outbox == []
    back = replayed(entry, "subscription_created", 2)
    assert churn_band(entry) == "healthy" and back.outbox == []
    live = replayed(entry, "session_started", 999_999, replay=False)  # news again
    assert [o for o in live.outbox if b"churn_risk" in o["payload"]] == []
    assert entry.scores[("churn_risk", "active")].held is None


def test_a_calibrated_model_states_the_probability_in_score_history_and_event() -> None:
    import math

    from shared.health import Explanation

    doc = yaml.safe_load(DEFAULT_MODEL_PATH.read_text())
    doc["objectives"]["churn_risk"]["calibration"] = {
        "horizon_days": 90,
        "intercept": 1.5,
        "slope": -4.0,
    }
    model = Model.model_validate(doc)
    entry = AccountEntry(active_account(), 0)
    score(entry, NOW.timestamp(), {"active": model})
    later, evaluation = scored(entry, NOW.timestamp() + 45 * DAY, {"active": model})
    [history] = [h for h in later.history if h["objective"] == "churn_risk"]
    new = history["new_score"]
    assert new is not None
    expected = 1 / (1 + math.exp(-(1.5 - 4.0 * new / 100)))
    assert history["probability"] == round(expected, 6)
    [row] = [r for r in later.scores if r["objective"] == "churn_risk"]
    explanation = Explanation.model_validate(
        orjson.loads(orjson.dumps(evaluation.scores["churn_risk"].explanation())), extra="forbid"
    )
    assert (
        explanation.probability,
        explanation.probability_horizon_days,
        explanation.probability_outcome,
    ) == (round(expected, 6), 90, "churn")
    assert row["probability"] == round(expected, 6)  # the column account lists read
    events = [orjson.loads(r["payload"]) for r in later.outbox]
    churn_events = [e for e in events if e["data"]["objective"] == "churn_risk"]
    assert churn_events and churn_events[0]["data"]["probability"] == round(expected, 6)
    # the objective that is not calibrated states none, and its document has no such key
    [expansion] = [r for r in later.scores if r["objective"] == "expansion"]
    assert "probability" not in evaluation.scores["expansion"].explanation()
    assert expansion["probability"] is None

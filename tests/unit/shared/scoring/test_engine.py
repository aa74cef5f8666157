"""Properties of the pure scoring core: order independence, bounds, hysteresis, explanations."""

from __future__ import annotations

import math
import random
from datetime import timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.scoring.document import fingerprint, from_document, to_document
from shared.scoring.engine import band_for, contributions, evaluate, top_movers
from shared.scoring.model import Band
from shared.scoring.seen import DedupPolicy
from shared.scoring.state import AccountState, Fact
from tests.support.facts import DAY, KINDS, MODEL, NOW, active_account, fold, make_fact

facts_strategy = st.lists(
    st.builds(
        lambda k, age, v: (k, age, v),
        st.sampled_from(KINDS),
        st.floats(0, 120, allow_nan=False),
        st.integers(0, 100),
    ),
    min_size=1,
    max_size=40,
).map(lambda items: [make_fact(k, i, age, v) for i, (k, age, v) in enumerate(items)])


def scores(state: AccountState, at: float) -> dict[str, tuple[float | None, float]]:
    evaluation = evaluate(MODEL, state, at)
    return {o: (s.score, s.confidence) for o, s in evaluation.scores.items()}


@settings(max_examples=150, deadline=None)
@given(facts_strategy, st.randoms(use_true_random=False))
def test_any_order_gives_identical_state_and_scores(facts: list[Fact], rnd: random.Random) -> None:
    reference = fold(facts)
    shuffled = list(facts)
    rnd.shuffle(shuffled)
    other = fold(shuffled)
    assert fingerprint(other) == fingerprint(reference)
    at = NOW.timestamp()
    assert scores(other, at) == scores(reference, at)


@settings(max_examples=100, deadline=None)
@given(
    facts_strategy,
    st.lists(st.integers(1, 10), min_size=1, max_size=8),
    st.randoms(use_true_random=False),
)
def test_batches_restarts_and_duplicates_change_nothing(
    facts: list[Fact], cuts: list[int], rnd: random.Random
) -> None:
    reference = fold(facts)
    # re-deliver some signals, split into batches, and persist/reload state between them
    stream = facts + [rnd.choice(facts) for _ in range(len(facts) // 2)]
    rnd.shuffle(stream)
    state = AccountState()
    position = 0
    for cut in cuts * 10:
        chunk = stream[position : position + cut]
        position += cut
        state = from_document(orjson.loads(orjson.dumps(to_document(fold(chunk, state)))))
    state = fold(stream[position:], state)
    assert fingerprint(state) == fingerprint(reference)


@settings(max_examples=150, deadline=None)
@given(facts_strategy, st.floats(0, 400))
def test_scores_stay_within_bounds(facts: list[Fact], later_days: float) -> None:
    state = fold(facts)
    evaluation = evaluate(MODEL, state, NOW.timestamp() + later_days * DAY)
    for score in evaluation.scores.values():
        assert score.score is None or 0 <= score.score <= 100
        assert 0 <= score.confidence <= 1
        for factor in score.factors:
            assert factor.sub_score is None or 0 <= factor.sub_score <= 100
        ok = [f for f in score.factors if f.status == "ok"]
        if score.model_score is not None:
            assert math.isclose(sum(f.contribution for f in ok), score.model_score, abs_tol=1e-3)


BANDS = [Band(name="at_risk", min=0), Band(name="neutral", min=40), Band(name="healthy", min=70)]


@given(st.lists(st.floats(-2.99, 2.99), min_size=1, max_size=50))
def test_hysteresis_holds_a_band_for_a_score_wobbling_around_its_edge(wobble: list[float]) -> None:
    band = band_for(72.0, BANDS, None, 3.0)
    assert band == "healthy"
    for w in wobble:
        band = band_for(70.0 + w, BANDS, band, 3.0)
        assert band == "healthy"
    assert band_for(66.9, BANDS, "healthy", 3.0) == "neutral"
    assert band_for(72.9, BANDS, "neutral", 3.0) == "neutral"
    assert band_for(73.0, BANDS, "neutral", 3.0) == "healthy"
    assert band_for(10.0, BANDS, "healthy", 3.0) == "at_risk"  # big moves jump bands
    assert band_for(None, BANDS, "healthy", 3.0) == "unknown"


def test_silence_decays_the_score_into_at_risk() -> None:
    state = active_account()
    now = NOW.timestamp()
    first = evaluate(MODEL, state, now).scores["churn_risk"]
    assert first.band == "healthy"
    later = evaluate(MODEL, state, now + 45 * DAY, {"churn_risk": first.band})
    churn = later.scores["churn_risk"]
    assert churn.score is not None and first.score is not None
    assert churn.score < first.score - 30
    assert churn.band == "at_risk"
    # two weeks in, the weighted mean alone is still fair, but the guardrail caps it
    two_weeks = evaluate(MODEL, state, now + 16 * DAY).scores["churn_risk"]
    assert [c["factor"] for c in two_weeks.caps] == ["days_since_last_use"]
    assert two_weeks.model_score is not None and two_weeks.model_score > 40
    assert two_weeks.score == 35
    assert later.freshness["usage"]["stale"] is True
    statuses = {f.factor: f.status for f in churn.factors}
    assert statuses["seat_utilisation"] == "stale"  # a stale reading is not trusted
    assert statuses["login_frequency"] == "ok"  # while silence itself counts against it
    movers = top_movers(contributions(first.explanation()["factors"]), churn)
    assert movers[0]["delta"] < 0
    assert {m["factor"] for m in movers} <= {f.factor for f in churn.factors}


def test_missing_factors_are_left_out_and_weights_renormalised() -> None:
    state = fold([make_fact("nps_submitted", 1, 1, variant=10)])  # one support-side signal
    churn = evaluate(MODEL, state, NOW.timestamp()).scores["churn_risk"]
    ok = {f.factor: f for f in churn.factors if f.status == "ok"}
    assert set(ok) == {"nps", "text_sentiment", "support_load", "escalations"}
    assert ok["nps"].sub_score == 100.0
    assert ok["support_load"].raw == 0.0  # nothing counted, but we hear from support
    weight = sum(f.weight for f in ok.values())
    assert churn.confidence == pytest.approx(weight, abs=1e-5)
    expected = sum(f.weight * (f.sub_score or 0) for f in ok.values()) / weight
    assert churn.score == pytest.approx(expected, abs=1e-3)
    usage = [f for f in churn.factors if f.group == "usage"]
    assert usage and {f.status for f in usage} == {"missing"}


def _profile(n: int, tier: str, industry: str, age_days: float) -> Fact:
    return Fact(
        f"profile-{n}",
        "acc-1",
        NOW.timestamp() - age_days * DAY,
        "billing",
        "account_profile_updated",
        {
            "name": "Acme",
            "industry": industry,
            "region": "emea",
            "tier": tier,
            "lifecycle_stage": "mature",
        },
    )


def test_segment_rules_choose_weights_and_transforms() -> None:
    state = active_account()
    now = NOW.timestamp()
    default = evaluate(MODEL, state, now)
    assert default.segment == "default"
    state.apply(MODEL, _profile(1, "enterprise", "healthcare", 3))
    enterprise = evaluate(MODEL, state, now)
    assert enterprise.segment == "enterprise"  # the first matching segment wins
    weights = {f.factor: f.weight for f in enterprise.scores["churn_risk"].factors}
    base_weights = {f.factor: f.weight for f in default.scores["churn_risk"].factors}
    assert weights["support_load"] > base_weights["support_load"]
    # a newer profile moves the account to another segment; an older one does not
    state.apply(MODEL, _profile(2, "growth", "healthcare", 1))
    state.apply(MODEL, _profile(3, "enterprise", "retail", 2))
    assert evaluate(MODEL, state, now).segment == "healthcare"


def _override(
    n: int,
    action: str,
    value: float,
    age_days: float,
    expires_days: float,
    objective: str | None = None,
) -> Fact:
    return Fact(
        f"ov-{n}",
        "acc-1",
        NOW.timestamp() - age_days * DAY,
        "api",
        "override_set",
        {
            "override_id": f"o{n}",
            "action": action,
            "objective": objective,
            "value": value,
            "author": "csm@example.com",
            "reason": "knows better",
            "expires_at": (NOW + timedelta(days=expires_days)).isoformat(),
        },
    )


def test_overrides_pin_adjust_expire_and_revoke() -> None:
    state = active_account()
    now = NOW.timestamp()
    base = evaluate(MODEL, state, now).scores["churn_risk"].score
    assert base is not None
    state.apply(MODEL, _override(1, "adjust", -10, 1, 10, "churn_risk"))
    adjusted = evaluate(MODEL, state, now).scores
    assert adjusted["churn_risk"].score == pytest.approx(base - 10, abs=1e-3)
    assert adjusted["churn_risk"].overrides[0]["author"] == "csm@example.com"
    assert adjusted["expansion"].overrides == ()
    state.apply(MODEL, _override(2, "pin", 12, 0.5, 5))
    assert evaluate(MODEL, state, now).scores["expansion"].score == 12
    after_expiry = evaluate(MODEL, state, now + 6 * DAY).scores["churn_risk"]
    assert after_expiry.overrides and after_expiry.overrides[0]["action"] == "adjust"
    revoke = Fact(
        "rv-1",
        "acc-1",
        now,
        "api",
        "override_revoked",
        {"override_id": "o1", "author": "lead@example.com"},
    )
    early = from_document(to_document(state))
    state.apply(MODEL, revoke)
    assert evaluate(MODEL, state, now + 6 * DAY).scores["churn_risk"].overrides == ()
    # a revocation that arrives before its override still wins
    reordered = AccountState()
    for fact in [revoke, _override(1, "adjust", -10, 1, 10, "churn_risk")]:
        reordered.apply(MODEL, fact)
    assert reordered.overrides["o1"]["revoked"] is True
    assert early.overrides["o1"].get("revoked") is None


def test_csm_sentiment_override_feeds_its_factor() -> None:
    state = active_account()
    state.apply(MODEL, _override(3, "sentiment", 5, 1, 30))
    churn = evaluate(MODEL, state, NOW.timestamp()).scores["churn_risk"]
    csm = next(f for f in churn.factors if f.factor == "csm_sentiment")
    assert (csm.status, csm.raw, csm.sub_score) == ("ok", 5.0, 5.0)


def test_dedup_memory_survives_its_document_and_reads_version_1() -> None:
    facts = [make_fact("session_started", i, 1 - i / 100) for i in range(40)]
    state = AccountState()
    for fact in facts:
        state.apply(MODEL, fact)
    doc = orjson.loads(orjson.dumps(to_document(state)))
    assert isinstance(doc["seen"], str) and len(doc["seen"]) == math.ceil(40 * 12 / 3) * 4
    restored = from_document(doc)
    assert restored.memory.seen == state.memory.seen
    assert [restored.apply(MODEL, f) for f in facts] == [False] * 40
    # a document written before the ids were packed: {signal id: ingested at}
    old = {**doc, "v": 1, "seen": {f.signal_id: f.ingested for f in facts[:10]}}
    upgraded = from_document(old)
    assert [upgraded.apply(MODEL, f) for f in facts[:12]] == [False] * 10 + [True] * 2


def test_dedup_memory_is_bounded() -> None:
    state = AccountState()
    policy = DedupPolicy(horizon_seconds=3600, max_ids=50)
    for i in range(500):
        state.apply(MODEL, make_fact("session_started", i, 10 - i / 100), policy)
    assert 37 <= len(state.memory.seen) <= 50  # trimmed to three quarters, then growing again
    assert state.apply(MODEL, make_fact("session_started", 499, 10 - 4.99), policy) is False
    # the packed form kept alongside follows every trim: the document holds exactly `seen`
    restored = from_document(orjson.loads(orjson.dumps(to_document(state))))
    assert restored.memory.seen == state.memory.seen
    assert restored.apply(MODEL, make_fact("session_started", 499, 10 - 4.99), policy) is False


def test_the_stored_state_keeps_every_aggregate_exactly_and_leaves_the_memory_out() -> None:
    """to_bytes/from_bytes (MessagePack) give back the same state to the bit, with integers
    beyond 64 bits (which JSON documents could not hold) too; the memory is stored apart."""
    state = active_account()
    state.apply(MODEL, _override(1, "pin", 20, 1, 10, "churn_risk"))
    state.floor = NOW.timestamp() - DAY
    data = state.to_bytes()
    assert data[:1] == b"\x04" and len(data) < len(orjson.dumps(to_document(state))) // 2
    again = AccountState.from_bytes(data)
    assert fingerprint(again) == fingerprint(state) and again.floor == state.floor
    assert again.memory.seen == {} and state.memory.seen  # the memory is not in the stored state
    at = NOW.timestamp()
    assert evaluate(MODEL, again, at).scores == evaluate(MODEL, state, at).scores
    state.counts["huge"] = 3**80  # an exact count or window total past 64 bits
    state.windows["w"] = (30, {20_000: -(2**90), 20_001: 7})
    wide = AccountState.from_bytes(state.to_bytes())
    assert wide.counts["huge"] == 3**80 and wide.windows["w"] == (30, {20_000: -(2**90), 20_001: 7})
    with pytest.raises(ValueError, match="not a stored account state"):
        AccountState.from_bytes(orjson.dumps(to_document(again)))


def test_the_memory_is_stored_by_period_and_read_back_as_of_each_periods_end() -> None:
    """What the memory took since it was last stored goes to the period of the write (or, for
    a build from history, of each id's ingestion); read back, each id is remembered as of the
    end of its period, and a re-delivery of any of them is dropped."""
    period = 6 * 3600.0
    facts = [make_fact("session_started", i, 1 - i / 100) for i in range(20)]
    state = fold(facts)
    written = state.memory.unstored_ids(period, at=NOW.timestamp())
    assert list(written) == [int(NOW.timestamp() // period)]
    assert len(written[int(NOW.timestamp() // period)]) == 20 * 8
    assert state.memory.unstored_ids(period) == {}  # handed over once
    later = [make_fact("feature_used", i, i / 4) for i in range(8)]
    for fact in later:
        fact.ingested = fact.t  # ingested as they happened, over two days
    by_ingestion = fold(later, state).memory.unstored_ids(period)
    assert sum(len(ids) for ids in by_ingestion.values()) == 8 * 8 and len(by_ingestion) > 1
    loaded = AccountState.from_bytes(state.to_bytes())
    loaded.memory.remember_stored([*written.items(), *by_ingestion.items()], period)
    assert loaded.memory.seen.keys() == state.memory.seen.keys()
    assert all(t % period == 0 for t in loaded.memory.seen.values())  # the ends of their periods
    assert [loaded.apply(MODEL, f) for f in facts] == [False] * 20

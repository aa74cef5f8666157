"""Market news: validation of a market event, and the market factor in the engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import yaml

from shared.config import DEFAULT_MODEL_PATH
from shared.errors import ConfigurationError
from shared.events import Signal
from shared.scoring.engine import evaluate
from shared.scoring.model import Model, load_model
from shared.scoring.news import NewsItem
from shared.validate import Rejection, validate
from tests.support.facts import NOW, active_account

DAY = 86_400.0


def market_event(**fields: object) -> bytes:
    return orjson.dumps(
        {
            "event_id": "news-1",
            "type": "market_event",
            "schema_version": 1,
            "occurred_at": (NOW - timedelta(days=1)).isoformat(),
            "scope": {"industry": "FinTech"},
            "topic": "Regulatory Change",
            "impact": -0.8,
            "title": "New rules for lenders",
            **fields,
        }
    )


def test_a_market_event_is_keyed_by_its_scope_and_names_no_account() -> None:
    signal = validate(
        market_event(scope={"tier": ["growth", "enterprise"], "industry": "fintech"}), now=NOW
    )
    assert isinstance(signal, Signal)
    assert signal.account_id == "market:industry=fintech;tier=enterprise,growth"
    assert (signal.source, signal.kind) == ("market", "market_event")
    assert signal.data["topic"] == "regulatory_change" and signal.data["impact"] == -0.8
    for bad, path in (
        ({"scope": {}}, "scope"),
        ({"scope": {"planet": "mars"}}, "scope.planet"),
        ({"impact": 1.5}, "impact"),
        ({"topic": "no!"}, "topic"),
    ):
        refused = validate(market_event(**bad), now=NOW)
        assert isinstance(refused, Rejection) and refused.reason == "schema_violation"
        assert refused.path == path


def _market_model(tmp_path: Path, topics: list[str] | None = None) -> Model:
    doc = yaml.safe_load(DEFAULT_MODEL_PATH.read_text())
    doc["factors"]["market_news"] = {
        "group": "market",
        "market": {"half_life_days": 10, **({"topics": topics} if topics else {})},
        "transform": {"piecewise": [[-1, 0], [0, 50], [1, 100]]},
    }
    doc["objectives"]["churn_risk"]["factors"]["market_news"] = 4
    doc["objectives"]["churn_risk"]["groups"]["market"] = 0.3
    path = tmp_path / "market.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_model(path)


def _item(event_id: str, days_ago: float, impact: float, **scope: list[str]) -> NewsItem:
    data = {"scope": scope, "topic": "regulatory_change", "impact": impact, "title": event_id}
    return NewsItem.of(event_id, NOW.timestamp() - days_ago * DAY, data)


def test_the_market_factor_reads_decayed_news_about_the_accounts_segment(tmp_path: Path) -> None:
    model = _market_model(tmp_path)
    state = active_account()
    at = NOW.timestamp()
    state.attributes["industry"] = (at - 90 * DAY, "p", "fintech")
    news = (
        _item("hit", 10, -0.8, industry=["fintech", "banking"]),  # one half-life ago
        _item(
            "also", 0, 0.2, industry=["fintech"], tier=["enterprise", "growth", "starter", "free"]
        ),
        _item("elsewhere", 0, -1.0, industry=["retail"]),
        _item("later", -1, -1.0, industry=["fintech"]),  # after `at`: not yet known
        _item("faded", 80, -1.0, industry=["fintech"]),  # 2^-8 < 1%: left out
    )
    state.attributes["tier"] = (at - 90 * DAY, "p", "growth")
    churn = evaluate(model, state, at, news=news).scores["churn_risk"]
    factor = {f.factor: f for f in churn.factors}["market_news"]
    assert factor.status == "ok"
    assert factor.raw == pytest.approx(-0.8 * 0.5 + 0.2)
    assert factor.sub_score == pytest.approx(50 + 50 * (-0.8 * 0.5 + 0.2))
    assert factor.last_data_at == at
    read = churn.explanation()["news"]
    assert [n["event_id"] for n in read] == ["also", "hit"]  # newest first
    assert read[1]["weight"] == pytest.approx(0.5) and read[1]["title"] == "hit"
    assert read[0]["occurred_at"] == datetime.fromtimestamp(at, UTC)
    without = evaluate(model, state, at).scores["churn_risk"]
    assert {f.factor: f for f in without.factors}["market_news"].status == "missing"
    assert "news" not in without.explanation()
    assert churn.score is not None and without.score is not None and churn.score < without.score
    # the expansion objective reads no market factor: no news in its explanation
    assert "news" not in evaluate(model, state, at, news=news).scores["expansion"].explanation()
    # a factor reading other topics does not see it
    other = _market_model(tmp_path, topics=["competitor_move"])
    factor = {
        f.factor: f for f in evaluate(other, state, at, news=news).scores["churn_risk"].factors
    }
    assert factor["market_news"].status == "missing"


def test_a_factor_has_one_value_market_included(tmp_path: Path) -> None:
    doc = yaml.safe_load(DEFAULT_MODEL_PATH.read_text())
    doc["factors"]["nps"]["market"] = {"half_life_days": 10}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigurationError, match="exactly one of"):
        load_model(path)


def test_a_history_file_keeps_market_events_as_news_not_accounts(tmp_path: Path) -> None:
    from shared.event_files import load_events

    account = {
        "event_id": "s-1",
        "account_id": "acc-1",
        "type": "session_started",
        "schema_version": 1,
        "occurred_at": NOW.isoformat(),
        "user_id": "u1",
    }
    path = tmp_path / "events.jsonl"
    path.write_bytes(market_event() + b"\n" + orjson.dumps(account) + b"\n")
    history = load_events(path)
    assert [f.account_id for f in history.facts] == ["acc-1"]
    assert [(n.event_id, n.topic, n.impact) for n in history.news] == [
        ("news-1", "regulatory_change", -0.8)
    ]
    assert history.news[0].scope == (("industry", frozenset({"fintech"})),)


def test_a_news_item_refuses_what_no_market_event_holds() -> None:
    for data in (
        {"scope": {"planet": ["mars"]}, "topic": "t", "impact": 0.5},
        {"scope": {}, "topic": "t", "impact": 0.5},
        {"scope": {"tier": ["growth"]}, "topic": "t", "impact": 3},
    ):
        with pytest.raises(ValueError, match="not a market event"):
            NewsItem.of("x", 0.0, data)

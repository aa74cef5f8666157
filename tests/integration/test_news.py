"""Market news through the real scorer: stored once, applied to the accounts it concerns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import yaml
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scorer import news as news_module
from services.scorer.consume import Scorer
from shared.config import DEFAULT_MODEL_PATH, Settings
from shared.scoring.model import load_model
from tests.support.infra import running
from tests.support.kafka_io import header, read_topic
from tests.support.signals import (
    health_documents,
    produce_signals,
    signal_of,
    simulated_signals,
    wait_consumed,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_market_news_moves_the_accounts_it_concerns_and_no_other(
    settings: Settings, engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(news_module, "NEWS_WINDOW", 1)  # an account a window: several windows
    doc = yaml.safe_load(DEFAULT_MODEL_PATH.read_text())
    doc["factors"]["market_news"] = {
        "group": "market",
        "description": "news about the account's industry, region or tier",
        "market": {"half_life_days": 30},
        "transform": {"piecewise": [[-1, 0], [0, 50], [1, 100]]},
    }
    doc["objectives"]["churn_risk"]["factors"]["market_news"] = 4
    doc["objectives"]["churn_risk"]["groups"]["market"] = 0.3
    path = tmp_path / "market.yaml"
    path.write_text(yaml.safe_dump(doc))
    model = load_model(path)
    now = datetime.now(UTC)
    signals = simulated_signals(12, 30, seed=8, end=now - timedelta(hours=1))
    industry = {
        s.account_id: s.data["industry"] for s in signals if s.kind == "account_profile_updated"
    }
    target = industry["acc-000000"]
    concerned = {a for a, i in industry.items() if i == target}
    assert 0 < len(concerned) < len(industry)  # some accounts of other industries to compare
    news = signal_of(
        {
            "event_id": "news-eu-rules",
            "type": "market_event",
            "schema_version": 1,
            "occurred_at": (now - timedelta(minutes=5)).isoformat(),
            "scope": {"industry": target},
            "topic": "regulatory_change",
            "impact": -1,
            "title": "New rules",
        },
        now,
    )
    total = await produce_signals(settings, signals)
    scorer = Scorer(settings, engine, registry=CollectorRegistry(), models={"active": model})
    async with running(scorer):
        await wait_consumed(engine, settings, total)
        await scorer.sweep()
        before = await _churn_scores(settings, engine)
        # a re-delivery, and a signal no ingest would make (a scope of no known attribute): it is
        # dead-lettered alone, the rest goes on
        forged = news.model_copy(
            update={"signal_id": "forged", "data": {**news.data, "scope": {"planet": ["mars"]}}}
        )
        total += await produce_signals(settings, [news, forged, news])
        await wait_consumed(engine, settings, total)
        await scorer.sweep()  # the news reaches the accounts it concerns
        after = await _churn_scores(settings, engine)
        await scorer.sweep()  # nothing new: no account made due again
        assert scorer.metrics.news_rescheduled._value.get() == len(concerned)  # once only
        async with engine.connect() as conn:
            stored = await conn.scalar(text("SELECT count(*) FROM market_news"))
            applied = set(await conn.scalars(text("SELECT news_applied FROM consumer_offsets")))
            history = list(
                await conn.execute(
                    text(
                        "SELECT account_id, signal_ids FROM score_history "
                        "WHERE objective = 'churn_risk' AND cause = 'time'"
                    )
                )
            )
    assert stored == 1 and applied == {1}
    [dead] = await read_topic(settings, settings.kafka.topics.dlq, expect=1)
    assert (header(dead, "reason"), orjson.loads(dead.value)["signal_id"]) == (
        "scoring_failed",
        "forged",
    )
    for account_id, (score, explanation) in after.items():
        factor = {f["factor"]: f for f in explanation["factors"]}["market_news"]
        if account_id in concerned:
            assert factor["status"] == "ok" and factor["sub_score"] == pytest.approx(0, abs=0.1)
            assert [(n["event_id"], n["title"]) for n in explanation["news"]] == [
                ("news-eu-rules", "New rules")
            ]
            assert score < before[account_id][0]
        else:
            assert factor["status"] == "missing" and "news" not in explanation
            assert (score, explanation) == before[account_id]
    # the history says why: the news is among the causes of each concerned account's drop
    assert {a for a, causes in history if "news-eu-rules" in causes} == concerned


async def _churn_scores(settings: Settings, engine: AsyncEngine) -> dict[str, tuple[float, dict]]:  # type: ignore[type-arg]
    """Each account's churn score and its explanation, as the API derives it."""
    async with engine.connect() as conn:
        accounts = list(await conn.scalars(text("SELECT account_id FROM accounts")))
    scores = {}
    for account_id, document in (await health_documents(settings.database, accounts)).items():
        [churn] = [
            o
            for o in document["objectives"]
            if o["objective"] == "churn_risk" and o["model_role"] == "active"
        ]
        scores[account_id] = (churn["score"], {k: churn[k] for k in EXPLANATION if k in churn})
    return scores


EXPLANATION = ("weighted_score", "factors", "caps", "overrides", "news")

"""Outcomes from the stream and the API, and the live model's quality measured against them:
a simulated customer base scored live over 24 days (the scorer's clock moved along with the
stream), its cancellations recorded by the scorer, a CRM's churn told through the stream and
corrected, another CRM churn and a voided cancellation by the API; then the figures the
scorer stores, serves and exports, against a hand computation from the score history the
scorer wrote."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api.app import create_app
from services.api.auth import hash_token
from services.scorer.consume import Scorer
from shared.config import DEFAULT_MODEL_PATH, ApiToken, QualitySettings, Settings
from shared.events import Signal
from tests.support.pipeline import churn_mismatches
from tests.support.signals import (
    produce_signals,
    running_scorer,
    signal_of,
    simulated_signals,
    wait_consumed,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

WRITER, READER = "outcomes-writer-token", "outcomes-reader-token"
DAYS, HORIZON, WINDOW = 24, 7, 14
DAY = 86_400.0


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def calibrated(tmp_path: Path) -> Path:
    """The default model, its churn score stating P(churn within 7 days)."""
    document = yaml.safe_load(DEFAULT_MODEL_PATH.read_text())
    document["objectives"]["churn_risk"]["calibration"] = {
        "horizon_days": HORIZON,
        "intercept": 0.5,
        "slope": -6.0,
    }
    path = tmp_path / "calibrated.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def configured(settings: Settings, tmp_path: Path) -> Settings:
    tokens = [
        ApiToken(name="crm-sync", sha256=hash_token(WRITER), scopes=["read", "write"]),
        ApiToken(name="reader", sha256=hash_token(READER), scopes=["read"]),
    ]
    quality = QualitySettings(window_days=WINDOW, step_days=1, horizon_days=HORIZON)
    return settings.model_copy(
        update={
            "api": settings.api.model_copy(update={"tokens": tokens}),
            "scorer": settings.scorer.model_copy(
                update={"model_path": calibrated(tmp_path), "quality": quality}
            ),
        }
    )


def reference(
    history: list[Any], churns: dict[str, list[float]], end: float
) -> tuple[list[tuple[str, float, float, bool]], list[float]]:
    """The samples the definition gives (account, score, probability, churned within the
    horizon), each account's score at a cut being its last history point at or before it,
    and the lead times of the window's churns."""
    points: dict[str, list[Any]] = defaultdict(list)
    for row in history:
        points[row.account_id].append(row)
    samples = []
    for k in range(int(WINDOW // 1), -1, -1):
        cut = end - HORIZON * DAY - k * DAY
        for account, rows in points.items():
            before = [r for r in rows if r.seconds <= cut]
            if not before or any(t <= cut for t in churns.get(account, ())):
                continue  # no score yet, or churned (nobody here comes back)
            churned = any(cut < t <= cut + HORIZON * DAY for t in churns.get(account, ()))
            samples.append((account, before[-1].new_score, before[-1].probability, churned))
    leads = []
    for account, times in churns.items():
        for churned in times:
            if churned < end - WINDOW * DAY:
                continue
            entered = churned
            for row in reversed([r for r in points[account] if r.seconds < churned]):
                if row.new_band != "at_risk":
                    break
                entered = float(row.seconds)
            leads.append((churned - entered) / DAY)
    return samples, leads


def pairwise_auc(samples: list[tuple[str, float, float, bool]]) -> float:
    pairs = [(a, b) for a in samples if a[3] for b in samples if not b[3]]
    right = sum(1.0 if a[1] < b[1] else 0.5 if a[1] == b[1] else 0.0 for a, b in pairs)
    return right / len(pairs)


@dataclass
class Story:
    """What the steps share: the world streamed, its churns, and who the CRM speaks of."""

    settings: Settings
    engine: AsyncEngine
    scorer: Scorer
    clock: Clock
    signals: list[Signal]
    end: datetime
    produced: int = 0
    survivors: list[str] = field(default_factory=list)
    mistaken: str = ""  # the cancellation voided through the API

    @property
    def cancellations(self) -> dict[str, Signal]:
        return {s.signal_id: s for s in self.signals if s.kind == "subscription_cancelled"}

    async def produce(self, signals: list[Signal]) -> None:
        self.produced += await produce_signals(self.settings, signals)
        await wait_consumed(self.engine, self.settings, self.produced)


async def test_outcomes_from_the_stream_and_the_api_judge_the_live_model(
    settings: Settings, engine: AsyncEngine, tmp_path: Path
) -> None:
    settings = configured(settings, tmp_path)
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    start = end - timedelta(days=DAYS)
    # a world of 90 days (its accounts churn from their second month), its last 24 streamed
    signals = [s for s in simulated_signals(60, 90, seed=2, end=end) if s.occurred_at >= start]
    clock = Clock(start)
    async with running_scorer(settings, engine, clock=clock) as scorer:
        story = Story(settings, engine, scorer, clock, signals, end)
        await streamed_live_two_days_at_a_time(story, start)
        await a_crm_tells_a_churn_through_the_stream_then_corrects_it(story)
        await every_cancellation_is_recorded_once_at_its_time(story)
        app = create_app(settings)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api,
        ):
            await the_api_records_once_voids_for_audit_and_refuses_what_is_wrong(story, api)
            served = await the_scorer_measures_and_the_api_serves_it(story, api)
    await the_figures_match_a_hand_computation(story, served)
    await the_chaos_suites_check_sees_a_missing_churn(story)


async def streamed_live_two_days_at_a_time(story: Story, start: datetime) -> None:
    """The scorer's clock moves with the stream."""
    for day in range(0, DAYS, 2):
        until = start + timedelta(days=day + 2)
        story.clock.now = until
        await story.produce(
            [s for s in story.signals if until - timedelta(days=2) <= s.occurred_at < until]
        )
    churned = {s.account_id for s in story.cancellations.values()}
    story.survivors = sorted({s.account_id for s in story.signals} - churned)


async def a_crm_tells_a_churn_through_the_stream_then_corrects_it(story: Story) -> None:
    """An outcomes topic: HubSpot says deal-7 churned 12 days ago, then 11."""
    end = story.end
    told = [
        signal_of(
            {
                "event_id": f"hubspot-{k}",
                "account_id": story.survivors[1],
                "occurred_at": (end - timedelta(days=day)).isoformat(),
                "type": "outcome_recorded",
                "schema_version": 1,
                "outcome": "churn",
                "system": "HubSpot",
                "outcome_id": "deal-7",
            },
            end,
        )
        for k, day in ((1, 12), (2, 11))
    ]
    await story.produce(told)
    async with story.engine.connect() as conn:
        crm = (await conn.execute(text("SELECT * FROM outcomes WHERE source = 'hubspot'"))).one()
    assert (crm.outcome_id, crm.account_id, crm.outcome, crm.at) == (
        "deal-7",
        story.survivors[1],
        "churn",
        end - timedelta(days=11),
    )


async def every_cancellation_is_recorded_once_at_its_time(story: Story) -> None:
    """And nothing else the simulator does is an outcome; the counter agrees."""
    cancellations = story.cancellations
    async with story.engine.connect() as conn:
        stream = {
            r.outcome_id: r
            for r in await conn.execute(text("SELECT * FROM outcomes WHERE source = 'stream'"))
        }
    assert {i: (r.account_id, r.outcome, r.at) for i, r in stream.items()} == {
        i: (s.account_id, "churn", s.occurred_at) for i, s in cancellations.items()
    }
    counted = story.scorer.metrics.outcomes.labels("churn", "stream")._value.get()
    assert counted == len(cancellations)
    assert len(cancellations) >= 4, "the simulated base needs churns to judge a model by"


async def the_api_records_once_voids_for_audit_and_refuses_what_is_wrong(
    story: Story, api: httpx.AsyncClient
) -> None:
    writer = {"Authorization": f"Bearer {WRITER}"}
    crm_churn = {
        "account_id": story.survivors[0],
        "outcome": "churn",
        "at": (story.end - timedelta(days=10)).isoformat(),
        "source": "crm",
        "outcome_id": "opp-1",
        "note": "told us on the renewal call",
    }
    first = await api.post("/v1/outcomes", json=crm_churn, headers=writer)
    assert first.status_code == 201, first.text
    assert first.json()["recorded_by"] == "crm-sync"
    again = await api.post("/v1/outcomes", json=crm_churn, headers=writer)
    assert again.status_code == 200 and again.json() == first.json()  # once
    renewal = {"account_id": story.survivors[0], "outcome": "renewal", "at": story.end.isoformat()}
    made = await api.post("/v1/outcomes", json=renewal, headers=writer)
    assert made.status_code == 201 and made.json()["source"] == "api"
    repeat = await api.post("/v1/outcomes", json=renewal, headers=writer)
    assert repeat.status_code == 200  # no id given: one is made of what it says
    assert repeat.json()["outcome_id"] == made.json()["outcome_id"]
    # a cancellation made by mistake: voided, kept for audit, no longer counted
    story.mistaken = mistaken = sorted(story.cancellations)[0]
    voided = await api.delete(
        f"/v1/outcomes/stream/{mistaken}",
        params={"reason": "cancelled by mistake, reinstated"},
        headers=writer,
    )
    assert voided.status_code == 204
    listed = await api.get("/v1/outcomes", params={"source": "stream"}, headers=writer)
    assert mistaken not in {o["outcome_id"] for o in listed.json()["items"]}
    audit = await api.get(
        "/v1/outcomes", params={"source": "stream", "voided": "true"}, headers=writer
    )
    row = next(o for o in audit.json()["items"] if o["outcome_id"] == mistaken)
    assert row["voided_by"] == "crm-sync" and row["void_reason"].startswith("cancelled")
    # bad requests get problem+json
    for body, code in (
        ({**crm_churn, "source": "stream"}, 422),
        ({**crm_churn, "account_id": "nobody"}, 404),
        ({**crm_churn, "at": (story.end + timedelta(days=9)).isoformat()}, 422),
        ({**crm_churn, "outcome": "Churn!"}, 422),
    ):
        refused = await api.post("/v1/outcomes", json=body, headers=writer)
        assert refused.status_code == code, (body, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"
    reader = {"Authorization": f"Bearer {READER}"}
    assert (await api.post("/v1/outcomes", json=crm_churn, headers=reader)).status_code == 403


async def the_scorer_measures_and_the_api_serves_it(
    story: Story, api: httpx.AsyncClient
) -> dict[str, Any]:
    story.clock.now = story.end
    quality = story.scorer.relay.quality
    await quality.refresh(owner=True)  # as the relay does: the measurement is started
    assert quality.measuring is not None
    await quality.measuring
    served = await api.get("/v1/models/quality", headers={"Authorization": f"Bearer {READER}"})
    assert served.status_code == 200, served.text
    body: dict[str, Any] = served.json()
    return body


async def the_figures_match_a_hand_computation(story: Story, served: dict[str, Any]) -> None:
    """Every figure against the definition, computed here from the history the scorer wrote;
    and the gauges the alerts read."""
    end = story.end
    churns: dict[str, list[float]] = defaultdict(list)
    for signal_id, s in story.cancellations.items():
        if signal_id != story.mistaken:
            churns[s.account_id].append(s.occurred_at.timestamp())
    churns[story.survivors[0]].append((end - timedelta(days=10)).timestamp())
    churns[story.survivors[1]].append((end - timedelta(days=11)).timestamp())
    async with story.engine.connect() as conn:
        history = list(
            await conn.execute(
                text(
                    "SELECT account_id, extract(epoch FROM at) AS seconds, new_score, probability,"
                    " new_band FROM score_history WHERE objective = 'churn_risk'"
                    " AND model_role = 'active' AND new_score IS NOT NULL ORDER BY at, id"
                )
            )
        )
        today = list(
            await conn.execute(
                text(
                    "SELECT score, probability FROM scores WHERE objective = 'churn_risk'"
                    " AND model_role = 'active' AND score IS NOT NULL"
                )
            )
        )
    samples, leads = reference(history, churns, end.timestamp())
    adverse_accounts = {s[0] for s in samples if s[3]}
    assert len(adverse_accounts) >= 3, "too few churns inside the window to judge by"

    item = next(
        i for i in served["items"] if (i["objective"], i["model_role"]) == ("churn_risk", "active")
    )
    latest = item["latest"]
    assert (item["outcome"], item["horizon_days"], item["window_days"]) == ("churn", 7, 14)
    assert latest["samples"] == len(samples)
    assert latest["accounts"] == len({s[0] for s in samples})
    assert latest["adverse"] == sum(s[3] for s in samples)
    assert latest["adverse_accounts"] == len(adverse_accounts)
    assert latest["roc_auc"] == pytest.approx(pairwise_auc(samples))
    assert latest["roc_auc_low"] < latest["roc_auc"] < latest["roc_auc_high"]
    brier = statistics.fmean((p - churned) ** 2 for _, _, p, churned in samples)
    assert latest["brier"] == pytest.approx(brier)
    assert latest["churns"] == len(leads)
    assert latest["lead_time_days"] == pytest.approx(statistics.median(leads))
    assert latest["warned"] == sum(lead > 0 for lead in leads)
    # what today's probabilities imply, by the definition over every ordered pair
    num = den = 0.0
    for i, (si, pi) in enumerate(today):
        for j, (sj, pj) in enumerate(today):
            if i != j:
                den += pi * (1 - pj)
                num += pi * (1 - pj) * (1.0 if si < sj else 0.5 if si == sj else 0.0)
    assert latest["expected_roc_auc"] == pytest.approx(num / den)
    assert latest["expected_brier"] == pytest.approx(
        statistics.fmean(p * (1 - p) for _, p in today)
    )
    assert sum(b["samples"] for b in item["reliability"]) == len(samples)
    # the expansion objective foresees expansion and states no probability
    expansion = next(i for i in served["items"] if i["objective"] == "expansion")
    assert expansion["outcome"] == "expansion" and expansion["latest"]["brier"] is None
    labels = {"objective": "churn_risk", "model_role": "active"}
    gauges = story.scorer.relay.quality.metrics
    assert gauges.figures["roc_auc"].labels(**labels)._value.get() == pytest.approx(
        latest["roc_auc"]
    )
    assert gauges.adverse.labels(**labels)._value.get() == len(adverse_accounts)


async def the_chaos_suites_check_sees_a_missing_churn(story: Story) -> None:
    """tests/support/pipeline.py's check of the stream's churns holds here, and fails when a
    churn is missing."""
    assert await churn_mismatches(story.engine, story.signals) == []
    async with story.engine.begin() as conn:
        await conn.execute(
            text("DELETE FROM outcomes WHERE source = 'stream' AND outcome_id = :i"),
            {"i": story.mistaken},
        )
    assert await churn_mismatches(story.engine, story.signals) == [
        f"churn of {story.mistaken} not recorded"
    ]

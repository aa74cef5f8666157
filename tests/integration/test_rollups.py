"""A parent's band change is an event like any other: queued by the batch that wrote a child's
score, rolled up by the scorers' relay from the committed scores, told once."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api.routes.children import read_children
from services.scorer.rollups import ROLLUP_CHANGED, Rollups
from shared.config import Settings
from shared.db import create_engine
from shared.webhooks import Change
from tests.support.kafka_io import read_topic
from tests.support.pipeline import rollup_mismatches
from tests.support.samples import valid_events
from tests.support.signals import (
    MODEL,
    produce_signals,
    running_scorer,
    score_and_store,
    signal_of,
    wait_consumed,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOT = Path(__file__).resolve().parents[2]
CHILDREN = {"acme-emea": "100", "acme-us": "300", "acme-apac": "0"}


def live_events(now: datetime, child: str, *kinds: str) -> list[Any]:
    """The child's sample events of `kinds`, as of `now` (live: no catch-up holds them), its
    profile naming acme its parent."""
    events = valid_events(now, child)
    events["account_profile_updated"]["parent_account_id"] = "acme"
    events["subscription_created"]["mrr"] = CHILDREN.get(child, "0")
    return [signal_of({**events[k], "occurred_at": now.isoformat()}, now) for k in kinds]


def family(now: datetime, *kinds: str) -> list[Any]:
    """Every child's events of `kinds` (live_events)."""
    return [s for child in CHILDREN for s in live_events(now, child, *kinds)]


async def rollups_of(engine: AsyncEngine, parent: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT * FROM parent_rollups WHERE parent_account_id = :p"), {"p": parent}
        )
        return {r.objective: r for r in rows}


async def due(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list(await conn.scalars(text("SELECT parent_account_id FROM parents_due")))


async def test_a_parents_band_change_reaches_the_changes_topic_once(
    settings: Settings, engine: AsyncEngine
) -> None:
    now = datetime.now(UTC)
    first = family(
        now,
        "account_profile_updated",
        "subscription_created",
        "seats_used_reported",
        "session_started",
        "feature_used",
    )
    cancelled = family(now + timedelta(seconds=1), "subscription_cancelled")
    async with running_scorer(settings, engine) as scorer:
        await wait_consumed(engine, settings, await produce_signals(settings, first))
        deadline = time.monotonic() + 30
        while "churn_risk" not in (before := await rollups_of(engine, "acme")):
            assert time.monotonic() < deadline, "acme not rolled up in 30 s"
            await asyncio.sleep(0.1)
        assert before["churn_risk"].band != "at_risk", "the test needs a band to fall from"
        assert before["churn_risk"].children == 3
        total = len(first) + await produce_signals(settings, cancelled)
        await wait_consumed(engine, settings, total)
        deadline = time.monotonic() + 30
        while (after := await rollups_of(engine, "acme"))["churn_risk"].band != "at_risk":
            assert time.monotonic() < deadline, f"acme still {after['churn_risk'].band} after 30 s"
            await asyncio.sleep(0.1)
        async with engine.connect() as conn:
            outbox = await conn.scalar(text("SELECT count(*) FROM outbox"))
        await scorer.relay.refresh_outbox()
        assert scorer.metrics.parents_due._value.get() == len(await due(engine)) == 0
        records = await read_topic(settings, settings.kafka.topics.changes, expect=outbox)
    schema = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())
    payload = schema["channels"]["changes"]["messages"]["healthChanged"]["payload"]
    for record in records:  # the children's own changes, and the parent's, as documented
        jsonschema.validate(orjson.loads(record.value), payload)
    changes = [Change.parse(r.value) for r in records]
    rolled = [c for c in changes if c.type == ROLLUP_CHANGED]
    # cancelled, each child is capped at risk; their MRR is 0 now, so they weigh the same
    assert [(c.account_id, c.objective, c.old_band, c.new_band) for c in rolled] == [
        ("acme", "churn_risk", before["churn_risk"].band, "at_risk")
    ]
    data = orjson.loads(rolled[0].payload)["data"]
    assert data["children"] == 3 and data["weakest"]["account_id"] in CHILDREN
    assert data["next_action"] is None  # keyed as an account's change is
    assert data["new_score"] == pytest.approx(after["churn_risk"].score)
    assert "acme" in data["text"] and "at_risk" in data["text"]
    served = await read_children(engine, MODEL, "acme", "churn_risk", 10)
    assert served is not None
    assert [(r.score, r.band) for r in served.rollups] == [(after["churn_risk"].score, "at_risk")]
    assert await due(engine) == []


async def test_rollups_keep_the_band_within_hysteresis_wait_for_a_catch_up_and_tell_once(
    settings: Settings, engine: AsyncEngine
) -> None:
    now = datetime.now(UTC)
    signals = family(now, "account_profile_updated", "subscription_created")
    await score_and_store(engine, [*signals, *live_events(now, "alone", "session_started")], [now])
    assert await due(engine) == ["acme"]  # the batch queued the parent, and only it

    def rollups() -> Rollups:
        return Rollups(create_engine(settings.database), lambda: MODEL, "changes", lambda: now)

    one, two = rollups(), rollups()
    assert await one.backlog() == 1
    assert await asyncio.gather(one.roll_up_due(), two.roll_up_due()) == [0, 0]  # first: news
    assert await one.backlog() == 0
    assert set(await rollups_of(engine, "acme")) == set(MODEL.objectives)
    assert await due(engine) == []

    async def set_scores(score: float, held: bool = False) -> None:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE scores SET score = :s, held = CAST(:h AS JSON)"
                    " WHERE account_id LIKE 'acme-%' AND objective = 'churn_risk'"
                ),
                {"s": score, "h": '{"band": "healthy"}' if held else None},
            )
            await conn.execute(text("INSERT INTO parents_due VALUES ('acme', false)"))

    await set_scores(80.0)
    await one.roll_up_due()
    assert (await rollups_of(engine, "acme"))["churn_risk"].band == "healthy"
    await set_scores(68.0)  # below healthy's 70, not by the hysteresis of 3
    assert await one.roll_up_due() == 0
    assert (await rollups_of(engine, "acme"))["churn_risk"].band == "healthy"
    await set_scores(20.0, held=True)  # a catch-up: kept up to date, told at its end
    assert await one.roll_up_due() == 0 and await due(engine) == []
    during = (await rollups_of(engine, "acme"))["churn_risk"]
    assert (during.score, during.band, during.told_band) == (20.0, "at_risk", "healthy")
    await set_scores(20.0)  # the end of the catch-up writes the child, which queues acme
    told = await asyncio.gather(one.roll_up_due(), two.roll_up_due())
    assert sorted(told) == [0, 1]
    async with engine.connect() as conn:
        payloads = list(await conn.scalars(text("SELECT payload FROM outbox")))
    (change,) = [Change.parse(p) for p in payloads]
    assert (change.type, change.old_band, change.new_band) == (ROLLUP_CHANGED, "healthy", "at_risk")
    served = await read_children(engine, MODEL, "acme", "churn_risk", 10)
    assert served is not None and served.rollups[0].band == "at_risk"
    for r in (one, two):
        await r.engine.dispose()
    # the chaos suite's check of every rollup against the final scores sees a wrong one
    assert await rollup_mismatches(engine, time.monotonic() + 10) == []
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE parent_rollups SET score = score + 1 WHERE objective = 'churn_risk'")
        )
    (wrong,) = await rollup_mismatches(engine, time.monotonic() + 10) or []
    assert wrong.startswith("rollup acme/churn_risk: 21.0 at_risk, not")

"""The scorer against the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cloudevents.core.bindings.kafka import KafkaMessage, from_structured
from cloudevents.core.formats.json import JSONFormat
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scorer import store
from services.scorer.rollups import ROLLUP_CHANGED
from services.scorer.sweep import Rescheduling
from services.simulator.world import GROUP
from shared.config import DEFAULT_MODEL_PATH, Settings
from shared.db import AccountRow, AccountStateRow, create_engine, ensure_migrated
from shared.errors import DatabaseNotMigrated, FencedOut
from shared.events import Signal
from shared.scoring.model import Model
from shared.scoring.state import AccountState
from tests.support.infra import healthscore_argv, settings_env
from tests.support.kafka_io import read_topic
from tests.support.signals import (
    MODEL,
    consumed,
    health_documents,
    mismatches,
    produce_signals,
    running_scorer,
    score_and_store,
    signal_of,
    simulated_signals,
    switch_model,
    wait_consumed,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_refuses_an_unmigrated_database(settings: Settings, infra) -> None:  # type: ignore[no-untyped-def]
    from tests.support.infra import admin_sql

    await admin_sql(infra.database, f'CREATE DATABASE "{settings.database.name}_empty"')
    empty = create_engine(settings.database, name=f"{settings.database.name}_empty")
    try:
        with pytest.raises(DatabaseNotMigrated, match="run `healthscore migrate`"):
            await ensure_migrated(empty)
    finally:
        await empty.dispose()
        await admin_sql(
            infra.database, f'DROP DATABASE "{settings.database.name}_empty" WITH (FORCE)'
        )


async def test_signals_become_scores_history_and_cloudevents(
    settings: Settings, engine: AsyncEngine
) -> None:
    signals = simulated_signals(60, 45, seed=2, duplicate_share=0.05)
    total = await produce_signals(settings, signals)
    settings = settings.model_copy(
        update={"scorer": settings.scorer.model_copy(update={"replay_hold_seconds": 1})}
    )
    async with running_scorer(settings, engine) as scorer:
        await wait_consumed(engine, settings, total)
        assert await mismatches(engine, signals) == []
        await asyncio.sleep(1.5)
        await scorer.sweep()  # sends the changes held while catching up on the past
        unique = len({s.signal_id for s in signals})
        assert scorer.metrics.applied._value.get() == unique
        assert scorer.metrics.duplicates._value.get() == total - unique
        async with engine.connect() as conn:
            backlog = 1
            for _ in range(100):
                backlog = await conn.scalar(
                    text("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
                )
                if not backlog:
                    break
                await asyncio.sleep(0.1)
                await conn.rollback()
            assert backlog == 0
            outbox = await conn.scalar(text("SELECT count(*) FROM outbox"))
            scores = list(
                await conn.execute(
                    text("SELECT account_id, objective, score, band, model_version FROM scores")
                )
            )
            history = list(
                await conn.execute(
                    text(
                        "SELECT account_id, objective, cause, top_movers, old_band, new_band, "
                        "signal_ids FROM score_history"
                    )
                )
            )
    accounts = {s.account_id for s in signals}
    assert {(r.account_id, r.objective) for r in scores} == {
        (a, o) for a in accounts for o in ("churn_risk", "expansion")
    }
    documents = await health_documents(settings.database, sorted(accounts))
    for row in scores:
        assert row.model_version == MODEL.version
        [explanation] = [
            o for o in documents[row.account_id]["objectives"] if o["objective"] == row.objective
        ]
        factors = explanation["factors"]
        assert {f["factor"] for f in factors} == set(MODEL.objectives[row.objective].factors)
        ok = [f for f in factors if f["status"] == "ok"]
        weighted = explanation["weighted_score"]
        assert sum(f["contribution"] for f in ok) == pytest.approx(weighted, abs=1e-3)
        caps = [c["max"] for c in explanation["caps"]]
        assert row.score == pytest.approx(min([weighted, *caps]), abs=1e-3)
    assert len(documents) == len(accounts)
    for document in documents.values():
        sources = document["freshness"]
        assert set(sources) == {"usage", "support", "billing"}
        for source in sources.values():  # as the API shows it; no data is stale data
            if source["last_data_at"] is None:
                assert source["stale"] is True
            else:
                assert source["last_data_at"].tzinfo is not None
    assert len(history) < total / 5  # history is of changes, not of events
    first = [h for h in history if h.old_band is None]
    assert len(first) == len(scores)  # every account's first score is recorded once
    moved = [h for h in history if h.old_band is not None]
    assert moved and [h for h in moved if not (h.top_movers and h.signal_ids)] == []

    events = await read_topic(settings, settings.kafka.topics.changes, expect=outbox)
    assert outbox > 0 and len(events) == outbox
    parsed = [
        from_structured(KafkaMessage(headers={}, key=e.key, value=e.value), JSONFormat())
        for e in events
    ]
    assert len({e.get_id() for e in parsed}) == len(parsed)
    newest = max(s.occurred_at for s in signals)
    groups = {f"acc-{i:06d}" for i in range(0, 60, GROUP)}
    advised = 0
    for record, event in zip(events, parsed, strict=True):
        assert event.get_specversion() == "1.0"
        # the stream ended an hour ago: every change is the net of a catch-up, and says so
        assert event.get_extension("replay") is True
        if event.get_type() == ROLLUP_CHANGED:  # a group's, rolled up from its accounts
            data = event.get_data()
            assert isinstance(data, dict) and data["children"] and data["weakest"]
            assert record.key.decode() in groups and data["account_id"] in groups
            continue
        assert event.get_time() <= newest < datetime.fromisoformat(event.get_extension("scoredat"))
        assert event.get_type() in {
            "io.account-health.band.changed",
            "io.account-health.score.dropped",
        }
        assert event.get_subject() == record.key.decode()
        data = event.get_data()
        assert isinstance(data, dict)
        assert data["model_version"] == MODEL.version
        assert data["objective"] in ("churn_risk", "expansion")
        assert data["top_movers"] and data["signal_ids"]
        action = data["next_action"]  # what would help most, with the model's advice
        assert action is None or action["advice"] == MODEL.factors[action["factor"]].advice
        advised += action is not None
        if event.get_type().endswith("band.changed"):
            assert data["old_band"] != data["new_band"]
    assert advised, "no change event said what would help"


async def test_a_stale_writer_is_fenced_out(settings: Settings, engine: AsyncEngine) -> None:
    group, now = settings.scorer.group_id, datetime.now(UTC)
    await store.write_batch(engine, group, store.Batch(fences={("t", 0): (None, 10)}), now)
    with pytest.raises(FencedOut):  # a second "first" writer
        await store.write_batch(engine, group, store.Batch(fences={("t", 0): (None, 5)}), now)
    await store.write_batch(engine, group, store.Batch(fences={("t", 0): (10, 20)}), now)
    with pytest.raises(FencedOut):  # a writer that still believes the offset is 10
        await store.write_batch(
            engine,
            group,
            store.Batch(
                fences={("t", 0): (10, 30)},
                profiles=[{"account_id": "x", "partition": 0, "updated_at": now}],  # type: ignore[typeddict-item]
            ),
            now,
        )
    with pytest.raises(FencedOut):  # one of two fences holds: neither partition moves on
        await store.write_batch(
            engine,
            group,
            store.Batch(
                fences={("t", 0): (20, 40), ("t", 1): (7, 9)},
                profiles=[{"account_id": "y", "partition": 1, "updated_at": now}],  # type: ignore[typeddict-item]
            ),
            now,
        )
    assert await store.load_offsets(engine, group, [("t", 0), ("t", 1)]) == {("t", 0): 20}
    async with engine.connect() as conn:  # the fenced batches wrote nothing
        assert await conn.scalar(text("SELECT count(*) FROM accounts")) == 0


async def test_silence_alone_moves_an_account_to_at_risk(
    settings: Settings, engine: AsyncEngine
) -> None:
    now = [datetime.now(UTC)]
    signals = [
        s
        for s in simulated_signals(40, 60, seed=4, end=now[0])
        if s.account_id == "acc-000000" or s.kind == "account_profile_updated"
    ]
    total = await produce_signals(settings, signals)
    async with running_scorer(settings, engine, clock=lambda: now[0]) as scorer:
        await wait_consumed(engine, settings, total)
        async with engine.connect() as conn:
            band = await conn.scalar(
                text(
                    "SELECT band FROM scores WHERE account_id = 'acc-000000' "
                    "AND objective = 'churn_risk'"
                )
            )
        assert band == "healthy"
        now[0] += timedelta(days=45)
        assert await scorer.sweep() >= 1
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT band, score FROM scores WHERE account_id = 'acc-000000' "
                        "AND objective = 'churn_risk'"
                    )
                )
            ).one()
            last = (
                await conn.execute(
                    text(
                        "SELECT cause, old_band, new_band FROM score_history "
                        "WHERE account_id = 'acc-000000' AND objective = 'churn_risk' "
                        "ORDER BY id DESC LIMIT 1"
                    )
                )
            ).one()
        assert row.band == "at_risk"
        assert (last.cause, last.old_band, last.new_band) == ("time", "healthy", "at_risk")
        events = await read_topic(settings, settings.kafka.topics.changes, settle=2.0)
    parsed = [
        from_structured(KafkaMessage(headers={}, key=e.key, value=e.value), JSONFormat())
        for e in events
    ]
    changes = [e.get_data() for e in parsed]
    assert any(
        isinstance(c, dict)
        and c["cause"] == "time"
        and c["new_band"] == "at_risk"
        and c["account_id"] == "acc-000000"
        for c in changes
    )
    silence = [
        e
        for e in parsed
        if isinstance(e.get_data(), dict) and e.get_data()["cause"] == "time"  # type: ignore[index]
    ]
    assert silence and all(e.get_extension("replay") is False for e in silence)  # news
    assert all(e.get_time() == now[0] for e in silence)  # a change of time alone: when scored


SCORER_LOGS = Path(tempfile.gettempdir()) / "healthscore-test-scorers"


def _start_scorer(settings: Settings) -> subprocess.Popen[bytes]:
    """A `healthscore scorer` process, its log in SCORER_LOGS (named by its pid)."""
    env = settings_env(settings)
    env["HEALTHSCORE_SCORER__BATCH_MAX_RECORDS"] = "1000"
    SCORER_LOGS.mkdir(exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=SCORER_LOGS, suffix=".log", delete=False) as log:
        proc = subprocess.Popen(
            healthscore_argv("scorer"), env=env, stderr=log, start_new_session=True
        )
    proc.log_path = log.name  # type: ignore[attr-defined]
    return proc


@pytest.mark.slow
async def test_kill_minus_nine_six_times_matches_the_reference(
    settings: Settings, engine: AsyncEngine
) -> None:
    """The stream arrives in six parts; each part is cut short by a kill -9 at a random point
    of its first half, while it is still arriving, so the kills land while there is work
    however fast the machine. (`make chaos` kills the scorer 20 times under a full
    pipeline.)"""
    signals = simulated_signals(600, 25, seed=7, duplicate_share=0.02)
    assert len(signals) >= 60_000
    rng = random.Random(11)
    size = -(-len(signals) // 6)
    produced, kills, in_flight = 0, 0, 0
    producing: asyncio.Task[int] | None = None
    proc = _start_scorer(settings)
    try:
        for start in range(0, len(signals), size):
            before = await consumed(engine, settings)
            part = signals[start : start + size]
            producing = asyncio.create_task(produce_signals(settings, part))
            point = before + 1 + int(rng.uniform(0.0, 0.5) * len(part))
            await wait_consumed(engine, settings, point, watch=[proc])
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
            produced += await producing
            in_flight += await consumed(engine, settings) < produced
            proc = _start_scorer(settings)
        await wait_consumed(engine, settings, produced, timeout=300, watch=[proc])
    finally:
        if producing is not None and not producing.done():  # a wait that failed: stop sending
            producing.cancel()
            await asyncio.gather(producing, return_exceptions=True)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert kills == 6
    assert in_flight >= 3, f"only {in_flight} of the kills interrupted unfinished work"
    assert await mismatches(engine, signals) == []


@pytest.mark.slow
async def test_a_scorer_joining_and_leaving_matches_the_reference(
    settings: Settings, engine: AsyncEngine
) -> None:
    signals = simulated_signals(300, 20, seed=9)
    chunks = [signals[i::4] for i in range(4)]
    first = _start_scorer(settings)
    second: subprocess.Popen[bytes] | None = None
    produced = 0
    try:
        produced += await produce_signals(settings, chunks[0])
        await wait_consumed(engine, settings, produced, watch=[first])
        second = _start_scorer(settings)  # joins: the partitions are split between the two
        for chunk in chunks[1:3]:
            produced += await produce_signals(settings, chunk)
            await asyncio.sleep(3)
        second.send_signal(signal.SIGTERM)  # leaves: the first takes everything back
        assert second.wait(30) == 0
        produced += await produce_signals(settings, chunks[3])
        await wait_consumed(engine, settings, produced, timeout=180, watch=[first])
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    all_signals: list[Signal] = [s for chunk in chunks for s in chunk]
    assert await mismatches(engine, all_signals) == []


@pytest.mark.slow
async def test_a_model_switch_under_load_rescores_every_account_and_loses_nothing(
    settings: Settings, engine: AsyncEngine
) -> None:
    """A new model promoted while events flow (SIGHUP makes the scorer look at once):
    consumption goes on, every account ends up scored by the new version with a
    `model_change` history row, and state matches the reference."""
    document = yaml.safe_load(DEFAULT_MODEL_PATH.read_text())
    document["name"] = "candidate"
    document["objectives"]["churn_risk"]["groups"] = {"usage": 0.9, "billing": 0.1}
    candidate = Model.model_validate(document)
    signals = sorted(simulated_signals(400, 20, seed=13), key=lambda s: s.occurred_at)
    before, after = signals[: len(signals) * 3 // 5], signals[len(signals) * 3 // 5 :]
    proc = _start_scorer(settings)
    try:
        await wait_consumed(engine, settings, await produce_signals(settings, before), watch=[proc])
        scored_before = await _accounts_with_scores(engine, MODEL.version)
        producing = asyncio.create_task(produce_signals(settings, after))
        await asyncio.sleep(0.2)
        await switch_model(engine, candidate)
        proc.send_signal(signal.SIGHUP)
        await wait_consumed(engine, settings, len(before) + await producing, watch=[proc])
        deadline = asyncio.get_running_loop().time() + 60
        while await _accounts_with_scores(engine, MODEL.version):
            assert asyncio.get_running_loop().time() < deadline, "accounts left on the old model"
            await asyncio.sleep(0.5)
        assert proc.poll() is None, "the scorer restarted"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    accounts = {s.account_id for s in signals}
    assert await _accounts_with_scores(engine, candidate.version) == accounts
    async with engine.connect() as conn:
        switched = {
            r.account_id
            for r in await conn.execute(
                text(
                    "SELECT DISTINCT account_id FROM score_history "
                    "WHERE cause = 'model_change' AND model_version = :v"
                ),
                {"v": candidate.version},
            )
        }
    assert scored_before and switched == scored_before
    assert await mismatches(engine, signals, candidate) == []


async def test_a_sweep_of_more_accounts_than_the_cache_holds_keeps_it_to_its_size(
    settings: Settings, engine: AsyncEngine
) -> None:
    """Every account due at once (news about everyone, a long outage): the sweep re-scores
    them in batches, and the state cache stays at its size between them rather than holding
    every account."""
    settings = settings.model_copy(
        update={
            "scorer": settings.scorer.model_copy(
                update={"state_cache_size": 10, "sweep_batch_size": 25}
            )
        }
    )
    signals = simulated_signals(60, 5, seed=31)
    total = await produce_signals(settings, signals)
    async with running_scorer(settings, engine) as scorer:
        await wait_consumed(engine, settings, total)
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE account_states SET next_review_at = now() - interval '1 h'")
            )
        swept = [await scorer.sweeper.sweep() for _ in range(4)]
        assert len(scorer.cache) <= 10
    assert swept == [25, 25, 10, 0]
    async with engine.connect() as conn:
        due = await conn.scalar(
            text("SELECT count(*) FROM account_states WHERE next_review_at <= now()")
        )
    assert due == 0


async def test_accounts_of_a_partition_without_records_yet_are_swept(
    settings: Settings, engine: AsyncEngine
) -> None:
    """An account stored before its partition ever had a record (imported, or the topic is
    new) is re-scored when due (here by the first sweep, or by the scan for scores of another
    model, which finds it has none, whichever runs first): the scorer stores a starting offset
    for each partition it takes, which fences hold. Before, a partition with none was never
    swept or scanned, and the account stayed unscored."""
    async with engine.begin() as conn:
        await conn.execute(
            insert(AccountRow).values(
                account_id="quiet-1", partition=0, updated_at=datetime.now(UTC)
            )
        )
        await conn.execute(
            insert(AccountStateRow).values(
                account_id="quiet-1",
                partition=0,
                state=AccountState().to_bytes(),
                next_review_at=datetime.now(UTC) - timedelta(hours=1),
                updated_at=datetime.now(UTC),
            )
        )
    scored = text("SELECT count(*) FROM scores WHERE account_id = 'quiet-1'")
    async with running_scorer(settings, engine):
        deadline = asyncio.get_running_loop().time() + 30
        while not await _count(engine, scored):
            assert asyncio.get_running_loop().time() < deadline, "quiet-1 was never scored"
            await asyncio.sleep(0.2)
    async with engine.connect() as conn:
        offsets = set(await conn.scalars(text("SELECT next_offset FROM consumer_offsets")))
    assert offsets == {0}


async def _count(engine: AsyncEngine, query: Any) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(query) or 0)


async def test_a_model_switch_rescores_its_accounts_a_window_at_a_time(
    settings: Settings, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Switching to another model re-scores every account, a window of accounts at a time
    (seven here, so that 60 accounts take nine), each written once: as a model change."""
    monkeypatch.setattr(Rescheduling, "WINDOW", 7)
    document = yaml.safe_load(DEFAULT_MODEL_PATH.read_text())
    document["name"] = "windowed"
    candidate = Model.model_validate(document)
    signals = simulated_signals(60, 5, seed=32)
    total = await produce_signals(settings, signals)
    windows: list[int] = []
    step = Rescheduling.step

    async def counted(self, *args):  # type: ignore[no-untyped-def]
        windows.append(await step(self, *args))
        return windows[-1]

    monkeypatch.setattr(Rescheduling, "step", counted)
    async with running_scorer(settings, engine) as scorer:
        await wait_consumed(engine, settings, total)
        deadline = asyncio.get_running_loop().time() + 60
        while scorer.sweeper.rescheduling.pending:  # the scan on assignment, 7 at a time
            assert asyncio.get_running_loop().time() < deadline, "scan on assignment not over"
            await asyncio.sleep(0.05)
        windows.clear()  # it found nothing to do
        await switch_model(engine, candidate)
        scorer.models.hurry()
        deadline = asyncio.get_running_loop().time() + 60
        while await _accounts_with_scores(engine, MODEL.version):
            assert asyncio.get_running_loop().time() < deadline, "accounts left on the old model"
            await asyncio.sleep(0.2)
        assert scorer.metrics.model_rescheduled._value.get() == 60
    assert len(windows) == 9 and sum(windows) == 60
    assert await _accounts_with_scores(engine, candidate.version) == {s.account_id for s in signals}
    async with engine.connect() as conn:
        switches = await conn.scalar(
            text("SELECT count(*) FROM score_history WHERE cause = 'model_change'")
        )
        scores = await conn.scalar(text("SELECT count(*) FROM scores"))
    assert switches == scores  # one change per score: written once, not again by a sweep


async def _accounts_with_scores(engine: AsyncEngine, version: str) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT DISTINCT account_id FROM scores WHERE model_version = :v"),
            {"v": version},
        )
        return {r.account_id for r in rows}


def _outage_signals(accounts: list[str], now: datetime) -> list[Signal]:
    """An hour of signals that waited out an outage, in event-time order: every account keeps
    using the product; a third cancel and subscribe again (flip and come back), a third only
    cancel (a net change)."""
    raw: list[dict[str, object]] = []

    def emit(account_id: str, minutes_ago: float, kind: str, **fields: object) -> None:
        at = now - timedelta(minutes=minutes_ago)
        raw.append(
            {
                "event_id": f"outage-{account_id}-{kind}-{minutes_ago}",
                "account_id": account_id,
                "occurred_at": at.isoformat(),
                "type": kind,
                "schema_version": 1,
                **fields,
            }
        )

    for i, account_id in enumerate(accounts):
        for minute in range(15, 65, 2):
            emit(account_id, minute + i / 100, "session_started", user_id=f"u{i}")
        if i % 3 < 2:
            emit(account_id, 55, "subscription_cancelled", reason="outage test")
        if i % 3 == 0:
            emit(
                account_id,
                30,
                "subscription_created",
                plan="growth-annual",
                tier="growth",
                mrr="1000",
                currency="USD",
                seats_purchased=10,
            )
    raw.sort(key=lambda e: str(e["occurred_at"]))
    return [signal_of(event, now) for event in raw]


async def test_an_outage_sends_one_net_change_per_account_marked_replay(
    settings: Settings, engine: AsyncEngine
) -> None:
    """An hour's signals waited out an outage. Caught up on in batches of a few accounts each
    (so an account's cancel and its new subscription land in different batches), the changes
    topic hears one net change per account whose band moved, none for an account that came
    back, every one marked replay; the history keeps every step."""
    now = datetime.now(UTC)
    before = simulated_signals(60, 30, seed=12, end=now - timedelta(minutes=70))
    accounts = await score_and_store(engine, before, [now - timedelta(minutes=70)])
    async with engine.connect() as conn:
        heard = {
            (r.account_id, r.objective): r.band
            for r in await conn.execute(text("SELECT account_id, objective, band FROM scores"))
        }
    outage = _outage_signals(accounts, now)
    assert len(outage) > 1500
    total = await produce_signals(settings, outage)
    settings = settings.model_copy(
        update={
            "scorer": settings.scorer.model_copy(
                update={"batch_max_accounts": 7, "replay_hold_seconds": 1}
            )
        }
    )
    async with running_scorer(settings, engine) as scorer:
        await wait_consumed(engine, settings, total)
        await asyncio.sleep(1.5)  # every account has been quiet for the hold
        await scorer.sweep()
        async with engine.connect() as conn:
            final = {
                (r.account_id, r.objective): r.band
                for r in await conn.execute(
                    text("SELECT account_id, objective, band FROM scores WHERE held IS NULL")
                )
            }
            steps = await conn.scalar(
                text(
                    "SELECT count(*) FROM score_history WHERE old_band <> new_band "
                    "AND recorded_at > :t"
                ),
                {"t": now},
            )
            outbox = await conn.scalar(text("SELECT count(*) FROM outbox"))
            caught_up = list(
                await conn.execute(
                    text(
                        "SELECT account_id, objective, at, recorded_at FROM score_history"
                        " WHERE recorded_at > :t AND model_role = 'active' ORDER BY id"
                    ),
                    {"t": now},
                )
            )
        # the catch-up's history says when health changed: at the time of the newest signal
        # behind each point, in order, not when it was scored
        newest = max(s.occurred_at for s in outage)
        assert caught_up and all(h.at <= newest < h.recorded_at for h in caught_up)
        for key in {(h.account_id, h.objective) for h in caught_up}:
            times = [h.at for h in caught_up if (h.account_id, h.objective) == key]
            assert times == sorted(times)
        assert await mismatches(engine, [*before, *outage]) == []
        events = await read_topic(settings, settings.kafka.topics.changes, expect=outbox)
    assert len(final) == len(heard)  # nothing is still held
    moved = {key for key in heard if heard[key] != final[key]}
    flipped_back = {(a, "churn_risk") for a in accounts[::3]}
    assert len(moved & {(a, "churn_risk") for a in accounts[1::3]}) >= 10
    parsed = [
        from_structured(KafkaMessage(headers={}, key=e.key, value=e.value), JSONFormat())
        for e in events
    ]
    assert all(e.get_extension("replay") is True for e in parsed)
    band_changes: dict[tuple[str, str], list[dict[str, object]]] = {}
    for event in parsed:
        data = event.get_data()
        assert isinstance(data, dict)
        assert event.get_time() < now - timedelta(minutes=10)  # the event time it reflects
        if event.get_type() == "io.account-health.band.changed":
            band_changes.setdefault((data["account_id"], data["objective"]), []).append(data)
    assert set(band_changes) == moved
    for key, changes in band_changes.items():
        assert [(c["old_band"], c["new_band"]) for c in changes] == [(heard[key], final[key])]
        assert changes[0]["top_movers"] and changes[0]["signal_ids"]
    # the accounts that came back sent nothing, though their history shows both steps
    came_back = {k for k in flipped_back if heard[k] == final[k] != "at_risk"}
    assert len(came_back) >= 10 and not came_back & set(band_changes)
    assert steps >= 2 * len(came_back)


async def test_a_partition_scanned_to_the_models_served_is_not_scanned_again(
    settings: Settings, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scorer taking a partition scans it for scores of other models only when its offsets
    row does not say that every account is scored by the models it serves: at a million
    accounts a scan reads every score. A write with other models makes the row say nothing."""
    signals = simulated_signals(30, 5, seed=33)
    total = await produce_signals(settings, signals)
    group, topic = settings.scorer.group_id, settings.kafka.topics.signals
    partitions = list(range(settings.kafka.partitions))
    async with running_scorer(settings, engine) as scorer:
        await wait_consumed(engine, settings, total)
        fingerprint = scorer.models.fingerprint()
        deadline = asyncio.get_running_loop().time() + 30
        while scorer.sweeper.rescheduling.pending:
            assert asyncio.get_running_loop().time() < deadline, "the first scan never ended"
            await asyncio.sleep(0.1)
    marks = await store.models_scanned(engine, group, topic, partitions)
    assert marks == dict.fromkeys(partitions, fingerprint)

    windows = []
    scan = store.outdated_accounts

    async def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        windows.append(await scan(*args, **kwargs))
        return windows[-1]

    monkeypatch.setattr(store, "outdated_accounts", counted)
    async with running_scorer(settings, engine) as scorer:  # a restart
        deadline = asyncio.get_running_loop().time() + 30
        while (
            len(scorer.partitions.owned()) < len(partitions) or scorer.sweeper.rescheduling.pending
        ):
            assert asyncio.get_running_loop().time() < deadline, "partitions not taken"
            await asyncio.sleep(0.1)
        assert scorer.metrics.sweeps._value.get() >= 1  # it went between batches: no scan
        assert windows == []

    offsets = await store.load_offsets(engine, group, [(topic, 0)])
    held = offsets[(topic, 0)]
    batch = store.Batch(fences={(topic, 0): (held, held)})
    await store.write_batch(engine, group, batch, datetime.now(UTC), models="another")
    marks = await store.models_scanned(engine, group, topic, partitions)
    assert marks == {0: None, **dict.fromkeys(partitions[1:], fingerprint)}
    async with running_scorer(settings, engine) as scorer:
        deadline = asyncio.get_running_loop().time() + 30
        while not windows or scorer.sweeper.rescheduling.pending:
            assert asyncio.get_running_loop().time() < deadline, "partition 0 was not scanned"
            await asyncio.sleep(0.1)
    assert windows and all(found == [] for found, _ in windows)  # nothing was outdated
    marks = await store.models_scanned(engine, group, topic, partitions)
    assert marks == dict.fromkeys(partitions, fingerprint)

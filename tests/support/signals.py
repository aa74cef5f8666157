"""Shared pieces of the scorer tests: signal streams, the offline reference, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scorer import store
from services.scorer.consume import Scorer
from services.scorer.rescore import AccountEntry, profile_row, rescore, seen_rows, state_row
from services.simulator.world import World
from shared import proposals
from shared.config import DEFAULT_MODEL_PATH, DatabaseSettings, Settings
from shared.db import ConsumerOffsetRow
from shared.events import Signal, encode_signal
from shared.scoring.document import fingerprint
from shared.scoring.engine import evaluate
from shared.scoring.model import Model, load_model
from shared.scoring.state import AccountState, Fact
from shared.validate import Sentiment, validate
from tests.support.infra import running
from tests.support.kafka_io import produce

MODEL = load_model(DEFAULT_MODEL_PATH)
_SENTIMENT = Sentiment()


def signal_of(event: dict[str, Any], ingested: datetime) -> Signal:
    """A raw v1 event as ingest makes it a signal, ingested at `ingested`."""
    signal = validate(
        orjson.dumps(event),
        now=ingested,
        sentiment=_SENTIMENT,
    )
    assert isinstance(signal, Signal), signal
    return signal


def simulated_signals(
    accounts: int,
    days: int,
    *,
    seed: int = 1,
    end: datetime | None = None,
    duplicate_share: float = 0.0,
) -> list[Signal]:
    """Signals of a simulated customer base over `days` days ending at `end`, with some
    re-deliveries mixed in (as ingest's at-least-once delivery produces them)."""
    end = end or datetime.now(UTC) - timedelta(hours=1)
    world = World(seed, accounts, start=end - timedelta(days=days), days=days)
    signals: list[Signal] = []
    for day in range(days):
        for account in world.accounts:
            for event in world.day_events(account, day):
                signals.append(signal_of(event, end + timedelta(days=1)))
    rng = random.Random(seed)
    for _ in range(int(len(signals) * duplicate_share)):
        signals.insert(rng.randrange(len(signals)), rng.choice(signals))
    return signals


async def produce_signals(settings: Settings, signals: list[Signal]) -> int:
    return await produce(
        settings,
        settings.kafka.topics.signals,
        [(s.account_id.encode(), encode_signal(s)) for s in signals],
    )


def reference_states(signals: list[Signal]) -> dict[str, AccountState]:
    """The offline reference: every account's state folded by the pure core."""
    states: dict[str, AccountState] = {}
    for signal in signals:
        states.setdefault(signal.account_id, AccountState()).apply(MODEL, Fact.from_signal(signal))
    return states


async def consumed(engine: AsyncEngine, settings: Settings) -> int:
    async with engine.connect() as conn:
        total = await conn.scalar(
            select(func.coalesce(func.sum(ConsumerOffsetRow.next_offset), 0)).where(
                ConsumerOffsetRow.group_id == settings.scorer.group_id
            )
        )
    return int(total or 0)


async def wait_consumed(
    engine: AsyncEngine,
    settings: Settings,
    total: int,
    timeout: float = 120,
    watch: Sequence[subprocess.Popen[bytes]] = (),
) -> None:
    """Until `total` signals are committed; fails at once, saying so, if a watched scorer
    process exits (its log path is its `log_path` attribute, when it has one)."""
    deadline = time.monotonic() + timeout
    while (done := await consumed(engine, settings)) < total:
        for proc in watch:
            if proc.poll() is not None:
                raise AssertionError(
                    f"scorer pid {proc.pid} exited with code {proc.returncode} after {done} of "
                    f"{total} signals were committed; its log: {getattr(proc, 'log_path', '?')}"
                )
        assert time.monotonic() < deadline, f"only {done} of {total} signals committed"
        await asyncio.sleep(0.2)


async def mismatches(
    engine: AsyncEngine, signals: list[Signal], model: Model = MODEL, unkept: Collection[str] = ()
) -> list[str]:
    """Accounts whose stored state or scores (under `model`) differ from the offline reference,
    the `unkept` attributes left out of both (what an earlier release did not keep)."""
    reference = reference_states(signals)
    async with engine.connect() as conn:
        stored = {
            r.account_id: r.state
            for r in await conn.execute(text("SELECT account_id, state FROM account_states"))
        }
        scores = list(
            await conn.execute(
                text(
                    "SELECT account_id, objective, score, evaluated_at FROM scores "
                    "WHERE model_role = 'active'"
                )
            )
        )
    bad = sorted(set(reference) ^ set(stored))
    for account_id, state in reference.items():
        if account_id in stored and _kept(AccountState.from_bytes(stored[account_id]), unkept) != (
            _kept(state, unkept)
        ):
            bad.append(account_id)
    for row in scores:
        expected = evaluate(model, reference[row.account_id], row.evaluated_at.timestamp())
        if expected.scores[row.objective].score != row.score:
            bad.append(f"{row.account_id}/{row.objective}")
    return bad


def _kept(state: AccountState, unkept: Collection[str]) -> bytes:
    """The state's fingerprint without the `unkept` attributes (`state` is left as it is)."""
    if unkept:
        state = AccountState.from_bytes(state.to_bytes())
        for name in unkept:
            state.attributes.pop(name, None)
    return fingerprint(state)


async def health_documents(
    database: DatabaseSettings, account_ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """What `GET .../health` answers for these accounts (the API's own reader: explanations
    derived from the stored state), by account id; times as datetimes."""
    from services.api.health import HealthReader

    pool = await asyncpg.create_pool(dsn=database.url(driver="postgresql"))
    try:
        reader = HealthReader(pool, CollectorRegistry())
        found = {a: await reader.read(a) for a in account_ids}
    finally:
        await pool.close()
    return {a: health.document for a, health in found.items() if health is not None}


async def score_and_store(
    engine: AsyncEngine,
    signals: list[Signal],
    at: list[datetime],
    *,
    history_min_delta: float = 5.0,
    chunk: int = 1000,
) -> list[str]:
    """Fold `signals` and score every account at each time in `at` with the scorer's own
    code, then store the result as the scorer would (no broker needed). Returns the ids."""
    entries: dict[str, AccountEntry] = {}
    for signal in signals:
        entry = entries.setdefault(signal.account_id, AccountEntry(AccountState(), 0))
        entry.state.apply(MODEL, Fact.from_signal(signal))
    items = sorted(entries.items())
    now = max(at)
    await store.register_models(engine, [MODEL], now)  # as the scorer does when it starts
    for start in range(0, len(items), chunk):
        batch = store.Batch()
        for account_id, entry in items[start : start + chunk]:
            for when in at:
                rows, evaluation = rescore(
                    models={"active": MODEL},
                    account_id=account_id,
                    entry=entry,
                    at=when.timestamp(),
                    cause="signals",
                    signal_ids=[f"sig-{account_id}"],
                    history_min_delta=history_min_delta,
                    changes_topic="changes",
                    recorded_at=now,
                )
                batch.history += rows.history
            rows.history, rows.outbox = [], []  # the history of every time; no change events
            seen = seen_rows(account_id, entry, 0, None)  # as if stored when ingested
            batch.add(
                profile_row(account_id, entry, now, evaluation),
                state_row(account_id, entry, now, now.timestamp(), evaluation),
                seen,
                rows,
            )
        await store.write_batch(engine, "seed", batch, now)
    return [account_id for account_id, _ in items]


@contextlib.asynccontextmanager
async def running_scorer(
    settings: Settings, engine: AsyncEngine, clock: Callable[[], datetime] | None = None
) -> AsyncIterator[Scorer]:
    kwargs = {"clock": clock} if clock else {}
    async with running(Scorer(settings, engine, registry=CollectorRegistry(), **kwargs)) as scorer:
        yield scorer


async def switch_model(engine: AsyncEngine, model: Model) -> None:
    """Make `model` the active one as a team would (proposed, approved by another person,
    promoted), in one transaction: every scorer follows (shared/proposals.py)."""
    at = datetime.now(UTC)
    async with engine.begin() as conn:
        made = await proposals.propose(conn, model, "tests", "a model switch", at)
        await proposals.approve(conn, made.proposal_id, "reviewer", "", at)
        await proposals.promote(conn, made.proposal_id, "reviewer", "", at)


async def seed(settings: Settings, engine: AsyncEngine, accounts: int = 40) -> list[str]:
    """A simulated customer base scored twice, 20 days apart, so there is history to page."""
    now = datetime.now(UTC)
    signals = simulated_signals(accounts, 40, seed=5, end=now - timedelta(hours=1))
    return await score_and_store(
        engine, signals, [now - timedelta(days=20), now], history_min_delta=0.0
    )

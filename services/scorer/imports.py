"""Importing history: months or years of raw events scored in event time before go-live.

`import_history` validates every line as ingest would (shared.event_files), folds each
account's signals in event time with the scorer's own `apply`, and scores it at the end of
every day that had signals (and weekly through a silence), writing history rows as of those
times with the live recording rule at a threshold of 0: a point for every such day on which
the score moved. It sends no change events: the past is not news. The account's state, current
score (scored now, as the live scorer would show it) and history are then written as the
scorer writes them, so the scorer carries on from them.

Accounts go in chunks, in account-id order, each chunk one transaction together with a fence
(`consumer_offsets`, group `healthscore-import`, topic `import/<digest of the input>`) that
counts the accounts done: a crashed import run again skips what was committed and writes the
rest, exactly once; two imports of the same input fence each other out.

Handing over to the live stream: the history is taken to be complete up to its end (the newest
event imported, or `until`), and every imported account remembers that end as its `floor`:
the scorer drops a live signal older than it as one the import has counted. Signals at the end
itself are told apart by id, as re-deliveries are (imported signals are remembered with their
event time as ingestion time). So the live stream may start any time before the history ends,
and overlap it by any amount, without a gap or a double count. Imported signals are folded into
whatever state an account already has (an import of older history later goes under the floor).
The scorer must not be running while an import writes: it would overwrite imported accounts
from its cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scorer import store
from services.scorer.memory import first_kept
from services.scorer.news import NewsBook, store_news
from services.scorer.rescore import (
    AccountEntry,
    Prior,
    profile_row,
    rescore,
    seen_rows,
    state_row,
)
from shared.config import Settings
from shared.db import SEEN_PERIOD, HistoryValues
from shared.errors import ConfigurationError
from shared.event_files import load_events
from shared.scoring.kinds import KindIndex, kind_index
from shared.scoring.model import Model
from shared.scoring.news import News, NewsItem
from shared.scoring.seen import DedupPolicy
from shared.scoring.state import AccountState, Fact

log = structlog.get_logger(__name__)

GROUP = "healthscore-import"
DAY = 86_400.0
QUIET_EVERY_DAYS = 7  # how often an account without signals is scored, for bands time moves


@dataclass
class ImportResult:
    events: int  # valid events imported (before `until`, if given)
    rejected: dict[str, int]  # reason -> lines refused by validation
    accounts: int
    skipped_accounts: int  # committed by an earlier run of the same import
    history_rows: int
    seconds: float


def partition_of(account_id: str, partitions: int) -> int:
    """The signals topic's partition of an account, as ingest's producer chooses it."""
    choices = list(range(partitions))
    return int(DefaultPartitioner()(account_id.encode(), choices, choices))


def digest(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()[:24]


@dataclass(frozen=True)
class Scoring:
    """How `score_in_event_time` scores: the models, their kind index and the policies."""

    models: dict[str, Model]
    kinds: KindIndex
    dedup: DedupPolicy
    changes_topic: str
    news: News = ()


def score_in_event_time(
    how: Scoring, account_id: str, entry: AccountEntry, facts: list[Fact], until: float, now: float
) -> list[HistoryValues]:
    """Fold `facts` (in event time) into `entry` a day at a time, scoring it at the end of each
    day that had signals and of every QUIET_EVERY_DAYS-th day without, up to `until`: the
    history rows (recorded at `now`). Change events are computed as live and dropped."""
    history: list[HistoryValues] = []
    recorded_at = datetime.fromtimestamp(now, UTC)
    i, day_end, quiet = 0, _day_end(facts[0].t), 0
    while i < len(facts) or day_end - DAY < until:
        ids = []
        while i < len(facts) and facts[i].t < day_end:
            if entry.state.apply(how.kinds, facts[i], how.dedup):
                ids.append(facts[i].signal_id)
            i += 1
        quiet = 0 if ids else quiet + 1
        if ids or quiet % QUIET_EVERY_DAYS == 0:
            rows, _ = rescore(
                models=how.models,
                account_id=account_id,
                entry=entry,
                at=min(day_end, until),
                cause="signals" if ids else "time",
                signal_ids=ids,
                history_min_delta=0.0,
                changes_topic=how.changes_topic,
                recorded_at=recorded_at,
                news=how.news,
            )
            history += rows.history
        day_end += DAY
    return history


def _day_end(t: float) -> float:
    return (t // DAY + 1) * DAY


async def import_history(
    settings: Settings,
    engine: AsyncEngine,
    paths: list[Path],
    models: dict[str, Model],
    *,
    chunk_accounts: int = 500,
    until: float | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    stop: asyncio.Event | None = None,
) -> ImportResult:
    """Import the raw events of `paths` (those before `until`, if given), or what an earlier
    run of the same import left; a `stop` ends it after the chunk under way (run it again to go
    on)."""
    started = time.monotonic()
    facts: dict[str, list[Fact]] = defaultdict(list)
    news: list[NewsItem] = []
    events, rejected = 0, Counter[str]()
    for path in paths:
        history = load_events(path)
        news += [item for item in history.news if until is None or item.t < until]
        for reason, n in history.rejected.items():
            rejected[reason] += n
        for fact in history.facts:
            if until is not None and fact.t >= until:
                continue
            fact.ingested = fact.t  # remembered as of its event time: see the module's doc
            facts[fact.account_id].append(fact)
            events += 1
    for account_facts in facts.values():
        account_facts.sort(key=lambda f: (f.t, f.signal_id))
    accounts = sorted(facts)
    if not accounts:
        raise ConfigurationError(f"no events to import in {', '.join(map(str, paths))}")
    end = max(f[-1].t for f in facts.values()) if until is None else until
    cfg = settings.scorer
    # the news imported is stored as the live scorer would store it; scoring reads it and what
    # is stored already
    await store_news(engine, news, clock())
    book = NewsBook(cfg.group_id, settings.kafka.topics.signals, cfg.news_retention_days)
    await book.refresh(engine, clock())
    known = {item.event_id: item for item in (*news, *book.items)}
    how = Scoring(
        models,
        kind_index(list(models.values())),
        DedupPolicy(cfg.dedup_horizon_hours * 3600, cfg.dedup_max_ids_per_account),
        settings.kafka.topics.changes,
        tuple(sorted(known.values(), key=lambda item: item.t)),
    )
    fence = (f"import/{digest(paths)}", 0)
    done = (await store.load_offsets(engine, GROUP, [fence])).get(fence, 0)
    await store.register_models(engine, models.values(), clock())
    horizon = cfg.dedup_horizon_hours * 3600
    log.info("import.started", events=events, accounts=len(accounts), already_done=done)
    history_rows = 0
    for start in range(done, len(accounts), chunk_accounts):
        if stop is not None and stop.is_set():
            log.warning("import.stopped", accounts_done=start, of=len(accounts))
            break
        now = clock()
        at = now.timestamp()
        kept = first_kept(at, horizon)  # the oldest period of the memory read and kept
        chunk = accounts[start : start + chunk_accounts]
        found = await store.load_accounts(engine, chunk, kept)
        versions = await store.model_versions(
            engine, {s.model_version for f in found.values() for s in f.scores.values()}
        )
        batch = store.Batch(fences={fence: (start or None, start + len(chunk))})
        for account_id in chunk:
            stored = found.get(account_id) or store.Stored()
            state = AccountState.from_bytes(stored.state) if stored.state else AccountState()
            state.memory.remember_stored(stored.memory, SEEN_PERIOD)
            floor, state.floor = state.floor, None
            entry = AccountEntry(
                state,
                partition_of(account_id, settings.kafka.partitions),
                stored.scores,
                stored.profile,
                stored.state,
                periods=set(stored.periods),
            )
            prior = Prior(versions, {item.event_id: item for item in how.news})
            # the scores as they stand, before the history changes them
            for key in list(entry.scores):
                prior.factors(entry, key)
            batch.history += score_in_event_time(
                how, account_id, entry, facts[account_id], end, now.timestamp()
            )
            state.floor = end if floor is None else max(floor, end)
            # and now, as the live scorer would show it
            final, evaluation = rescore(
                models=models,
                account_id=account_id,
                entry=entry,
                at=now.timestamp(),
                cause="time",
                signal_ids=[],
                history_min_delta=0.0,
                changes_topic=how.changes_topic,
                recorded_at=now,
                news=how.news,
            )
            final.outbox = []  # the past is not news
            seen = seen_rows(account_id, entry, kept, at)
            batch.add(
                profile_row(account_id, entry, now, evaluation),
                state_row(account_id, entry, now, evaluation.next_review_at, evaluation),
                seen,
                final,
            )
        await store.write_batch(engine, GROUP, batch, now, cfg.dedup_max_ids_per_account * 8)
        history_rows += len(batch.history)
        log.info("import.progress", accounts_done=start + len(chunk), of=len(accounts))
    return ImportResult(
        events=events,
        rejected=dict(rejected),
        accounts=len(accounts),
        skipped_accounts=done,
        history_rows=history_rows,
        seconds=time.monotonic() - started,
    )

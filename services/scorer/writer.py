"""The batch writer: polled signals -> rows -> ONE PostgreSQL transaction, and poison isolation.

`prepare` folds a batch's signals into the cached account state and builds every row to write
(state, scores, history, outbox) and the batch's fences; `commit` writes them in one statement
(`store.write_batch`). `sweep` does the same for accounts whose scores move with time alone.

When a batch fails for a reason that is not retriable (`shared.failures.classify`), `isolate` finds
the records it came from by halving: each half is prepared afresh from stored state and committed
on its own; a single record that still fails is dead-lettered with the reason and the database's
message, and its offset committed. The partition moves on, and every other signal of the batch
is applied exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer, TopicPartition
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scorer import batching, store
from services.scorer.batching import Records, count, halves
from services.scorer.cache import StateCache
from services.scorer.metrics import ScorerMetrics
from services.scorer.models import ModelSet
from services.scorer.news import NewsBook, news_of
from services.scorer.partitions import Fences, Partitions
from services.scorer.rescore import AccountEntry, account_row, rescore
from services.scorer.store import Batch, Find
from shared.config import Settings
from shared.errors import HealthScoreError, RecordRefused
from shared.events import decode_signal
from shared.failures import classify
from shared.kafka import dead_letter_headers
from shared.ops import observe_many
from shared.scoring.state import DedupPolicy, Fact

log = structlog.get_logger(__name__)
SWEEP_PART = 500  # accounts per transaction of the sweep
SWEEP_WRITERS = 2  # its transactions in flight at once


@contextlib.contextmanager
def _scoring_errors_refuse() -> Iterator[None]:
    """An error of the scoring core on an account's signals or state is that account's, not
    the batch's: raised as RecordRefused, for the caller to isolate."""
    try:
        yield
    except HealthScoreError:
        raise
    except Exception as exc:
        raise RecordRefused("scoring_failed", f"{type(exc).__name__}: {exc}") from exc


@dataclass
class Prepared:
    """A batch ready to commit, the records it was made from, and what to count once it is
    committed."""

    records: Records
    batch: Batch
    generation: int
    applied: int = 0
    duplicates: int = 0
    event_times: list[float] = field(default_factory=list)


class BatchWriter:
    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        models: ModelSet,
        cache: StateCache,
        partitions: Partitions,
        metrics: ScorerMetrics,
        clock: Callable[[], datetime],
    ) -> None:
        self.settings = settings
        self.news = NewsBook(
            settings.scorer.group_id,
            settings.kafka.topics.signals,
            settings.scorer.news_retention_days,
        )
        self.cfg = settings.scorer
        self.engine = engine
        self.models = models
        self.cache = cache
        self.partitions = partitions
        self.metrics = metrics
        self.clock = clock
        self.dedup = DedupPolicy(
            self.cfg.dedup_horizon_hours * 3600, self.cfg.dedup_max_ids_per_account
        )

    # --- a batch ------------------------------------------------------------------------

    async def prepare(self, records: Records, producer: AIOKafkaProducer) -> Prepared:
        """Fold a polled batch into the cached account state and build the rows to write. The
        batch's fences chain on from the batch before it, which may still be committing. An
        error of the scoring core on an account's signals is raised as RecordRefused, for
        `isolate` to find."""
        now = self.clock()
        generation = self.partitions.generation
        facts: dict[str, list[Fact]] = defaultdict(list)
        news: list[Fact] = []  # market events: about segments, not accounts
        partition_of: dict[str, int] = {}
        invalid: list[Any] = []
        ends: dict[TopicPartition, int] = {}
        for tp, messages in records.items():
            if tp not in self.partitions:
                continue  # revoked while we were polling
            messages, again = batching.onward(messages, self.partitions.prepared[tp])
            if again:
                self.metrics.redelivered.inc(again)
            if not messages:
                continue
            ends[tp] = messages[-1].offset + 1
            for message in messages:
                try:
                    signal = decode_signal(message.value)
                except (ValidationError, ValueError, TypeError):
                    invalid.append(message)
                    continue
                if signal.kind == "market_event":
                    news.append(Fact.from_signal(signal))
                    continue
                facts[signal.account_id].append(Fact.from_signal(signal))
                partition_of[signal.account_id] = tp.partition
        prepared = Prepared(records, Batch(fences=self.partitions.fences(ends)), generation)
        if invalid:
            await dead_letter(producer, self, invalid, "invalid_signal", "not a valid signal")
        if news:  # stored now, each once; every scorer applies them at its next sweep
            with _scoring_errors_refuse():  # a malformed item is its record's, not the batch's
                items = news_of(news)
            await self.news.store(self.engine, items, now)
            prepared.applied += len(news)
        entries = await self.cache.get(partition_of, self.partitions)
        self.partitions.still(generation)
        kinds, at = self.models.kinds, now.timestamp()
        with _scoring_errors_refuse():  # once around the loop: nothing per account on the way
            for i, (account_id, account_facts) in enumerate(facts.items()):
                if i % 50 == 49:
                    await asyncio.sleep(0)  # lets the commit of the batch before make progress
                entry = entries[account_id]
                fresh = [f for f in account_facts if entry.state.apply(kinds, f, self.dedup)]
                prepared.duplicates += len(account_facts) - len(fresh)
                if not fresh:
                    continue
                prepared.applied += len(fresh)
                prepared.event_times += [f.t for f in fresh]
                override = any(f.kind.startswith("override_") for f in fresh)
                cause = "override" if override else "signals"
                signal_ids = [f.signal_id for f in fresh]
                newest = max(f.t for f in fresh)
                replay = at - newest > self.cfg.replay_after_seconds
                self._rescore_into(
                    prepared.batch, account_id, entry, now, cause, signal_ids, newest, replay
                )
        self.partitions.still(generation)
        self.partitions.prepared_to(prepared.batch.fences)
        return prepared

    async def commit(self, prepared: Prepared) -> None:
        """Write a prepared batch in one transaction; a rebalance since it was prepared voids it
        (its records are read again from the stored offsets)."""
        self.partitions.still(prepared.generation)
        started = time.perf_counter()
        await store.write_batch(self.engine, self.cfg.group_id, prepared.batch, self.clock())
        self.metrics.transaction.observe(time.perf_counter() - started)
        self.partitions.committed_to(prepared.batch.fences, prepared.generation)
        self.observe(prepared)

    def observe(self, prepared: Prepared) -> None:
        """Count a committed batch."""
        self.metrics.applied.inc(prepared.applied)
        self.metrics.duplicates.inc(prepared.duplicates)
        self.metrics.batch_size.observe(prepared.applied + prepared.duplicates)
        committed = self.clock().timestamp()
        times = prepared.event_times
        observe_many(self.metrics.freshness, [max(committed - t, 0.0) for t in times])
        record_history(self.metrics, prepared.batch)

    # --- isolating what a batch cannot take -----------------------------------------------

    async def isolate(self, records: Records, producer: AIOKafkaProducer) -> None:
        """Apply `records`, a batch that failed for a non-retriable reason, halving it until
        every part commits or is a single record, which is dead-lettered. The stored offsets
        must be where `records` start (the caller rewinds first). A retriable error is raised:
        the caller backs off and reads the batch again."""
        self.metrics.isolations.inc()
        log.warning("scorer.isolating", records=count(records))
        pending = [records]
        while pending:
            part = pending.pop()
            self.cache.clear()  # prepared afresh from what is stored
            try:
                await self.commit(await self.prepare(part, producer))
                continue
            except Exception as exc:
                failure = classify(exc)
                if failure.retriable:
                    raise
            self.partitions.prepared.update(self.partitions.committed)
            if count(part) > 1:
                first, second = halves(part)
                pending += [second, first]  # first is popped first: offsets stay in order
                continue
            if not isinstance(failure, RecordRefused):
                raise failure  # a defect no record is to blame for
            ((tp, (record,)),) = [(tp, rs) for tp, rs in part.items() if rs]
            if tp not in self.partitions:
                continue  # revoked meanwhile: its new owner isolates it
            await dead_letter(producer, self, [record], failure.reason, failure.detail)
            fences = self.partitions.fences({tp: record.offset + 1})
            generation = self.partitions.generation
            await store.write_batch(self.engine, self.cfg.group_id, Batch(fences), self.clock())
            self.partitions.committed_to(fences, generation)
            self.partitions.prepared_to(fences)
        self.cache.clear()

    # --- time alone -----------------------------------------------------------------------

    async def sweep(self, find: Find | None = None) -> int:
        """Re-score from stored state the accounts `find` picks in the owned partitions (by
        default: due to move with time alone); between batches. Returns how many."""
        now = self.clock()
        generation = self.partitions.generation
        fences = self.partitions.hold()
        partitions = sorted({p for _, p in fences})
        limit = self.cfg.sweep_batch_size
        find = find or partial(store.due_for_review, self.engine, now=now, limit=limit)
        due = await find(partitions)
        self.partitions.still(generation)
        self.metrics.sweeps.inc()
        if not due:
            return 0
        try:
            await self._sweep_write(dict(due), fences, now)
        except Exception as exc:
            if classify(exc).retriable:
                raise
            # one account at a time: one that is refused is left as it was, counted and logged
            for account_id, partition in due:
                try:
                    await self._sweep_write({account_id: partition}, fences, now)
                except Exception as one:
                    failure = classify(one)
                    if not isinstance(failure, RecordRefused):
                        raise failure from one
                    self.metrics.sweep_refused.inc()
                    log.error("scorer.sweep_refused", account_id=account_id, error=str(failure))
        self.metrics.swept.inc(len(due))
        return len(due)

    async def _sweep_write(self, accounts: dict[str, int], fences: Fences, now: datetime) -> None:
        """Re-score `accounts` from stored state in parts (`sweep_parts`), each written in a
        transaction of its own, fenced on its partition alone, while the next is read and
        scored; up to SWEEP_WRITERS at once, so that PostgreSQL writes parts of different
        partitions side by side. A part that fails fails the sweep; the parts stored before it
        are due no more, the others are swept again. A part stored lets go of its rows and,
        beyond the cache's size, of its accounts' entries: a window of a model switch is held
        a few parts at a time, not whole."""
        writing: Writing = deque()
        try:
            for partition, part in sweep_parts(accounts):
                entries = await self.cache.get(part, self.partitions)
                batch = Batch(fences={tp: at for tp, at in fences.items() if tp[1] == partition})
                with _scoring_errors_refuse():
                    for account_id in part:
                        self._rescore_into(batch, account_id, entries[account_id], now, "time", [])
                if len(writing) == SWEEP_WRITERS:
                    await stored(writing, self.metrics, self.cache, scored=len(part))
                write = store.write_batch(self.engine, self.cfg.group_id, batch, now)
                writing.append((asyncio.create_task(write), batch))
            while writing:
                await stored(writing, self.metrics, self.cache)
        except Exception:
            # the outcome of the writes in flight is PostgreSQL's: wait for it to be known
            await asyncio.gather(*(task for task, _ in writing), return_exceptions=True)
            self.cache.clear()  # the entries hold scores that may not be stored
            raise

    # --- rows -----------------------------------------------------------------------------

    def _rescore_into(
        self,
        batch: Batch,
        account_id: str,
        entry: AccountEntry,
        now: datetime,
        cause: str,
        signal_ids: list[str],
        reflects: float | None = None,
        replay: bool = False,
    ) -> None:
        rows, evaluation = rescore(
            models=self.models.models,
            account_id=account_id,
            entry=entry,
            at=now.timestamp(),
            recorded_at=now,
            cause=cause,
            signal_ids=signal_ids,
            history_min_delta=self.cfg.history_min_delta,
            changes_topic=self.settings.kafka.topics.changes,
            reflects=reflects,
            replay=replay,
            news=self.news.items,
        )
        next_review = evaluation.next_review_at
        if any(score.held for score in entry.scores.values()):  # the sweep sends them
            next_review = min(next_review, now.timestamp() + self.cfg.replay_hold_seconds)
        changed = bool(signal_ids)  # else a re-score of time alone: the state is as stored
        batch.add(account_row(account_id, entry, now, next_review, evaluation, changed), rows)


Writing = deque[tuple[asyncio.Task[None], Batch]]  # a sweep's writes in flight, oldest first


async def stored(
    writing: Writing, metrics: ScorerMetrics, cache: StateCache, scored: int = 0
) -> None:
    """The oldest of a sweep's writes is done, and `scored` accounts wait to be written after
    those in flight: count its history, and trim the cache to the entries still unstored (the
    most recently used)."""
    task, batch = writing.popleft()
    await task
    record_history(metrics, batch)
    cache.trim(keep=scored + sum(len(b.accounts) for _, b in writing))


def sweep_parts(accounts: dict[str, int]) -> Iterator[tuple[int, dict[str, int]]]:
    """`accounts` (id -> partition) in parts of at most SWEEP_PART accounts of one partition
    each, taking the partitions in turn: consecutive parts are of different partitions while
    there are several, so that writes in flight do not queue on one partition's fence."""
    by_partition: dict[int, list[str]] = defaultdict(list)
    for account_id, partition in accounts.items():
        by_partition[partition].append(account_id)
    runs = [
        [(p, ids[i : i + SWEEP_PART]) for i in range(0, len(ids), SWEEP_PART)]
        for p, ids in by_partition.items()
    ]
    for turn in itertools.zip_longest(*runs):
        for partition, ids in filter(None, turn):
            yield partition, dict.fromkeys(ids, partition)


async def dead_letter(
    producer: AIOKafkaProducer,
    writer: BatchWriter,
    records: list[Any],
    reason: str,
    detail: str,
) -> None:
    """Send `records` to the dead-letter topic with why, count and log them."""
    now = writer.clock()
    topic = writer.settings.kafka.topics.dlq
    futures = [
        await producer.send(
            topic,
            value=r.value,
            key=r.key,
            headers=dead_letter_headers(r, reason, detail, now),
        )
        for r in records
    ]
    await asyncio.gather(*futures)
    writer.metrics.dead_lettered.labels(reason).inc(len(records))
    for r in records:
        log.error(
            "scorer.dead_lettered",
            reason=reason,
            detail=detail[:300],
            partition=r.partition,
            offset=r.offset,
            key=r.key.decode("utf-8", "replace")[:128] if r.key else None,
        )


def record_history(metrics: ScorerMetrics, batch: Batch) -> None:
    """Count a stored batch's history rows, and log its band changes."""
    for row in batch.history:
        metrics.history.labels(row["cause"]).inc()
        if row["old_band"] is not None and row["old_band"] != row["new_band"]:
            log.info(
                "scorer.band_changed",
                account_id=row["account_id"],
                objective=row["objective"],
                model_role=row["model_role"],
                old_band=row["old_band"],
                new_band=row["new_band"],
                score=row["new_score"],
                cause=row["cause"],
                signal_ids=row["signal_ids"][:5],
            )

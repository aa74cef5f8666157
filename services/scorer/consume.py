"""The scorer loop: account-health.signals -> PostgreSQL (exactly-once effect) -> outbox.

Consumes signals in a consumer group. For each batch it folds the signals into per-account state,
re-scores the touched accounts and writes state, scores, history, outbox rows and the consumed
offsets in ONE transaction (store.write_batch). Kafka offsets are never committed: on partition
assignment the scorer seeks to the offsets stored in PostgreSQL, so a crash at any point replays
exactly the signals whose effects were not committed. Between batches, a sweep re-scores accounts
whose score is due to move because time passed (decay, staleness, expiring overrides).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scorer import store
from services.scorer.rescore import AccountEntry, account_row, rescore
from services.scorer.store import Batch
from shared.config import Settings
from shared.errors import ConfigurationError, FencedOut
from shared.events import decode_signal, utcnow
from shared.kafka import is_retriable, make_consumer, make_producer
from shared.ops import Health, gc_paused, observe_many
from shared.scoring.model import Model, load_model
from shared.scoring.state import AccountState, DedupPolicy, Fact, KindIndex, kind_index

log = structlog.get_logger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
FRESHNESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600, 86400)


class ScorerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.applied = Counter(
            "healthscore_scorer_signals_applied_total",
            "Signals folded into account state",
            registry=registry,
        )
        self.duplicates = Counter(
            "healthscore_scorer_duplicates_dropped_total",
            "Signals dropped as duplicates (same signal id)",
            registry=registry,
        )
        self.invalid = Counter(
            "healthscore_scorer_invalid_signals_total",
            "Undecodable records on the signals topic, dead-lettered",
            registry=registry,
        )
        self.batch_size = Histogram(
            "healthscore_scorer_batch_signals",
            "Signals per batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=registry,
        )
        self.transaction = Histogram(
            "healthscore_scorer_transaction_duration_seconds",
            "Duration of one batch's PostgreSQL transaction",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.freshness = Histogram(
            "healthscore_scorer_freshness_seconds",
            "Commit time minus event time of applied signals",
            buckets=FRESHNESS_BUCKETS,
            registry=registry,
        )
        self.accounts = Gauge(
            "healthscore_scorer_accounts",
            "Accounts per band",
            ["objective", "model_role", "band"],
            registry=registry,
        )
        self.outbox_backlog = Gauge(
            "healthscore_scorer_outbox_backlog_events",
            "Change events not yet published",
            registry=registry,
        )
        self.published = Counter(
            "healthscore_scorer_change_events_published_total",
            "Change events published to the changes topic",
            registry=registry,
        )
        self.history = Counter(
            "healthscore_scorer_history_rows_total",
            "History rows written, by cause",
            ["cause"],
            registry=registry,
        )
        self.sweeps = Counter(
            "healthscore_scorer_sweep_runs_total", "Sweep runs", registry=registry
        )
        self.swept = Counter(
            "healthscore_scorer_sweep_rescored_total",
            "Accounts re-scored by the sweep",
            registry=registry,
        )
        self.rebalances = Counter(
            "healthscore_scorer_rebalances_total",
            "Partition assignments received",
            registry=registry,
        )
        self.fenced = Counter(
            "healthscore_scorer_fenced_batches_total",
            "Batches rolled back because another scorer owns the partition",
            registry=registry,
        )
        self.retries = Counter(
            "healthscore_scorer_retries_total",
            "Batches retried after a retriable error",
            registry=registry,
        )
        self.model = Gauge(
            "healthscore_scorer_model_info",
            "The model version serving each role (value 1)",
            ["model_role", "version"],
            registry=registry,
        )
        self.model_reloads = Counter(
            "healthscore_scorer_model_reloads_total",
            "Model reloads (SIGHUP), by result",
            ["result"],
            registry=registry,
        )
        self.model_rescheduled = Counter(
            "healthscore_scorer_model_change_accounts_total",
            "Accounts scheduled for re-scoring because their scores came from another model",
            registry=registry,
        )
        self.lag = Gauge(
            "healthscore_scorer_consumer_lag_records",
            "Signals behind the partition high-water mark",
            ["partition"],
            registry=registry,
        )


@dataclass
class Prepared:
    """A batch ready to commit, and what to count once it is committed."""

    batch: Batch
    generation: int
    applied: int = 0
    duplicates: int = 0
    event_times: list[float] = field(default_factory=list)


def _retriable(exc: BaseException) -> bool:
    if isinstance(exc, FencedOut):
        return True
    if isinstance(exc, OperationalError | DBAPIError | asyncpg.PostgresError | OSError):
        return True  # connection refused / dropped, server shutting down, serialization
    if isinstance(exc, asyncpg.InterfaceError):
        return True  # e.g. the connection was closed under the batch's transaction
    return is_retriable(exc)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.scorer.forget(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.scorer.adopt(assigned)


class Scorer:
    """One scorer worker; `run(stop)` until `stop` is set, finishing the batch in flight."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        *,
        registry: CollectorRegistry = REGISTRY,
        health: Health | None = None,
        clock: Callable[[], datetime] = utcnow,
        models: dict[str, Model] | None = None,
    ) -> None:
        self.settings = settings
        self.cfg = settings.scorer
        self.engine = engine
        self.metrics = ScorerMetrics(registry)
        self.health = health or Health()
        self.clock = clock
        self.models: dict[str, Model] = {}
        self.kinds: KindIndex = {}
        self._use_models(models or self._configured_models())
        self._reload_requested = False
        self._sweep_backlog = False
        self._carry: dict[TopicPartition, list[Any]] = {}  # polled, left for the next batch
        self._inflight: asyncio.Task[None] | None = None  # the commit of the last batch
        self._generation = 0  # bumped by every rebalance: in-memory state read before is void
        self.dedup = DedupPolicy(
            self.cfg.dedup_horizon_hours * 3600, self.cfg.dedup_max_ids_per_account
        )
        self.cache: OrderedDict[str, AccountEntry] = OrderedDict()
        # the next offset to read of each owned partition: the end of the last prepared batch
        self.positions: dict[TopicPartition, int | None] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self._last_sweep = 0.0

    # --- models ---------------------------------------------------------------------------

    def _configured_models(self) -> dict[str, Model]:
        models = {"active": load_model(self.cfg.model_path)}
        if self.cfg.shadow_model_path is not None:
            models["shadow"] = load_model(self.cfg.shadow_model_path)
        return models

    def _use_models(self, models: dict[str, Model]) -> None:
        kinds = kind_index(list(models.values()))  # raises if the models' aggregates clash
        for role, model in self.models.items():
            self.metrics.model.remove(role, model.version)
        self.models, self.kinds = models, kinds
        for role, model in models.items():
            self.metrics.model.labels(role, model.version).set(1)

    def request_reload(self) -> None:
        """SIGHUP: re-read the model files before the next batch."""
        self._reload_requested = True

    async def reload_models(self) -> bool:
        """Switch to the configured model files without stopping consumption: every account
        scored by another version is re-scored from stored state by the sweep, its history
        row marked `model_change`. An invalid file changes nothing."""
        self._reload_requested = False
        try:
            models = self._configured_models()
            self._use_models(models)
        except ConfigurationError as exc:
            self.metrics.model_reloads.labels("invalid").inc()
            log.error("scorer.model_reload_failed", error=str(exc))
            return False
        self.metrics.model_reloads.labels("ok").inc()
        self.cache.clear()
        log.info("scorer.models_loaded", models={r: m.version for r, m in models.items()})
        await self._schedule_model_change([tp.partition for tp in self.positions])
        return True

    async def _schedule_model_change(self, partitions: list[int]) -> None:
        expected = [
            (role, objective, model.version)
            for role, model in self.models.items()
            for objective in model.objectives
        ]
        count = await store.schedule_model_change(
            self.engine, sorted(partitions), expected, self.clock()
        )
        if count:
            self.metrics.model_rescheduled.inc(count)
            self._sweep_backlog = True
            log.info("scorer.model_change_scheduled", accounts=count)

    # --- partition ownership ------------------------------------------------------------

    def forget(self, revoked: list[TopicPartition]) -> None:
        self._generation += 1
        for tp in revoked:
            self.positions.pop(tp, None)
            self._carry.pop(tp, None)
        self.cache.clear()  # other scorers may write these accounts from now on

    async def adopt(self, assigned: list[TopicPartition]) -> None:
        self._generation += 1
        self.metrics.rebalances.inc()
        self.cache.clear()
        self._carry.clear()  # the consumer is repositioned at the stored offsets
        stored = await store.load_offsets(
            self.engine, self.cfg.group_id, [(tp.topic, tp.partition) for tp in assigned]
        )
        assert self.consumer is not None
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            self.positions[tp] = offset
            if offset is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)
        log.info(
            "scorer.assigned",
            partitions=sorted(tp.partition for tp in assigned),
            offsets={tp.partition: self.positions[tp] for tp in assigned},
        )
        await self._schedule_model_change([tp.partition for tp in assigned])

    async def _rewind(self) -> None:
        """After a failed batch: forget in-memory state, re-read from the stored offsets."""
        self.cache.clear()
        await self.adopt(list(self.positions))

    # --- state cache --------------------------------------------------------------------

    def _still(self, generation: int) -> None:
        """After an await: a rebalance meanwhile voids what this batch read from memory."""
        if self._generation != generation:
            raise FencedOut("partitions were reassigned while the batch was being prepared")

    async def _entries(self, wanted: dict[str, int]) -> dict[str, AccountEntry]:
        missing = [a for a in wanted if a not in self.cache]
        generation = self._generation
        states, scores = await store.load_accounts(self.engine, missing)
        self._still(generation)  # the cache may have been cleared meanwhile
        for account_id in missing:
            doc = states.get(account_id)
            self.cache[account_id] = AccountEntry(
                AccountState.from_json(doc) if doc else AccountState(),
                wanted[account_id],
                scores.get(account_id, {}),
            )
        entries = {}
        for account_id, partition in wanted.items():
            self.cache.move_to_end(account_id)
            entry = self.cache[account_id]
            entry.partition = partition
            entries[account_id] = entry
        return entries

    def _trim_cache(self, keep: int) -> None:
        """Evict the least recently used entries beyond state_cache_size, but never the `keep`
        most recent: those of a batch not yet committed, whose state is not in the database."""
        while len(self.cache) > max(self.cfg.state_cache_size, keep):
            self.cache.popitem(last=False)

    # --- one batch ----------------------------------------------------------------------

    def _rescore_into(
        self,
        batch: Batch,
        account_id: str,
        entry: AccountEntry,
        now: datetime,
        cause: str,
        signal_ids: list[str],
    ) -> None:
        rows, evaluation = rescore(
            models=self.models,
            account_id=account_id,
            entry=entry,
            at=now.timestamp(),
            cause=cause,
            signal_ids=signal_ids,
            history_min_delta=self.cfg.history_min_delta,
            changes_topic=self.settings.kafka.topics.changes,
        )
        batch.accounts.append(
            account_row(account_id, entry, now, evaluation.next_review_at, evaluation)
        )
        batch.scores += rows.scores
        batch.history += rows.history
        batch.outbox += rows.outbox

    async def prepare(
        self, records: dict[TopicPartition, list[Any]], dlq: AIOKafkaProducer
    ) -> Prepared:
        """Fold a polled batch into the cached account state and build the rows to write. The
        batch's fences chain on from the batch before it, which may still be committing."""
        now = self.clock()
        generation = self._generation
        prepared = Prepared(Batch(), generation)
        facts: dict[str, list[Fact]] = defaultdict(list)
        partition_of: dict[str, int] = {}
        invalid: list[Any] = []
        for tp, messages in records.items():
            if tp not in self.positions:
                continue  # revoked while we were polling
            end = messages[-1].offset + 1
            prepared.batch.fences[(tp.topic, tp.partition)] = (self.positions[tp], end)
            for message in messages:
                try:
                    signal = decode_signal(message.value)
                except (ValidationError, ValueError, TypeError):
                    invalid.append(message)
                    continue
                facts[signal.account_id].append(Fact.from_signal(signal))
                partition_of[signal.account_id] = tp.partition
        if invalid:
            await self._dead_letter(dlq, invalid, now)
        entries = await self._entries(partition_of)
        self._still(generation)
        for i, (account_id, account_facts) in enumerate(facts.items()):
            if i % 50 == 49:
                await asyncio.sleep(0)  # lets the commit of the batch before make progress
            entry = entries[account_id]
            fresh = [f for f in account_facts if entry.state.apply(self.kinds, f, self.dedup)]
            prepared.duplicates += len(account_facts) - len(fresh)
            if not fresh:
                continue
            prepared.applied += len(fresh)
            prepared.event_times += [f.t for f in fresh]
            cause = "override" if any(f.kind.startswith("override_") for f in fresh) else "signals"
            self._rescore_into(
                prepared.batch, account_id, entry, now, cause, [f.signal_id for f in fresh]
            )
        self._still(generation)
        for (topic, partition), (_, end) in prepared.batch.fences.items():
            self.positions[TopicPartition(topic, partition)] = end
        return prepared

    async def commit(self, prepared: Prepared) -> None:
        """Write a prepared batch in one transaction; a rebalance since it was prepared voids it
        (its records are read again from the stored offsets)."""
        self._still(prepared.generation)
        started = time.perf_counter()
        await store.write_batch(self.engine, self.cfg.group_id, prepared.batch, self.clock())
        self.metrics.transaction.observe(time.perf_counter() - started)
        self._observe(prepared.batch, prepared.applied, prepared.duplicates, prepared.event_times)

    def _observe(
        self, batch: Batch, applied: int, duplicates: int, event_times: list[float]
    ) -> None:
        self.metrics.applied.inc(applied)
        self.metrics.duplicates.inc(duplicates)
        self.metrics.batch_size.observe(applied + duplicates)
        committed = self.clock().timestamp()
        observe_many(self.metrics.freshness, [max(committed - t, 0.0) for t in event_times])
        self._record_history(batch)

    def _record_history(self, batch: Batch) -> None:
        for row in batch.history:
            self.metrics.history.labels(row["cause"]).inc()
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

    async def _dead_letter(
        self, producer: AIOKafkaProducer, messages: list[Any], now: datetime
    ) -> None:
        self.metrics.invalid.inc(len(messages))
        futures = [
            await producer.send(
                self.settings.kafka.topics.dlq,
                value=m.value,
                key=m.key,
                headers=[
                    ("reason", b"invalid_signal"),
                    ("source_topic", m.topic.encode()),
                    ("source_partition", str(m.partition).encode()),
                    ("source_offset", str(m.offset).encode()),
                    ("rejected_at", now.isoformat().encode()),
                ],
            )
            for m in messages
        ]
        await asyncio.gather(*futures)

    async def sweep(self) -> int:
        """Re-score accounts whose scores are due to move with time alone."""
        now = self.clock()
        generation = self._generation
        owned = {tp.partition: tp for tp, pos in self.positions.items() if pos is not None}
        due = await store.due_for_review(self.engine, sorted(owned), now, self.cfg.sweep_batch_size)
        self._still(generation)
        self.metrics.sweeps.inc()
        self._sweep_backlog = len(due) == self.cfg.sweep_batch_size  # more due: sweep again soon
        if not due:
            return 0
        entries = await self._entries(dict(due))
        batch = Batch()
        for account_id, partition in due:
            tp = owned[partition]
            position = self.positions[tp]
            batch.fences[(tp.topic, tp.partition)] = (position, position or 0)
            self._rescore_into(batch, account_id, entries[account_id], now, "time", [])
        await store.write_batch(self.engine, self.cfg.group_id, batch, now)
        self.metrics.swept.inc(len(due))
        self._record_history(batch)
        return len(due)

    # --- the loop -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        kafka = self.settings.kafka
        producer = make_producer(kafka)
        await producer.start()
        self.consumer = make_consumer(kafka, self.cfg.group_id)
        self.consumer.subscribe([kafka.topics.signals], listener=_Rebalance(self))
        relay = asyncio.create_task(self._relay(producer, stop))
        try:
            await self.consumer.start()
            self.health.ready = True
            log.info("scorer.started", models={r: m.version for r, m in self.models.items()})
            await self._loop(producer, stop)
        finally:
            self.health.ready = False
            if self._inflight is not None:
                self._inflight.cancel()
            await self.consumer.stop()
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay
            await producer.stop()
            log.info("scorer.stopped")

    async def _loop(self, producer: AIOKafkaProducer, stop: asyncio.Event) -> None:
        """Poll, prepare, commit; the commit of one batch runs while the next is polled and
        prepared, so the CPU work of the one overlaps PostgreSQL's work on the other. Commits
        stay in order: a batch is committed only after the one before it."""
        assert self.consumer is not None
        delay = 0.2
        while not stop.is_set():
            try:
                records = await self._poll()
                if records:
                    with gc_paused():
                        prepared = await self.prepare(records, producer)
                    await self._settle()
                    self._trim_cache(keep=len(prepared.batch.accounts))
                    self._inflight = asyncio.create_task(self.commit(prepared))
                sweep_due = (
                    self._sweep_backlog
                    or time.monotonic() - self._last_sweep >= self.cfg.sweep_interval_seconds
                )
                if not records or self._reload_requested or sweep_due:
                    await self._settle()
                if self._reload_requested:
                    await self.reload_models()
                if sweep_due:
                    self._last_sweep = time.monotonic()
                    await self.sweep()
                self._update_lag()
                delay = 0.2
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await self._settle()  # nothing may be in flight while we rewind
                if not _retriable(exc):
                    raise
                if isinstance(exc, FencedOut):
                    self.metrics.fenced.inc()
                else:
                    self.metrics.retries.inc()
                log.warning("scorer.batch_retry", error=repr(exc)[:300], delay=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                with contextlib.suppress(Exception):
                    await self._rewind()
        try:
            await self._settle()
        except Exception as exc:  # stopping: the batch is read again by whoever resumes
            log.warning("scorer.last_commit_failed", error=repr(exc)[:300])

    async def _settle(self) -> None:
        """Wait for the commit in flight, if any; its error, if any, is raised here."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            await inflight

    async def _poll(self) -> dict[TopicPartition, list[Any]]:
        """One batch: wait up to batch_timeout for the first records, then collect more until
        the batch holds batch_max_records or more than batch_max_accounts distinct accounts,
        and cut it (`_cut`; what is cut off, in order, starts the next batch). Bigger batches
        under load mean each busy account is re-scored once for many signals, in one
        transaction; the account cap bounds the memory and the size of that transaction.

        While records keep arriving, it collects for up to batch_timeout_ms (a broker may
        answer each fetch with a single producer batch) and stops at the first quiet moment,
        unless the broker said it holds more than is in hand: then the scorer is catching up,
        and waiting for the next fetch makes a bigger batch."""
        assert self.consumer is not None
        limit, cap = self.cfg.batch_max_records, self.cfg.batch_max_accounts
        batch, self._carry = self._carry, {}
        if not batch:
            batch = await self.consumer.getmany(
                timeout_ms=self.cfg.batch_timeout_ms, max_records=limit
            )
        count = sum(len(r) for r in batch.values())
        accounts = {record.key for records in batch.values() for record in records}
        deadline = time.monotonic() + self.cfg.batch_timeout_ms / 1000
        while (
            batch
            and count < limit
            and len(accounts) <= cap
            and (left := deadline - time.monotonic()) > 0
        ):
            behind = self._behind(batch)
            more = await self.consumer.getmany(
                timeout_ms=max(int(left * 1000), 1) if behind else 2, max_records=limit - count
            )
            if not more:
                break
            for tp, records in more.items():
                batch.setdefault(tp, []).extend(records)
                accounts.update(record.key for record in records)
                count += len(records)
        return self._cut(batch)

    def _behind(self, batch: dict[TopicPartition, list[Any]]) -> bool:
        """Whether the broker's last fetch answer reported records past those in hand."""
        assert self.consumer is not None
        for tp, position in self.positions.items():
            records = batch.get(tp)
            in_hand = records[-1].offset + 1 if records else position or 0
            highwater = self.consumer.highwater(tp)
            if highwater is not None and highwater > in_hand:
                return True
        return False

    def _cut(self, batch: dict[TopicPartition, list[Any]]) -> dict[TopicPartition, list[Any]]:
        """Keep the batch within batch_max_accounts distinct accounts, taking whole partitions'
        records while they fit: an account's signals all come from one partition, and records
        are interleaved in time, so a prefix of a partition already holds most of its accounts
        with only a few signals each. A partition that does not fit waits, whole, for the next
        batch (it comes first there); only one that does not fit alone is cut, at the first
        record of an account beyond the cap. What is carried keeps its order."""
        cap = self.cfg.batch_max_accounts
        accounts: set[bytes | None] = set()
        taken: dict[TopicPartition, list[Any]] = {}
        for tp, records in batch.items():
            keys = {record.key for record in records}
            if len(accounts | keys) <= cap:
                taken[tp] = records
                accounts |= keys
                continue
            end = 0
            if not taken:  # this partition alone has more accounts than the cap
                while records[end].key in accounts or len(accounts) < cap:
                    accounts.add(records[end].key)
                    end += 1
                taken[tp] = records[:end]
            self._carry[tp] = records[end:]
        return taken

    def _update_lag(self) -> None:
        assert self.consumer is not None
        consumed = backlog = 0
        fetched: list[float] = []
        assigned = self.consumer.assignment()
        for tp, position in self.positions.items():
            if tp not in assigned:
                continue  # mid-rebalance
            highwater = self.consumer.highwater(tp)
            consumed += position or 0
            if highwater is not None:
                lag = max(highwater - (position or 0), 0)
                backlog += lag
                self.metrics.lag.labels(str(tp.partition)).set(lag)
            if (polled := self.consumer.last_poll_timestamp(tp)) is not None:
                fetched.append(polled / 1000)
        self.health.observe(consumed, backlog, min(fetched, default=None))

    async def _relay(self, producer: AIOKafkaProducer, stop: asyncio.Event) -> None:
        """Publish outbox rows to the changes topic, then mark them sent (at-least-once)."""
        last_stats = 0.0
        while not stop.is_set():
            try:
                sent = await self.relay_once(producer)
                if time.monotonic() - last_stats > 10:
                    last_stats = time.monotonic()
                    await self._refresh_stats()
                if not sent:
                    await asyncio.sleep(self.cfg.relay_interval_seconds)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("scorer.relay_retry", error=repr(exc)[:300])
                await asyncio.sleep(1.0)

    async def relay_once(self, producer: AIOKafkaProducer, limit: int = 500) -> int:
        async with self.engine.begin() as conn:
            rows = await store.claim_outbox(conn, limit)
            if not rows:
                return 0
            futures = [
                await producer.send(
                    row.topic,
                    value=row.payload,
                    key=row.key.encode(),
                    headers=[("content-type", row.content_type.encode())],
                )
                for row in rows
            ]
            await asyncio.gather(*futures)
            await store.mark_sent(conn, [row.id for row in rows], self.clock())
        self.metrics.published.inc(len(rows))
        return len(rows)

    async def _refresh_stats(self) -> None:
        self.metrics.outbox_backlog.set(await store.outbox_backlog(self.engine))
        for objective, role, band, count in await store.band_counts(self.engine):
            self.metrics.accounts.labels(objective, role, band).set(count)
        await store.prune_outbox(self.engine, self.clock() - timedelta(days=7))


async def serve(settings: Settings, stop: asyncio.Event, **kwargs: Any) -> None:
    """Entry point body: check the database, serve /metrics, run the scorer."""
    from shared.db import create_engine, ensure_migrated
    from shared.kafka import ensure_topics
    from shared.ops import STREAM_YOUNG_GC_THRESHOLD, OpsServer, settle_heap

    engine = create_engine(settings.database)
    try:
        await ensure_migrated(engine)
        health = Health(stall_after=settings.scorer.stall_after_seconds)
        health.register(kwargs.get("registry", REGISTRY), "healthscore_scorer")
        scorer = Scorer(settings, engine, health=health, **kwargs)
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, scorer.request_reload)
        ops = OpsServer(
            "0.0.0.0", settings.scorer.metrics_port, kwargs.get("registry", REGISTRY), health
        )
        await ops.start()
        try:
            topics = settings.kafka.topics
            await ensure_topics(settings.kafka, [topics.signals, topics.changes, topics.dlq])
            settle_heap(STREAM_YOUNG_GC_THRESHOLD)
            await scorer.run(stop)
        finally:
            await ops.stop()
    finally:
        await engine.dispose()

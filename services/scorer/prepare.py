"""A polled batch made ready to commit: records -> signals -> folded state -> rows.

`Preparer.prepare` decodes the batch's records (what is not a signal is dead-lettered at
once), stores market news, folds each account's new signals into its cached state (the
duplicates dropped by its memory) and re-scores each account that took one (rows.py). The
batch's fences chain on from the batch before it, which may still be committing. An error of
the scoring core on an account's signals is raised as RecordRefused, for isolation.py to find.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from services.scorer import batching
from services.scorer.batching import Records
from services.scorer.context import ScorerContext
from services.scorer.deadletters import DeadLetters
from services.scorer.memory import first_kept
from services.scorer.news import news_of
from services.scorer.outcomes import KINDS as OUTCOME_KINDS
from services.scorer.outcomes import shown_by
from services.scorer.rows import Rescorer, scoring_errors_refuse
from services.scorer.store import Batch
from shared.db import OutcomeValues
from shared.events import decode_signal
from shared.outcomes import STREAM
from shared.scoring.kinds import KindIndex
from shared.scoring.seen import DedupPolicy
from shared.scoring.state import AccountState, Fact


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


class Preparer:
    def __init__(self, ctx: ScorerContext, rescorer: Rescorer, dead_letters: DeadLetters) -> None:
        self.cfg = cfg = ctx.cfg
        self.engine = ctx.engine
        self.models = ctx.models
        self.cache = ctx.cache
        self.partitions = ctx.partitions
        self.news = ctx.news
        self.metrics = ctx.metrics
        self.clock = ctx.clock
        self.rescorer = rescorer
        self.dead_letters = dead_letters
        self.dedup = DedupPolicy(cfg.dedup_horizon_hours * 3600, cfg.dedup_max_ids_per_account)

    async def prepare(self, records: Records, producer: AIOKafkaProducer) -> Prepared:
        """Fold a polled batch into the cached account state and build the rows to write."""
        now = self.clock()
        generation = self.partitions.generation
        facts: dict[str, list[Fact]] = defaultdict(list)
        news: list[Fact] = []  # market events: about segments, not accounts
        told: list[Any] = []  # outcomes another system knows of
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
                if signal.kind == "outcome_recorded":  # recorded, not folded into the state
                    told.append(signal)
                    continue
                facts[signal.account_id].append(Fact.from_signal(signal))
                partition_of[signal.account_id] = tp.partition
        prepared = Prepared(records, Batch(fences=self.partitions.fences(ends)), generation)
        for signal in told:
            prepared.batch.record(told_outcome(signal, now))
        prepared.applied += len(told)
        if invalid:
            await self.dead_letters.send(producer, invalid, "invalid_signal", "not a valid signal")
        if news:  # stored now, each once; every scorer applies them at its next sweep
            with scoring_errors_refuse():  # a malformed item is its record's, not the batch's
                items = news_of(news)
            await self.news.store(self.engine, items, now)
            prepared.applied += len(news)
        memory_from = first_kept(now.timestamp(), self.dedup.horizon_seconds)
        entries = await self.cache.get(partition_of, self.partitions, memory_from)
        await self.models.learn(self.engine, entries.values())
        self.partitions.still(generation)
        kinds, at, batch = self.models.kinds, now.timestamp(), prepared.batch
        with scoring_errors_refuse():  # once around the loop: nothing per account on the way
            for i, (account_id, account_facts) in enumerate(facts.items()):
                if i % 50 == 49:
                    await asyncio.sleep(0)  # lets the commit of the batch before make progress
                entry = entries[account_id]
                fresh = [f for f in account_facts if self._apply(entry.state, kinds, f, batch)]
                prepared.duplicates += len(account_facts) - len(fresh)
                if not fresh:
                    continue
                prepared.applied += len(fresh)
                prepared.event_times += [f.t for f in fresh]
                override = any(f.kind.startswith("override_") for f in fresh)
                newest = max(f.t for f in fresh)
                self.rescorer.into(
                    prepared.batch,
                    account_id,
                    entry,
                    now,
                    "override" if override else "signals",
                    [f.signal_id for f in fresh],
                    newest,
                    at - newest > self.cfg.replay_after_seconds,
                )
        self.partitions.still(generation)
        self.partitions.prepared_to(prepared.batch.fences)
        return prepared

    def _apply(self, state: AccountState, kinds: KindIndex, fact: Fact, batch: Batch) -> bool:
        """Fold the signal in (False: a duplicate), recording the outcome it shows, if any:
        exactly once, as the state is."""
        if fact.kind not in OUTCOME_KINDS:
            return state.apply(kinds, fact, self.dedup)
        outcome = shown_by(state, fact, self.cfg.outcome_expansion_share)
        if not state.apply(kinds, fact, self.dedup):
            return False
        if outcome is not None:
            batch.record(
                {
                    "source": STREAM,
                    "outcome_id": fact.signal_id,
                    "account_id": fact.account_id,
                    "outcome": outcome,
                    "at": datetime.fromtimestamp(fact.t, UTC),
                    "note": "",
                    "recorded_by": "scorer",
                    "recorded_at": self.clock(),
                }
            )
        return True


def told_outcome(signal: Any, now: datetime) -> OutcomeValues:
    """An `outcome_recorded` signal as its row: keyed by the system and its id."""
    data = signal.data
    return {
        "source": data["system"],
        "outcome_id": data.get("outcome_id") or signal.signal_id,
        "account_id": signal.account_id,
        "outcome": data["outcome"],
        "at": signal.occurred_at,
        "note": data.get("note", ""),
        "recorded_by": data["system"],
        "recorded_at": now,
    }

"""Re-scores of time alone: the accounts due to move, and after a model switch, every account.

Scores are a function of time: an account that sends nothing decays on schedule. Between
batches, `Sweeper.sweep` re-scores from stored state the accounts of the owned partitions that
are due (`account_states.next_review_at`), or those another finder picks: after a model switch
or a rebalance, `Rescheduling` scans the owned accounts a window at a time for scores of
another model version and re-scores them straight away (docs/adr/0015). A sweep reads no
de-duplication memory and writes no state: only the scores, their history and events, and the
next review.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import datetime
from functools import partial

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scorer import store
from services.scorer.commit import Committer, record_history
from services.scorer.context import ScorerContext
from services.scorer.partitions import Fences
from services.scorer.rows import Rescorer, scoring_errors_refuse
from services.scorer.serving import ModelSet
from services.scorer.store import Batch, Find
from shared.errors import RecordRefused
from shared.failures import classify

log = structlog.get_logger(__name__)
SWEEP_PART = 500  # accounts per transaction of the sweep
SWEEP_WRITERS = 2  # its transactions in flight at once

Writing = deque[tuple[asyncio.Task[None], Batch]]  # a sweep's writes in flight, oldest first


class Sweeper:
    """Between batches (consume.py asks `due` and runs `turn`): the model switch's windows,
    then the accounts due, every `sweep_interval_seconds`, soon again while more are due or
    when news came."""

    def __init__(self, ctx: ScorerContext, rescorer: Rescorer, committer: Committer) -> None:
        self.cfg = ctx.cfg
        self.engine = ctx.engine
        self.models = ctx.models
        self.cache = ctx.cache
        self.partitions = ctx.partitions
        self.news = ctx.news
        self.metrics = ctx.metrics
        self.clock = ctx.clock
        self.rescorer = rescorer
        self.committer = committer
        self.rescheduling = Rescheduling(ctx.cfg.group_id, ctx.settings.kafka.topics.signals)
        self._backlog = False  # the last sweep found as many due as it takes: more are
        self._last = -math.inf  # the first pass sweeps (monotonic time starts at boot)

    def due(self) -> bool:
        """Whether the next pass between batches has work for the sweep."""
        interval = self.cfg.sweep_interval_seconds
        return self._backlog or self.news.stored or time.monotonic() - self._last >= interval

    async def turn(self, sweep_due: bool) -> int:
        """A window of the model switch's scan, if one is under way; the accounts due, if
        `sweep_due`. How many accounts were swept (the window's are counted apart)."""
        if self.rescheduling.pending:
            found = await self.rescheduling.step(
                self.engine, self.models, self.sweep, self.partitions.hold
            )
            self.metrics.model_rescheduled.inc(found)
        if not sweep_due:
            return 0
        self._last = time.monotonic()
        owned = sorted(tp.partition for tp in self.partitions.owned())
        if concerned := await self.news.catch_up(self.engine, owned, self.clock()):
            self.metrics.news_rescheduled.inc(concerned)
            log.info("scorer.news_scheduled", accounts=concerned)
        swept = await self.sweep()
        self._backlog = swept == self.cfg.sweep_batch_size
        return swept

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
            await self._write(dict(due), fences, now)
        except Exception as exc:
            if classify(exc).retriable:
                raise
            # one account at a time: one that is refused is left as it was, counted and logged
            for account_id, partition in due:
                try:
                    await self._write({account_id: partition}, fences, now)
                except Exception as one:
                    failure = classify(one)
                    if not isinstance(failure, RecordRefused):
                        raise failure from one
                    self.metrics.sweep_refused.inc()
                    log.error("scorer.sweep_refused", account_id=account_id, error=str(failure))
        self.metrics.swept.inc(len(due))
        return len(due)

    async def _write(self, accounts: dict[str, int], fences: Fences, now: datetime) -> None:
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
                await self.models.learn(self.engine, entries.values())
                batch = Batch(fences={tp: at for tp, at in fences.items() if tp[1] == partition})
                with scoring_errors_refuse():
                    for account_id in part:
                        self.rescorer.into(batch, account_id, entries[account_id], now, "time", [])
                if len(writing) == SWEEP_WRITERS:
                    await self._stored(writing, scored=len(part))
                write = self.committer.write(batch, now)
                writing.append((asyncio.create_task(write), batch))
            while writing:
                await self._stored(writing)
        except Exception:
            # the outcome of the writes in flight is PostgreSQL's: wait for it to be known
            await asyncio.gather(*(task for task, _ in writing), return_exceptions=True)
            self.cache.clear()  # the entries hold scores that may not be stored
            raise

    async def _stored(self, writing: Writing, scored: int = 0) -> None:
        """The oldest of a sweep's writes is done, and `scored` accounts wait to be written
        after those in flight: count its history, and trim the cache to the entries still
        unstored (the most recently used)."""
        task, batch = writing.popleft()
        await task
        record_history(self.metrics, batch)
        self.cache.trim(keep=scored + sum(len(b.states) for _, b in writing))


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


class Rescheduling:
    """After a model switch or a rebalance: the owned accounts whose scores came from another
    model are re-scored from stored state, a window of accounts (in id order) per pass of the
    loop, between batches. The window is read, its outdated accounts re-scored and written in
    short transactions (`Sweeper.sweep`); nothing marks them first, so each is written once,
    and a restart simply scans again: what is outdated is read from the scores. A partition
    whose every account was scanned to the models served now (its offsets row says so, and no
    write with other models has been since) is not scanned: at a million accounts a scan reads
    every score."""

    WINDOW = 2_000  # accounts looked at per pass: a few seconds of re-scoring at most

    def __init__(self, group_id: str, topic: str) -> None:
        self.group_id, self.topic = group_id, topic
        self.partitions: set[int] = set()  # still to scan; none: nothing to do
        self.after: str | None = None  # the last account id scanned
        self.rescored = 0

    @property
    def pending(self) -> bool:
        return bool(self.partitions)

    def restart(self, partitions: Iterable[int]) -> None:
        """Scan these partitions from their first account (what was scanned before may have
        been re-scored for another model)."""
        self.partitions, self.after, self.rescored = set(partitions), None, 0

    async def step(
        self,
        engine: AsyncEngine,
        models: ModelSet,
        sweep: Callable[[store.Find], Awaitable[int]],
        hold: Callable[[], Fences],
    ) -> int:
        """Re-score the outdated accounts of the next window; how many. Partitions no longer
        owned are left to their new owner, which scans them on assignment. The scan moves on
        only once the window is stored: a failed one is looked at again. `hold`: the fences
        of the partitions owned, which a finished scan is recorded under."""
        expected, fingerprint = models.expected(), models.fingerprint()
        if self.after is None:  # a scan begins: leave out what was scanned to these models
            marks = await store.models_scanned(
                engine, self.group_id, self.topic, sorted(self.partitions)
            )
            self.partitions -= {p for p, m in marks.items() if m == fingerprint}
            if not self.partitions:
                return 0
        scanned = set(self.partitions)
        ends: list[str | None] = []

        async def outdated(owned: list[int]) -> list[tuple[str, int]]:
            partitions = sorted(self.partitions.intersection(owned))
            if partitions and self.after is None:
                await store.drop_unconfigured_scores(engine, partitions, expected)
            found, end = await store.outdated_accounts(
                engine, partitions, expected, self.after, self.WINDOW
            )
            ends.append(end)
            return found

        count = await sweep(outdated)
        self.after = ends[0]
        self.rescored += count
        if self.after is None:  # the end: every owned account was looked at
            held = {tp: at for tp, at in hold().items() if tp[1] in scanned}
            await store.mark_models_scanned(engine, self.group_id, held, fingerprint)
            self.partitions.clear()
            if self.rescored:
                log.info("scorer.model_change_rescored", accounts=self.rescored)
        return count

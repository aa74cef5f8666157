"""A prepared batch committed: its one statement, the positions it moves, what it counts.

`Committer.commit` writes the batch (store.write_batch: state, scores, history, outbox and the
fenced offsets in one transaction) unless a rebalance since it was prepared voided it (its
records are then read again from the stored offsets), moves the partitions' committed
positions, and counts what it applied, its freshness and its history.
"""

from __future__ import annotations

import time
from datetime import datetime

import structlog

from services.scorer import store
from services.scorer.context import ScorerContext
from services.scorer.metrics import ScorerMetrics
from services.scorer.prepare import Prepared
from services.scorer.store import Batch
from shared.ops import observe_many

log = structlog.get_logger(__name__)


class Committer:
    def __init__(self, ctx: ScorerContext) -> None:
        self.cfg = ctx.cfg
        self.engine = ctx.engine
        self.models = ctx.models
        self.partitions = ctx.partitions
        self.metrics = ctx.metrics
        self.clock = ctx.clock

    async def write(self, batch: Batch, now: datetime) -> None:
        """One transaction, as every writer of the scorer makes it."""
        memory_cap = self.cfg.dedup_max_ids_per_account * 8
        await store.write_batch(
            self.engine, self.cfg.group_id, batch, now, memory_cap, self.models.fingerprint()
        )

    async def commit(self, prepared: Prepared) -> None:
        """Write a prepared batch in one transaction; a rebalance since it was prepared voids it
        (its records are read again from the stored offsets)."""
        self.partitions.still(prepared.generation)
        started = time.perf_counter()
        await self.write(prepared.batch, self.clock())
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
        for row in prepared.batch.outcomes.values():
            self.metrics.outcomes.labels(row["outcome"], row["source"]).inc()


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

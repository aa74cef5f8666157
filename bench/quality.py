"""Live model quality: what one measurement costs (services/scorer/quality.py), against reading
the same score history once in the same run.

1. Scores ACCOUNTS simulated accounts (BENCH_QUALITY_ACCOUNTS, default 20,000) at twelve times
   a week apart with the scorer's own code into a fresh PostgreSQL (every score a history
   point), records a churn for one account in ten (at random: the figures are not the
   point), and VACUUM ANALYZEs.
2. Alternating rounds: the reference, one pass over the history rows the measurement reads
   (`SELECT` of the same columns, in the same order, fetched by the client), then a whole
   measurement of every objective (its samples, figures, lead times and expected figures,
   stored). The median round of each counts.
Last line: {"bench": "quality", "accounts": ..., "measure_s": ..., "ratio": ...}
"""

from __future__ import annotations

import os
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

from common import infrastructure, report, run
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from services.scorer.quality import Quality
from shared.config import QualitySettings
from shared.db import create_engine
from tests.support.signals import MODEL, score_and_store, simulated_signals

ACCOUNTS = int(os.environ.get("BENCH_QUALITY_ACCOUNTS", "20000"))
ROUNDS = 3
READ = text(
    "SELECT account_id, at, new_score, probability FROM score_history"
    " WHERE objective = 'churn_risk' AND model_role = 'active' ORDER BY account_id, at, id"
)


async def main() -> None:
    with infrastructure() as settings:
        engine = create_engine(settings.database)
        now = datetime.now(UTC)
        signals = simulated_signals(ACCOUNTS, 3, seed=17, end=now - timedelta(days=80))
        at = [now - timedelta(days=7 * k) for k in range(11, -1, -1)]
        started = time.perf_counter()
        ids = await score_and_store(engine, signals, at, history_min_delta=0.0)
        rng = random.Random(17)
        churned = [(a, now - timedelta(days=rng.uniform(1, 80))) for a in ids[::10]]
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO outcomes (source, outcome_id, account_id, outcome, at,"
                    " recorded_by, recorded_at) VALUES ('crm', :a, :a, 'churn', :t, 'bench', :n)"
                ),
                [{"a": a, "t": t, "n": now} for a, t in churned],
            )
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("VACUUM ANALYZE")
            points = await conn.scalar(text("SELECT count(*) FROM score_history"))
        built = time.perf_counter() - started
        judge = Quality(
            engine,
            lambda: {"active": MODEL},
            QualitySettings(window_days=56, step_days=7, horizon_days=14),
            CollectorRegistry(),
            lambda: now,
            730,
        )
        reads, measures = [], []
        for k in range(ROUNDS):
            started = time.perf_counter()
            async with engine.connect() as conn:
                rows = 0
                async for _row in await conn.stream(READ):
                    rows += 1
            reads.append(time.perf_counter() - started)
            started = time.perf_counter()
            measured = await judge.measure(now + timedelta(seconds=k))  # a row each
            measures.append(time.perf_counter() - started)
        await engine.dispose()
    churn = next(m for m in measured if m["objective"] == "churn_risk")
    read, measure = statistics.median(reads), statistics.median(measures)
    print(
        f"{ACCOUNTS:,} accounts, {points:,} history points (built in {built:.0f} s): one pass"
        f" over the churn objective's history {read:.2f} s; a measurement of both objectives"
        f" {measure:.2f} s ({churn['samples']:,} samples, ROC AUC {churn['roc_auc']})",
        flush=True,
    )
    report(
        {
            "bench": "quality",
            "accounts": ACCOUNTS,
            "history_points": points,
            "read_s": round(read, 3),
            "measure_s": round(measure, 3),
            "ratio": round(measure / read, 2),
            "samples": churn["samples"],
        }
    )


if __name__ == "__main__":
    run(main)

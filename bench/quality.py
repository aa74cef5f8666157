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
3. A proposed model's impact (services/api/routes/models.py: every account, or a sample of
   5,000, evaluated now by the active model and the proposal), against reading the states it
   evaluates once, in alternating rounds the same way; and what one look at the proposals
   costs (every scorer and API makes one every `MODEL_FOLLOW_SECONDS`).
Last line: {"bench": "quality", "accounts": ..., "measure_s": ..., "ratio": ..., "impact_s": ...,
"impact_ratio": ...}
"""

from __future__ import annotations

import os
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from common import infrastructure, report, run
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from services.api.routes.models import impact, sample
from services.scorer.quality import Quality
from shared import proposals
from shared.config import DEFAULT_MODEL_PATH, QualitySettings
from shared.db import create_engine
from shared.scoring.model import Model
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
        proposed, samples, impacts = await _impact(engine, now)
        looks = []  # as every process looks while nothing changes
        for _ in range(50):
            started = time.perf_counter()
            await proposals.changed(engine, {"active": MODEL}, {"active": MODEL.version}, now)
            looks.append(time.perf_counter() - started)
        await engine.dispose()
    churn = next(m for m in measured if m["objective"] == "churn_risk")
    read, measure = statistics.median(reads), statistics.median(measures)
    print(
        f"{ACCOUNTS:,} accounts, {points:,} history points (built in {built:.0f} s): one pass"
        f" over the churn objective's history {read:.2f} s; a measurement of both objectives"
        f" {measure:.2f} s ({churn['samples']:,} samples, ROC AUC {churn['roc_auc']})",
        flush=True,
    )
    sampled, evaluated = statistics.median(samples), statistics.median(impacts)
    print(
        f"a proposal's impact on {proposed:,} accounts {evaluated:.2f} s; reading their states"
        f" {sampled:.2f} s; a look at the proposals {statistics.median(looks) * 1000:.1f} ms",
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
            "impact_accounts": proposed,
            "impact_s": round(evaluated, 3),
            "impact_ratio": round(evaluated / sampled, 2),
            "look_ms": round(statistics.median(looks) * 1000, 2),
        }
    )


async def _impact(engine: Any, now: datetime) -> tuple[int, list[float], list[float]]:
    """Rounds of reading the states the impact evaluates, then the impact itself."""
    document = yaml.safe_load(DEFAULT_MODEL_PATH.read_text())
    document["objectives"]["churn_risk"]["groups"]["usage"] = 0.9
    async with engine.begin() as conn:
        await proposals.seed(conn, {"active": MODEL}, now)
        made = await proposals.propose(conn, Model.model_validate(document), "bench", "", now)
    samples, impacts, accounts = [], [], 0
    for _ in range(ROUNDS):
        async with engine.connect() as conn:
            started = time.perf_counter()
            await sample(conn)
            samples.append(time.perf_counter() - started)
            started = time.perf_counter()
            found = await impact(conn, MODEL, made.proposal_id, 365.0)
            impacts.append(time.perf_counter() - started)
            accounts = found.accounts
    return accounts, samples, impacts


if __name__ == "__main__":
    run(main)

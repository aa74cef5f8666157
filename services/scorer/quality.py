"""Live model quality: how well each served model role's scores foresaw what followed them.

As often as `scorer.quality.every_minutes`, the scorer that owns partition 0 (the one that
counts the band gauge, relay.py) measures each objective of the active and the shadow model
against the recorded outcomes (`outcomes`, from the stream and the API), and stores the
figures in `model_quality`, where the API (`GET /v1/models/quality`) and the console read them
and their trend:

- **Samples.** At cuts every `step_days` over the `window_days` that end `horizon` days ago
  (so that every sample's horizon has passed), each account's score as it stood: the last
  point of its score history at or before the cut, as a chart shows it. An account churned by
  the cut, and not back, is left out; a sample is adverse when the objective's outcome
  (`Objective.foresees`) followed within the horizon, or for a favourable one did not.
- **Realised**: ROC AUC, the Brier score of the probability the model stated with the score
  (where it is calibrated), both with 95% intervals, and reliability (shared/quality.py).
- **Lead time**: for each churn in the window, how long the account had been in the lowest
  band before it; the median, and how many churns had a warning at all.
- **Expected**: what today's scores and probabilities imply (ROC AUC and Brier, if the
  probabilities are calibrated): the estimate that needs no outcome yet. A realised figure
  far from the expected one says the model no longer describes the accounts (drift).

Every scorer sets the gauges from the latest stored figures when it owns partition 0 (NaN for
a figure not known: too few outcomes, no stated probability), and clears them when it does
not, so that `max by (objective, model_role)` reads one value.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared import quality
from shared.config import QualitySettings
from shared.db import ModelQualityRow
from shared.outcomes import FAVOURABLE, Timeline, lapsed, within
from shared.scoring.model import Model, Objective

log = structlog.get_logger(__name__)

DAY = 86_400.0

_OUTCOMES = text("""
SELECT account_id, extract(epoch FROM at) AS t, outcome FROM outcomes
WHERE voided_at IS NULL AND at <= :now ORDER BY account_id, at
""")
# every account's points up to the last cut, in time order: one pass gives each cut's score
_POINTS = text("""
SELECT account_id, extract(epoch FROM at) AS t, new_score, probability FROM score_history
WHERE objective = :objective AND model_role = :role AND at <= :last AND new_score IS NOT NULL
ORDER BY account_id, at, id
""")
_BANDS_BEFORE = text("""
SELECT account_id, extract(epoch FROM at) AS t, new_band FROM score_history
WHERE objective = :objective AND model_role = :role AND account_id = ANY(:accounts)
  AND at <= :now
ORDER BY account_id, at, id
""")
# today's scores grouped by score: sums of p, 1 - p and p(1 - p) of the adverse case
_EXPECTED = text("""
SELECT score, sum(p), sum(1 - p), sum(p * (1 - p)), count(*) FROM (
  SELECT score, CASE WHEN :favourable THEN 1 - probability ELSE probability END AS p
  FROM scores WHERE objective = :objective AND model_role = :role
    AND score IS NOT NULL AND probability IS NOT NULL) s
GROUP BY score
""")


@dataclass(frozen=True)
class Judged:
    """One objective of one model role, and how it is judged."""

    role: str
    version: str
    objective: str
    spec: Objective
    horizon_days: float

    @property
    def outcome(self) -> str:
        return self.spec.foresees


class QualityMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["objective", "model_role"]
        described = {  # the figure, its gauge, what it is
            "roc_auc": (
                "healthscore_model_outcome_roc_auc",
                "ROC AUC of the score as it stood against the outcome that followed within the"
                " horizon (live, over the window)",
            ),
            "roc_auc_low": (
                "healthscore_model_outcome_roc_auc_low",
                "Lower end of the live ROC AUC's 95% interval",
            ),
            "roc_auc_high": (
                "healthscore_model_outcome_roc_auc_high",
                "Upper end of the live ROC AUC's 95% interval",
            ),
            "brier": (
                "healthscore_model_outcome_brier",
                "Brier score of the stated probability against the outcome that followed",
            ),
            "expected_roc_auc": (
                "healthscore_model_outcome_expected_roc_auc",
                "ROC AUC that today's scores and calibrated probabilities imply"
                " (confidence-based estimate)",
            ),
            "expected_brier": (
                "healthscore_model_outcome_expected_brier",
                "Brier score that today's calibrated probabilities imply",
            ),
        }
        self.figures = {
            figure: Gauge(name, doc, labels, registry=registry)
            for figure, (name, doc) in described.items()
        }
        self.adverse = Gauge(
            "healthscore_model_outcome_adverse_accounts",
            "Accounts with an adverse sample behind the live figures",
            labels,
            registry=registry,
        )

    def show(self, rows: Sequence[Any]) -> None:
        self.clear()
        for row in rows:
            labels = (row.objective, row.model_role)
            for name, gauge in self.figures.items():  # NaN: not known (too few outcomes...)
                value = getattr(row, name)
                gauge.labels(*labels).set(math.nan if value is None else value)
            self.adverse.labels(*labels).set(row.adverse_accounts)

    def clear(self) -> None:
        for gauge in (*self.figures.values(), self.adverse):
            gauge.clear()


class Quality:
    def __init__(
        self,
        engine: AsyncEngine,
        models: Callable[[], dict[str, Model]],
        cfg: QualitySettings,
        registry: CollectorRegistry,
        clock: Callable[[], datetime],
        retention_days: int,
    ) -> None:
        self.engine = engine
        self.models = models
        self.cfg = cfg
        self.metrics = QualityMetrics(registry)
        self.clock = clock
        self.retention = timedelta(days=retention_days)
        self.owner = False
        self.measuring: asyncio.Task[None] | None = None

    async def refresh(self, owner: bool) -> None:
        """Show the latest figures (owner only: the others clear theirs), and start a
        measurement if the last is older than the interval. It runs beside the relay's turns,
        which publish change events and must not wait for a read of every account's history."""
        self.owner = owner
        if not owner:
            self.metrics.clear()
            return
        now = self.clock()
        async with self.engine.connect() as conn:
            last = await conn.scalar(select(func.max(ModelQualityRow.measured_at)))
        due = last is None or now - last >= timedelta(minutes=self.cfg.every_minutes)
        if due and (self.measuring is None or self.measuring.done()):
            self.measuring = asyncio.create_task(self._measure(now))
        self.metrics.show(await latest(self.engine))

    async def _measure(self, now: datetime) -> None:
        try:
            await self.measure(now)
            if self.owner:  # partition 0 may have moved on meanwhile
                self.metrics.show(await latest(self.engine))
        except Exception as exc:  # measured again at the next refresh after the interval
            log.warning("scorer.quality_failed", error=repr(exc)[:300])

    async def close(self) -> None:
        """Stop a measurement under way (the scorer is stopping)."""
        if self.measuring is not None and not self.measuring.done():
            self.measuring.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.measuring

    def judged(self) -> list[Judged]:
        return [
            Judged(
                role,
                model.version,
                name,
                objective,
                objective.calibration.horizon_days
                if objective.calibration is not None
                else self.cfg.horizon_days,
            )
            for role, model in sorted(self.models().items())
            for name, objective in model.objectives.items()
        ]

    async def measure(self, now: datetime) -> list[dict[str, Any]]:
        """Measure every served objective and store the figures. Each objective is read in a
        transaction of its own: a long-held snapshot would keep vacuum from the rows that the
        batches update meanwhile."""
        async with self.engine.connect() as conn:
            timelines = await _timelines(conn, now)
        rows = []
        for judged in self.judged():
            async with self.engine.connect() as conn:
                rows.append(await self._figures(conn, judged, timelines, now))
        async with self.engine.begin() as conn:
            await conn.execute(insert(ModelQualityRow), rows)
            await conn.execute(
                delete(ModelQualityRow).where(ModelQualityRow.measured_at < now - self.retention)
            )
        for row in rows:
            log.info(
                "scorer.quality_measured",
                **{k: row[k] for k in ("objective", "model_role", "samples", "adverse")},
                roc_auc=row["roc_auc"],
                expected_roc_auc=row["expected_roc_auc"],
            )
        return rows

    def cuts(self, now: datetime, horizon_days: float) -> list[float]:
        last = now.timestamp() - horizon_days * DAY
        steps = int(self.cfg.window_days // self.cfg.step_days)
        return [last - k * self.cfg.step_days * DAY for k in range(steps, -1, -1)]

    async def _figures(
        self,
        conn: AsyncConnection,
        judged: Judged,
        timelines: dict[str, Timeline],
        now: datetime,
    ) -> dict[str, Any]:
        samples = await _samples(conn, judged, self.cuts(now, judged.horizon_days), timelines)
        adverse = [s for s in samples if s.adverse]
        auc = quality.roc_auc(samples)
        positives = len({s.account_id for s in adverse})
        negatives = len({s.account_id for s in samples if not s.adverse})
        low, high = (None, None) if auc is None else quality.auc_interval(auc, positives, negatives)
        brier = quality.brier(samples)
        lead = await _lead_times(conn, judged, timelines, now, self.cfg.window_days)
        expected = await _expected(conn, judged)
        return {
            "objective": judged.objective,
            "model_role": judged.role,
            "measured_at": now,
            "model_version": judged.version,
            "outcome": judged.outcome,
            "window_days": self.cfg.window_days,
            "horizon_days": judged.horizon_days,
            "samples": len(samples),
            "accounts": len({s.account_id for s in samples}),
            "adverse": len(adverse),
            "adverse_accounts": positives,
            "roc_auc": auc,
            "roc_auc_low": low,
            "roc_auc_high": high,
            "brier": None if brier is None else brier[0],
            "brier_low": None if brier is None else brier[1],
            "brier_high": None if brier is None else brier[2],
            "reliability": quality.reliability(samples),
            "lead_time_days": None if lead is None else lead[0],
            "warned": None if lead is None else lead[1],
            "churns": None if lead is None else lead[2],
            "expected_roc_auc": expected[0],
            "expected_brier": expected[1],
            "expected_accounts": expected[2],
        }


async def latest(engine: AsyncEngine) -> list[Any]:
    """The latest measurement of each objective and role."""
    q = ModelQualityRow
    async with engine.connect() as conn:
        return list(
            await conn.execute(
                select(q)
                .ext(distinct_on(q.objective, q.model_role))
                .order_by(q.objective, q.model_role, q.measured_at.desc())
            )
        )


async def _timelines(conn: AsyncConnection, now: datetime) -> dict[str, Timeline]:
    timelines: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for account_id, t, outcome in await conn.execute(_OUTCOMES, {"now": now}):
        timelines[account_id].append((float(t), outcome))
    return dict(timelines)


async def _samples(
    conn: AsyncConnection,
    judged: Judged,
    cuts: Sequence[float],
    timelines: dict[str, Timeline],
) -> list[quality.Sample]:
    """Each account's score as it stood at each cut, labelled by what followed."""
    horizon = judged.horizon_days * DAY
    favourable = judged.outcome in FAVOURABLE
    last = datetime.fromtimestamp(cuts[-1], UTC)
    parameters = {"objective": judged.objective, "role": judged.role, "last": last}
    samples = []
    result = await conn.stream(_POINTS, parameters)
    async for account_id, points in _by_account(result):
        timeline = timelines.get(account_id, ())
        i = 0
        for cut in cuts:
            while i < len(points) and points[i][0] <= cut:
                i += 1
            if i == 0 or lapsed(timeline, cut):
                continue
            _, score, probability = points[i - 1]
            happened = within(timeline, judged.outcome, cut, cut + horizon)
            if probability is not None and favourable:
                probability = 1 - probability  # the probability of the adverse case
            samples.append(quality.Sample(account_id, score, probability, happened != favourable))
    return samples


async def _by_account(result: Any) -> Any:
    """(account, [(t, score, probability)...]) from rows ordered by account."""
    account: str | None = None
    points: list[tuple[float, float, float | None]] = []
    async for account_id, t, score, probability in result:
        if account_id != account and points:
            yield account, points
            points = []
        account = account_id
        points.append((float(t), score, probability))
    if points:
        yield account, points


async def _lead_times(
    conn: AsyncConnection,
    judged: Judged,
    timelines: dict[str, Timeline],
    now: datetime,
    window_days: float,
) -> tuple[float | None, int, int] | None:
    """The median days the churned accounts had been in the lowest band before they churned
    (0: no warning), how many had a warning, and how many churned in the window; None where
    the objective does not foresee churn."""
    if judged.outcome != "churn":
        return None
    since = now.timestamp() - window_days * DAY
    churns = {
        account: [t for t, name in timeline if name == "churn" and t >= since]
        for account, timeline in timelines.items()
    }
    churns = {account: times for account, times in churns.items() if times}
    if not churns:
        return None, 0, 0
    lowest = judged.spec.bands[0].name
    points: dict[str, list[tuple[float, str]]] = defaultdict(list)
    parameters = {
        "objective": judged.objective,
        "role": judged.role,
        "accounts": sorted(churns),
        "now": now,
    }
    for account_id, t, band in await conn.execute(_BANDS_BEFORE, parameters):
        points[account_id].append((float(t), band))
    leads = []
    for account, times in churns.items():
        for churned in times:
            before = [(t, band) for t, band in points[account] if t < churned]
            entered = churned
            for t, band in reversed(before):
                if band != lowest:
                    break
                entered = t
            leads.append((churned - entered) / DAY)
    return statistics.median(leads), sum(lead > 0 for lead in leads), len(leads)


async def _expected(
    conn: AsyncConnection, judged: Judged
) -> tuple[float | None, float | None, int]:
    """What today's scores imply if their probabilities are calibrated."""
    if judged.spec.calibration is None:
        return None, None, 0
    parameters = {
        "objective": judged.objective,
        "role": judged.role,
        "favourable": judged.outcome in FAVOURABLE,
    }
    rows = list(await conn.execute(_EXPECTED, parameters))
    accounts = sum(int(row[4]) for row in rows)
    if not accounts:
        return None, None, 0
    groups = [(float(score), float(p), float(q), float(pq)) for score, p, q, pq, _ in rows]
    brier = sum(g[3] for g in groups) / accounts
    return quality.expected_roc_auc(groups), brier, accounts

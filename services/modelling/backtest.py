"""Back-test models against known churn: sample scores at as-of times, label, measure.

For each model and each as-of time T, every account that has sent an event by T and is not
lapsed at T (churned and not returned) is scored exactly as the live service would have scored
it at T, and labelled by whether the outcome (churn by default; renewal, expansion... from the
outcomes file) happens in (T, T + horizon]. Figures rank the adverse case: churn happening, or a
favourable outcome (renewal, expansion, return) not happening. Samples from all as-of times are
pooled; with `test_from`, those at or after it form the held-out test split (a time-based
split, as a model is used: fitted on the past, judged on the future).

Lead time answers "how long before churn did the score warn us?": every churned account is
scored daily over the `lookback` before its churn (with hysteresis, as live), and its lead time
is how long it had been in the lowest band when it churned (0: it churned without warning).
"""

from __future__ import annotations

import bisect
import dataclasses
import random
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from itertools import chain
from typing import Any

import numpy as np
from numpy.typing import NDArray

from services.modelling import parts as processes
from services.modelling.metrics import (
    ScoreMetrics,
    brier_interval,
    reliability,
    score_metrics,
)
from services.modelling.replay import Outcomes, replay
from shared.event_files import EventLog
from shared.outcomes import FAVOURABLE
from shared.scoring.engine import evaluate
from shared.scoring.kinds import kinds_of
from shared.scoring.model import Calibration, Model

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Sample:
    as_of: float
    account_id: str
    segment: str
    adverse: bool  # churned within the horizon; for a favourable outcome: it did not happen
    scores: dict[str, float | None]
    bands: dict[str, str]
    # objective -> factor -> sub-score if "ok" (kept for a fit only)
    sub_scores: dict[str, dict[str, float | None]]
    idle_days: float | None = None  # days since the account's newest signal: the baseline
    raw: dict[str, float | None] = dataclasses.field(default_factory=dict)  # factor -> if "ok"

    def happened(self, outcome: str) -> bool:
        """Whether `outcome` (the one the sample was labelled by) happened."""
        return self.adverse != (outcome in FAVOURABLE)


def collect(
    events: EventLog,
    outcomes: Outcomes,
    model: Model,
    as_of: list[float],
    horizon: float,
    outcome: str = "churn",
    parts: int = 1,
    *,
    factors: bool = False,
) -> list[Sample]:
    """One sample per (as-of time, live account) under `model`, ordered by both; the accounts
    scored in `parts` processes. With `factors`, each sample keeps its factors' raw values and
    sub-scores (what a fit needs)."""
    if parts > 1:
        jobs = [
            partial(collect, part, outcomes, model, as_of, horizon, outcome, factors=factors)
            for part in processes.split(events, parts)
        ]
        return sorted(chain.from_iterable(processes.run(jobs)), key=_sample_order)
    samples = []
    favourable = outcome in FAVOURABLE
    for cut, states in replay(events, kinds_of(model), as_of):
        for account_id, state in states.items():
            if outcomes.lapsed(account_id, cut):
                continue
            evaluation = evaluate(model, state, cut, news=events.news)
            happened = outcomes.within(account_id, outcome, cut, cut + horizon)
            samples.append(
                Sample(
                    as_of=cut,
                    account_id=account_id,
                    segment=evaluation.segment,
                    adverse=happened != favourable,
                    scores={o: s.score for o, s in evaluation.scores.items()},
                    bands={o: s.band for o, s in evaluation.scores.items()},
                    sub_scores={
                        o: {f.factor: f.sub_score if f.status == "ok" else None for f in s.factors}
                        for o, s in evaluation.scores.items()
                    }
                    if factors
                    else {},
                    idle_days=None if state.newest is None else (cut - state.newest) / DAY,
                    raw={
                        f.factor: f.raw if f.status == "ok" else None
                        for s in evaluation.scores.values()
                        for f in s.factors
                    }
                    if factors
                    else {},
                )
            )
    return sorted(samples, key=_sample_order)


def _sample_order(sample: Sample) -> tuple[float, str]:
    return sample.as_of, sample.account_id


def lead_times(
    events: EventLog,
    outcomes: Outcomes,
    model: Model,
    lookback_days: int = 90,
    *,
    most: int | None = 2000,
    parts: int = 1,
) -> dict[str, dict[str, Any]]:
    """Per objective: how long churned accounts had been in the lowest band when they first
    churned; measured on `most` of them at most (a seeded random choice: the figures are
    shares and medians, which a few thousand measure well), in `parts` processes."""
    churn_at = outcomes.first("churn")
    churned = len(churn_at)
    if most is not None and churned > most:
        chosen = random.Random(0).sample(sorted(churn_at), most)
        churn_at = {account_id: churn_at[account_id] for account_id in chosen}
    watched = dataclasses.replace(
        events, facts=[f for f in events.facts if f.account_id in churn_at]
    )
    jobs = [
        partial(_leads, part, churn_at, model, lookback_days)
        for part in processes.split(watched, parts)
    ]
    leads: dict[str, list[float]] = {objective: [] for objective in model.objectives}
    for found in processes.run(jobs):
        for objective, days in found.items():
            leads[objective] += days
    return {
        objective: _lead_figures(days, lookback_days, churned) for objective, days in leads.items()
    }


def _leads(
    events: EventLog, churn_at: dict[str, float], model: Model, lookback_days: int
) -> dict[str, list[float]]:
    """objective -> the lead time of each churned account of `events` (only theirs)."""
    if not events.facts:
        return {}
    first_day = int(events.first // DAY) * DAY
    last = max(churn_at.values(), default=first_day)
    ticks = [first_day + k * DAY for k in range(int((last - first_day) // DAY) + 1)]
    lowest = {name: objective.bands[0].name for name, objective in model.objectives.items()}
    previous: dict[str, dict[str, str]] = defaultdict(dict)  # account -> objective -> band
    since: dict[tuple[str, str], float | None] = {}
    watching = sorted(churn_at.items(), key=lambda item: item[1])
    churn_times = [churn for _, churn in watching]
    for tick, states in replay(events, kinds_of(model), ticks):
        # only the accounts that churn within the look-back after this tick: a window of the
        # sorted churn times, not every churner at every tick
        first = bisect.bisect_right(churn_times, tick)
        last = bisect.bisect_right(churn_times, tick + lookback_days * DAY)
        for account_id, _ in watching[first:last]:
            if account_id not in states:
                continue
            bands = previous[account_id]
            evaluation = evaluate(model, states[account_id], tick, bands, events.news)
            for objective, score in evaluation.scores.items():
                key = (account_id, objective)
                bands[objective] = score.band
                if score.band != lowest[objective]:
                    since[key] = None
                elif since.get(key) is None:
                    since[key] = tick
    leads: dict[str, list[float]] = {}
    for objective in model.objectives:
        found = leads[objective] = []
        for account_id, churn in watching:
            if objective not in previous.get(account_id, {}):
                continue  # churned before the replay saw it, or never sent an event
            start = since.get((account_id, objective))
            found.append(0.0 if start is None else (churn - start) / DAY)
    return leads


def _lead_figures(leads: list[float], lookback_days: int, churned: int) -> dict[str, Any]:
    warned = [lead for lead in leads if lead > 0]
    return {
        "churned_accounts": churned,
        # the churned accounts measured (a random choice of them when there are many)
        "measured_accounts": len(leads),
        "warned_share": round(len(warned) / len(leads), 4) if leads else None,
        "warned_30d_share": round(sum(lead >= 30 for lead in leads) / len(leads), 4)
        if leads
        else None,
        "median_lead_days": round(statistics.median(leads), 1) if leads else None,
        "median_lead_days_warned": round(statistics.median(warned), 1) if warned else None,
        "lookback_days": lookback_days,
        # warned the whole look-back: their lead time is at least that, not that
        "warned_whole_lookback": sum(lead >= lookback_days for lead in leads),
    }


def measure(
    samples: Iterable[Sample], objective: str, band_order: list[str], *, intervals: bool = False
) -> ScoreMetrics | None:
    """The figures of `objective`'s scores over `samples`; with `intervals`, bootstrap
    intervals too (200 resamplings: kept for the headline splits)."""
    scored = [s for s in samples if s.scores.get(objective) is not None]
    if not scored:
        return None
    return score_metrics(
        np.array([s.scores[objective] for s in scored], dtype=float),
        np.array([s.adverse for s in scored], dtype=bool),
        [s.bands[objective] for s in scored],
        band_order,
        groups=_accounts(scored) if intervals else None,
    )


def _accounts(samples: list[Sample]) -> NDArray[np.int64]:
    return np.unique([s.account_id for s in samples], return_inverse=True)[1]


def recency_baseline(samples: Iterable[Sample]) -> ScoreMetrics | None:
    """The simplest model there is, beside every model: the fewer days since an account's last
    signal, the safer (score 100 / (1 + days idle))."""
    scored = [s for s in samples if s.idle_days is not None]
    if not scored:
        return None
    return score_metrics(
        np.array([100.0 / (1.0 + max(s.idle_days or 0.0, 0.0)) for s in scored]),
        np.array([s.adverse for s in scored], dtype=bool),
        groups=_accounts(scored),
    )


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def _split(test_from: float | None) -> dict[str, Callable[[Sample], bool]]:
    splits: dict[str, Callable[[Sample], bool]] = {"all": lambda s: True}
    if test_from is not None:
        splits["train"] = lambda s: s.as_of < test_from
        splits["test"] = lambda s: s.as_of >= test_from
    return splits


def summarise(
    model: Model,
    samples: list[Sample],
    leads: dict[str, dict[str, Any]],
    test_from: float | None,
    outcome: str = "churn",
) -> tuple[dict[str, Any], dict[str, dict[str, ScoreMetrics]]]:
    """(JSON summary for one model, the full metrics per objective and split for plots)."""
    full: dict[str, dict[str, ScoreMetrics]] = defaultdict(dict)
    objectives: dict[str, Any] = {}
    # recency alone on the samples an objective scored: the same for objectives that score
    # the same samples (usually all), so measured once for them
    baselines: dict[tuple[str, bytes], ScoreMetrics | None] = {}
    for objective, spec in model.objectives.items():
        order = [b.name for b in spec.bands]
        entry: dict[str, Any] = {"lead_time": leads.get(objective)}
        for split, keep in _split(test_from).items():
            chosen = [s for s in samples if keep(s)]
            metrics = measure(chosen, objective, order, intervals=True)
            if metrics is None:
                continue
            full[objective][split] = metrics
            scored = np.fromiter((s.scores.get(objective) is not None for s in chosen), bool)
            key = (split, scored.tobytes())
            if key not in baselines:
                baselines[key] = recency_baseline(
                    s for s, y in zip(chosen, scored, strict=True) if y
                )
            baseline = baselines[key]
            entry[split] = {
                **metrics.headline(),
                "unscored": sum(s.scores.get(objective) is None for s in chosen),
                "baseline_recency": baseline.headline() if baseline else None,
                "stated_probability": _stated(spec.calibration, chosen, objective, outcome),
                "bands": metrics.bands,
                "deciles": metrics.deciles,
            }
        by_segment = defaultdict(list)
        by_time: dict[float, list[Sample]] = defaultdict(list)
        for s in samples:
            by_segment[s.segment].append(s)
            by_time[s.as_of].append(s)
        by_as_of = {iso(t): group for t, group in by_time.items()}
        entry["by_segment"] = {
            name: m.headline()
            for name, group in sorted(by_segment.items())
            if (m := measure(group, objective, order)) is not None
        }
        entry["by_as_of"] = {
            name: m.headline()
            for name, group in sorted(by_as_of.items())
            if (m := measure(group, objective, order)) is not None
        }
        objectives[objective] = entry
    return {"version": model.version, "objectives": objectives}, dict(full)


def _stated(
    calibration: Calibration | None, samples: list[Sample], objective: str, outcome: str
) -> dict[str, Any] | None:
    """How the probabilities a calibrated model states hold on these samples (the horizon of
    the calibration should be the back-test's, and its outcome the labels')."""
    if calibration is None or calibration.outcome != outcome:
        return None
    pairs = [
        (calibration.probability(score), s.happened(outcome))
        for s in samples
        if (score := s.scores.get(objective)) is not None
    ]
    if not pairs or all(c for _, c in pairs) or not any(c for _, c in pairs):
        return None
    stated = np.array([p for p, _ in pairs])
    happened = np.array([c for _, c in pairs], dtype=bool)
    figures = reliability(stated, happened)
    scored = [s for s in samples if s.scores.get(objective) is not None]
    low, high = brier_interval(stated, happened, _accounts(scored))
    return {
        "horizon_days": calibration.horizon_days,
        "outcome": calibration.outcome,
        **figures,
        "brier_ci95": [round(low, 4), round(high, 4)],
    }


def default_as_of(events: EventLog, horizon: float, every_days: int = 30) -> list[float]:
    """Every `every_days` from two months after the first event while a full horizon of
    outcomes follows."""
    first = int(events.first // DAY) * DAY + 60 * DAY
    cuts = []
    t = first
    while t + horizon <= events.last:
        cuts.append(t)
        t += every_days * DAY
    return cuts or [events.last - horizon]


def default_test_from(as_of: list[float]) -> float | None:
    """The later half of the as-of times is the test split (none with a single as-of)."""
    ordered = sorted(as_of)
    return ordered[len(ordered) // 2] if len(ordered) > 1 else None


def backtest(
    events: EventLog,
    outcomes: Outcomes,
    models: dict[str, Model],
    as_of: list[float],
    horizon_days: float,
    test_from: float | None,
    lookback_days: int = 90,
    outcome: str = "churn",
    parts: int = 1,
) -> tuple[dict[str, Any], dict[str, dict[str, dict[str, ScoreMetrics]]]]:
    """Every model over the same events: the JSON summary and the metrics behind the plots."""
    horizon = horizon_days * DAY
    summary: dict[str, Any] = {
        "events": {
            "lines": events.lines,
            "signals": len(events.facts),
            "rejected": dict(events.rejected),
        },
        "accounts": len({f.account_id for f in events.facts}),
        "churned_accounts": sum(events.first <= t for t in outcomes.first("churn").values()),
        "outcome": outcome,
        "outcomes": outcomes.counts(),
        "as_of": [iso(t) for t in sorted(as_of)],
        "horizon_days": horizon_days,
        "test_from": iso(test_from) if test_from is not None else None,
        "models": {},
    }
    full = {}
    for label, model in models.items():
        samples = collect(events, outcomes, model, as_of, horizon, outcome, parts)
        leads = lead_times(events, outcomes, model, lookback_days, parts=parts)
        summary["models"][label], full[label] = summarise(model, samples, leads, test_from, outcome)
    return summary, full

"""Evaluate an account's state under a model at a point in time: scores with explanations.

`evaluate` is a pure function of (model, state, time, previous bands). Scores are a function of
time: decayed aggregates shrink and sources go stale as `at` moves on, with no new signal.

For each objective: every factor gets a raw value and a 0-100 sub-score, or is `missing` (no
data) or `stale` (its newest data is older than its source's stale_after); the score is the
weighted mean of the available factors (weights renormalised over them); confidence is the share
of the objective's weight that had available data. Active overrides then adjust or pin it. The
band follows the score with hysteresis: it changes only once the score is past the band's edge
by the objective's margin.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from shared.events import EVENT_TYPE_SOURCE
from shared.scoring import decay
from shared.scoring.model import Band, Factor, Model, Objective, Segment
from shared.scoring.news import News, NewsItem
from shared.scoring.state import AccountState

DAY = decay.DAY
Status = Literal["ok", "missing", "stale"]


class FactorResult(NamedTuple):
    factor: str
    group: str
    raw: float | None
    sub_score: float | None
    weight: float
    contribution: float
    status: Status
    last_data_at: float | None

    def as_dict(self, times: dict[float, datetime]) -> dict[str, Any]:
        """In the health document's shape (shared/health.py); `times` memoises the datetimes
        of the evaluation's few distinct data times."""
        last = self[7]
        return {
            "factor": self[0],
            "group": self[1],
            "raw": self[2],
            "sub_score": self[3],
            "weight": self[4],
            "contribution": self[5],
            "status": self[6],
            "last_data_at": None
            if last is None
            else times.get(last) or times.setdefault(last, datetime.fromtimestamp(last, UTC)),
        }


@dataclass(frozen=True, slots=True)
class ObjectiveScore:
    objective: str
    score: float | None
    band: str
    confidence: float
    model_score: float | None
    factors: tuple[FactorResult, ...]
    overrides: tuple[dict[str, Any], ...]
    caps: tuple[dict[str, Any], ...] = ()
    # P(the objective's outcome within horizon_days), when the model is calibrated
    probability: float | None = None
    horizon_days: float | None = None
    outcome: str | None = None
    news: tuple[dict[str, Any], ...] = ()  # the market news its market factors read

    def explanation(self) -> dict[str, Any]:
        """How the score was made, in the health document's shape (shared/health.py); times
        are datetimes, which the scorer's JSON encoding writes as RFC 3339."""
        times: dict[float, datetime] = {}
        document: dict[str, Any] = {
            "weighted_score": self.model_score,
            "factors": [f.as_dict(times) for f in self.factors],
            "caps": list(self.caps),
            "overrides": list(self.overrides),
        }
        if self.horizon_days is not None:
            document["probability"] = self.probability
            document["probability_horizon_days"] = self.horizon_days
            document["probability_outcome"] = self.outcome
        if self.news:
            document["news"] = list(self.news)
        return document


@dataclass(frozen=True, slots=True)
class Evaluation:
    at: float
    model_version: str
    segment: str
    scores: dict[str, ObjectiveScore]
    freshness: dict[str, dict[str, Any]]
    next_review_at: float


UNKNOWN_BAND = "unknown"


def source_of(model: Model, aggregate: str) -> str:
    kind = model.aggregates[aggregate].signals[0]
    return EVENT_TYPE_SOURCE.get(kind, "api")


def _stale_after(model: Model, factor: Factor, source: str) -> float:
    days = factor.stale_after_days or model.stale_after_days.get(source)
    return math.inf if days is None else days * DAY


class _Read(NamedTuple):
    """One aggregate a factor reads, as `_value` needs it."""

    name: str
    aggregation: str  # the aggregate's `kind` in the model file
    decayed: bool
    half_life_days: float  # 1 where the kind has none
    source: str
    window_days: int = 0  # windowed kinds only


def _value(state: AccountState, read: _Read, at: float) -> float | None:
    last = state.last.get(read.name)
    if last is None:
        # Nothing counted yet: zero if we hear from the source at all, unknown otherwise.
        counted = read.decayed or read.window_days or read.aggregation == "count"
        return 0.0 if counted and read.source in state.sources else None
    if read.aggregation == "latest":
        return float(state.latest[read.name][2])
    if read.aggregation == "last_seen":
        return max(at - last, 0.0) / DAY
    if read.aggregation == "first_seen":  # tenure, in days
        return max(at - state.first[read.name], 0.0) / DAY
    if read.aggregation == "count":
        return float(state.counts.get(read.name, 0))
    if read.window_days:
        total = state.window_total(read.name, read.window_days, at)
        return float(total) if read.aggregation == "window_count" else total / 1_000_000
    return decay.value(state.decayed.get(read.name), at, read.half_life_days)


def _raw_value(
    p: _FactorPlan, state: AccountState, at: float, overrides: list[dict[str, Any]], news: News
) -> float | None:
    if p.market is not None:  # the decayed impact of the news that concerns the account
        items = _news_read(p, news, at)
        return sum(item.impact * weight for item, weight in items) if items else None
    if p.csm_sentiment:
        sentiments = [o for o in overrides if o["action"] == "sentiment"]
        return float(sentiments[-1]["value"]) if sentiments else None
    if p.overdue:  # days since the newest signal, over the account's own average gap
        name = p.inputs[0].name
        count, first, last = state.counts.get(name, 0), state.first.get(name), state.last.get(name)
        if count < 3 or first is None or last is None or last <= first:
            return None
        return max(at - last, 0.0) / ((last - first) / (count - 1))
    if len(p.inputs) == 1:
        return _value(state, p.inputs[0], at)
    top, bottom = _value(state, p.inputs[0], at), _value(state, p.inputs[1], at)
    if top is None or bottom is None:
        return None
    if p.trend:  # steady-state decayed count = rate * h/ln2
        top, bottom = top / p.inputs[0].half_life_days, bottom / p.inputs[1].half_life_days
    if abs(bottom) < 1e-9:
        return None
    return top / bottom


def _news_read(p: _FactorPlan, news: News, at: float) -> list[tuple[NewsItem, float]]:
    """The items of `news` (those that concern the account, up to `at`) a market factor reads,
    each with its weight now; those that weigh under 1% are left out."""
    market = p.market
    read = []
    for item in news:
        if market.topics and item.topic not in market.topics:
            continue
        weight = 0.5 ** ((at - item.t) / (market.half_life_days * DAY))
        if weight >= 0.01:
            read.append((item, weight))
    return read


def _factor_last_data(
    p: _FactorPlan, state: AccountState, overrides: list[dict[str, Any]], news: News, at: float
) -> float | None:
    if p.market is not None:
        items = _news_read(p, news, at)
        return max(item.t for item, _ in items) if items else None
    if p.csm_sentiment:
        sentiments = [o for o in overrides if o["action"] == "sentiment"]
        return sentiments[-1]["set_at"] if sentiments else None
    last = state.last
    times = [last[read.name] for read in p.inputs if read.name in last]
    return max(times) if times else None


def factor_weights(objective: Objective, override: Any, model: Model) -> dict[str, float]:
    """Each factor's share of the objective's weight (a segment's `override` of it applied):
    the group's weight split over its factors by their own."""
    groups = {**objective.groups, **(override.groups if override else {})}
    factors = {**objective.factors, **(override.factors if override else {})}
    per_group: dict[str, float] = {}
    for name, weight in factors.items():
        group = model.factors[name].group
        per_group[group] = per_group.get(group, 0.0) + weight
    # A factor listed with weight 0 is still evaluated and shown (a cap may read it; a fitted
    # model says so when the data gave it no weight); it adds nothing to the score.
    return {
        name: groups.get(model.factors[name].group, 0.0)
        * weight
        / per_group[model.factors[name].group]
        if per_group[model.factors[name].group] > 0
        else 0.0
        for name, weight in factors.items()
    }


def band_for(score: float | None, bands: list[Band], previous: str | None, margin: float) -> str:
    """The band for `score`, moving off `previous` only once past the edge by `margin`."""
    if score is None:
        return UNKNOWN_BAND
    names = [b.name for b in bands]
    raw = max(i for i, b in enumerate(bands) if score >= b.min)
    if previous not in names:
        return names[raw]
    current = names.index(previous)
    while current + 1 < len(bands) and score >= bands[current + 1].min + margin:
        current += 1
    while current > 0 and score < bands[current].min - margin:
        current -= 1
    return names[current]


def _apply_overrides(
    score: float | None, objective: str, overrides: list[dict[str, Any]]
) -> tuple[float | None, tuple[dict[str, Any], ...]]:
    applied: list[dict[str, Any]] = []
    for o in overrides:
        if o["action"] == "sentiment" or o.get("objective") not in (None, objective):
            continue
        if o["action"] == "adjust" and score is not None:
            score = min(max(score + float(o["value"]), 0.0), 100.0)
        elif o["action"] == "pin":
            score = min(max(float(o["value"]), 0.0), 100.0)
        applied.append(
            {
                k: o[k]
                for k in ("override_id", "action", "value", "author", "reason", "expires_at")
                if k in o
            }
        )
    return score, tuple(applied)


class _FactorPlan(NamedTuple):
    name: str
    group: str
    inputs: tuple[_Read, ...]  # the aggregates it reads, resolved against the model
    csm_sentiment: bool
    trend: bool
    overdue: bool
    weight: float
    transform: Any
    stale_after: float  # seconds; inf where silence is itself the signal
    share: float  # weight / total weight of the objective, as shown
    key: str  # what its value is memoised by: objectives that shape a factor alike share it
    market: Any = None  # MarketInput of a market factor


def _plan(
    model: Model, name: str, objective: Objective, segment: Segment | None
) -> list[_FactorPlan]:
    """What one objective needs per evaluation, derived once per (objective, segment) and
    kept with the model: not by its version, which two files naming the factors in other
    orders share, while the order of an explanation's factors is the file's."""
    key = (name, segment.name if segment else None)
    cached: list[_FactorPlan] | None = model.derived.get(key)
    if cached is not None:
        return cached
    weights = factor_weights(objective, segment.objectives.get(name) if segment else None, model)
    transforms = {**(segment.transforms if segment else {}), **objective.transforms}
    total = sum(weights.values())
    plan = []
    for factor_name, weight in weights.items():
        factor = model.factors[factor_name]
        silence_is_signal = bool(
            factor.trend
            or factor.market
            or factor.days_since
            or factor.overdue
            or (factor.aggregate and model.aggregates[factor.aggregate].kind != "latest")
        )
        inputs = tuple(
            _Read(
                read,
                model.aggregates[read].kind,
                model.aggregates[read].decayed,
                model.aggregates[read].half_life_days or 1.0,
                source_of(model, read),
                model.aggregates[read].window_days or 0,
            )
            for read in factor.reads
        )
        source = "api" if factor.csm_sentiment else "market" if factor.market else inputs[0].source
        stale_after = math.inf if silence_is_signal else _stale_after(model, factor, source)
        plan.append(
            _FactorPlan(
                factor_name,
                factor.group,
                inputs,
                factor.csm_sentiment,
                bool(factor.trend),
                bool(factor.overdue),
                weight,
                transforms.get(factor_name, factor.transform),
                stale_after,
                round(weight / total, 6) if total else 0.0,
                f"{name}.{factor_name}" if factor_name in objective.transforms else factor_name,
                factor.market,
            )
        )
    model.derived[key] = plan
    return plan


class _FactorValue(NamedTuple):
    raw: float | None  # rounded, as shown
    sub_score: float | None
    status: Status
    last_data_at: float | None


def _factor_value(
    state: AccountState, p: _FactorPlan, at: float, overrides: list[dict[str, Any]], news: News
) -> _FactorValue:
    raw = _raw_value(p, state, at, overrides, news)
    last = _factor_last_data(p, state, overrides, news, at)
    if raw is None:
        return _FactorValue(None, None, "missing", last)
    stale = last is not None and at - last > p.stale_after
    return _FactorValue(round(raw, 6), round(p.transform(raw), 6), "stale" if stale else "ok", last)


def _interact(
    objective: Objective, results: list[tuple[_FactorPlan, _FactorValue]]
) -> list[tuple[_FactorPlan, _FactorValue]]:
    """The plan with each factor's weight multiplied by the interactions that apply to it now
    (the shares shown follow the weights)."""
    subs = {p.name: v.sub_score if v.status == "ok" else None for p, v in results}
    factor = {p.name: 1.0 for p, _ in results}
    for rule in objective.interactions:
        if rule.applies(subs.get(rule.when)):
            factor[rule.factor] *= rule.multiply
    weights = {p.name: p.weight * factor[p.name] for p, _ in results}
    total = sum(weights.values())
    return [
        (
            p._replace(
                weight=weights[p.name],
                share=round(weights[p.name] / total, 6) if total else 0.0,
            ),
            value,
        )
        for p, value in results
    ]


def _score_objective(
    model: Model,
    state: AccountState,
    name: str,
    objective: Objective,
    segment: Segment | None,
    at: float,
    previous_band: str | None,
    overrides: list[dict[str, Any]],
    values: dict[str, _FactorValue],
    news: News = (),
) -> ObjectiveScore:
    plan = _plan(model, name, objective, segment)
    results: list[tuple[_FactorPlan, _FactorValue]] = []
    for p in plan:
        # objectives share factors, and within one evaluation (one segment) a factor's
        # staleness, and its transform unless an objective has its own, are the same for all
        # of them: each is evaluated once
        value = values.get(p.key)
        if value is None:
            value = values[p.key] = _factor_value(state, p, at, overrides, news)
        results.append((p, value))
    if objective.interactions:
        results = _interact(objective, results)
    total = available = weighted = 0.0
    for p, value in results:
        total += p.weight
        if value.status == "ok":
            available += p.weight
            weighted += p.weight * value.sub_score  # type: ignore[operator]
    model_score = weighted / available if available > 0 else None
    # guardrails: a decisive fact caps the weighted mean (contributions still sum to it)
    capped = model_score
    caps: list[dict[str, Any]] = []
    if objective.caps:
        by_name = {p.name: (v.sub_score, v.status) for p, v in results}
        for cap in objective.caps:
            sub, status = by_name.get(cap.factor, (None, "missing"))
            if capped is None or status != "ok" or sub is None:
                continue
            if sub < cap.below and capped > cap.max:
                caps.append({"factor": cap.factor, "max": cap.max, "reason": cap.reason})
                capped = cap.max
    factors = tuple(
        [
            FactorResult(
                p.name,
                p.group,
                raw,
                sub,
                p.share,
                round(p.weight * sub / available, 6)  # type: ignore[operator]
                if status == "ok" and available
                else 0.0,
                status,
                last,
            )
            for p, (raw, sub, status, last) in results
        ]
    )
    read = {
        item.event_id: (item, weight)
        for p in plan
        if p.market is not None and news
        for item, weight in _news_read(p, news, at)
    }
    score, applied = _apply_overrides(capped, name, overrides)
    score = None if score is None else round(score, 4)
    calibration = objective.calibration
    return ObjectiveScore(
        objective=name,
        score=score,
        band=band_for(score, objective.bands, previous_band, objective.hysteresis),
        confidence=round(available / total, 6) if total else 0.0,
        model_score=None if model_score is None else round(model_score, 4),
        factors=factors,
        overrides=applied,
        caps=tuple(caps),
        probability=None
        if calibration is None or score is None
        else round(calibration.probability(score), 6),
        horizon_days=None if calibration is None else calibration.horizon_days,
        outcome=None if calibration is None else calibration.outcome,
        news=tuple(
            {
                "event_id": item.event_id,
                "topic": item.topic,
                "title": item.title,
                "impact": item.impact,
                "weight": round(weight, 6),
                "occurred_at": datetime.fromtimestamp(item.t, UTC),
            }
            for item, weight in sorted(read.values(), key=lambda r: -r[0].t)
        ),
    )


_READS_NEWS: dict[str, bool] = {}  # model version -> whether a factor of it reads news


def reads_news(model: Model) -> bool:
    reads = _READS_NEWS.get(model.version)
    if reads is None:
        reads = _READS_NEWS[model.version] = any(f.market for f in model.factors.values())
    return reads


def evaluate(
    model: Model,
    state: AccountState,
    at: float,
    previous_bands: dict[str, str] | None = None,
    news: News = (),
) -> Evaluation:
    """The account's scores at `at`; `news` is the market news known (the items that concern
    the account and happened by `at` are read)."""
    attributes = state.attribute_values()
    segment = model.segment_for(attributes)
    if news and reads_news(model):  # else no factor reads it: not filtered per account
        news = tuple(item for item in news if item.t <= at and item.concerns(attributes))
    else:
        news = ()
    overrides = state.active_overrides(at)
    values: dict[str, _FactorValue] = {}
    scores = {
        name: _score_objective(
            model,
            state,
            name,
            objective,
            segment,
            at,
            (previous_bands or {}).get(name),
            overrides,
            values,
            news,
        )
        for name, objective in model.objectives.items()
    }
    freshness = {}
    for source, days in sorted(model.stale_after_days.items()):
        last = state.sources.get(source)
        freshness[source] = {"last_data_at": last, "stale": last is None or at - last > days * DAY}
    return Evaluation(
        at=at,
        model_version=model.version,
        segment=segment.name if segment else "default",
        scores=scores,
        freshness=freshness,
        next_review_at=next_review(model, state, at),
    )


def next_review(model: Model, state: AccountState, at: float) -> float:
    """When time alone may next change this account's scores: periodic decay, an override
    expiring, or a source going stale."""
    candidates = [at + model.review_every_hours * 3600]
    for o in state.overrides.values():
        if "expires_at" in o and not o.get("revoked"):
            expiry = datetime.fromisoformat(o["expires_at"]).timestamp()
            if expiry > at:
                candidates.append(expiry)
    for source, days in model.stale_after_days.items():
        last = state.sources.get(source)
        if last is not None and last + days * DAY > at:
            candidates.append(last + days * DAY)
    return min(candidates)


_SHARED_NAMES: dict[tuple[str, ...], tuple[str, ...]] = {}


class Contributions:
    """factor -> (contribution, sub-score): all a later `top_movers` needs of a score. The
    scorer holds one per objective of every account it caches, so it is compact: the names are
    one tuple shared by every score of the same factors, the numbers one array of doubles
    (about a quarter of the memory of a dict of tuples of floats)."""

    __slots__ = ("names", "numbers")

    def __init__(self, names: tuple[str, ...], numbers: array[float]) -> None:
        self.names = _SHARED_NAMES.setdefault(names, names)
        self.numbers = numbers  # contribution, sub-score (NaN: none) per name

    def get(self, name: str) -> tuple[float, float | None] | None:
        try:
            i = 2 * self.names.index(name)
        except ValueError:
            return None
        sub = self.numbers[i + 1]
        return self.numbers[i], None if math.isnan(sub) else sub

    def by_name(self) -> dict[str, tuple[float, float]]:
        """factor -> (contribution, sub-score or NaN)."""
        numbers = self.numbers
        return dict(zip(self.names, zip(numbers[0::2], numbers[1::2], strict=True), strict=True))


def contributions(factors: Iterable[FactorResult | dict[str, Any]]) -> Contributions:
    names: list[str] = []
    numbers: list[float] = []
    for f in factors:
        if isinstance(f, dict):  # as stored in an explanation
            name, contribution, sub = f["factor"], f["contribution"], f["sub_score"]
        else:
            name, contribution, sub = f.factor, f.contribution, f.sub_score
        names.append(name)
        numbers += (contribution, math.nan if sub is None else sub)
    return Contributions(tuple(names), array("d", numbers))


def top_movers(
    before: Contributions | None, new: ObjectiveScore, limit: int = 3
) -> list[dict[str, Any]]:
    """The factors whose contribution moved most since `before`."""
    old = before.by_name() if before is not None else {}
    moved: list[tuple[float, str, float, FactorResult, tuple[float, float]]] = []
    for f in new.factors:
        prior = old.get(f.factor, _NONE_BEFORE)
        delta = round(f.contribution - prior[0], 6)
        if delta:
            moved.append((-abs(delta), f.factor, delta, f, prior))
    moved.sort()  # by the size of the move, then the factor's (unique) name
    return [
        {
            "factor": f.factor,
            "group": f.group,
            "delta": delta,
            "old_contribution": prior[0],
            "new_contribution": f.contribution,
            "old_sub_score": None if math.isnan(prior[1]) else prior[1],
            "new_sub_score": f.sub_score,
            "status": f.status,
        }
        for _, _, delta, f, prior in moved[:limit]
    ]


_NONE_BEFORE = (0.0, math.nan)  # a factor the score before did not have


def actions(model: Model, evaluation: Evaluation, objective: str) -> list[dict[str, Any]]:
    """What would help: for each factor with data, the points the objective's score would gain
    were that factor alone at the sub-score its transform calls healthy (its best), at today's
    weights and confidence, through the objective's caps and the overrides in force; with the
    model's advice for the factor. Largest gain first; factors that would gain nothing (already
    healthy, or the score is pinned) are left out."""
    score = evaluation.scores[objective]
    if score.score is None or score.model_score is None or not score.confidence:
        return []
    segment = next((s for s in model.segments if s.name == evaluation.segment), None)
    spec = model.objectives[objective]
    best = {p.name: p.transform.best for p in _plan(model, objective, spec, segment)}
    subs = {f.factor: f.sub_score for f in score.factors if f.status == "ok"}
    found = []
    for f in score.factors:
        sub = subs.get(f.factor)
        if sub is None or not f.weight or sub >= best[f.factor]:
            continue
        lifted: float | None = score.model_score + f.weight / score.confidence * (
            best[f.factor] - sub
        )
        for cap in spec.caps:
            capped_sub = best[f.factor] if cap.factor == f.factor else subs.get(cap.factor)
            if capped_sub is not None and capped_sub < cap.below and lifted > cap.max:  # type: ignore[operator]
                lifted = cap.max
        lifted, _ = _apply_overrides(lifted, objective, list(score.overrides))
        points = round(min(lifted or 0.0, 100.0) - score.score, 2)
        if points >= 0.01:
            found.append(
                {
                    "factor": f.factor,
                    "group": f.group,
                    "points": points,
                    "sub_score": sub,
                    "target_sub_score": best[f.factor],
                    "advice": model.factors[f.factor].advice or None,
                }
            )
    found.sort(key=lambda a: (-a["points"], a["factor"]))
    return found

"""A scoring model: a versioned YAML file, validated on load.

Sections (see shared/scoring/models/default.yaml, documented factor by factor):
- aggregates: the event-time state kept per account (decayed counts/sums, latest values,
  last-seen times), each naming the signal kinds it reads;
- factors: a value over aggregates (an aggregate, a ratio, a trend, days since) mapped to a
  0-100 sub-score by a transform (piecewise-linear or logistic), in a group;
- objectives: group weights, factor weights and bands with hysteresis; one score each;
- segments: rules on account attributes that override weights and transforms (an objective's
  own transform of a factor, as `healthscore fit` learns them, beats a segment's).

A model's version is `<name>@<12 hex of sha256 of its canonical JSON>`, so any change to what it
computes changes its version, and formatting or comments do not.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from functools import cached_property
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.errors import ConfigurationError
from shared.outcomes import NAME_PATTERN

# a factor's group: any name (usage, support, billing, sentiment, engagement, ...); an
# objective weighs the groups its factors are in
Group = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Aggregate(_Strict):
    """decayed_count / decayed_sum: exponentially decayed; latest: the newest value; last_seen
    / first_seen: the newest / earliest event time (`days_since` reads either: silence or
    tenure); count: the exact number of signals, ever; window_count / window_sum: the exact
    count or sum over the last `window_days` calendar days (UTC, today included)."""

    kind: Literal[
        "decayed_count",
        "decayed_sum",
        "latest",
        "last_seen",
        "first_seen",
        "count",
        "window_count",
        "window_sum",
    ]
    signals: Annotated[list[str], Field(min_length=1)]
    field: str | None = Field(
        default=None,
        description="signal data field summed / kept; `sentiment` is the text sentiment",
    )
    where: dict[str, str | int | float | bool] = {}
    weight_by: str | None = Field(
        default=None, description="data field whose value picks the weight in `weights`"
    )
    weights: dict[str, float] = {}
    by_kind: dict[str, float] = Field(
        default={}, description="value per signal kind, instead of a field"
    )
    half_life_days: float | None = Field(default=None, ge=0.5, le=3650)
    window_days: int | None = Field(default=None, ge=1, le=3650)

    @property
    def decayed(self) -> bool:
        return self.kind in ("decayed_count", "decayed_sum")

    @property
    def windowed(self) -> bool:
        return self.kind in ("window_count", "window_sum")

    @model_validator(mode="after")
    def _consistent(self) -> Aggregate:
        if self.decayed and self.half_life_days is None:
            raise ValueError(f"{self.kind} needs half_life_days")
        if not self.decayed and self.half_life_days is not None:
            raise ValueError(f"{self.kind} takes no half_life_days")
        if self.windowed != (self.window_days is not None):
            raise ValueError(f"window_days goes with window_count and window_sum, not {self.kind}")
        if self.kind in ("decayed_sum", "latest", "window_sum") and (self.field is None) == (
            not self.by_kind
        ):
            raise ValueError(f"{self.kind} needs a field or by_kind (one of them)")
        if set(self.by_kind) - set(self.signals):
            raise ValueError("by_kind names a signal kind the aggregate does not read")
        if bool(self.weight_by) != bool(self.weights):
            raise ValueError("weight_by and weights go together")
        return self


class Piecewise(_Strict):
    """Linear interpolation between (x, sub-score) points; flat outside them."""

    piecewise: Annotated[list[tuple[float, float]], Field(min_length=2)]

    @model_validator(mode="after")
    def _sorted(self) -> Piecewise:
        xs = [x for x, _ in self.piecewise]
        if any(b <= a for a, b in pairwise(xs)):
            raise ValueError("piecewise x values must increase strictly")
        if any(not 0 <= y <= 100 for _, y in self.piecewise):
            raise ValueError("piecewise sub-scores must lie in 0..100")
        return self

    def __call__(self, x: float) -> float:
        points = self.piecewise
        if x <= points[0][0]:
            return points[0][1]
        for (x0, y0), (x1, y1) in pairwise(points):
            if x <= x1:
                return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
        return points[-1][1]

    @property
    def best(self) -> float:
        """The sub-score the transform calls healthy: its highest."""
        return max(y for _, y in self.piecewise)


class Logistic(_Strict):
    """100 / (1 + exp(-steepness * (x - midpoint)))."""

    midpoint: float
    steepness: float = Field(description="negative for 'more is worse'")

    def __call__(self, x: float) -> float:
        z = -self.steepness * (x - self.midpoint)
        return 0.0 if z > 700 else 100.0 / (1.0 + math.exp(z))


class LogisticTransform(_Strict):
    logistic: Logistic

    def __call__(self, x: float) -> float:
        return self.logistic(x)

    @property
    def best(self) -> float:
        """The sub-score the transform calls healthy: the curve's upper limit."""
        return 100.0


Transform = Piecewise | LogisticTransform


class MarketInput(_Strict):
    """News about the account's segment (market events): the sum of the impact (-1..1) of
    every item that concerns the account, each decayed by the half-life since it happened;
    missing while no item weighs 1% or more."""

    topics: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]] = Field(
        default=[], description="the topics read; none: every topic"
    )
    half_life_days: float = Field(ge=0.5, le=3650)


class Factor(_Strict):
    group: Group
    description: str = ""
    aggregate: str | None = None
    ratio: tuple[str, str] | None = None
    trend: tuple[str, str] | None = Field(
        default=None, description="(short, long) decayed counts: rate ratio"
    )
    days_since: str | None = None
    overdue: str | None = Field(
        default=None,
        description="a count aggregate: days since its newest signal over the account's own "
        "average gap between its signals (1 = on cadence; needs three signals)",
    )
    csm_sentiment: bool = Field(
        default=False, description="latest active CSM sentiment override (0-100)"
    )
    market: MarketInput | None = None
    transform: Transform
    stale_after_days: float | None = Field(default=None, gt=0)
    advice: str = Field(
        default="",
        max_length=500,
        description="what a team can do to improve this factor; shown with the account's actions",
    )

    @model_validator(mode="after")
    def _one_value(self) -> Factor:
        chosen = [
            k for k in ("aggregate", "ratio", "trend", "days_since", "overdue") if getattr(self, k)
        ]
        if len(chosen) + self.csm_sentiment + (self.market is not None) != 1:
            raise ValueError(
                "a factor has exactly one of aggregate, ratio, trend, days_since, overdue, "
                "csm_sentiment, market"
            )
        return self

    @property
    def reads(self) -> tuple[str, ...]:
        if self.ratio or self.trend:
            return tuple(self.ratio or self.trend or ())
        single = self.aggregate or self.days_since or self.overdue
        return (single,) if single else ()


class Band(_Strict):
    name: str
    min: float = Field(ge=0, le=100, description="lowest score of this band")


class Cap(_Strict):
    """A guardrail: while `factor`'s sub-score is below `below`, the score is at most `max`.
    This is how a single decisive fact (nobody has used the product for weeks, the
    subscription was cancelled) outweighs good news from elsewhere."""

    factor: str
    below: float = Field(ge=0, le=100)
    max: float = Field(ge=0, le=100)
    reason: str


class Calibration(_Strict):
    """P(`outcome` within `horizon_days` | score) = 1 / (1 + exp(-(intercept +
    slope * score / 100))): a logistic (Platt) fit of the outcome on the score, which
    `healthscore fit` writes from its training accounts."""

    horizon_days: float = Field(gt=0, description="the window the probability is about")
    outcome: str = Field(
        default="churn",
        pattern=NAME_PATTERN,
        description="what the probability is of: churn, renewal, expansion, ...",
    )
    intercept: float = Field(allow_inf_nan=False)
    slope: float = Field(allow_inf_nan=False, description="per 100 points of score")
    fitted: str = Field(default="", description="what it was fitted on, for a reader")

    def probability(self, score: float) -> float:
        z = self.intercept + self.slope * score / 100.0
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


class Interaction(_Strict):
    """While factor `when`'s sub-score is at least `at_least` (or below `below`), `factor`'s
    weight is multiplied by `multiply`: e.g. recency matters less for frequent buyers."""

    factor: str
    when: str
    at_least: float | None = Field(default=None, ge=0, le=100)
    below: float | None = Field(default=None, ge=0, le=100)
    multiply: float = Field(ge=0, le=100)

    @model_validator(mode="after")
    def _one_bound(self) -> Interaction:
        if (self.at_least is None) == (self.below is None):
            raise ValueError("an interaction has one of at_least and below")
        return self

    def applies(self, sub_score: float | None) -> bool:
        if sub_score is None:
            return False
        return sub_score >= self.at_least if self.at_least is not None else sub_score < self.below  # type: ignore[operator]


class Objective(_Strict):
    description: str = ""
    groups: dict[Group, Annotated[float, Field(ge=0)]]
    factors: dict[str, Annotated[float, Field(ge=0)]]
    bands: Annotated[list[Band], Field(min_length=1)]
    hysteresis: float = Field(default=3.0, ge=0, le=20)
    alert_drop: float = Field(
        default=15.0, gt=0, description="a drop of this many points emits a change event"
    )
    caps: list[Cap] = []
    interactions: list[Interaction] = []
    transforms: dict[str, Transform] = Field(
        default={},
        description="this objective's own shape for a factor (what `healthscore fit` learns); "
        "it applies in every segment",
    )
    calibration: Calibration | None = None
    outcome: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="what a score of this objective foresees (live quality, back-tests): its "
        "calibration's outcome if it has one, else this, else churn",
    )

    @property
    def foresees(self) -> str:
        """The outcome this objective's scores are judged by."""
        if self.calibration is not None:
            return self.calibration.outcome
        return self.outcome or "churn"

    @model_validator(mode="after")
    def _bands(self) -> Objective:
        mins = [b.min for b in self.bands]
        if mins[0] != 0 or any(b <= a for a, b in pairwise(mins)):
            raise ValueError("bands go from lowest to highest; the first has min 0")
        return self


class ObjectiveOverride(_Strict):
    groups: dict[Group, Annotated[float, Field(ge=0)]] = {}
    factors: dict[str, Annotated[float, Field(ge=0)]] = {}


class Segment(_Strict):
    name: str
    when: dict[Literal["industry", "tier", "region", "lifecycle_stage"], list[str]]
    objectives: dict[str, ObjectiveOverride] = {}
    transforms: dict[str, Transform] = {}


class Model(_Strict):
    name: str = Field(pattern=r"^[a-z0-9_\-]+$")
    description: str = ""
    stale_after_days: dict[str, Annotated[float, Field(gt=0)]]
    review_every_hours: float = Field(
        default=6.0, gt=0, description="the sweep re-scores an idle account this often"
    )
    aggregates: dict[str, Aggregate]
    factors: dict[str, Factor]
    objectives: Annotated[dict[str, Objective], Field(min_length=1)]
    segments: list[Segment] = []

    @model_validator(mode="after")
    def _references(self) -> Model:
        for name, factor in self.factors.items():
            for agg in factor.reads:
                if agg not in self.aggregates:
                    raise ValueError(f"factors.{name} reads unknown aggregate {agg!r}")
            if factor.trend:
                for agg in factor.trend:
                    if self.aggregates[agg].kind != "decayed_count":
                        raise ValueError(f"factors.{name}: trend needs decayed_count aggregates")
            if factor.overdue and self.aggregates[factor.overdue].kind != "count":
                raise ValueError(f"factors.{name}: overdue needs a count aggregate")
            if factor.days_since and self.aggregates[factor.days_since].kind not in (
                "last_seen",
                "first_seen",
            ):
                raise ValueError(
                    f"factors.{name}: days_since needs a last_seen or first_seen aggregate"
                )
        groups = {factor.group for factor in self.factors.values()}
        for name, objective in self.objectives.items():
            for weighted in objective.factors:
                if weighted not in self.factors:
                    raise ValueError(f"objectives.{name} weights unknown factor {weighted!r}")
            for group in set(objective.groups) - groups:
                raise ValueError(
                    f"objectives.{name} weights group {group!r}, which no factor is in"
                )
            for cap in objective.caps:
                if cap.factor not in objective.factors:
                    raise ValueError(f"objectives.{name} caps unweighted factor {cap.factor!r}")
            for shaped in objective.transforms:
                if shaped not in objective.factors:
                    raise ValueError(f"objectives.{name} transforms unweighted factor {shaped!r}")
            for rule in objective.interactions:
                for named in (rule.factor, rule.when):
                    if named not in objective.factors:
                        raise ValueError(
                            f"objectives.{name}: interaction names unweighted factor {named!r}"
                        )
        for i, segment in enumerate(self.segments):
            for target, override in segment.objectives.items():
                if target not in self.objectives:
                    raise ValueError(f"segments[{i}] overrides unknown objective {target!r}")
                for group in set(override.groups) - groups:
                    raise ValueError(
                        f"segments[{i}] weights group {group!r}, which no factor is in"
                    )
                for weighted in override.factors:
                    if weighted not in self.factors:
                        raise ValueError(f"segments[{i}] weights unknown factor {weighted!r}")
            for transformed in segment.transforms:
                if transformed not in self.factors:
                    raise ValueError(f"segments[{i}] transforms unknown factor {transformed!r}")
        return self

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Model:
        """A copy, with what was derived of this model (its version, the engine's plans)
        derived again for the copy's content."""
        copied = super().model_copy(update=update, deep=deep)
        for derived in ("version", "derived"):
            copied.__dict__.pop(derived, None)
        return copied

    @cached_property
    def derived(self) -> dict[Any, Any]:
        """What the engine derives of this model once and keeps with it (its plans)."""
        return {}

    @cached_property
    def version(self) -> str:
        document = self.model_dump(mode="json")
        for factor in document["factors"].values():  # a model without advice keeps its version
            if not factor["advice"]:
                del factor["advice"]
        for objective in document["objectives"].values():  # and one that names no outcome
            if objective["outcome"] is None:
                del objective["outcome"]
        canonical = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
        return f"{self.name}@{hashlib.sha256(canonical).hexdigest()[:12]}"

    def segment_for(self, attributes: dict[str, Any]) -> Segment | None:
        for segment in self.segments:
            if all(attributes.get(k) in values for k, values in segment.when.items()):
                return segment
        return None


def load_model(path: Path) -> Model:
    """Parse and validate a model file; errors name the file, the path in it and the problem."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read model: {exc}") from exc
    return parse_model(text, str(path))


def parse_model(text: str, source: str = "model") -> Model:
    """Parse and validate a model document (YAML or JSON); errors name `source`, the path in
    the document and the problem."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{source}: cannot read model: {exc}") from exc
    try:
        return Model.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors(include_url=False)[:10]
        )
        raise ConfigurationError(f"{source}: invalid model: {problems}") from exc

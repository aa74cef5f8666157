"""The health document: one definition of what the engine explains, the API serves and the
console renders.

The scoring core builds each objective's explanation (`ObjectiveScore.explanation`) in exactly
these shapes. Nothing stores it: the API derives it on read from the stored state and model
version (services/api/health.py, docs/adr/0018) and serves it with response models built from
these classes (services/api/schemas.py); the console renders that same document. Tests
validate what the engine builds against them, so the three cannot drift apart. Times are
RFC 3339."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class FactorExplanation(BaseModel):
    factor: str = Field(examples=["login_frequency"])
    group: str = Field(examples=["usage"])
    raw: float | None = Field(description="the factor's raw value", examples=[27.4])
    sub_score: float | None = Field(description="0-100", examples=[84.6])
    weight: float = Field(description="share of the objective's weight", examples=[0.12])
    contribution: float = Field(
        description="points of the weighted score this factor contributes", examples=[11.3]
    )
    status: Literal["ok", "missing", "stale"]
    last_data_at: datetime | None = Field(description="time of its newest data")


class Cap(BaseModel):
    factor: str
    max: float
    reason: str


class AppliedOverride(BaseModel):
    override_id: str
    action: Literal["pin", "adjust", "sentiment"]
    value: float
    author: str
    reason: str
    expires_at: datetime


class NewsRead(BaseModel):
    """A market event a market factor read for this score (it concerns the account)."""

    event_id: str
    topic: str = Field(examples=["regulatory_change"])
    title: str = Field(examples=["New data-residency rules for EU fintechs"])
    impact: float = Field(ge=-1, le=1, description="-1 harmful .. 1 helpful, as sent")
    weight: float = Field(description="its decayed weight now: 1 when new, 0.5 a half-life on")
    occurred_at: datetime


class Explanation(BaseModel):
    """How one objective's score was made."""

    weighted_score: float | None = Field(description="before caps and overrides")
    factors: list[FactorExplanation]
    caps: list[Cap]
    overrides: list[AppliedOverride]
    probability: float | None = Field(
        default=None,
        description="probability of probability_outcome (for churn_risk: churn) within "
        "probability_horizon_days, from the model's calibration of its score; absent when "
        "the model is not calibrated",
        examples=[0.18],
    )
    probability_horizon_days: float | None = Field(default=None, examples=[90])
    probability_outcome: str | None = Field(
        default=None, description="what the probability is of", examples=["churn"]
    )
    news: list[NewsRead] = Field(
        default=[], description="market news about the account's segment that the score read"
    )


class Action(BaseModel):
    """Something that would help: a factor whose improvement adds the most to the score."""

    factor: str = Field(examples=["seat_utilisation"])
    group: str = Field(examples=["usage"])
    points: float = Field(
        description="points the score would gain were this factor alone at its target, at "
        "today's weights and confidence, through the objective's caps and overrides",
        examples=[6.4],
    )
    sub_score: float = Field(description="the factor's sub-score now", examples=[41.0])
    target_sub_score: float = Field(
        description="the sub-score its transform calls healthy (its best)", examples=[100.0]
    )
    advice: str | None = Field(
        description="what the model says a team can do about it",
        examples=[
            "Run an adoption review: find the teams with unused seats and plan their onboarding."
        ],
    )


class SourceFreshness(BaseModel):
    last_data_at: datetime | None
    stale: bool

"""Request and response models of the REST API (they are the OpenAPI document)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, Field, model_validator

from shared.health import Action, Explanation, SourceFreshness

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]")
# PostgreSQL text cannot hold NUL, and control characters have no business in these fields.
NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"


def _iso_only(value: object) -> object:
    if isinstance(value, str) and not _ISO.match(value):
        raise ValueError("expected an RFC 3339 date-time such as 2026-11-24T09:30:00Z")
    if not isinstance(value, str | datetime):
        raise ValueError("expected an RFC 3339 date-time string")
    return value


IsoDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_only)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-&.]+$")]


class ObjectiveHealthResponse(Explanation):
    """An objective's score and, from the shared definition, its explanation."""

    objective: str = Field(examples=["churn_risk"])
    model_role: Literal["active", "shadow"]
    model_version: str = Field(examples=["default@5ea8e56d6c7e"])
    score: float | None = Field(description="0-100, higher is healthier", examples=[72.5])
    band: str = Field(examples=["healthy"])
    confidence: float = Field(description="share of weight backed by data", examples=[0.9])
    evaluated_at: datetime
    changed_at: datetime
    actions: list[Action] = Field(
        description="what would help most, largest gain first (empty when the score is "
        "pinned or every factor with data is at its best)"
    )


class OverrideResponse(BaseModel):
    override_id: str = Field(examples=["3f1c8c1e-5b7a-4d5e-9a51-0d7c3c1b2a10"])
    account_id: str
    action: Literal["pin", "adjust", "sentiment"]
    objective: str | None
    value: float
    reason: str
    author: str
    created_at: datetime
    expires_at: datetime
    status: Literal["active", "expired", "revoked"]
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None


class AccountHealthResponse(BaseModel):
    account_id: str = Field(examples=["acc-000042"])
    name: str | None = Field(examples=["Acme Health"])
    industry: str | None = Field(examples=["healthcare"])
    region: str | None = Field(examples=["emea"])
    tier: str | None = Field(examples=["enterprise"])
    lifecycle_stage: str | None = Field(examples=["mature"])
    segment: str | None = Field(examples=["enterprise"])
    last_event_at: datetime | None
    updated_at: datetime
    freshness: dict[str, SourceFreshness]
    objectives: list[ObjectiveHealthResponse]
    active_overrides: list[OverrideResponse] = Field(
        description="overrides in force or awaiting application by the scorer"
    )


class HistoryItemResponse(BaseModel):
    id: int
    objective: str
    model_role: Literal["active", "shadow"]
    model_version: str
    at: datetime
    old_score: float | None
    new_score: float | None
    old_band: str | None
    new_band: str
    probability: float | None = Field(
        description="probability of the objective's outcome within the model's horizon at the "
        "new score; null when the model is not calibrated"
    )
    cause: Literal["signals", "time", "override", "model_change"]
    top_movers: list[dict[str, Any]]
    signal_ids: list[str]


class HistoryPageResponse(BaseModel):
    account_id: str
    items: list[HistoryItemResponse]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


class AccountSummaryResponse(BaseModel):
    account_id: str
    name: str | None
    industry: str | None
    tier: str | None
    region: str | None
    segment: str | None
    objective: str
    score: float | None
    band: str
    confidence: float
    probability: float | None = Field(
        default=None,
        description="probability of the objective's outcome within the model's horizon "
        "(its calibration); null when the model is not calibrated",
    )
    change: float | None = Field(
        description="points the score moved at its last recorded change (4 decimals, like scores)"
    )
    changed_at: datetime
    stale_sources: list[str]
    data_at: datetime | None = Field(
        default=None, description="time of the account's newest data from any source"
    )


class AccountPageResponse(BaseModel):
    items: list[AccountSummaryResponse]
    next_cursor: str | None


class OverrideRequest(BaseModel):
    """Pin or adjust a score, or record the CSM's own reading of the account."""

    model_config = {"extra": "forbid"}

    action: Literal["pin", "adjust", "sentiment"] = Field(
        description="pin: the score becomes `value`; adjust: `value` points are added; "
        "sentiment: the CSM's reading (0-100) feeds the csm_sentiment factor"
    )
    objective: Name | None = Field(
        default=None,
        description="objective to pin/adjust; all when omitted; not for sentiment",
        examples=["churn_risk"],
    )
    value: float = Field(allow_inf_nan=False, strict=True, examples=[35])
    reason: str = Field(
        min_length=3, max_length=1000, pattern=NO_CONTROL, examples=["renewal call went badly"]
    )
    expires_at: IsoDatetime = Field(examples=["2026-12-24T00:00:00Z"])

    @model_validator(mode="after")
    def _ranges(self) -> OverrideRequest:
        low, high = (-100.0, 100.0) if self.action == "adjust" else (0.0, 100.0)
        if not low <= self.value <= high:
            raise ValueError(f"value for {self.action} must lie in {low:g}..{high:g}")
        if self.action == "sentiment" and self.objective is not None:
            raise ValueError("sentiment applies to the account, not to one objective")
        return self


class OverrideAcceptedResponse(BaseModel):
    override_id: str
    status: Literal["accepted"] = "accepted"
    detail: str = "recorded; the scorer applies it within seconds"


class ObjectivePreview(BaseModel):
    objective: str
    score: float | None = Field(description="the score now, as it stands")
    band: str
    preview_score: float | None = Field(description="the score now with the override")
    preview_band: str
    confidence: float


class OverridePreviewResponse(BaseModel):
    """What an override would do if saved now; nothing is saved."""

    account_id: str
    at: datetime
    objectives: list[ObjectivePreview]


class ModelResponse(BaseModel):
    role: Literal["active", "shadow"]
    version: str = Field(examples=["default@5ea8e56d6c7e"])
    definition: dict[str, Any] = Field(
        description="the model file: aggregates, factors, objectives (weights, bands, caps), "
        "segments"
    )


class ModelsResponse(BaseModel):
    models: list[ModelResponse]

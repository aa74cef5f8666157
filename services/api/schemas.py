"""Request and response models of the REST API (they are the OpenAPI document)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    Field,
    field_validator,
    model_validator,
)

from shared.health import Action, Explanation, SourceFreshness
from shared.outcomes import NAME_PATTERN, SOURCE_PATTERN
from shared.proposals import Status as ProposalStatus

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
    owner: str | None = Field(
        description="who looks after the account (profile events)", examples=["dana@example.com"]
    )
    parent_account_id: str | None = Field(examples=[None])
    mrr: float | None = Field(
        description="monthly recurring revenue as last reported, in `currency`; 0 once the "
        "subscription is cancelled",
        examples=[1250.5],
    )
    currency: str | None = Field(examples=["USD"])
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
    at: datetime = Field(
        description="when health changed: when it was scored, or, for a change caught up on "
        "after an outage, a back-fill or an import, the time of the newest signal behind it"
    )
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
    owner: str | None = Field(description="who looks after the account")
    parent_account_id: str | None = Field(description="the account it belongs to")
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


ChangeType = Literal[
    "io.account-health.band.changed",
    "io.account-health.score.dropped",
    "io.account-health.override.applied",
    "io.account-health.rollup.changed",
]
Names = Annotated[list[Name], Field(max_length=50)]


class WebhookFilter(BaseModel):
    """Which change events a subscription receives: each list, when not empty, names the
    values an event must have; an empty list lets any through."""

    types: list[ChangeType] = Field(default=[], description="CloudEvent types")
    objectives: Names = Field(default=[], examples=[["churn_risk"]])
    from_bands: Names = Field(default=[], description="the band before the change")
    to_bands: Names = Field(default=[], examples=[["at_risk"]])
    segments: Names = Field(default=[], description="model segments", examples=[["enterprise"]])
    owners: list[Annotated[str, Field(min_length=1, max_length=200, pattern=NO_CONTROL)]] = Field(
        default=[],
        max_length=50,
        description="who looks after the account (any case)",
        examples=[["dana@example.com"]],
    )
    replays: bool = Field(
        default=True,
        description="also the changes that reflect the past being caught up on (the event's "
        "`replay` attribute)",
    )


Url = Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\s\x00-\x1f\x7f]+$")]


class WebhookRequest(WebhookFilter):
    model_config = {"extra": "forbid"}

    url: Url = Field(examples=["https://hooks.example.com/account-health"])
    description: str = Field(default="", max_length=500, pattern=NO_CONTROL)
    mode: Literal["structured", "binary"] = Field(
        default="structured",
        description="structured: the CloudEvent as JSON (application/cloudevents+json); "
        "binary: its attributes as ce- headers and its data as the JSON body (for a Slack "
        "incoming webhook: the data's `text`)",
    )


class WebhookUpdate(BaseModel):
    """The fields to change; `enabled: true` also clears why it was disabled."""

    model_config = {"extra": "forbid"}

    url: Url | None = None
    description: Annotated[str, Field(max_length=500, pattern=NO_CONTROL)] | None = None
    mode: Literal["structured", "binary"] | None = None
    types: list[ChangeType] | None = None
    objectives: Names | None = None
    from_bands: Names | None = None
    to_bands: Names | None = None
    segments: Names | None = None
    owners: list[Annotated[str, Field(min_length=1, max_length=200, pattern=NO_CONTROL)]] | None = (
        None
    )
    replays: bool | None = None
    enabled: bool | None = None


class WebhookResponse(WebhookFilter):
    webhook_id: str
    url: str
    description: str
    mode: Literal["structured", "binary"]
    enabled: bool
    disabled_reason: str | None = Field(description="why it stopped, when it did by itself")
    created_by: str
    created_at: datetime
    updated_at: datetime
    deliveries: dict[str, int] = Field(
        default={}, description="deliveries kept, by status", examples=[{"delivered": 12}]
    )


class WebhookCreatedResponse(WebhookResponse):
    secret: str = Field(
        description="the signing secret (Standard Webhooks, `whsec_`...); shown only now",
        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )


class WebhooksResponse(BaseModel):
    items: list[WebhookResponse]


class DeliveryResponse(BaseModel):
    event_id: str
    event_type: str
    account_id: str
    status: Literal["pending", "delivered", "dead"]
    attempts: int
    next_attempt_at: datetime | None = Field(description="when pending")
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None


class DeliveryPageResponse(BaseModel):
    items: list[DeliveryResponse]
    next_cursor: str | None


Money = dict[str, float]  # currency -> amount in major units


class BandFigure(BaseModel):
    band: str = Field(examples=["at_risk"])
    accounts: int = Field(examples=[212])
    mrr: Money = Field(
        description="monthly recurring revenue by currency; accounts without a subscription "
        "reported count under no currency",
        examples=[{"USD": 187_400.0}],
    )


class PortfolioGroup(BaseModel):
    key: str | None = Field(description="the value grouped by (null: not known)")
    accounts: int
    mrr: Money
    bands: list[BandFigure]


class PortfolioDay(BaseModel):
    day: date
    bands: list[BandFigure]


class WorsenedAccount(BaseModel):
    account_id: str
    name: str | None
    owner: str | None
    old_band: str | None
    new_band: str
    score: float | None
    at: datetime


class PortfolioResponse(BaseModel):
    objective: str = Field(examples=["churn_risk"])
    bands: list[str] = Field(description="the objective's bands, worst first")
    total: PortfolioGroup
    by: str | None = Field(description="what `groups` are by")
    groups: list[PortfolioGroup] = Field(description="largest first")
    days: list[PortfolioDay] = Field(
        description="each day's figures at its end (UTC), oldest first, for trends"
    )
    worsened: list[WorsenedAccount] = Field(
        description="accounts whose band got worse in the last `worsened_days`, newest first"
    )


class ChildAccount(BaseModel):
    account_id: str
    name: str | None
    owner: str | None
    mrr: float | None
    currency: str | None
    objective: str
    score: float | None
    band: str


class Rollup(BaseModel):
    """One objective of a parent, rolled up from its children's scores."""

    objective: str = Field(examples=["churn_risk"])
    score: float | None = Field(
        description="the children's scores weighted by their MRR (equally where none reports "
        "any); null when no child is scored",
        examples=[58.3],
    )
    band: str = Field(description="the band of that score", examples=["neutral"])
    children: int = Field(description="children scored")
    weakest: ChildAccount | None = Field(description="the child with the lowest score")


class ChildrenResponse(BaseModel):
    account_id: str = Field(description="the parent")
    rollups: list[Rollup]
    items: list[ChildAccount] = Field(description="each child's score, lowest first")


OutcomeName = Annotated[str, Field(pattern=NAME_PATTERN, examples=["churn"])]


class OutcomeRequest(BaseModel):
    """What happened to an account, as a CRM or a person knows it. Sent again with the same
    `source` and `outcome_id`, it is recorded once; with other values, it corrects the record."""

    model_config = {"extra": "forbid"}

    account_id: str = Field(min_length=1, max_length=128, pattern=NO_CONTROL, examples=["acc-1"])
    outcome: OutcomeName = Field(
        description="churn, return, renewal, expansion, or another name; renewal, expansion "
        "and return are favourable, any other adverse"
    )
    at: IsoDatetime = Field(
        description="when it happened (from 1970 on, at most 5 minutes ahead of the API's clock)",
        examples=["2026-11-30T00:00:00Z"],
    )
    source: str = Field(
        default="api",
        pattern=SOURCE_PATTERN,
        description="the system that knows it (`stream` is the scorer's own)",
        examples=["salesforce"],
    )
    outcome_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_\-.:]+$",
        description="the source's own id of it; when omitted, one is made of the account, "
        "outcome and time, so that a repeat is recorded once",
        examples=["opp-0061"],
    )
    note: str = Field(default="", max_length=500, pattern=NO_CONTROL)

    @field_validator("at")
    @classmethod
    def _in_utc_since_1970(cls, at: datetime) -> datetime:
        try:
            at = at.astimezone(UTC)
        except OverflowError as exc:  # 0001-01-01T00:00+01:00 is before datetime.min in UTC
            raise ValueError("`at` is out of range") from exc
        if at.year < 1970:
            raise ValueError("`at` is before 1970")
        return at


class OutcomeResponse(BaseModel):
    source: str = Field(examples=["salesforce"])
    outcome_id: str = Field(examples=["opp-0061"])
    account_id: str = Field(examples=["acc-1"])
    outcome: str = Field(examples=["churn"])
    at: datetime
    note: str
    recorded_by: str = Field(description="the token's name, or `scorer` for the stream's")
    recorded_at: datetime
    voided_at: datetime | None = None
    voided_by: str | None = None
    void_reason: str | None = None


class OutcomesPage(BaseModel):
    items: list[OutcomeResponse]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


class QualityPoint(BaseModel):
    """One measurement (services/scorer/quality.py; every figure null where it cannot be
    computed: no adverse sample, no stated probability)."""

    measured_at: datetime
    model_version: str
    samples: int = Field(description="(account, cut) pairs judged")
    accounts: int
    adverse: int = Field(description="samples that the adverse case followed")
    adverse_accounts: int
    roc_auc: float | None = Field(description="of the score as it stood against what followed")
    roc_auc_low: float | None = Field(description="its 95% interval, by accounts")
    roc_auc_high: float | None
    brier: float | None = Field(description="of the probability stated with the score")
    brier_low: float | None
    brier_high: float | None
    expected_roc_auc: float | None = Field(
        description="what today's scores and calibrated probabilities imply (no outcome needed)"
    )
    expected_brier: float | None
    expected_accounts: int
    lead_time_days: float | None = Field(
        description="median days churned accounts had been in the lowest band before churning"
    )
    warned: int | None = Field(description="churns that had a warning (a lead time over 0)")
    churns: int | None = Field(description="churns in the window")


class ModelQuality(BaseModel):
    objective: str = Field(examples=["churn_risk"])
    model_role: Literal["active", "shadow"]
    outcome: str = Field(description="what the objective's scores foresee", examples=["churn"])
    window_days: float
    horizon_days: float
    latest: QualityPoint
    reliability: list[dict[str, float]] = Field(
        description="stated probability against observed rate, by tenths of probability"
    )
    trend: list[QualityPoint] = Field(description="earlier measurements, oldest first")


class ModelQualityResponse(BaseModel):
    items: list[ModelQuality]


class ProposalRequest(BaseModel):
    """A model change to propose: the whole model document, as JSON (`document`) or as the
    YAML of a model file (`yaml`), one of them."""

    model_config = {"extra": "forbid"}

    document: dict[str, Any] | None = Field(default=None, description="the model, as JSON")
    yaml: str | None = Field(
        default=None,
        max_length=200_000,
        pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$",
        description="the model, as a model file's YAML",
    )
    reason: str = Field(
        min_length=1,
        max_length=2000,
        pattern=NO_CONTROL,
        description="what the change is for, for its reviewer",
        examples=["support tickets weigh more: three churns this quarter began with them"],
    )

    @model_validator(mode="after")
    def _one_form(self) -> ProposalRequest:
        if (self.document is None) == (self.yaml is None):
            raise ValueError("give the model as `document` or as `yaml`, one of them")
        return self


class ProposalStepRequest(BaseModel):
    model_config = {"extra": "forbid"}

    note: str = Field(
        default="",
        max_length=2000,
        pattern=NO_CONTROL,
        description="why (required to reject and to restore)",
    )


class ProposalStep(BaseModel):
    step: str = Field(examples=["approved"])
    actor: str = Field(examples=["dana"])
    note: str
    status_before: str | None = Field(examples=["proposed"])
    status_after: str = Field(examples=["shadow"])
    at: datetime


class ProposalResponse(BaseModel):
    proposal_id: int = Field(examples=[7])
    version: str = Field(examples=["default@3f9a1c2b7d4e"])
    name: str = Field(examples=["default"])
    status: ProposalStatus = Field(
        description="proposed; approved (and served as shadow) or rejected; active; retired"
    )
    based_on: str | None = Field(description="the active version when it was proposed")
    author: str
    reason: str
    proposed_at: datetime
    reviewer: str | None
    reviewed_at: datetime | None
    review_note: str | None
    updated_at: datetime
    steps: list[ProposalStep] = Field(description="every step taken on it, oldest first")


class ProposalsPage(BaseModel):
    items: list[ProposalResponse] = Field(description="newest first, without their steps")


class BandMove(BaseModel):
    from_band: str = Field(examples=["healthy"])
    to_band: str = Field(examples=["watch"])
    accounts: int


class MovedAccount(BaseModel):
    account_id: str
    from_band: str
    to_band: str
    score_before: float | None
    score_after: float | None


class ObjectiveImpact(BaseModel):
    objective: str = Field(examples=["churn_risk"])
    moves: list[BandMove] = Field(description="accounts by (band now, band proposed)")
    moved: list[MovedAccount] = Field(
        description="accounts whose band would move, largest score change first (at most 200)"
    )


class ProposalImpact(BaseModel):
    """What the proposal would do if it were active now, against the active model: both
    evaluated at the same instant from the same stored states. Nothing is written."""

    proposal_id: int
    against: str = Field(description="the active version compared with")
    accounts: int = Field(description="accounts evaluated")
    sampled: bool = Field(description="true when the accounts are a sample of all")
    objectives: list[ObjectiveImpact]
    added: list[str] = Field(description="objectives only the proposal has")
    removed: list[str] = Field(description="objectives only the active model has")
    diff: str = Field(description="unified diff of the active model's document to the proposal's")

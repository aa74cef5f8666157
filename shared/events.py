"""Event schemas, version 1: the raw events of the three sources and the canonical signal.

Raw events arrive as JSON on `usage.events`, `support.events` and `billing.events`. Every raw
event carries `event_id`, `account_id`, `occurred_at` (timezone-aware), `type` and
`schema_version`; the remaining fields depend on the type. Ingest validates a raw event against
these models, normalises it (UTC timestamps, trimmed ids, lower-case enums, money in minor
units) and produces one canonical `Signal` keyed by account id. The JSON Schema files under
docs/schemas/ are generated from these models (`healthscore schemas`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    model_validator,
)

from shared.outcomes import NAME_PATTERN, SOURCE_PATTERN

SCHEMA_VERSION = 1

Source = Literal["usage", "support", "billing", "engagement", "market", "outcomes", "api"]


def _lower(value: Any) -> Any:
    return (
        value.strip().lower().replace(" ", "_").replace("-", "_")
        if isinstance(value, str)
        else value
    )


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # 9999-12-31T23:59-23:59 is past datetime.max in UTC
        raise ValueError("date is out of range once converted to UTC") from exc


def _without_nul(value: Any) -> Any:
    return value.replace("\x00", "") if isinstance(value, str) else value


Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$")]
# Free text (what people wrote): NUL, which PostgreSQL text cannot hold, is removed. Every
# other string refuses it (ids and enums by their patterns, the rest in shared.validate).
Text = Annotated[str, BeforeValidator(_without_nul), Field(max_length=20_000)]
ShortText = Annotated[str, BeforeValidator(_without_nul), Field(max_length=500)]
Label = Annotated[str, BeforeValidator(_without_nul), Field(max_length=200)]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
Money = Annotated[Decimal, Field(ge=0, le=Decimal("1e12"), max_digits=16, decimal_places=4)]
# Currencies whose minor unit is not a hundredth, as Stripe counts them (ISO 4217 otherwise).
MINOR_UNIT_DIGITS: dict[str, int] = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA"), 0),
    **dict.fromkeys(("PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}


def minor_units(amount: Decimal, currency: str) -> int:
    """An amount in major units as an integer of the currency's minor unit."""
    return int(amount.scaleb(MINOR_UNIT_DIGITS.get(currency, 2)).to_integral_value())


def major_units(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-MINOR_UNIT_DIGITS.get(currency.upper(), 2))


def monthly_revenue(minor: int, currency: str | None) -> float:
    """An MRR as stored (minor units; USD where no currency was given) as JSON shows it."""
    return float(major_units(minor, currency or "USD"))


Currency = Annotated[
    str,
    BeforeValidator(lambda v: v.strip().upper() if isinstance(v, str) else v),
    Field(pattern=r"^[A-Z]{3}$"),
]
Priority = Annotated[Literal["low", "normal", "high", "urgent"], BeforeValidator(_lower)]
Tier = Annotated[Literal["free", "starter", "growth", "enterprise"], BeforeValidator(_lower)]
Region = Annotated[Literal["na", "latam", "emea", "apac"], BeforeValidator(_lower)]
LifecycleStage = Annotated[
    Literal["onboarding", "adopting", "mature", "renewing", "churned"], BeforeValidator(_lower)
]
Industry = Annotated[
    str, BeforeValidator(_lower), Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_&]+$")
]
Count = Annotated[int, Field(ge=0, le=10_000_000)]


class RawEvent(BaseModel):
    """Fields every raw event carries."""

    model_config = ConfigDict(str_strip_whitespace=True, extra="ignore", frozen=True)

    event_id: Identifier
    account_id: Identifier
    occurred_at: UtcDatetime
    schema_version: Literal[1] = Field(description="version of this event type's schema")


# --- usage.events -------------------------------------------------------------------------


class SessionStarted(RawEvent):
    """A user signed in / started a session in the product."""

    type: Literal["session_started"]
    user_id: Identifier
    duration_seconds: Annotated[int, Field(ge=0, le=7 * 86_400)] | None = None


class FeatureUsed(RawEvent):
    """A user used a named product feature `count` times."""

    type: Literal["feature_used"]
    user_id: Identifier
    feature: Annotated[str, BeforeValidator(_lower), Field(min_length=1, max_length=64)]
    count: Annotated[int, Field(ge=1, le=100_000)] = 1


class ActiveUsersReported(RawEvent):
    """Daily roll-up: distinct active users on the day ending at occurred_at."""

    type: Literal["active_users_reported"]
    active_users: Count


class PageViewed(RawEvent):
    """A user viewed a page or a screen of the product."""

    type: Literal["page_viewed"]
    user_id: Identifier
    name: Label = ""


class SeatsUsedReported(RawEvent):
    """Seats currently assigned to users."""

    type: Literal["seats_used_reported"]
    seats_in_use: Count


# --- support.events -----------------------------------------------------------------------


class TicketOpened(RawEvent):
    type: Literal["ticket_opened"]
    ticket_id: Identifier
    priority: Priority = "normal"
    subject: ShortText = ""
    text: Text = ""


class TicketUpdated(RawEvent):
    type: Literal["ticket_updated"]
    ticket_id: Identifier
    priority: Priority | None = None
    escalated: bool = False
    text: Text = ""


class TicketResolved(RawEvent):
    type: Literal["ticket_resolved"]
    ticket_id: Identifier
    resolution_hours: Annotated[float, Field(ge=0, le=24 * 365, allow_inf_nan=False)] | None = None


class CsatSubmitted(RawEvent):
    """Customer-satisfaction rating (1–5) after a ticket."""

    type: Literal["csat_submitted"]
    ticket_id: Identifier | None = None
    rating: Annotated[int, Field(ge=1, le=5)]
    comment: Text = ""


class NpsSubmitted(RawEvent):
    """Net-promoter survey response (0–10)."""

    type: Literal["nps_submitted"]
    user_id: Identifier | None = None
    score: Annotated[int, Field(ge=0, le=10)]
    comment: Text = ""


# --- billing.events -----------------------------------------------------------------------


class _Subscription(RawEvent):
    plan: Annotated[str, BeforeValidator(_lower), Field(min_length=1, max_length=64)]
    tier: Tier | None = None
    mrr: Money = Field(description="monthly recurring revenue, in major units of currency")
    currency: Currency = "USD"
    seats_purchased: Annotated[int, Field(ge=0, le=10_000_000)]
    renewal_date: date | None = None


class SubscriptionCreated(_Subscription):
    type: Literal["subscription_created"]


class SubscriptionChanged(_Subscription):
    type: Literal["subscription_changed"]


class SubscriptionCancelled(RawEvent):
    type: Literal["subscription_cancelled"]
    reason: ShortText = ""
    effective_at: UtcDatetime | None = None


class InvoicePaid(RawEvent):
    type: Literal["invoice_paid"]
    invoice_id: Identifier
    amount: Money
    currency: Currency = "USD"
    days_late: Annotated[int, Field(ge=0, le=3650)] = 0


class InvoiceOverdue(RawEvent):
    type: Literal["invoice_overdue"]
    invoice_id: Identifier
    amount: Money
    currency: Currency = "USD"
    days_overdue: Annotated[int, Field(ge=0, le=3650)]


class PaymentFailed(RawEvent):
    type: Literal["payment_failed"]
    invoice_id: Identifier | None = None
    amount: Money
    currency: Currency = "USD"
    reason: ShortText = ""


class RefundIssued(RawEvent):
    type: Literal["refund_issued"]
    amount: Money
    currency: Currency = "USD"
    reason: ShortText = ""


class AccountProfileUpdated(RawEvent):
    """CRM attributes of the account; they select the scoring segment."""

    type: Literal["account_profile_updated"]
    name: Label = ""
    industry: Industry | None = None
    region: Region | None = None
    tier: Tier | None = None
    lifecycle_stage: LifecycleStage | None = None
    owner: Label | None = Field(
        default=None,
        description="who looks after the account: a person's email or name, as the CRM has it",
        examples=["dana@example.com"],
    )
    parent_account_id: Identifier | None = Field(
        default=None, description="the account this one belongs to (a subsidiary's parent)"
    )


class PaymentDisputed(RawEvent):
    """The customer disputed a payment with their bank (a chargeback)."""

    type: Literal["payment_disputed"]
    amount: Money
    currency: Currency = "USD"
    reason: ShortText = ""


# --- engagement.events --------------------------------------------------------------------


class SocialMentioned(RawEvent):
    """The account was mentioned on a public channel (a post, a review, a thread)."""

    type: Literal["social_mentioned"]
    channel: Annotated[str, BeforeValidator(_lower), Field(min_length=1, max_length=64)]
    text: Text = ""
    url: Annotated[str, Field(max_length=2_000)] = ""
    reach: Count | None = Field(default=None, description="followers or views, when known")


class MarketingEngaged(RawEvent):
    """Someone at the account engaged with marketing: opened or clicked an email, registered
    for or attended a webinar or an event."""

    type: Literal["marketing_engaged"]
    channel: Annotated[
        Literal["email", "webinar", "event", "ad", "content"], BeforeValidator(_lower)
    ]
    action: Annotated[
        Literal["delivered", "opened", "clicked", "registered", "attended", "unsubscribed"],
        BeforeValidator(_lower),
    ]
    campaign: Label = ""
    user_id: Identifier | None = None


# --- news about a whole segment --------------------------------------------------------------


def _listed(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class Scope(BaseModel):
    """The accounts a market event concerns: those whose attribute matches one of the values
    given, for every attribute given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    industry: Annotated[
        list[Industry] | None, BeforeValidator(_listed), Field(min_length=1, max_length=50)
    ] = None
    region: Annotated[
        list[Region] | None, BeforeValidator(_listed), Field(min_length=1, max_length=4)
    ] = None
    tier: Annotated[
        list[Tier] | None, BeforeValidator(_listed), Field(min_length=1, max_length=4)
    ] = None

    @model_validator(mode="after")
    def _something(self) -> Scope:
        if not (self.industry or self.region or self.tier):
            raise ValueError("a scope names at least one of industry, region, tier")
        return self

    def key(self) -> str:
        """A stable name of the scope: the event's Kafka key, in place of an account id."""
        parts = [
            f"{name}={','.join(sorted(values))}"
            for name in ("industry", "region", "tier")
            if (values := getattr(self, name))
        ]
        return "market:" + ";".join(parts)


class MarketEvent(RawEvent):
    """News that bears on every account of a segment at once: a regulatory change, a market
    trend, a competitor's move. It names no account: `scope` says which accounts it concerns,
    `impact` how it bears on their health, from -1 (harmful) to 1 (helpful); a model's
    `market` factor reads it, decaying with its own half-life."""

    type: Literal["market_event"]
    account_id: Identifier | None = Field(default=None, description="not used: see scope")  # type: ignore[assignment]
    scope: Scope
    topic: Annotated[str, BeforeValidator(_lower), Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")] = (
        Field(description="what kind of news: regulatory_change, market_trend, competitor_move…")
    )
    impact: float = Field(ge=-1, le=1, allow_inf_nan=False)
    title: ShortText = ""


# --- outcomes: what a CRM knows happened ------------------------------------------------------


class OutcomeRecorded(RawEvent):
    """What happened to the account, as the system that knows it says (a CRM's renewal, a
    churn the billing system does not show): the scorer records it with the outcomes the
    stream shows, for live model quality. `occurred_at` is when it happened; sent again with
    the same `system` and `outcome_id`, it corrects the record."""

    type: Literal["outcome_recorded"]
    outcome: Annotated[str, BeforeValidator(_lower), Field(pattern=NAME_PATTERN)] = Field(
        description="churn, return, renewal, expansion, or another name"
    )
    system: Annotated[str, BeforeValidator(_lower), Field(pattern=SOURCE_PATTERN)] = Field(
        description="the system that knows it, e.g. salesforce (not `stream`)"
    )
    outcome_id: Identifier | None = Field(
        default=None, description="the system's own id of it; the event_id when absent"
    )
    note: ShortText = ""

    @model_validator(mode="after")
    def _not_the_stream(self) -> OutcomeRecorded:
        if self.system == "stream":
            raise ValueError("system `stream` is the scorer's own")
        return self


UsageEvent = Annotated[
    SessionStarted | FeatureUsed | PageViewed | ActiveUsersReported | SeatsUsedReported,
    Field(discriminator="type"),
]
SupportEvent = Annotated[
    TicketOpened | TicketUpdated | TicketResolved | CsatSubmitted | NpsSubmitted,
    Field(discriminator="type"),
]
BillingEvent = Annotated[
    SubscriptionCreated
    | SubscriptionChanged
    | SubscriptionCancelled
    | InvoicePaid
    | InvoiceOverdue
    | PaymentFailed
    | RefundIssued
    | PaymentDisputed
    | AccountProfileUpdated,
    Field(discriminator="type"),
]
EngagementEvent = Annotated[SocialMentioned | MarketingEngaged, Field(discriminator="type")]
MarketEvents = Annotated[MarketEvent, Field(discriminator="type")]
OutcomeEvents = Annotated[OutcomeRecorded, Field(discriminator="type")]

EVENT_TYPES: dict[Source, tuple[type[RawEvent], ...]] = {
    "usage": (SessionStarted, FeatureUsed, PageViewed, ActiveUsersReported, SeatsUsedReported),
    "support": (TicketOpened, TicketUpdated, TicketResolved, CsatSubmitted, NpsSubmitted),
    "billing": (
        SubscriptionCreated,
        SubscriptionChanged,
        SubscriptionCancelled,
        InvoicePaid,
        InvoiceOverdue,
        PaymentFailed,
        RefundIssued,
        PaymentDisputed,
        AccountProfileUpdated,
    ),
    "engagement": (SocialMentioned, MarketingEngaged),
    "market": (MarketEvent,),
    "outcomes": (OutcomeRecorded,),
}
SOURCE_ADAPTERS: dict[Source, TypeAdapter[Any]] = {
    "usage": TypeAdapter(UsageEvent),
    "support": TypeAdapter(SupportEvent),
    "billing": TypeAdapter(BillingEvent),
    "engagement": TypeAdapter(EngagementEvent),
    "market": TypeAdapter(MarketEvents),
    "outcomes": TypeAdapter(OutcomeEvents),
}


def event_type_name(model: type[RawEvent]) -> str:
    return str(model.model_fields["type"].annotation.__args__[0])  # type: ignore[union-attr]


EVENT_TYPE_SOURCE: dict[str, Source] = {
    event_type_name(model): source for source, models in EVENT_TYPES.items() for model in models
}
EVENT_MODEL: dict[str, type[RawEvent]] = {
    event_type_name(model): model for models in EVENT_TYPES.values() for model in models
}


# --- overrides (produced by the API onto the signals topic) ---------------------------------

OverrideAction = Literal["pin", "adjust", "sentiment"]


class OverrideSet(BaseModel):
    """A human override, applied by the scorer like any other signal."""

    model_config = ConfigDict(frozen=True)

    override_id: str
    action: OverrideAction
    objective: str | None = Field(
        default=None, description="objective the pin/adjust applies to; None = all objectives"
    )
    value: float = Field(allow_inf_nan=False)
    author: str
    reason: str
    expires_at: UtcDatetime


class OverrideRevoked(BaseModel):
    model_config = ConfigDict(frozen=True)

    override_id: str
    author: str
    reason: str = ""


# --- the canonical signal -------------------------------------------------------------------


class Signal(BaseModel):
    """One normalised fact about one account, keyed by account id on account-health.signals."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = 1
    signal_id: str = Field(description="the source event_id; the scorer de-duplicates on it")
    account_id: str
    # ingest and the API write these in UTC (UtcDatetime); reading them back need not convert
    # again: the scorer reads only the instant (epoch seconds), which any offset gives right
    occurred_at: AwareDatetime
    source: Source
    kind: str = Field(description="the raw event type, or override_set / override_revoked")
    data: dict[str, Any] = Field(description="the kind's normalised fields")
    sentiment: float | None = Field(
        default=None, ge=-1, le=1, description="VADER compound score of the event's free text"
    )
    ingested_at: AwareDatetime


SIGNAL_ADAPTER = TypeAdapter(Signal)


_SIGNAL_FIELDS = set(Signal.model_fields)  # shared by built signals: frozen, never changed


def built_signal(
    signal_id: str,
    account_id: str,
    occurred_at: datetime,
    source: Source,
    kind: str,
    data: dict[str, Any],
    sentiment: float | None,
    ingested_at: datetime,
) -> Signal:
    """A signal of values validated already: what `Signal.model_construct` makes, without its
    loop over the fields (0.9 instead of 4.6 µs, on ingest's path for every record)."""
    signal = Signal.__new__(Signal)
    object.__setattr__(
        signal,
        "__dict__",
        {
            "schema_version": 1,
            "signal_id": signal_id,
            "account_id": account_id,
            "occurred_at": occurred_at,
            "source": source,
            "kind": kind,
            "data": data,
            "sentiment": sentiment,
            "ingested_at": ingested_at,
        },
    )
    object.__setattr__(signal, "__pydantic_fields_set__", _SIGNAL_FIELDS)
    object.__setattr__(signal, "__pydantic_extra__", None)
    object.__setattr__(signal, "__pydantic_private__", None)
    return signal


def encode_signal(signal: Signal) -> bytes:
    """The signal as JSON: what `model_dump_json` writes, by orjson (a third of the time)."""
    try:
        return orjson.dumps(signal.__dict__, option=orjson.OPT_UTC_Z)
    except TypeError:  # a value orjson does not know: pydantic's serializer does
        return signal.model_dump_json().encode()


def decode_signal(raw: bytes) -> Signal:
    return SIGNAL_ADAPTER.validate_json(raw)


_REFS = "#/definitions/{model}"


def _draft7(node: Any) -> Any:
    """A pydantic schema as JSON Schema draft 7, which AsyncAPI's Schema Object extends:
    definitions instead of $defs, and `discriminator` as the property name (an OpenAPI-style
    discriminator object is invalid there)."""
    if isinstance(node, list):
        return [_draft7(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {("definitions" if k == "$defs" else k): _draft7(v) for k, v in node.items()}
    if isinstance(out.get("discriminator"), dict):
        out["discriminator"] = out["discriminator"]["propertyName"]
    return out


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema documents for every raw event source and the signal, by file stem."""
    schemas: dict[str, dict[str, Any]] = {
        f"{source}.events.v1": adapter.json_schema(ref_template=_REFS)
        for source, adapter in SOURCE_ADAPTERS.items()
    }
    schemas["signal.v1"] = Signal.model_json_schema(ref_template=_REFS)
    schemas["override_set.v1"] = OverrideSet.model_json_schema(ref_template=_REFS)
    schemas["override_revoked.v1"] = OverrideRevoked.model_json_schema(ref_template=_REFS)
    return {
        stem: {"$schema": "http://json-schema.org/draft-07/schema#", **_draft7(schema)}
        for stem, schema in schemas.items()
    }


def utcnow() -> datetime:
    return datetime.now(UTC)

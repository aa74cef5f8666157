"""PostgreSQL: the system of record. Table definitions, engine factory and migration check.

The scorer is the only writer of accounts, account_states, seen_signals, scores, score_history,
consumer_offsets, outbox, parents_due and parent_rollups; the API writes only overrides and
override_audit (and sends the override to the scorer as a signal). Each table the scorer
writes has its row type beside it (`...Values`), which the write statement is built from
(services/scorer/store.py). Alembic migrations under shared/migrations/ create these tables;
services call `ensure_migrated` at start and refuse to run on a database that is behind.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any, ClassVar, TypedDict

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSON, JSONB
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.config import DatabaseSettings
from shared.errors import DatabaseNotMigrated

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# room left on each page of account_states: a state's rewrite lands on its own page, a HOT
# update (no index touched), while the page has room for the new version
STATE_FILLFACTOR = 80
# the de-duplication memory is stored, and let go, a period of this many seconds at a time
SEEN_PERIOD = 6 * 3600


def seen_period(t: float) -> int:
    """The period of the de-duplication memory a time (epoch seconds) falls in."""
    return int(t // SEEN_PERIOD)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSONB, list[Any]: JSONB}


Timestamp = DateTime(timezone=True)


class AccountRow(Base):
    """One account's profile: its CRM attributes and resolved segment, and the signals-topic
    partition it hashes to. Written when one of them changes, not with every batch."""

    __tablename__ = "accounts"

    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str | None] = mapped_column(Text)
    industry: Mapped[str | None] = mapped_column(String(64), index=True)
    region: Mapped[str | None] = mapped_column(String(16))
    tier: Mapped[str | None] = mapped_column(String(16))
    lifecycle_stage: Mapped[str | None] = mapped_column(String(16))
    segment: Mapped[str | None] = mapped_column(String(64))
    owner: Mapped[str | None] = mapped_column(String(200))  # who looks after it
    parent_account_id: Mapped[str | None] = mapped_column(String(128))
    mrr_cents: Mapped[int | None] = mapped_column(BigInteger)  # in `currency`'s minor units
    currency: Mapped[str | None] = mapped_column(String(3))
    # the signals-topic partition this account hashes to: the sweep re-scores only accounts
    # of partitions its scorer owns
    partition: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)

    __table_args__ = (
        Index("ix_accounts_owner", text("lower(owner)")),
        Index(
            "ix_accounts_parent",
            "parent_account_id",
            postgresql_where=text("parent_account_id IS NOT NULL"),
        ),
    )


class ProfileValues(TypedDict):
    """An `accounts` row as the scorer writes it."""

    account_id: str
    name: str | None
    industry: str | None
    region: str | None
    tier: str | None
    lifecycle_stage: str | None
    segment: str
    owner: str | None
    parent_account_id: str | None
    mrr_cents: int | None
    currency: str | None
    partition: int
    updated_at: datetime


class AccountStateRow(Base):
    """One account's rolling state, what its scorer rewrites with every batch that touches it:
    narrow, with room on its page (fillfactor) so that the rewrite is a HOT update, which
    touches no index (docs/adr/0018). Its de-duplication memory is kept apart
    (SeenSignalsRow); the explanations of its scores are derived from it on read."""

    __tablename__ = "account_states"

    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer)
    # AccountState.to_bytes: MessagePack, the exact integers kept
    state: Mapped[bytes] = mapped_column(LargeBinary)
    # when time alone may next move its scores; moved only earlier, or once it has come (the
    # sweep then sets the next): so a batch's rewrite leaves it, and its index, as it is
    next_review_at: Mapped[datetime] = mapped_column(Timestamp)
    # as of the last evaluation under the active model: the stale sources (null: none) and
    # the newest data of any source, for the account lists
    stale_sources: Mapped[list[str] | None] = mapped_column(ARRAY(String(16)))
    data_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # the periods its memory has rows in (null: none): what reading it probes
    seen_periods: Mapped[list[int] | None] = mapped_column(ARRAY(Integer))
    updated_at: Mapped[datetime] = mapped_column(Timestamp)

    __table_args__ = (
        Index("ix_account_states_partition_review", "partition", "next_review_at"),
        {"postgresql_with": {"fillfactor": STATE_FILLFACTOR}},
    )


class StateValues(TypedDict):
    """An `account_states` row as the scorer writes it."""

    account_id: str
    partition: int
    state: bytes  # empty: unchanged (a re-score of time alone), the stored one is kept
    next_review_at: datetime
    stale_sources: list[str] | None
    data_at: datetime | None
    seen_periods: list[int] | None
    updated_at: datetime


class SeenSignalsRow(Base):
    """The de-duplication memory, apart from the state: the 8-byte digests of the signal ids
    an account took in one period (`seen_period`), appended to by each batch. Partitioned by
    period; a period past the horizon is dropped whole (services/scorer/memory.py)."""

    __tablename__ = "seen_signals"

    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    period: Mapped[int] = mapped_column(Integer, primary_key=True)
    ids: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = ({"postgresql_partition_by": "RANGE (period)"},)


class SeenValues(TypedDict):
    """A `seen_signals` row as the scorer writes it: `ids` are appended to the period's."""

    account_id: str
    period: int
    ids: bytes


# What the API reads of an account, whichever layout it is stored in (a view: migrations 0015
# and 0016). Not in Base's metadata: alembic's comparisons leave it alone.
account_views = Table(
    "account_views",
    MetaData(),
    Column("account_id", String(128), primary_key=True),
    Column("partition", Integer),
    Column("name", Text),
    Column("industry", String(64)),
    Column("region", String(16)),
    Column("tier", String(16)),
    Column("lifecycle_stage", String(16)),
    Column("segment", String(64)),
    Column("owner", String(200)),
    Column("parent_account_id", String(128)),
    Column("mrr_cents", BigInteger),
    Column("currency", String(3)),
    Column("state", LargeBinary),
    Column("legacy_state", JSON),  # release 0014's document, until the account is converted
    Column("stale_sources", ARRAY(String(16))),
    Column("data_at", Timestamp),
    Column("updated_at", Timestamp),
)


class PortfolioDayRow(Base):
    """The active model's accounts and MRR per band at the end of a day (services/scorer/
    portfolio.py), per currency ('' for accounts that reported none)."""

    __tablename__ = "portfolio_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    objective: Mapped[str] = mapped_column(String(64), primary_key=True)
    band: Mapped[str] = mapped_column(String(64), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    accounts: Mapped[int] = mapped_column(Integer)
    mrr_cents: Mapped[int] = mapped_column(BigInteger)


class ParentDueRow(Base):
    """A parent whose rollup is due: queued by a batch that wrote one of its children's
    scores, taken by the scorers' rollups (services/scorer/rollups.py)."""

    __tablename__ = "parents_due"

    parent_account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    # whether only the past being caught up on queued it (a batch of live signals, or of time
    # alone, makes it false): its band change is then sent as a replay
    replay: Mapped[bool] = mapped_column(Boolean)


class ParentDueValues(TypedDict):
    """A `parents_due` row as the scorer writes it."""

    parent_account_id: str
    replay: bool


class ParentRollupRow(Base):
    """A parent's health as last rolled up from its children's active scores, per objective:
    what its next band change is told against."""

    __tablename__ = "parent_rollups"

    parent_account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    objective: Mapped[str] = mapped_column(String(64), primary_key=True)
    score: Mapped[float | None] = mapped_column(Float)
    band: Mapped[str] = mapped_column(String(64))
    children: Mapped[int] = mapped_column(Integer)
    weakest_account_id: Mapped[str | None] = mapped_column(String(128))
    # what subscribers last heard: a catch-up's changes are told once it is over, from it
    told_score: Mapped[float | None] = mapped_column(Float)
    told_band: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(128))
    changed_at: Mapped[datetime] = mapped_column(Timestamp)  # of its band
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class ModelVersionRow(Base):
    """Every model version a scorer has served: the API derives explanations with it, and a
    model switch compares the new scores with the old."""

    __tablename__ = "model_versions"

    version: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    document: Mapped[dict[str, Any]] = mapped_column(JSON)  # Model.model_dump(mode="json")
    registered_at: Mapped[datetime] = mapped_column(Timestamp)


class ModelProposalRow(Base):
    """A model version as people propose, review and serve it (shared/proposals.py): proposed,
    then approved (served as shadow) or rejected, then active, then retired. At most one
    proposal is active and one shadow; every scorer and API serves those."""

    __tablename__ = "model_proposals"

    proposal_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    version: Mapped[str] = mapped_column(String(128))  # its document: model_versions
    name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    based_on: Mapped[str | None] = mapped_column(String(128))  # the active version proposed to
    author: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(String(2000))
    proposed_at: Mapped[datetime] = mapped_column(Timestamp)
    reviewer: Mapped[str | None] = mapped_column(String(200))
    reviewed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    review_note: Mapped[str | None] = mapped_column(String(2000))
    updated_at: Mapped[datetime] = mapped_column(Timestamp)

    __table_args__ = tuple(
        Index(
            f"ux_model_proposals_{role}",
            "status",
            unique=True,
            postgresql_where=text(f"status = '{role}'"),
        )
        for role in ("active", "shadow")
    )


class ModelProposalStepRow(Base):
    """One step of a release's life, with who took it and why: the audit of model changes."""

    __tablename__ = "model_proposal_steps"

    step_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    proposal_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("model_proposals.proposal_id"))
    step: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(200))
    note: Mapped[str] = mapped_column(String(2000), server_default="")
    status_before: Mapped[str | None] = mapped_column(String(16))
    status_after: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(Timestamp)

    __table_args__ = (Index("ix_model_proposal_steps_proposal", "proposal_id"),)


class ScoreRow(Base):
    """The current score of one account for one objective and model role (active/shadow).
    Its explanation is not stored: it is `evaluate`'s, of the account's stored state at
    `evaluated_at` under `model_version` (with the market news `news` names), derived again
    on read (docs/adr/0018)."""

    __tablename__ = "scores"

    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    objective: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_role: Mapped[str] = mapped_column(String(16), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(64))
    score: Mapped[float | None] = mapped_column(Float)
    band: Mapped[str] = mapped_column(String(32))
    confidence: Mapped[float] = mapped_column(Float)
    # the calibrated probability of the objective's outcome (null: the model has none)
    probability: Mapped[float | None] = mapped_column(Float)
    # the account's attributes as this score was computed with them (its `accounts` row's, and
    # written with it): the account lists filter on them inside their indexes (migration 0013)
    industry: Mapped[str | None] = mapped_column(String(64))
    region: Mapped[str | None] = mapped_column(String(16))
    tier: Mapped[str | None] = mapped_column(String(16))
    segment: Mapped[str | None] = mapped_column(String(64))
    # the market news items (event ids) the score read; null: none
    news: Mapped[list[str] | None] = mapped_column(ARRAY(String(128)))
    # score at the newest history row (what the next change is measured against), and the
    # score before that change (so lists can sort by the size of the last change)
    recorded_score: Mapped[float | None] = mapped_column(Float)
    previous_score: Mapped[float | None] = mapped_column(Float)
    # peak score since the last change event: a fall of alert_drop below it is news
    alert_baseline: Mapped[float | None] = mapped_column(Float)
    # while changes are held during a catch-up: what subscribers last heard (score, band,
    # alert baseline) and the newest event time held; the net change is sent from it
    held: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    evaluated_at: Mapped[datetime] = mapped_column(Timestamp)
    changed_at: Mapped[datetime] = mapped_column(Timestamp)

    # the account lists' expression indexes are the migrations' (0010, 0011, 0013)
    __table_args__ = (
        Index("ix_scores_objective_changed", "objective", "model_role", "changed_at"),
    )


class ScoreValues(TypedDict):
    """A `scores` row as the scorer writes it."""

    account_id: str
    objective: str
    model_role: str
    model_version: str
    score: float | None
    band: str
    confidence: float
    probability: float | None
    industry: str | None
    region: str | None
    tier: str | None
    segment: str
    news: list[str] | None
    recorded_score: float | None
    previous_score: float | None
    alert_baseline: float | None
    held: bytes | None
    evaluated_at: datetime
    changed_at: datetime


class ScoreHistoryRow(Base):
    """A meaningful change of one account's score: band change, big move, override, model.
    Partitioned by month of `at` (migration 0012, services/scorer/history_months.py)."""

    __tablename__ = "score_history"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(128))
    objective: Mapped[str] = mapped_column(String(64))
    model_role: Mapped[str] = mapped_column(String(16))
    model_version: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(Timestamp, primary_key=True)  # the partition key
    old_score: Mapped[float | None] = mapped_column(Float)
    new_score: Mapped[float | None] = mapped_column(Float)
    old_band: Mapped[str | None] = mapped_column(String(32))
    new_band: Mapped[str] = mapped_column(String(32))
    # P(the objective's outcome within the model's horizon) at the new score, when calibrated
    probability: Mapped[float | None] = mapped_column(Float)
    cause: Mapped[str] = mapped_column(String(32))
    top_movers: Mapped[list[Any]] = mapped_column(JSONB)
    signal_ids: Mapped[list[Any]] = mapped_column(JSONB)
    recorded_at: Mapped[datetime] = mapped_column(Timestamp)

    __table_args__ = (Index("ix_score_history_account_at", "account_id", "at", "id"),)


class HistoryValues(TypedDict):
    """A `score_history` row as the scorer writes it (its id is the table's)."""

    account_id: str
    objective: str
    model_role: str
    model_version: str
    at: datetime
    old_score: float | None
    new_score: float | None
    old_band: str | None
    new_band: str
    probability: float | None
    cause: str
    top_movers: list[dict[str, Any]]
    signal_ids: list[str]
    recorded_at: datetime


class ConsumerOffsetRow(Base):
    """Next offset to consume, written in the same transaction as the work it covers."""

    __tablename__ = "consumer_offsets"

    group_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    topic: Mapped[str] = mapped_column(String(255), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    next_offset: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)
    # the newest market news item whose accounts in this partition were made due
    news_applied: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # the store's layout of this partition's accounts (migration 0015): 1, as release 0014
    # wrote it; 2, its writers of that release fenced out and its accounts being converted;
    # 3, converted. `fence_epoch` moves with every write of this release: a write that leaves
    # it as it was is one of release 0014's, and is refused from 2 on (its fence fails)
    store_format: Mapped[int] = mapped_column(SmallInteger, server_default="3")
    fence_epoch: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # the models (services/scorer/serving.py fingerprint) every account of this partition was
    # last scanned and scored to; forgotten by a write with other models. A scorer taking the
    # partition scans it for scores of other models only when its own differ
    models_scanned: Mapped[str | None] = mapped_column(String(16))


class MarketNewsRow(Base):
    """News about a whole segment (a market event), stored once by the scorer that read it."""

    __tablename__ = "market_news"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    occurred_at: Mapped[datetime] = mapped_column(Timestamp, index=True)
    scope: Mapped[dict[str, Any]] = mapped_column(JSON)
    topic: Mapped[str] = mapped_column(String(64))
    impact: Mapped[float] = mapped_column(Float)
    title: Mapped[str] = mapped_column(Text)
    stored_at: Mapped[datetime] = mapped_column(Timestamp)


class OutboxRow(Base):
    """A record waiting for the relay to publish it: a change event from the scorer, or an
    override signal from the API (written in the same transaction as its audit row)."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    topic: Mapped[str] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(String(128))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    content_type: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    sent_at: Mapped[datetime | None] = mapped_column(Timestamp)

    __table_args__ = (Index("ix_outbox_unsent", "id", postgresql_where=text("sent_at IS NULL")),)


class OutboxValues(TypedDict):
    """An `outbox` row as its writers write it (its id is the table's)."""

    event_id: str
    topic: str
    key: str
    payload: bytes
    content_type: str
    created_at: datetime
    sent_at: datetime | None


class OverrideRow(Base):
    """A human override (pin, adjust, CSM sentiment) with author, reason and expiry."""

    __tablename__ = "overrides"

    override_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(128), index=True)
    action: Mapped[str] = mapped_column(String(16))
    objective: Mapped[str | None] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    expires_at: Mapped[datetime] = mapped_column(Timestamp)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)
    revoked_by: Mapped[str | None] = mapped_column(String(128))
    revoke_reason: Mapped[str | None] = mapped_column(Text)


class OverrideAuditRow(Base):
    """Append-only audit trail of override actions."""

    __tablename__ = "override_audit"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    override_id: Mapped[str] = mapped_column(String(64), index=True)
    account_id: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(Timestamp)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB)


class WebhookRow(Base):
    """A webhook subscription: where matching change events are POSTed, signed with `secret`
    (Standard Webhooks), and which events match (an empty list matches any)."""

    __tablename__ = "webhooks"

    webhook_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    secret: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(String(500), server_default="")
    mode: Mapped[str] = mapped_column(String(16), server_default="structured")
    types: Mapped[list[str]] = mapped_column(ARRAY(String(128)), server_default="{}")
    objectives: Mapped[list[str]] = mapped_column(ARRAY(String(128)), server_default="{}")
    from_bands: Mapped[list[str]] = mapped_column(ARRAY(String(128)), server_default="{}")
    to_bands: Mapped[list[str]] = mapped_column(ARRAY(String(128)), server_default="{}")
    segments: Mapped[list[str]] = mapped_column(ARRAY(String(128)), server_default="{}")
    owners: Mapped[list[str]] = mapped_column(ARRAY(String(200)), server_default="{}")
    replays: Mapped[bool] = mapped_column(Boolean, server_default=true())
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=true())
    disabled_reason: Mapped[str | None] = mapped_column(String(500))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class WebhookDeliveryRow(Base):
    """One change event for one subscription: `pending` until POSTed with a 2xx answer
    (`delivered`) or out of attempts (`dead`); `next_attempt_at` is when it is due (a sender
    that takes it moves it on by its lease, so that a crash mid-request only delays it)."""

    __tablename__ = "webhook_deliveries"

    webhook_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("webhooks.webhook_id", ondelete="CASCADE"), primary_key=True
    )
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(128))
    account_id: Mapped[str] = mapped_column(String(128))
    payload: Mapped[bytes] = mapped_column(LargeBinary)  # the CloudEvent, structured JSON
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(Timestamp)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)

    __table_args__ = (
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_webhook_deliveries_listed", "webhook_id", "status", "created_at"),
    )


class OutcomeRow(Base):
    """What happened to an account (churn, return, renewal, expansion, or another named
    outcome) and when: shown by the stream (`source` "stream", `outcome_id` the signal's id)
    or told by a person or system (the API, `outcome_id` theirs). Recording one again is
    idempotent; a correction changes it in place, and a voided one is kept for audit. Live
    model quality (services/scorer/quality.py) labels its samples with these."""

    __tablename__ = "outcomes"

    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    outcome_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(Timestamp)
    note: Mapped[str] = mapped_column(String(500), server_default="")
    recorded_by: Mapped[str] = mapped_column(String(200))
    recorded_at: Mapped[datetime] = mapped_column(Timestamp)
    voided_at: Mapped[datetime | None] = mapped_column(Timestamp)
    voided_by: Mapped[str | None] = mapped_column(String(200))
    void_reason: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (
        Index("ix_outcomes_account_at", "account_id", "at"),
        Index("ix_outcomes_at", "at"),
    )


class OutcomeValues(TypedDict):
    """An `outcomes` row as the scorer writes it: an outcome the stream showed, or one an
    `outcome_recorded` signal told."""

    source: str
    outcome_id: str
    account_id: str
    outcome: str
    at: datetime
    note: str
    recorded_by: str
    recorded_at: datetime


class ModelQualityRow(Base):
    """One measurement of how well a model role's scores foresaw the outcomes that followed
    them (services/scorer/quality.py), kept for the trend."""

    __tablename__ = "model_quality"

    objective: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_role: Mapped[str] = mapped_column(String(16), primary_key=True)
    measured_at: Mapped[datetime] = mapped_column(Timestamp, primary_key=True)
    model_version: Mapped[str] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(32))
    window_days: Mapped[float] = mapped_column(Float)
    horizon_days: Mapped[float] = mapped_column(Float)
    samples: Mapped[int] = mapped_column(Integer)
    accounts: Mapped[int] = mapped_column(Integer)
    adverse: Mapped[int] = mapped_column(Integer)
    adverse_accounts: Mapped[int] = mapped_column(Integer)
    roc_auc: Mapped[float | None] = mapped_column(Float)
    roc_auc_low: Mapped[float | None] = mapped_column(Float)
    roc_auc_high: Mapped[float | None] = mapped_column(Float)
    brier: Mapped[float | None] = mapped_column(Float)
    brier_low: Mapped[float | None] = mapped_column(Float)
    brier_high: Mapped[float | None] = mapped_column(Float)
    reliability: Mapped[list[Any]] = mapped_column(JSON)
    lead_time_days: Mapped[float | None] = mapped_column(Float)  # median, over the churns
    warned: Mapped[int | None] = mapped_column(Integer)  # churns seen in the lowest band first
    churns: Mapped[int | None] = mapped_column(Integer)
    expected_roc_auc: Mapped[float | None] = mapped_column(Float)
    expected_brier: Mapped[float | None] = mapped_column(Float)
    expected_accounts: Mapped[int] = mapped_column(Integer)


# Who answers GET .../health from memory (services/api/cache.py) listens here. Every writer of
# accounts, scores or overrides notifies it of the changed account ids in its transaction;
# PostgreSQL delivers that on commit, and not at all on rollback. The ids go as JSON arrays in
# parts under PostgreSQL's 8,000-byte limit on a payload.
HEALTH_CHANNEL = "account_health"


class LinkRow(Base):
    """What ingest learned: a user, charge or ticket of a source belongs to an account. The
    association with the latest event time wins; rows unseen for the retention are pruned."""

    __tablename__ = "source_links"

    namespace: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(Timestamp)  # event time of the association
    seen_at: Mapped[datetime] = mapped_column(Timestamp)  # last taught, for pruning

    __table_args__ = (Index("ix_source_links_seen_at", "seen_at"),)


def notify_changed(ids: str) -> str:
    """A SELECT notifying HEALTH_CHANNEL of the account ids in the SQL array `ids`."""
    return f"""SELECT pg_notify('{HEALTH_CHANNEL}', json_agg(id)::text)
FROM (SELECT id, sum(octet_length(id) + 4) OVER (ORDER BY id) / 7000 AS part
      FROM unnest({ids}) AS id) ids
GROUP BY part"""


NOTIFY_CHANGED = notify_changed("$1::text[]")  # for a list of ids as its one parameter


def create_engine(settings: DatabaseSettings, *, name: str | None = None) -> AsyncEngine:
    import orjson

    return create_async_engine(
        settings.url(name=name),
        pool_size=settings.pool_size,
        pool_pre_ping=True,
        json_serializer=lambda obj: orjson.dumps(obj).decode(),
        json_deserializer=orjson.loads,
    )


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("postgresql://")).get_current_head()
    assert head is not None
    return head


def migrate(settings: DatabaseSettings, *, name: str | None = None, to: str = "head") -> None:
    """Take the database to revision `to`, up or down (synchronous: alembic drives its own
    event loop)."""
    import asyncio

    from alembic import command
    from alembic.script import ScriptDirectory

    config = alembic_config(settings.url(name=name))
    script = ScriptDirectory.from_config(config)
    revisions = [r.revision for r in script.walk_revisions()]  # newest first
    target = revisions[0] if to == "head" else to
    if target not in revisions:
        raise ValueError(f"no revision {to!r} (known: {', '.join(revisions)})")
    current = asyncio.run(_current_revision(settings, name))
    if current in revisions and revisions.index(target) > revisions.index(current):
        command.downgrade(config, target)
    else:
        command.upgrade(config, target)


async def _current_revision(settings: DatabaseSettings, name: str | None) -> str | None:
    engine = create_engine(settings, name=name)
    try:
        async with engine.connect() as conn:
            if not await conn.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL")):
                return None
            current = await conn.scalar(text("SELECT version_num FROM alembic_version"))
            return None if current is None else str(current)
    finally:
        await engine.dispose()


# Revisions before the head this release also runs on: 0015 is the first half of the move to
# the lean store, where this release's scorers take partitions over from release 0014's
# (migration 0015's docstring); `healthscore migrate` then takes the database to the head.
# 0017 adds only the webhook tables, which no process but `healthscore notify` reads (it
# needs the head); before 0018 processes serve their model files, as release 0014 did.
ALSO_RUNS_ON = ("0015", "0016")


async def ensure_migrated(engine: AsyncEngine, also: tuple[str, ...] = ALSO_RUNS_ON) -> str:
    """The database's revision; DatabaseNotMigrated unless this build runs on it (the head,
    or one of `also`)."""
    head = head_revision()
    async with engine.connect() as conn:
        exists = await conn.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
        current = (
            await conn.scalar(text("SELECT version_num FROM alembic_version")) if exists else None
        )
    if current != head and current not in also:
        raise DatabaseNotMigrated(
            f"database is at revision {current or 'none'}, this build needs {head}: "
            "run `healthscore migrate` first"
        )
    return str(current)

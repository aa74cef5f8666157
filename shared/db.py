"""PostgreSQL: the system of record. Table definitions, engine factory and migration check.

The scorer is the only writer of accounts, scores, score_history, consumer_offsets and outbox;
the API writes only overrides and override_audit (and sends the override to the scorer as a
signal). Alembic migrations under shared/migrations/ create these tables; services call
`ensure_migrated` at start and refuse to run on a database that is behind.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSON, JSONB
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.config import DatabaseSettings
from shared.errors import DatabaseNotMigrated

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

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
    """One account: its CRM attributes, resolved segment and rolling scorer state."""

    __tablename__ = "accounts"

    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str | None] = mapped_column(Text)
    industry: Mapped[str | None] = mapped_column(String(64), index=True)
    region: Mapped[str | None] = mapped_column(String(16))
    tier: Mapped[str | None] = mapped_column(String(16))
    lifecycle_stage: Mapped[str | None] = mapped_column(String(16))
    segment: Mapped[str | None] = mapped_column(String(64))
    # the signals-topic partition this account hashes to: the sweep re-scores only accounts
    # of partitions its scorer owns
    partition: Mapped[int] = mapped_column(Integer)
    # `json`, not `jsonb`: kept as the text written, so PostgreSQL validates it but builds no
    # binary form on each of the scorer's writes, and hands it back without rendering it
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    # per source: newest data and whether it is stale, under the active model, as the API
    # shows it
    freshness: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    last_event_at: Mapped[datetime | None] = mapped_column(Timestamp)
    next_review_at: Mapped[datetime | None] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)

    __table_args__ = (Index("ix_accounts_partition_review", "partition", "next_review_at"),)


class ScoreRow(Base):
    """The current score of one account for one objective and model role (active/shadow)."""

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
    # per factor: raw value, sub-score, weight, contribution; caps, overrides; the weighted
    # mean. `json` (see AccountRow.state): GET .../health splices it into its answer as is
    explanation: Mapped[dict[str, Any]] = mapped_column(JSON)
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
    updated_at: Mapped[datetime] = mapped_column(Timestamp)

    # the account lists' expression indexes are the migrations' (0010, 0011)
    __table_args__ = (
        Index("ix_scores_objective_changed", "objective", "model_role", "changed_at"),
    )


class ScoreHistoryRow(Base):
    """A meaningful change of one account's score: band change, big move, override, model.
    Partitioned by month of `at` (migration 0012, services/scorer/history.py)."""

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


def migrate(settings: DatabaseSettings, *, name: str | None = None) -> None:
    """Apply every migration (synchronous: alembic drives its own event loop)."""
    from alembic import command

    command.upgrade(alembic_config(settings.url(name=name)), "head")


async def ensure_migrated(engine: AsyncEngine) -> None:
    """Raise DatabaseNotMigrated unless the database is at the head revision."""
    head = head_revision()
    async with engine.connect() as conn:
        exists = await conn.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
        current = (
            await conn.scalar(text("SELECT version_num FROM alembic_version")) if exists else None
        )
    if current != head:
        raise DatabaseNotMigrated(
            f"database is at revision {current or 'none'}, this build needs {head}: "
            "run `healthscore migrate` first"
        )

"""webhooks: subscriptions to the change events, and each event's delivery to each

`healthscore notify` reads the changes topic and records a delivery for every subscription an
event matches (at most one per subscription and event id); it then POSTs each, signed, and
retries on failure until it is delivered or dead-lettered. Nothing else reads or writes these
tables, so releases at 0015 and 0016 run on this revision unchanged.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

NAMES = postgresql.ARRAY(sa.String(128))


def upgrade() -> None:
    op.create_table(
        "webhooks",
        sa.Column("webhook_id", sa.String(36), primary_key=True),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("description", sa.String(500), nullable=False, server_default=""),
        sa.Column("mode", sa.String(16), nullable=False, server_default="structured"),
        sa.Column("types", NAMES, nullable=False, server_default="{}"),
        sa.Column("objectives", NAMES, nullable=False, server_default="{}"),
        sa.Column("from_bands", NAMES, nullable=False, server_default="{}"),
        sa.Column("to_bands", NAMES, nullable=False, server_default="{}"),
        sa.Column("segments", NAMES, nullable=False, server_default="{}"),
        sa.Column("owners", postgresql.ARRAY(sa.String(200)), nullable=False, server_default="{}"),
        sa.Column("replays", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("disabled_reason", sa.String(500), nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column(
            "webhook_id",
            sa.String(36),
            sa.ForeignKey("webhooks.webhook_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("event_type", sa.String(128), nullable=False),
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_webhook_deliveries_listed", "webhook_deliveries", ["webhook_id", "status", "created_at"]
    )


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("webhooks")

"""user, charge and ticket -> account links learned by ingest from source formats

A Segment track call names only its user, a Stripe dispute its charge, a Zendesk rating its
ticket: ingest keeps which account each belongs to, shared by every ingest process.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "source_links",
        sa.Column("namespace", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_source_links_seen_at", "source_links", ["seen_at"])


def downgrade() -> None:
    op.drop_table("source_links")

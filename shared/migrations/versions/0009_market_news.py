"""market news: events about a whole segment, and how far each partition has applied them;
current scores keep their calibrated probability (for account lists)

A market event (a regulatory change, a market trend, a competitor's move) names no account but
a scope (industries, regions, tiers). The scorer stores each once; every scorer reads them all
and marks the accounts of its partitions that a new item concerns due for the sweep, recording
in the partition's offsets row the newest item it has done so for.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "market_news",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(128), nullable=False, unique=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("scope", sa.JSON(), nullable=False),
        sa.Column("topic", sa.String(64), nullable=False),
        sa.Column("impact", sa.Float(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_market_news_occurred_at", "market_news", ["occurred_at"])
    op.add_column("scores", sa.Column("probability", sa.Float(), nullable=True))
    op.add_column(
        "consumer_offsets",
        sa.Column("news_applied", sa.BigInteger(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_column("consumer_offsets", "news_applied")
    op.drop_column("scores", "probability")
    op.drop_table("market_news")

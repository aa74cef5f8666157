"""the calibrated probability of each history point

A model may carry a calibration per objective (the probability of its outcome within a horizon,
given the score); each history point keeps the probability its new score meant.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("score_history", sa.Column("probability", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("score_history", "probability")

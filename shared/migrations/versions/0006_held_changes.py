"""change events held during a catch-up

While the scorer catches up on the past (an outage, a back-fill), the change events of an
account are held and sent as one net change when it is done; `scores.held` keeps what
subscribers last heard until then.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("scores", sa.Column("held", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("scores", "held")

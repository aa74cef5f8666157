"""scores keep their factors' contributions, packed: a model switch need not evaluate twice

A score's next change is told against its factors' contributions (history's top movers, a
held change). Since 0016 they were derived again by evaluating the stored state under the
stored model version: a third of the scorer's time in a model switch, where every account's
change is told. They are now stored with the score, ~9 bytes a factor
(`Contributions.packed`). Scores written before stay null and are derived as before until
their next write.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("scores", sa.Column("contributions", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    op.drop_column("scores", "contributions")

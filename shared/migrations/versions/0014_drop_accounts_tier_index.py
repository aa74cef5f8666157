"""drop ix_accounts_tier: nothing reads it since 0013

The account lists filter on the tier copied into `scores` (0013); no query filters `accounts`
by tier any more, and every account write that is not a HOT update (the scorer's, as the next
review time is indexed) still inserted into this index.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_accounts_tier", table_name="accounts")


def downgrade() -> None:
    op.create_index("ix_accounts_tier", "accounts", ["tier"])

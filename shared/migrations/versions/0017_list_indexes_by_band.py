"""the account lists read the band-leading indexes only: two list indexes fewer

Every score update moves its list keys (the score, its change), so it is never HOT and writes
an entry into each of the table's six indexes: at a million accounts, 2.3 kB of a cold
signal's 4.3 kB of WAL records. A list of every band is now read as a few index ranges of
the band-leading indexes, one a band with its first rows, merged (the API walks the bands the
scores have down the index first), so the two indexes that led with the sort key alone are
dropped. A score update writes four index entries, not six.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

# as migration 0013 built them
DROPPED = {
    "ix_scores_list_score": "objective, model_role, coalesce(score, -1), account_id",
    "ix_scores_list_change": (
        "objective, model_role, coalesce(score - previous_score, 0), account_id"
    ),
}
FILTERS = "score, tier, industry, region, segment"


def upgrade() -> None:
    for name in DROPPED:
        op.execute(f"DROP INDEX IF EXISTS {name}")


def downgrade() -> None:
    for name, leading in DROPPED.items():
        op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON scores ({leading}, {FILTERS})")

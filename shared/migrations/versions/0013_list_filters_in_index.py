"""account lists filter on the account's attributes and score inside their indexes

A list filtered by an account attribute (industry, region, tier, segment) used to check each
candidate of its sort order against the `accounts` table, and one filtered by a score range
read each candidate's `scores` row, until the page was full: at a million accounts, 37 ms of
PostgreSQL for `?industry=retail&region=emea&sort=-score` (3,551 candidates) and 27 ms for
`?min_score=20&max_score=60&sort=-change` (9,000). The scores now carry the account's
attributes (the scorer writes them with its `accounts` row, from the same state), and the
four list indexes end with the score and those attributes, so a candidate that does not match
is passed over in the index: 1.8 and 10.9 ms.

The copy is filled here from `accounts`, a partition's accounts at a time, each part's old
row versions vacuumed before the next so that its rows take their place: at 1M over 4
partitions, 59 s in all and the table a quarter larger, where one UPDATE took 123 s and
doubled it (fewer accounts a partition, less growth). Scores written after this by a scorer
of the previous version keep the copy they have, or have none if they are an account's
first; the next re-score of the account (the sweep's, within the model's review interval)
fills it.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

ATTRIBUTES = {"industry": 64, "region": 16, "tier": 16, "segment": 64}  # VARCHAR(n)
# the leading columns (0010, 0011): each list's equalities, then its sort order
LISTS = {
    "ix_scores_list_score": "objective, model_role, coalesce(score, -1), account_id",
    "ix_scores_list_change": (
        "objective, model_role, coalesce(score - previous_score, 0), account_id"
    ),
    "ix_scores_band_score": "objective, model_role, band, coalesce(score, -1), account_id",
    "ix_scores_band_change": (
        "objective, model_role, band, coalesce(score - previous_score, 0), account_id"
    ),
}
FILTERS = "score, tier, industry, region, segment"


def upgrade() -> None:
    # outside a transaction, a statement at a time, each repeatable: a part at a time of the
    # rows gets its copy, and the old versions it leaves are vacuumed for the next part to take
    # their place (in one UPDATE, the table would double); and the indexes, built after, hold
    # none of them
    with op.get_context().autocommit_block():
        for name in LISTS:
            op.execute(f"DROP INDEX IF EXISTS {name}")
        op.execute(
            "ALTER TABLE scores "
            + ", ".join(f"ADD COLUMN IF NOT EXISTS {c} VARCHAR({n})" for c, n in ATTRIBUTES.items())
        )
        parts = op.get_bind().execute(sa.text("SELECT DISTINCT partition FROM accounts"))
        for (part,) in list(parts):
            op.execute(
                "UPDATE scores SET industry = a.industry, region = a.region, tier = a.tier,"
                " segment = a.segment FROM accounts a"
                f" WHERE a.account_id = scores.account_id AND a.partition = {int(part)}"
            )
            op.execute("VACUUM scores")
        for name, leading in LISTS.items():
            op.execute(f"CREATE INDEX {name} ON scores ({leading}, {FILTERS})")


def downgrade() -> None:
    for name, leading in LISTS.items():
        op.execute(f"DROP INDEX {name}")
        op.execute(f"CREATE INDEX {name} ON scores ({leading})")
    for name in ATTRIBUTES:
        op.drop_column("scores", name)

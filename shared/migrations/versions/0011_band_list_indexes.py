"""account lists filtered by band read an index range in their sort order

At a million accounts a band holds a hundred thousand or more of an objective's scores: a page
of one band sorted by score or by the last change was a scan of all of them and a sort (1.5 s
for `?band=at_risk&sort=change` at 1M in bench-scale). These indexes lead with the band, then
the list's sort expression and account_id (as 0010's do without the band), so such a page is
an index range of its rows. They replace ix_scores_objective_band_score, which ordered by the
raw score, an expression no list sorts by; the band counts read the new one as well.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_scores_band_score": "scores (objective, model_role, band, coalesce(score, -1), account_id)",
    "ix_scores_band_change": (
        "scores (objective, model_role, band, coalesce(score - previous_score, 0), account_id)"
    ),
}


def upgrade() -> None:
    for name, definition in INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON {definition}")
    op.execute("DROP INDEX ix_scores_objective_band_score")


def downgrade() -> None:
    op.execute(
        "CREATE INDEX ix_scores_objective_band_score ON scores (objective, model_role, band, score)"
    )
    for name in INDEXES:
        op.execute(f"DROP INDEX {name}")

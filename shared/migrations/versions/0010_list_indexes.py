"""indexes the account lists and their search read, so that a page is an index range of its
rows instead of a scan and sort of every account's (wide) row

A list page orders one objective's scores by coalesce(score, -1), by the last change
(coalesce(score - previous_score, 0)) or by changed_at (already indexed), then account_id; a
search matches the start of an account id or of its name, case-insensitive.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_scores_list_score": "scores (objective, model_role, coalesce(score, -1), account_id)",
    "ix_scores_list_change": (
        "scores (objective, model_role, coalesce(score - previous_score, 0), account_id)"
    ),
    "ix_accounts_id_prefix": "accounts (lower(account_id) text_pattern_ops)",
    "ix_accounts_name_prefix": "accounts (lower(name) text_pattern_ops)",
}


def upgrade() -> None:
    for name, definition in INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON {definition}")


def downgrade() -> None:
    for name in INDEXES:
        op.execute(f"DROP INDEX {name}")

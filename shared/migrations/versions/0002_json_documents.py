"""explanations and state as json; per-source freshness on the account

The scorer's two documents per write become `json` (the text as written: validated, not rebuilt
into `jsonb`), and GET .../health splices the explanation into its answer as is. Freshness, which
every explanation carried a copy of, moves to the account in the form the API shows.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE accounts ADD COLUMN freshness json")
    op.execute(
        """
        UPDATE accounts a SET freshness = (
          SELECT json_object_agg(f.key, json_build_object(
                   'last_data_at', to_timestamp((f.value->>'last_data_at')::float8),
                   'stale', f.value->'stale'))
          FROM jsonb_each((SELECT s.explanation->'freshness' FROM scores s
                           WHERE s.account_id = a.account_id AND s.model_role = 'active'
                           LIMIT 1)) AS f)
        """
    )
    op.execute("ALTER TABLE accounts ALTER COLUMN state TYPE json USING state::json")
    op.execute(
        """
        ALTER TABLE scores ALTER COLUMN explanation TYPE json USING (
          (explanation - 'freshness' - 'segment' - 'model_score')
          || jsonb_build_object('weighted_score', explanation->'model_score'))::json
        """
    )


def downgrade() -> None:
    # explanations come back without freshness: the scorer adds it again as it re-scores
    op.execute(
        """
        ALTER TABLE scores ALTER COLUMN explanation TYPE jsonb USING (
          (explanation::jsonb - 'weighted_score')
          || jsonb_build_object('model_score', explanation->'weighted_score'))
        """
    )
    op.execute("ALTER TABLE accounts ALTER COLUMN state TYPE jsonb USING state::jsonb")
    op.execute("ALTER TABLE accounts DROP COLUMN freshness")

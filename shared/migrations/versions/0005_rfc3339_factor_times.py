"""factor times in explanations as RFC 3339, like every other time the API shows

Each factor's `last_data_at` in a stored explanation was epoch seconds; the scorer now writes
it as an RFC 3339 time (shared/health.py), and stored explanations are converted to match, so
that `GET .../health` answers in one form whatever the age of a document.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _convert(value_of: str, condition: str) -> None:
    """Rewrite each factor's last_data_at with `value_of` (an expression of the factor `f`)
    where `condition` holds for it."""
    op.execute("SET LOCAL timezone = 'UTC'")
    op.execute(
        f"""
        UPDATE scores s SET explanation = jsonb_set(
          s.explanation::jsonb, '{{factors}}',
          (SELECT coalesce(jsonb_agg(
                    CASE WHEN {condition}
                         THEN jsonb_set(f, '{{last_data_at}}', {value_of}) ELSE f END
                    ORDER BY i), '[]'::jsonb)
           FROM jsonb_array_elements(s.explanation::jsonb->'factors') WITH ORDINALITY AS e(f, i))
        )::json
        WHERE s.explanation::jsonb->'factors' @? '$[*] ? (exists(@.last_data_at))'
        """
    )


def upgrade() -> None:
    _convert(
        "to_jsonb(to_timestamp((f->>'last_data_at')::float8))",
        "jsonb_typeof(f->'last_data_at') = 'number'",
    )


def downgrade() -> None:
    _convert(
        "to_jsonb(extract(epoch FROM (f->>'last_data_at')::timestamptz)::float8)",
        "jsonb_typeof(f->'last_data_at') = 'string'",
    )

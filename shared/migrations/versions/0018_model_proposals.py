"""model proposals: the model versions people propose, review and serve, with their steps

Models live in the database from this revision on (shared/proposals.py, docs/adr/0022): at
most one proposal is active and one shadow, and every scorer and API process serves those.
The first process to find these tables empty seeds them with its configured model files, so
a database migrated here goes on serving the models it served. Before this revision (a
rolling upgrade from release 0014 at 0015 or 0016) this release serves its model files.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-08
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # at most one active and one shadow (unique indexes), each step audited
    op.execute(
        "CREATE TABLE model_proposals (proposal_id BIGSERIAL PRIMARY KEY,"
        " version VARCHAR(128) NOT NULL, name VARCHAR(64) NOT NULL, status VARCHAR(16) NOT NULL"
        " CHECK (status IN ('proposed', 'approved', 'shadow', 'active', 'retired', 'rejected')),"
        " based_on VARCHAR(128), author VARCHAR(200) NOT NULL, reason VARCHAR(2000) NOT NULL,"
        " proposed_at TIMESTAMPTZ NOT NULL, reviewer VARCHAR(200), reviewed_at TIMESTAMPTZ,"
        " review_note VARCHAR(2000), updated_at TIMESTAMPTZ NOT NULL)"
    )
    for role in ("active", "shadow"):
        op.execute(
            f"CREATE UNIQUE INDEX ux_model_proposals_{role} ON model_proposals (status)"
            f" WHERE status = '{role}'"
        )
    op.execute(
        "CREATE TABLE model_proposal_steps (step_id BIGSERIAL PRIMARY KEY,"
        " proposal_id BIGINT NOT NULL REFERENCES model_proposals (proposal_id),"
        " step VARCHAR(16) NOT NULL, actor VARCHAR(200) NOT NULL,"
        " note VARCHAR(2000) DEFAULT '' NOT NULL, status_before VARCHAR(16),"
        " status_after VARCHAR(16) NOT NULL, at TIMESTAMPTZ NOT NULL)"
    )
    op.execute(
        "CREATE INDEX ix_model_proposal_steps_proposal ON model_proposal_steps (proposal_id)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE model_proposal_steps, model_proposals")

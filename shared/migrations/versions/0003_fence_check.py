"""a function that aborts a scorer's batch statement when one of its offset fences did not hold

The scorer writes a batch as ONE statement in autocommit (PostgreSQL makes it a transaction of
its own: one round trip). Its final SELECT passes the number of fences that held to
`fences_held`, which raises SQLSTATE HSF01 when that is fewer than expected, aborting the whole
statement: nothing is written and no change is notified.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION fences_held(held bigint, expected bigint) RETURNS bigint
        LANGUAGE plpgsql AS $$
        BEGIN
          IF held <> expected THEN
            RAISE EXCEPTION 'only % of % offset fences held: another scorer owns the others now',
              held, expected USING ERRCODE = 'HSF01';
          END IF;
          RETURN held;
        END $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION fences_held(bigint, bigint)")

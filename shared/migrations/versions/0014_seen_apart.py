"""an account's de-duplication memory in a column of its own, out of the state document

The memory (the digests of the signal ids of the last 48 hours, 12 bytes an id) was base64
inside the state document: at the scale bench's activity, 3.6 of the document's 5.1 kB of JSON,
random bytes, so the whole document (3.7 kB after lz4) went out of line into TOAST, and a
model switch's re-score and the sweep fetched and decoded all of it for every account, though
they never read the memory. Now the memory is raw bytes in `accounts.seen`, out of line and
never compressed (STORAGE EXTERNAL: bytes that cannot compress are not tried); the document
(1.5 kB, 1.3 kB stored) stays in the row; only a batch with signals reads the memory. The
bytes an account takes are the same (the lz4 of the whole document had already taken back
base64's overhead).

Moved here a partition's accounts at a time, each part's old row versions vacuumed before the
next (as 0013). Documents whose memory is of the first version (an object of ids) keep it: the
scorer reads it from the document and stores it apart at the account's next signal.

A scorer of the previous version cannot read a moved document: it stops on it without
committing its batch (nothing is lost), so roll the scorers out right after this migration.
`ix_accounts_tier` goes: nothing filters `accounts` by tier since 0013.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def _each_partition(statement: str) -> None:
    """`statement` (with `{part}`) for each partition's accounts, vacuumed after each."""
    parts = op.get_bind().execute(sa.text("SELECT DISTINCT partition FROM accounts"))
    for (part,) in list(parts):
        op.execute(statement.format(part=int(part)))
        op.execute("VACUUM accounts")


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX IF EXISTS ix_accounts_tier")
        op.execute(
            "ALTER TABLE accounts ADD COLUMN IF NOT EXISTS seen BYTEA,"
            " ALTER COLUMN seen SET STORAGE EXTERNAL, ALTER COLUMN state DROP NOT NULL"
        )
        _each_partition(
            "UPDATE accounts SET seen = decode(state->>'seen', 'base64'),"
            " state = (state::jsonb - 'seen' || '{{\"v\": 4}}')::json"
            " WHERE partition = {part} AND json_typeof(state->'seen') = 'string'"
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        _each_partition(
            "UPDATE accounts SET state = (state::jsonb || jsonb_build_object('v', 3, 'seen',"
            " translate(encode(coalesce(seen, ''), 'base64'), E'\\n', '')))::json, seen = NULL"
            " WHERE partition = {part} AND state->'seen' IS NULL"
        )
        op.execute("ALTER TABLE accounts DROP COLUMN seen, ALTER COLUMN state SET NOT NULL")
        op.execute("CREATE INDEX ix_accounts_tier ON accounts (tier)")

"""the lean store, second half: every account converted, release 0014's columns dropped

Apply it once every scorer runs this release (revision 0015 says how the two live side by
side). It converts the accounts no scorer of this release has converted yet (a partition no
scorer took, accounts imported by release 0014), a chunk at a time outside a transaction, so
that a stopped run goes on where it was; then drops the old columns. Their space comes back as
rows are rewritten; `VACUUM FULL accounts, scores` (or pg_repack) returns it at once.

Down: the old columns come back empty (nullable) and the view reads them again; revision
0015's downgrade fills them.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from alembic import op

from shared.legacy import FENCE_FUNCTION, LEGACY_VIEW, NEWS_FUNCTION, VIEW, upgrade_accounts

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        upgrade_accounts(op.get_bind())
    op.execute("UPDATE consumer_offsets SET store_format = 3, fence_epoch = fence_epoch + 1")
    op.execute("ALTER TABLE consumer_offsets ALTER COLUMN store_format SET DEFAULT 3")
    op.execute("DROP TRIGGER fence_of_this_release ON consumer_offsets")
    op.execute("DROP FUNCTION fence_of_this_release()")
    op.execute("DROP TRIGGER news_of_release_0014 ON scores")
    op.execute("DROP FUNCTION news_of_release_0014()")
    op.execute("DROP VIEW account_views")
    op.execute(
        "ALTER TABLE accounts DROP COLUMN state, DROP COLUMN freshness,"
        " DROP COLUMN last_event_at, DROP COLUMN next_review_at"
    )
    op.execute("ALTER TABLE scores DROP COLUMN explanation, DROP COLUMN updated_at")
    op.execute(VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW account_views")
    op.execute(
        "ALTER TABLE accounts ADD COLUMN state JSON, ADD COLUMN freshness JSON,"
        " ADD COLUMN last_event_at TIMESTAMPTZ, ADD COLUMN next_review_at TIMESTAMPTZ"
    )
    op.execute("CREATE INDEX ix_accounts_partition_review ON accounts (partition, next_review_at)")
    op.execute("ALTER TABLE scores ADD COLUMN explanation JSON, ADD COLUMN updated_at TIMESTAMPTZ")
    op.execute(FENCE_FUNCTION)
    op.execute(
        "CREATE TRIGGER fence_of_this_release BEFORE UPDATE ON consumer_offsets"
        " FOR EACH ROW EXECUTE FUNCTION fence_of_this_release()"
    )
    op.execute(NEWS_FUNCTION)
    op.execute(
        "CREATE TRIGGER news_of_release_0014 BEFORE INSERT OR UPDATE ON scores"
        " FOR EACH ROW EXECUTE FUNCTION news_of_release_0014()"
    )
    op.execute("ALTER TABLE consumer_offsets ALTER COLUMN store_format SET DEFAULT 1")
    op.execute(LEGACY_VIEW)

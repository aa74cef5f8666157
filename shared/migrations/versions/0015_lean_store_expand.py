"""the lean store, first half: its tables beside release 0014's, and that release's writers
fenced out of each partition this release takes

Release 0014 kept each account's state as a JSON document with its de-duplication memory
inside, and each score's explanation beside it; every batch rewrote both, ~33 kB of WAL a cold
signal. This release keeps the state in `account_states` (binary, narrow, updated HOT), the
memory in `seen_signals` (a row per account and period, appended to), and derives the
explanations on read from the state and `model_versions` (docs/adr/0018).

This revision only adds; release 0014's scorers and API go on working on it, so it can be
applied under load. A scorer of this release, taking a partition, first moves it to
`store_format` 2 (from then on a write of release 0014, which leaves `fence_epoch` as it is,
finds its fence refused, as one that lost the partition would: `fence_of_this_release`), then
converts the partition's accounts (services/scorer/legacy.py), then marks it 3. The API reads
accounts through `account_views`, which shows an account not yet converted from its old
columns. Revision 0016 converts what is left and drops the old columns.

Down: every converted account is written back as release 0014 wrote it (its JSON state with
its memory, its freshness, each score's explanation derived again), a chunk at a time, then
this revision's tables go. Run it with the scorers stopped.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from alembic import op

from shared.legacy import (
    BACKFILL_NEWS,
    FENCE_FUNCTION,
    LEGACY_VIEW,
    NEWS_FUNCTION,
    downgrade_accounts,
)

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE model_versions (version VARCHAR(128) PRIMARY KEY, name VARCHAR(64)"
        " NOT NULL, document JSON NOT NULL, registered_at TIMESTAMPTZ NOT NULL)"
    )
    op.execute(
        "CREATE TABLE account_states (account_id VARCHAR(128) PRIMARY KEY, partition INTEGER"
        " NOT NULL, state BYTEA NOT NULL, next_review_at TIMESTAMPTZ NOT NULL,"
        " stale_sources VARCHAR(16)[], data_at TIMESTAMPTZ, seen_periods INTEGER[],"
        " updated_at TIMESTAMPTZ NOT NULL)"
        " WITH (fillfactor = 80)"
    )
    op.execute("ALTER INDEX account_states_pkey RENAME TO pk_account_states")
    op.execute(
        "CREATE INDEX ix_account_states_partition_review"
        " ON account_states (partition, next_review_at)"
    )
    op.execute(
        "CREATE TABLE seen_signals (account_id VARCHAR(128) NOT NULL, period INTEGER NOT NULL,"
        " ids BYTEA NOT NULL, CONSTRAINT pk_seen_signals PRIMARY KEY (account_id, period))"
        " PARTITION BY RANGE (period)"
    )
    op.execute("CREATE TABLE seen_signals_default PARTITION OF seen_signals DEFAULT")
    op.execute("ALTER TABLE scores ADD COLUMN news VARCHAR(128)[]")
    op.execute(BACKFILL_NEWS)
    op.execute(NEWS_FUNCTION)
    op.execute(
        "CREATE TRIGGER news_of_release_0014 BEFORE INSERT OR UPDATE ON scores"
        " FOR EACH ROW EXECUTE FUNCTION news_of_release_0014()"
    )
    op.execute(
        "ALTER TABLE scores ALTER COLUMN explanation DROP NOT NULL,"
        " ALTER COLUMN updated_at DROP NOT NULL"
    )
    op.execute("ALTER TABLE accounts ALTER COLUMN state DROP NOT NULL")
    # whose the account is, its parent, and what it brings in (release 0014 leaves them empty)
    op.execute(
        "ALTER TABLE accounts ADD COLUMN owner VARCHAR(200), ADD COLUMN parent_account_id"
        " VARCHAR(128), ADD COLUMN mrr_cents BIGINT, ADD COLUMN currency VARCHAR(3)"
    )
    op.execute("CREATE INDEX ix_accounts_owner ON accounts (lower(owner))")
    op.execute(
        "CREATE INDEX ix_accounts_parent ON accounts (parent_account_id)"
        " WHERE parent_account_id IS NOT NULL"
    )
    op.execute(
        "CREATE TABLE portfolio_days (day DATE NOT NULL, objective VARCHAR(64) NOT NULL,"
        " band VARCHAR(64) NOT NULL, currency VARCHAR(3) NOT NULL, accounts INTEGER NOT NULL,"
        " mrr_cents BIGINT NOT NULL,"
        " CONSTRAINT pk_portfolio_days PRIMARY KEY (day, objective, band, currency))"
    )
    # parents due a rollup, and each parent's last rollup (services/scorer/rollups.py)
    op.execute(
        "CREATE TABLE parents_due (parent_account_id VARCHAR(128) PRIMARY KEY,"
        " replay BOOLEAN NOT NULL)"
    )
    op.execute("ALTER INDEX parents_due_pkey RENAME TO pk_parents_due")
    op.execute(
        "CREATE TABLE parent_rollups (parent_account_id VARCHAR(128) NOT NULL, objective"
        " VARCHAR(64) NOT NULL, score FLOAT, band VARCHAR(64) NOT NULL, children INTEGER NOT NULL,"
        " weakest_account_id VARCHAR(128), told_score FLOAT, told_band VARCHAR(64) NOT NULL,"
        " model_version VARCHAR(128) NOT NULL,"
        " changed_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL,"
        " CONSTRAINT pk_parent_rollups PRIMARY KEY (parent_account_id, objective))"
    )
    # outcomes, from the stream and the API, and the live models' quality against them
    # (services/scorer/quality.py)
    op.execute(
        "CREATE TABLE outcomes (source VARCHAR(32) NOT NULL, outcome_id VARCHAR(128) NOT NULL,"
        " account_id VARCHAR(128) NOT NULL, outcome VARCHAR(32) NOT NULL,"
        " at TIMESTAMPTZ NOT NULL, note VARCHAR(500) DEFAULT '' NOT NULL,"
        " recorded_by VARCHAR(200) NOT NULL, recorded_at TIMESTAMPTZ NOT NULL,"
        " voided_at TIMESTAMPTZ, voided_by VARCHAR(200), void_reason VARCHAR(500),"
        " CONSTRAINT pk_outcomes PRIMARY KEY (source, outcome_id))"
    )
    op.execute("CREATE INDEX ix_outcomes_account_at ON outcomes (account_id, at)")
    op.execute("CREATE INDEX ix_outcomes_at ON outcomes (at)")
    op.execute(
        "CREATE TABLE model_quality (objective VARCHAR(64) NOT NULL,"
        " model_role VARCHAR(16) NOT NULL, measured_at TIMESTAMPTZ NOT NULL,"
        " model_version VARCHAR(128) NOT NULL, outcome VARCHAR(32) NOT NULL,"
        " window_days FLOAT NOT NULL, horizon_days FLOAT NOT NULL, samples INTEGER NOT NULL,"
        " accounts INTEGER NOT NULL, adverse INTEGER NOT NULL,"
        " adverse_accounts INTEGER NOT NULL, roc_auc FLOAT, roc_auc_low FLOAT,"
        " roc_auc_high FLOAT, brier FLOAT, brier_low FLOAT, brier_high FLOAT,"
        " reliability JSON NOT NULL, lead_time_days FLOAT, warned INTEGER, churns INTEGER,"
        " expected_roc_auc FLOAT, expected_brier FLOAT, expected_accounts INTEGER NOT NULL,"
        " CONSTRAINT pk_model_quality PRIMARY KEY (objective, model_role, measured_at))"
    )
    op.execute(
        "ALTER TABLE consumer_offsets ADD COLUMN store_format SMALLINT NOT NULL DEFAULT 1,"
        " ADD COLUMN fence_epoch BIGINT NOT NULL DEFAULT 0, ADD COLUMN models_scanned VARCHAR(16)"
    )
    op.execute(FENCE_FUNCTION)
    op.execute(
        "CREATE TRIGGER fence_of_this_release BEFORE UPDATE ON consumer_offsets"
        " FOR EACH ROW EXECUTE FUNCTION fence_of_this_release()"
    )
    op.execute(LEGACY_VIEW)


def downgrade() -> None:
    # outside a transaction, a chunk at a time: a stopped downgrade goes on where it was
    with op.get_context().autocommit_block():
        downgrade_accounts(op.get_bind())
    op.execute("DROP VIEW account_views")
    op.execute("DROP TRIGGER fence_of_this_release ON consumer_offsets")
    op.execute("DROP FUNCTION fence_of_this_release()")
    op.execute("DROP TRIGGER news_of_release_0014 ON scores")
    op.execute("DROP FUNCTION news_of_release_0014()")
    op.execute(
        "ALTER TABLE consumer_offsets DROP COLUMN store_format, DROP COLUMN fence_epoch,"
        " DROP COLUMN models_scanned"
    )
    op.execute("ALTER TABLE accounts ALTER COLUMN state SET NOT NULL")
    op.execute(
        "ALTER TABLE accounts DROP COLUMN owner, DROP COLUMN parent_account_id,"
        " DROP COLUMN mrr_cents, DROP COLUMN currency"
    )
    op.execute(
        "ALTER TABLE scores ALTER COLUMN explanation SET NOT NULL,"
        " ALTER COLUMN updated_at SET NOT NULL, DROP COLUMN news"
    )
    op.execute(
        "DROP TABLE seen_signals, account_states, model_versions, portfolio_days, parents_due,"
        " parent_rollups, outcomes, model_quality"
    )

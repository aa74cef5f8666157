"""score history partitioned by month, so that retention drops a month at a time

At a million accounts the history grows by about 1.8 GB a month (bench-scale). Retention
(`scorer.history_retention_days`) then means dropping whole months, not deleting rows one by
one from a table the API reads. The table becomes a partitioned one (by `at`): the rows it
holds now stay where they are, as its partition `score_history_before` (everything before the
first month of its own); months from then on, and a default partition for anything that finds
no month (rows older than that are imported, a month the scorer did not create in time), are
created by the scorer (`services/scorer/history_months.py`), which also drops months past retention.
The primary key becomes (id, at), as a partitioned table's must hold its partition key.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from datetime import UTC, datetime

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _month_after(now: datetime) -> datetime:
    return datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)


def upgrade() -> None:
    split = _month_after(datetime.now(UTC)).isoformat()
    op.execute("ALTER TABLE score_history RENAME TO score_history_before")
    op.execute("ALTER INDEX ix_score_history_account_at RENAME TO score_history_before_account_at")
    # a partition's key must hold the partition key too: (id, at), built before the old is
    # dropped
    op.execute("CREATE UNIQUE INDEX score_history_before_pkey ON score_history_before (id, at)")
    op.execute(
        "ALTER TABLE score_history_before DROP CONSTRAINT pk_score_history,"
        " ADD CONSTRAINT score_history_before_pkey PRIMARY KEY USING INDEX"
        " score_history_before_pkey"
    )
    op.execute(
        "CREATE TABLE score_history (LIKE score_history_before INCLUDING DEFAULTS"
        " INCLUDING STORAGE INCLUDING COMPRESSION, CONSTRAINT pk_score_history"
        " PRIMARY KEY (id, at)) PARTITION BY RANGE (at)"
    )
    op.execute("ALTER SEQUENCE score_history_id_seq OWNED BY score_history.id")
    op.execute("CREATE INDEX ix_score_history_account_at ON score_history (account_id, at, id)")
    # the rows there are stay where they are: a partition up to the first month of its own
    # (its range checked by one scan)
    op.execute(
        "ALTER TABLE score_history ATTACH PARTITION score_history_before"
        f" FOR VALUES FROM (MINVALUE) TO ('{split}')"
    )
    op.execute("CREATE TABLE score_history_default PARTITION OF score_history DEFAULT")
    # retention deletes from these two by `at` (the months are dropped whole)
    for name in ("score_history_before", "score_history_default"):
        op.execute(f"CREATE INDEX {name}_at ON {name} (at)")


def downgrade() -> None:
    op.execute("ALTER TABLE score_history DETACH PARTITION score_history_before")
    op.execute("INSERT INTO score_history_before SELECT * FROM score_history")
    op.execute("ALTER SEQUENCE score_history_id_seq OWNED BY score_history_before.id")
    op.execute("DROP TABLE score_history")
    op.execute(
        "ALTER TABLE score_history_before DROP CONSTRAINT score_history_before_pkey,"
        " ADD CONSTRAINT pk_score_history PRIMARY KEY (id)"
    )
    op.execute("ALTER INDEX score_history_before_account_at RENAME TO ix_score_history_account_at")
    op.execute("ALTER TABLE score_history_before RENAME TO score_history")

"""The tables' row types (shared/db.py): what the scorer's one statement is built from."""

from __future__ import annotations

import pytest

from shared import db

ROW_TYPES = {
    db.AccountRow: db.ProfileValues,
    db.AccountStateRow: db.StateValues,
    db.SeenSignalsRow: db.SeenValues,
    db.ScoreRow: db.ScoreValues,
    db.ScoreHistoryRow: db.HistoryValues,
    db.OutboxRow: db.OutboxValues,
}


@pytest.mark.parametrize("table", ROW_TYPES, ids=lambda t: t.__tablename__)
def test_each_row_type_names_its_tables_columns_but_the_ones_the_table_makes(table: type) -> None:
    columns = [c.name for c in table.__table__.columns if c.autoincrement is not True]
    assert list(ROW_TYPES[table].__annotations__) == columns


def test_a_time_falls_in_the_period_of_the_memory_that_holds_it() -> None:
    start = 1_796_450_400.0  # a period's first second
    assert start % db.SEEN_PERIOD == 0
    assert db.seen_period(start) == db.seen_period(start + db.SEEN_PERIOD - 0.001)
    assert db.seen_period(start + db.SEEN_PERIOD) == db.seen_period(start) + 1

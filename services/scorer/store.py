"""The scorer's PostgreSQL reads and its one-statement-per-batch write.

`write_batch` writes, in ONE statement (so one transaction): the consumed offsets (fenced),
changed account state, current scores, history rows and outbox rows, and notifies the API's
caches of the accounts it changed. The offsets row of each partition doubles as the fence: the
update only matches if the stored offset is still the one this scorer read on assignment (or
last wrote); a scorer that lost the partition in a rebalance finds it moved on, the statement
aborts (function `fences_held`, migration 0003) and FencedOut is raised. The row lock taken by
that update also serialises two writers of one partition until the first commits.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from sqlalchemy import LargeBinary, String, delete, func, select, text, tuple_, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSON
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.scorer.rescore import (
    AccountValues,
    Held,
    HistoryValues,
    OutboxValues,
    Rows,
    ScoreValues,
    StoredScore,
)
from shared.db import (
    NOTIFY_CHANGED,
    AccountRow,
    ConsumerOffsetRow,
    OutboxRow,
    ScoreHistoryRow,
    ScoreRow,
    notify_changed,
)
from shared.errors import FencedOut
from shared.scoring.engine import contributions


@dataclass
class Batch:
    """Everything one transaction writes. `fences` maps (topic, partition) to the stored
    offset expected now and the offset to store (equal for sweep-only writes). An account
    whose scores are written has its account row written too (which the API's caches hear)."""

    fences: dict[tuple[str, int], tuple[int | None, int]] = field(default_factory=dict)
    accounts: list[AccountValues] = field(default_factory=list)
    scores: list[ScoreValues] = field(default_factory=list)
    history: list[HistoryValues] = field(default_factory=list)
    outbox: list[OutboxValues] = field(default_factory=list)

    def add(self, account: AccountValues, rows: Rows) -> None:
        """An account re-scored: its row and the rows of its scores."""
        self.accounts.append(account)
        self.scores += rows.scores
        self.history += rows.history
        self.outbox += rows.outbox


async def load_offsets(
    engine: AsyncEngine, group_id: str, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    wanted = list(partitions)
    if not wanted:
        return {}
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(
                ConsumerOffsetRow.topic, ConsumerOffsetRow.partition, ConsumerOffsetRow.next_offset
            )
            .where(ConsumerOffsetRow.group_id == group_id)
            .where(ConsumerOffsetRow.topic.in_({t for t, _ in wanted}))
        )
        stored = {(r.topic, r.partition): r.next_offset for r in rows}
    return {tp: stored[tp] for tp in wanted if tp in stored}


async def store_first_offsets(
    engine: AsyncEngine, group_id: str, starts: Mapping[tuple[str, int], int], now: datetime
) -> None:
    """Store these offsets for the partitions that have none stored (another scorer may have
    stored one meanwhile: it stays)."""
    rows = [
        {"group_id": group_id, "topic": t, "partition": p, "next_offset": o, "updated_at": now}
        for (t, p), o in starts.items()
    ]
    async with engine.begin() as conn:
        await conn.execute(
            postgresql.insert(ConsumerOffsetRow).values(rows).on_conflict_do_nothing()
        )


# The state documents and the current scores of a part's accounts. Read on the driver's
# connection: a model switch reads every account, and SQLAlchemy's rows cost the scorer ~15 µs
# of CPU an account more (20k bench: 68-71 against 53-55 µs an account, JSON decoding
# included). The explanation is read whole, though only its factors are kept (what
# `top_movers` compares against): the factors are most of it, and `explanation -> 'factors'`
# had PostgreSQL parse every explanation, 10 of its 12.7 ms for 500 accounts' scores.
_LOAD_STATES = "SELECT account_id, state FROM accounts WHERE account_id = ANY($1::VARCHAR[])"
_LOAD_SCORES = """\
SELECT account_id, objective, model_role, score, band, explanation, recorded_score,
       previous_score, alert_baseline, model_version, changed_at, held
FROM scores WHERE account_id = ANY($1::VARCHAR[])"""


async def load_accounts(
    engine: AsyncEngine, account_ids: Sequence[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[tuple[str, str], StoredScore]]]:
    """The stored state documents and current scores of these accounts."""
    states: dict[str, dict[str, Any]] = {}
    scores: dict[str, dict[tuple[str, str], StoredScore]] = {}
    if not account_ids:
        return states, scores
    async with engine.connect() as conn:
        raw: Any = (await conn.get_raw_connection()).driver_connection  # asyncpg's connection
        ids = list(account_ids)
        states = dict(await raw.fetch(_LOAD_STATES, ids))
        for (
            account_id,
            objective,
            role,
            score,
            band,
            explanation,
            recorded,
            previous,
            alert_baseline,
            version,
            changed_at,
            held,
        ) in await raw.fetch(_LOAD_SCORES, ids):
            scores.setdefault(account_id, {})[(objective, role)] = StoredScore(
                score,
                band,
                contributions(explanation.get("factors") or ()),
                recorded,
                previous,
                alert_baseline,
                version,
                changed_at,
                Held.from_json(held) if held else None,
            )
    return states, scores


async def due_for_review(
    engine: AsyncEngine, partitions: Sequence[int], now: datetime, limit: int
) -> list[tuple[str, int]]:
    if not partitions:
        return []
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(AccountRow.account_id, AccountRow.partition)
            .where(AccountRow.partition.in_(partitions))
            .where(AccountRow.next_review_at <= now)
            .order_by(AccountRow.next_review_at)
            .limit(limit)
        )
        return [(r.account_id, r.partition) for r in rows]


async def drop_unconfigured_scores(
    engine: AsyncEngine, partitions: Sequence[int], expected: list[tuple[str, str, str]]
) -> None:
    """Drop the score rows of `partitions`' accounts whose role or objective is no longer
    configured (a shadow model removed, an objective dropped), and tell the API's caches."""
    if not partitions:
        return
    key = tuple_(ScoreRow.model_role, ScoreRow.objective)
    async with engine.begin() as conn:
        owned = select(AccountRow.account_id).where(AccountRow.partition.in_(partitions))
        dropped = await conn.execute(
            delete(ScoreRow)
            .where(
                ScoreRow.account_id.in_(owned),
                key.not_in([(role, objective) for role, objective, _ in expected]),
            )
            .returning(ScoreRow.account_id)
        )
        if changed := list(set(dropped.scalars())):
            await conn.exec_driver_sql(NOTIFY_CHANGED, (changed,))


# what picks the accounts a sweep re-scores: owned partitions -> (account id, partition)
Find = Callable[[list[int]], Awaitable[list[tuple[str, int]]]]


# One window of the model-change scan, in one read: the next $3 accounts of the partitions $1 in
# id order after $2 (NULL: from the first); of them, those whose score rows are not exactly the
# expected (role, objective, version) triples ($4-$6), with their partitions; the window's last
# id and its size.
_OUTDATED_WINDOW = """\
WITH window_ AS (
  SELECT account_id, partition FROM accounts
  WHERE partition = ANY($1::INTEGER[]) AND ($2::VARCHAR IS NULL OR account_id > $2::VARCHAR)
  ORDER BY account_id LIMIT $3),
expected AS (
  SELECT * FROM unnest($4::VARCHAR[], $5::VARCHAR[], $6::VARCHAR[]) AS e(role, objective, version)),
looked_at AS (
  SELECT w.account_id, w.partition,
         (SELECT count(*) FROM scores s JOIN expected e ON (s.model_role, s.objective,
          s.model_version) = (e.role, e.objective, e.version) WHERE s.account_id = w.account_id)
         <> cardinality($4::VARCHAR[]) AS outdated
  FROM window_ w)
SELECT array_agg(account_id) FILTER (WHERE outdated), array_agg(partition) FILTER (WHERE outdated),
       max(account_id), count(*)
FROM looked_at"""


async def outdated_accounts(
    engine: AsyncEngine,
    partitions: Sequence[int],
    expected: list[tuple[str, str, str]],
    after: str | None,
    limit: int,
) -> tuple[list[tuple[str, int]], str | None]:
    """Among the next `limit` accounts of `partitions` in id order after `after`, those whose
    score rows are not exactly `expected` ((role, objective, model version) of the configured
    models), with their partitions; and the last account id looked at (None: the end).

    A read, and a window at a time: the caller re-scores what it finds straight away, so
    a model switch over a million accounts neither locks them all in one transaction nor
    writes each account twice (once to make it due, once to re-score it)."""
    if not partitions:
        return [], None
    roles, objectives, versions = (list(column) for column in zip(*expected, strict=True))
    async with engine.connect() as conn:
        raw: Any = (await conn.get_raw_connection()).driver_connection  # asyncpg's connection
        ids, owners, last, looked_at = await raw.fetchrow(
            _OUTDATED_WINDOW, list(partitions), after, limit, roles, objectives, versions
        )
    outdated = list(zip(ids or (), owners or (), strict=True))
    return outdated, last if looked_at == limit else None


# The fences, as the first parts of the batch's one statement ($1 group, $2 now, then one array
# per column of the fences): a partition seen for the first time is inserted (DO NOTHING if
# another scorer got there first), any other is moved on only from the offset expected. The
# statement's final SELECT hands the number of fences that held to `fences_held`, which aborts
# it unless all did. That SELECT reads the fences, so PostgreSQL runs them first and the row
# writes (read by nothing) after, to completion: writers of one partition queue on its offsets
# row before touching any account row. (Were that order ever to change, two such writers could
# deadlock; PostgreSQL detects it and the loser's batch is retried, like any failed batch.)
_FENCES = """\
fence_rows AS (SELECT * FROM unnest($3::VARCHAR[], $4::INTEGER[], $5::BIGINT[], $6::BIGINT[])
               AS f(topic, partition, expected, next_offset)),
fence_insert AS (
  INSERT INTO consumer_offsets (group_id, topic, partition, next_offset, updated_at)
  SELECT $1, f.topic, f.partition, f.next_offset, $2 FROM fence_rows f WHERE f.expected IS NULL
  ON CONFLICT DO NOTHING RETURNING 1),
fence_update AS (
  UPDATE consumer_offsets c SET next_offset = f.next_offset, updated_at = $2 FROM fence_rows f
  WHERE c.group_id = $1 AND c.topic = f.topic AND c.partition = f.partition
    AND c.next_offset = f.expected
  RETURNING 1)"""
_FENCE_PARAMETERS = 6
_FENCES_HELD = "(SELECT count(*) FROM fence_insert) + (SELECT count(*) FROM fence_update)"
FENCED_OUT = "HSF01"  # the SQLSTATE fences_held raises


# what write_batch writes after the fences: (table, the key to upsert on, or () to keep rows that
# exist, or None for a plain insert)
_TARGETS: tuple[tuple[Any, tuple[str, ...] | None], ...] = (
    (AccountRow, ("account_id",)),
    (ScoreRow, ("account_id", "objective", "model_role")),
    (ScoreHistoryRow, None),
    (OutboxRow, ()),
)


def _columns(table: Any) -> list[Any]:
    return [c for c in table.__table__.columns if c.autoincrement is not True]


@functools.cache
def _write_sql() -> str:
    """A whole batch in ONE statement: the fences, then an INSERT per table from one JSON array
    per column (zipped by ROWS FROM, each value cast to its column's type), as data-modifying
    CTEs, then the change notification. One round trip and no per-row SQL. Each array is one
    orjson call on the client, sent as UTF-8 bytes and parsed by the server; the stored JSON
    documents go into it as the text they are."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    quote = dialect.identifier_preparer.quote
    parts, n = [_FENCES], _FENCE_PARAMETERS
    for table, conflict in _TARGETS:
        columns = _columns(table)
        names = [quote(c.name) for c in columns]
        arrays = ", ".join(
            f"json_array_elements{'' if _is_json(c) else '_text'}"
            f"(convert_from(${n + i}::BYTEA, 'UTF8')::json)"
            for i, c in enumerate(columns, 1)
        )
        values = ", ".join(
            f"u.{name}::json" if _kept(table, c.name) else _cast(c, f"u.{name}", dialect)
            for c, name in zip(columns, names, strict=True)
        )
        n += len(columns)
        sql = (
            f"INSERT INTO {table.__tablename__} ({', '.join(names)})"
            f" SELECT {values} FROM ROWS FROM ({arrays}) AS u({', '.join(names)})"
        )
        if conflict == ():
            sql += " ON CONFLICT DO NOTHING"
        elif conflict is not None:
            keys = [quote(k) for k in conflict]
            updates = ", ".join(
                _update(table, c.name, name)
                for c, name in zip(columns, names, strict=True)
                if name not in keys
            )
            sql += f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
        if table is AccountRow:  # every account written; the change notification reads it
            sql += " RETURNING account_id"
        parts.append(f"{table.__tablename__} AS ({sql})")
    # then the change notification of the accounts written, and the check ($n+1: how many
    # fences there are); a SELECT in WITH runs only if read, hence the count
    ids = f"ARRAY(SELECT account_id FROM {AccountRow.__tablename__})"
    parts.append(f"notified AS ({notify_changed(ids)})")
    return (
        f"WITH {', '.join(parts)} SELECT fences_held({_FENCES_HELD}, ${n + 1}),"
        " (SELECT count(*) FROM notified)"
    )


def _kept(table: Any, column: str) -> bool:
    """Whether `column` of `table` keeps its stored value when a row brings a JSON null: an
    account's state, which comes as null when no signal changed it (a re-score of time alone).
    The stored document is then the new row's value, so PostgreSQL neither compresses it nor
    writes its TOAST again. Inserted as a JSON null, not NULL: the column is NOT NULL, which is
    checked before ON CONFLICT decides."""
    return table is AccountRow and column == AccountRow.state.key


def _update(table: Any, column: str, name: str) -> str:
    """An upsert's assignment of `column` (`name`: as quoted in SQL)."""
    new = f"EXCLUDED.{name}"
    if _kept(table, column):
        kept = f"{table.__tablename__}.{name}"
        return f"{name} = CASE WHEN json_typeof({new}) = 'null' THEN {kept} ELSE {new} END"
    return f"{name} = {new}"


def _cast(column: Any, value: str, dialect: Any) -> str:
    """The value cast to its column's type, without a length: an explicit cast to VARCHAR(n)
    silently truncates, where storing into the column refuses a value too long (SQLSTATE
    22001), as it must: a truncated account id would be another account's."""
    column_type = column.type
    if isinstance(column_type, String) and column_type.length is not None:
        column_type = String()
    type_ = column_type.compile(dialect=dialect)
    if _is_json(column):  # a JSON null is SQL NULL
        return f"(CASE WHEN json_typeof({value}) = 'null' THEN NULL ELSE {value} END)::{type_}"
    if isinstance(column.type, LargeBinary):  # sent as hex
        return f"decode({value}, 'hex')"
    return f"{value}::{type_}"


def _is_json(column: Any) -> bool:
    return isinstance(column.type, JSON)  # json or jsonb


def _json_array(values: list[Any]) -> bytes:
    """A JSON array of documents: those the rows carry already serialised (bytes, to hold less
    memory) go in as the text they are, the rest through orjson. Joined here rather than as
    orjson.Fragment objects returned from orjson's `default` hook: a scorer died twice of heap
    corruption inside this function while it did that (glibc's "malloc(): invalid size
    (unsorted)", the stack from faulthandler)."""
    return (
        b"["
        + b",".join(
            v if isinstance(v, bytes) else orjson.dumps(v, option=orjson.OPT_NAIVE_UTC)
            for v in values
        )
        + b"]"
    )


def _arrays(table: Any, rows: Sequence[Mapping[str, Any]]) -> list[bytes]:
    """One JSON array per column, as UTF-8 bytes; a column a row leaves out is NULL, as in an
    INSERT."""
    return [
        _json_array([r.get(c.name) for r in rows])
        if _is_json(c)
        else orjson.dumps(
            [None if (v := r.get(c.name)) is None else v.hex() for r in rows]
            if isinstance(c.type, LargeBinary)
            else [r.get(c.name) for r in rows],
            option=orjson.OPT_NAIVE_UTC,  # as asyncpg would send a naive time: in UTC
        )
        for c in _columns(table)
    ]


async def write_batch(engine: AsyncEngine, group_id: str, batch: Batch, now: datetime) -> None:
    """The batch's one statement on the driver's connection, in autocommit: PostgreSQL runs it
    as a transaction of its own, in one round trip. FencedOut, and nothing written or notified,
    if any fence did not hold."""
    fences = sorted(batch.fences.items())
    fence_arrays = [[t for (t, _), _ in fences], [p for (_, p), _ in fences]]
    fence_arrays += [[e for _, (e, _) in fences], [n for _, (_, n) in fences]]
    rows: tuple[Sequence[Mapping[str, Any]], ...] = (
        batch.accounts,
        batch.scores,
        batch.history,
        batch.outbox,
    )
    arrays = [a for (table, _), r in zip(_TARGETS, rows, strict=True) for a in _arrays(table, r)]
    async with engine.connect() as conn:
        raw: Any = (await conn.get_raw_connection()).driver_connection  # asyncpg's connection
        try:
            await raw.fetchrow(_write_sql(), group_id, now, *fence_arrays, *arrays, len(fences))
        except asyncpg.PostgresError as exc:
            if exc.sqlstate == FENCED_OUT:
                partitions = [f"{t}[{p}]" for (t, p), _ in fences]
                raise FencedOut(f"{exc} (this batch: {partitions})") from exc
            raise


# --- outbox relay ---------------------------------------------------------------------------


async def claim_outbox(conn: AsyncConnection, limit: int) -> list[Any]:
    rows = await conn.execute(
        select(
            OutboxRow.id,
            OutboxRow.event_id,
            OutboxRow.topic,
            OutboxRow.key,
            OutboxRow.payload,
            OutboxRow.content_type,
        )
        .where(OutboxRow.sent_at.is_(None))
        .order_by(OutboxRow.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(rows)


async def mark_sent(conn: AsyncConnection, ids: Sequence[int], now: datetime) -> None:
    await conn.execute(update(OutboxRow).where(OutboxRow.id.in_(ids)).values(sent_at=now))


async def outbox_backlog(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            select(func.count()).select_from(OutboxRow).where(OutboxRow.sent_at.is_(None))
        )
    return int(count or 0)


async def prune_outbox(engine: AsyncEngine, older_than: datetime) -> int:
    async with engine.begin() as conn:
        result = await conn.execute(
            text("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < :t"), {"t": older_than}
        )
    return int(result.rowcount or 0)


async def band_counts(engine: AsyncEngine) -> list[tuple[str, str, str, int]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(ScoreRow.objective, ScoreRow.model_role, ScoreRow.band, func.count()).group_by(
                ScoreRow.objective, ScoreRow.model_role, ScoreRow.band
            )
        )
        return [(r[0], r[1], r[2], int(r[3])) for r in rows]

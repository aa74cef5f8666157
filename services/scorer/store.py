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
from sqlalchemy.dialects.postgresql import ARRAY, JSON
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.scorer.partitions import Fences
from services.scorer.rescore import Held, Profile, Rows, StoredScore
from shared import proposals
from shared.db import (
    NOTIFY_CHANGED,
    AccountRow,
    AccountStateRow,
    ConsumerOffsetRow,
    HistoryValues,
    ModelVersionRow,
    OutboxRow,
    OutboxValues,
    OutcomeRow,
    OutcomeValues,
    ParentDueRow,
    ParentDueValues,
    ProfileValues,
    ScoreHistoryRow,
    ScoreRow,
    ScoreValues,
    SeenSignalsRow,
    SeenValues,
    StateValues,
    notify_changed,
)
from shared.errors import FencedOut
from shared.scoring.model import Model


@dataclass
class Batch:
    """Everything one transaction writes. `fences` maps (topic, partition) to the stored
    offset expected now and the offset to store (equal for sweep-only writes). An account
    whose scores are written has its state row written too (which the API's caches hear); its
    profile only when it changed, its memory only with the ids it took."""

    fences: dict[tuple[str, int], tuple[int | None, int]] = field(default_factory=dict)
    profiles: list[ProfileValues] = field(default_factory=list)
    states: list[StateValues] = field(default_factory=list)
    seen: list[SeenValues] = field(default_factory=list)
    scores: list[ScoreValues] = field(default_factory=list)
    history: list[HistoryValues] = field(default_factory=list)
    outbox: list[OutboxValues] = field(default_factory=list)
    # what the signals showed, or told, by (source, outcome_id): a repeat in a batch is one row
    outcomes: dict[tuple[str, str], OutcomeValues] = field(default_factory=dict)
    # whose rollups are due (rollups.py): whether only the past being caught up on moved them
    parents: dict[str, bool] = field(default_factory=dict)

    def record(self, outcome: OutcomeValues) -> None:
        self.outcomes[(outcome["source"], outcome["outcome_id"])] = outcome

    def add(
        self,
        profile: ProfileValues | None,
        state: StateValues,
        seen: list[SeenValues],
        rows: Rows,
    ) -> None:
        """An account re-scored: its rows."""
        if profile is not None:
            self.profiles.append(profile)
        self.states.append(state)
        self.seen += seen
        self.scores += rows.scores
        self.history += rows.history
        self.outbox += rows.outbox
        for parent in rows.parents:
            self.parents[parent] = self.parents.get(parent, True) and rows.replay


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


async def register_models(engine: AsyncEngine, models: Iterable[Model], now: datetime) -> None:
    """Record these models' versions (each once): the API derives explanations with them."""
    async with engine.begin() as conn:
        await proposals.register(conn, list(models), now)


async def model_versions(engine: AsyncEngine, versions: Iterable[str]) -> dict[str, Model]:
    """The registered models of these versions (those not registered are left out)."""
    wanted = sorted(set(versions))
    if not wanted:
        return {}
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(ModelVersionRow.version, ModelVersionRow.document).where(
                ModelVersionRow.version.in_(wanted)
            )
        )
        return {version: Model.model_validate(document) for version, document in rows}


@dataclass
class Stored:
    """What is stored of one account: its profile, state and current scores, and the ids its
    memory holds by period (when asked for)."""

    profile: Profile | None = None
    state: bytes | None = None
    scores: dict[tuple[str, str], StoredScore] = field(default_factory=dict)
    periods: list[int] = field(default_factory=list)  # those its memory has rows in
    memory: list[tuple[int, bytes]] = field(default_factory=list)


# Read on the driver's connection: a model switch reads every account, and SQLAlchemy's rows
# cost the scorer ~15 µs of CPU an account more.
_LOAD_STATES = """\
SELECT w.account_id, s.state, s.seen_periods, a.name, a.industry, a.region, a.tier,
       a.lifecycle_stage, a.segment, a.owner, a.parent_account_id, a.mrr_cents, a.currency,
       a.partition
FROM unnest($1::VARCHAR[]) AS w(account_id)
LEFT JOIN account_states s ON s.account_id = w.account_id
LEFT JOIN accounts a ON a.account_id = w.account_id"""
_LOAD_SCORES = """\
SELECT account_id, objective, model_role, score, band, recorded_score, previous_score,
       alert_baseline, model_version, changed_at, held, evaluated_at, news
FROM scores WHERE account_id = ANY($1::VARCHAR[])"""
# an account's memory, a row per period it has rows in (as its state row lists them): one
# partition probed for each (the LATERAL subquery, at most one row by the key, is run per pair,
# so the partitions are pruned as it runs; a join would hash every partition whole), where an
# account id in every period would probe them all
_LOAD_MEMORY = """\
SELECT w.account_id, w.period, m.ids
FROM unnest($1::VARCHAR[], $2::INTEGER[]) AS w(account_id, period)
CROSS JOIN LATERAL (
  SELECT m.ids FROM seen_signals m
  WHERE m.account_id = w.account_id AND m.period = w.period LIMIT 1) m"""


async def load_accounts(
    engine: AsyncEngine, account_ids: Sequence[str], memory_from: int | None = None
) -> dict[str, Stored]:
    """What is stored of these accounts (those never stored are left out), with the memory of
    the periods from `memory_from` on (None: without their memory)."""
    found: dict[str, Stored] = {}
    if not account_ids:
        return found
    async with engine.connect() as conn:
        raw: Any = (await conn.get_raw_connection()).driver_connection  # asyncpg's connection
        ids = list(account_ids)
        for account_id, state, periods, *profile in await raw.fetch(_LOAD_STATES, ids):
            if state is not None or profile[-1] is not None:
                found[account_id] = Stored(
                    tuple(profile) if profile[-1] is not None else None,
                    state,
                    periods=periods or [],
                )
        for (
            account_id,
            objective,
            role,
            score,
            band,
            recorded,
            previous,
            alert_baseline,
            version,
            changed_at,
            held,
            evaluated_at,
            news,
        ) in await raw.fetch(_LOAD_SCORES, ids):
            stored = found.setdefault(account_id, Stored())
            stored.scores[(objective, role)] = StoredScore(
                score,
                band,
                None,  # derived from the state when needed (rescore.Prior)
                recorded,
                previous,
                alert_baseline,
                version,
                changed_at,
                Held.from_json(held) if held else None,  # decoded by the engine's codec
                evaluated_at,
                tuple(news or ()),
            )
        if memory_from is not None:
            wanted = {a: stored.periods for a, stored in found.items()}
            for account_id, rows in (await _memory(raw, wanted, memory_from)).items():
                found[account_id].memory = rows
    return found


async def load_memory(
    engine: AsyncEngine, periods: Mapping[str, Iterable[int]], memory_from: int
) -> dict[str, list[tuple[int, bytes]]]:
    """The memories of accounts read before without them (`periods`: those each has rows in),
    of the periods from `memory_from` on."""
    if not periods:
        return {}
    async with engine.connect() as conn:
        raw: Any = (await conn.get_raw_connection()).driver_connection
        return await _memory(raw, periods, memory_from)


async def _memory(
    raw: Any, periods: Mapping[str, Iterable[int]], memory_from: int
) -> dict[str, list[tuple[int, bytes]]]:
    pairs = [(a, p) for a, ps in periods.items() for p in ps if p >= memory_from]
    memory: dict[str, list[tuple[int, bytes]]] = {a: [] for a in periods}
    if pairs:
        ids, numbers = (list(column) for column in zip(*pairs, strict=True))
        for account_id, period, digests in await raw.fetch(_LOAD_MEMORY, ids, numbers):
            memory[account_id].append((period, digests))
    return memory


async def due_for_review(
    engine: AsyncEngine, partitions: Sequence[int], now: datetime, limit: int
) -> list[tuple[str, int]]:
    if not partitions:
        return []
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(AccountStateRow.account_id, AccountStateRow.partition)
            .where(AccountStateRow.partition.in_(partitions))
            .where(AccountStateRow.next_review_at <= now)
            .order_by(AccountStateRow.next_review_at)
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
        owned = select(AccountStateRow.account_id).where(AccountStateRow.partition.in_(partitions))
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


async def models_scanned(
    engine: AsyncEngine, group_id: str, topic: str, partitions: Sequence[int]
) -> dict[int, str | None]:
    """The models each partition's accounts were last all scanned to (ModelSet.fingerprint)."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(ConsumerOffsetRow.partition, ConsumerOffsetRow.models_scanned).where(
                ConsumerOffsetRow.group_id == group_id,
                ConsumerOffsetRow.topic == topic,
                ConsumerOffsetRow.partition.in_(partitions),
            )
        )
        return {p: m for p, m in rows}


async def mark_models_scanned(
    engine: AsyncEngine, group_id: str, fences: Fences, models: str
) -> None:
    """Record that these partitions' accounts are all scored by `models`, where each
    partition's offset is still the one this scorer holds (else another wrote it since)."""
    async with engine.begin() as conn:
        for (topic, partition), (at, _) in fences.items():
            await conn.execute(
                update(ConsumerOffsetRow)
                .where(
                    ConsumerOffsetRow.group_id == group_id,
                    ConsumerOffsetRow.topic == topic,
                    ConsumerOffsetRow.partition == partition,
                    ConsumerOffsetRow.next_offset == at,
                )
                .values(models_scanned=models, fence_epoch=ConsumerOffsetRow.fence_epoch + 1)
            )


# what picks the accounts a sweep re-scores: owned partitions -> (account id, partition)
Find = Callable[[list[int]], Awaitable[list[tuple[str, int]]]]


# One window of the model-change scan, in one read: the next $3 accounts of the partitions $1 in
# id order after $2 (NULL: from the first); of them, those whose score rows are not exactly the
# expected (role, objective, version) triples ($4-$6), with their partitions; the window's last
# id and its size.
_OUTDATED_WINDOW = """\
WITH window_ AS (
  SELECT account_id, partition FROM account_states
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
# another scorer got there first), any other is moved on only from the offset expected, and
# its `fence_epoch` with it (a write of release 0014 leaves that as it was: migration 0015), and
# its `models_scanned` is forgotten unless this writer serves those very models. The
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
  UPDATE consumer_offsets c SET next_offset = f.next_offset, updated_at = $2,
         fence_epoch = c.fence_epoch + 1,
         models_scanned = CASE WHEN c.models_scanned = {models} THEN c.models_scanned END
  FROM fence_rows f
  WHERE c.group_id = $1 AND c.topic = f.topic AND c.partition = f.partition
    AND c.next_offset = f.expected
  RETURNING 1)"""
_FENCE_PARAMETERS = 6
_FENCES_HELD = "(SELECT count(*) FROM fence_insert) + (SELECT count(*) FROM fence_update)"
FENCED_OUT = "HSF01"  # the SQLSTATE fences_held raises


@dataclass(frozen=True)
class _Target:
    """A table the batch writes: its row type's columns, and what a row that exists already
    becomes (`conflict`: the key to upsert on; () keeps the row there is; None: a plain
    insert), with assignments other than the new row's value (`kept`, by column)."""

    table: Any
    values: Any  # the TypedDict of its rows
    conflict: tuple[str, ...] | None
    kept: Mapping[str, str] = field(default_factory=dict)
    returning: bool = False


# A state is empty when no signal changed it (a re-score of time alone): the stored one stays,
# so PostgreSQL writes no new value (empty, not NULL: the column is NOT NULL, which is checked
# before ON CONFLICT decides). The next review moves only earlier, or once it has come:
# a batch's re-score then leaves it (and its index) as it was, and the update stays HOT; an
# account reviewed too early by a review time left in place is re-scored, and set right, then.
# The memory's new ids are appended to the period's, the newest `$cap` bytes kept.
_TARGETS: tuple[_Target, ...] = (
    _Target(AccountRow, ProfileValues, ("account_id",)),
    _Target(
        AccountStateRow,
        StateValues,
        ("account_id",),
        {
            "state": (
                "CASE WHEN octet_length(EXCLUDED.state) = 0 THEN account_states.state"
                " ELSE EXCLUDED.state END"
            ),
            "next_review_at": (
                "CASE WHEN EXCLUDED.next_review_at < account_states.next_review_at"
                " OR account_states.next_review_at <= $2 THEN EXCLUDED.next_review_at"
                " ELSE account_states.next_review_at END"
            ),
        },
        returning=True,
    ),
    _Target(
        SeenSignalsRow,
        SeenValues,
        ("account_id", "period"),
        {
            "ids": (
                "substring(seen_signals.ids || EXCLUDED.ids FROM greatest(octet_length("
                "seen_signals.ids) + octet_length(EXCLUDED.ids) - {cap} + 1, 1))"
            )
        },
    ),
    _Target(ScoreRow, ScoreValues, ("account_id", "objective", "model_role")),
    _Target(ScoreHistoryRow, HistoryValues, None),
    _Target(OutboxRow, OutboxValues, ()),
    _Target(
        ParentDueRow,
        ParentDueValues,
        ("parent_account_id",),
        {"replay": "parents_due.replay AND EXCLUDED.replay"},
    ),
    # a correction (the same source and id, told again) changes it; a voided one stays voided
    _Target(OutcomeRow, OutcomeValues, ("source", "outcome_id")),
)


def _columns(target: _Target) -> list[Any]:
    table = target.table.__table__
    return [table.columns[name] for name in target.values.__annotations__]


@functools.cache
def _write_sql() -> str:
    """A whole batch in ONE statement: the fences, then an INSERT per table from one array
    per column (zipped by ROWS FROM, each value cast to its column's type), as data-modifying
    CTEs, then the change notification. One round trip and no per-row SQL. Binary columns
    travel as bytea arrays; the others as one JSON array each (one orjson call on the client,
    parsed by the server)."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    quote = dialect.identifier_preparer.quote
    parts, n = [_FENCES], _FENCE_PARAMETERS
    last = n + 1 + sum(len(_columns(t)) for t in _TARGETS)  # the number of fences
    cap, models = f"${last + 1}", f"${last + 2}::VARCHAR"
    parts[0] = _FENCES.replace("{models}", models)
    for target in _TARGETS:
        columns = _columns(target)
        names = [quote(c.name) for c in columns]
        arrays = ", ".join(
            f"unnest(${n + i}::BYTEA[])"
            if isinstance(c.type, LargeBinary)
            else f"json_array_elements{'' if _json_valued(c) else '_text'}"
            f"(convert_from(${n + i}::BYTEA, 'UTF8')::json)"
            for i, c in enumerate(columns, 1)
        )
        values = ", ".join(
            _cast(c, f"u.{name}", dialect) for c, name in zip(columns, names, strict=True)
        )
        n += len(columns)
        table = target.table.__tablename__
        sql = (
            f"INSERT INTO {table} ({', '.join(names)})"
            f" SELECT {values} FROM ROWS FROM ({arrays}) AS u({', '.join(names)})"
        )
        if target.conflict == ():
            sql += " ON CONFLICT DO NOTHING"
        elif target.conflict is not None:
            keys = [quote(k) for k in target.conflict]
            updates = ", ".join(
                f"{name} = " + target.kept.get(c.name, f"EXCLUDED.{name}").replace("{cap}", cap)
                for c, name in zip(columns, names, strict=True)
                if name not in keys
            )
            sql += f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
        if target.returning:  # the accounts written; the change notification reads them
            sql += " RETURNING account_id"
        parts.append(f"{table} AS ({sql})")
    # then the change notification of the accounts written, and the check ($n+1: how many
    # fences there are); a SELECT in WITH runs only if read, hence the count
    ids = f"ARRAY(SELECT account_id FROM {AccountStateRow.__tablename__})"
    parts.append(f"notified AS ({notify_changed(ids)})")
    return (
        f"WITH {', '.join(parts)} SELECT fences_held({_FENCES_HELD}, ${n + 1}),"
        " (SELECT count(*) FROM notified)"
    )


def _cast(column: Any, value: str, dialect: Any) -> str:
    """The value cast to its column's type, without a length: an explicit cast to VARCHAR(n)
    silently truncates, where storing into the column refuses a value too long (SQLSTATE
    22001), as it must: a truncated account id would be another account's."""
    column_type = column.type
    if isinstance(column_type, LargeBinary):
        return value
    if isinstance(column_type, ARRAY):  # a JSON array, or null
        item = column_type.item_type
        if isinstance(item, String) and item.length is not None:
            item = String()
        return (
            f"(CASE WHEN json_typeof({value}) = 'array' THEN"
            f" ARRAY(SELECT json_array_elements_text({value})) END)"
            f"::{item.compile(dialect=dialect)}[]"
        )
    if isinstance(column_type, String) and column_type.length is not None:
        column_type = String()
    type_ = column_type.compile(dialect=dialect)
    if _json_valued(column):  # a JSON null is SQL NULL
        return f"(CASE WHEN json_typeof({value}) = 'null' THEN NULL ELSE {value} END)::{type_}"
    return f"{value}::{type_}"


def _json_valued(column: Any) -> bool:
    """Whether the column's array elements are read as JSON values, not as text."""
    return isinstance(column.type, JSON | ARRAY)  # json, jsonb, or an array


def _json_array(values: list[Any]) -> bytes:
    """A JSON array of values: documents the rows carry already serialised (bytes, to hold
    less memory) go in as the text they are, the rest through orjson. Joined here rather than
    as orjson.Fragment objects returned from orjson's `default` hook: a scorer died twice of
    heap corruption inside this function while it did that (glibc's "malloc(): invalid size
    (unsorted)", the stack from faulthandler)."""
    return (
        b"["
        + b",".join(
            v if isinstance(v, bytes) else orjson.dumps(v, option=orjson.OPT_NAIVE_UTC)
            for v in values
        )
        + b"]"
    )


def _arrays(target: _Target, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    """One array per column: a list of bytes for a binary column, else a JSON array as UTF-8
    bytes; a column a row leaves out is NULL, as in an INSERT."""
    return [
        [r.get(c.name) for r in rows]
        if isinstance(c.type, LargeBinary)
        else _json_array([r.get(c.name) for r in rows])
        if isinstance(c.type, JSON)
        else orjson.dumps(
            [r.get(c.name) for r in rows],
            option=orjson.OPT_NAIVE_UTC,  # as asyncpg would send a naive time: in UTC
        )
        for c in _columns(target)
    ]


async def write_batch(
    engine: AsyncEngine,
    group_id: str,
    batch: Batch,
    now: datetime,
    memory_cap: int = 4096,
    models: str | None = None,
) -> None:
    """The batch's one statement on the driver's connection, in autocommit: PostgreSQL runs it
    as a transaction of its own, in one round trip. FencedOut, and nothing written or notified,
    if any fence did not hold. `memory_cap`: the most bytes of ids kept for an account and
    period; `models`: the writer's ModelSet.fingerprint (None: forget every partition's)."""
    fences = sorted(batch.fences.items())
    fence_arrays = [[t for (t, _), _ in fences], [p for (_, p), _ in fences]]
    fence_arrays += [[e for _, (e, _) in fences], [n for _, (_, n) in fences]]
    rows: tuple[Sequence[Mapping[str, Any]], ...] = (
        batch.profiles,
        batch.states,
        batch.seen,
        batch.scores,
        batch.history,
        batch.outbox,
        [{"parent_account_id": p, "replay": r} for p, r in sorted(batch.parents.items())],
        list(batch.outcomes.values()),
    )
    arrays = [a for target, r in zip(_TARGETS, rows, strict=True) for a in _arrays(target, r)]
    async with engine.connect() as conn:
        raw: Any = (await conn.get_raw_connection()).driver_connection  # asyncpg's connection
        try:
            await raw.fetchrow(
                _write_sql(), group_id, now, *fence_arrays, *arrays, len(fences), memory_cap, models
            )
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

"""Release 0014's layout of an account, and the conversions to and from this release's.

Release 0014 kept each account's state as a JSON document (`accounts.state`, its
de-duplication memory inside), its freshness, last event and next review in `accounts`, and
each score's explanation beside the score. This release keeps the state in `account_states`,
the memory in `seen_signals` and derives explanations on read (docs/adr/0018). Used by
migrations 0015 (down) and 0016 (up), and by a scorer of this release taking a partition
while the database is at 0015 (services/scorer/legacy.py). Both directions go a chunk of
accounts at a time, each chunk one statement: what a chunk converts leaves the set still to
convert, so a stopped conversion goes on where it was. This module goes with the release after
this one, when no database is left at 0015.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import text

from shared import jsonbytes
from shared.db import SEEN_PERIOD, seen_period
from shared.scoring.document import from_document, to_document
from shared.scoring.engine import evaluate
from shared.scoring.model import Model
from shared.scoring.news import NewsItem, ordered
from shared.scoring.state import AccountState

CHUNK = 2_000  # accounts a statement

# What the API reads of an account, whichever layout it is in (revision 0015): a converted
# one from account_states, one still as release 0014 wrote it from its own columns.
LEGACY_VIEW = """
CREATE VIEW account_views AS
SELECT a.account_id, a.partition, a.name, a.industry, a.region, a.tier, a.lifecycle_stage,
       a.segment, a.owner, a.parent_account_id, a.mrr_cents, a.currency, s.state,
       CASE WHEN s.account_id IS NULL THEN a.state END AS legacy_state,
       CASE WHEN s.account_id IS NULL THEN NULLIF(ARRAY(
              SELECT f.key FROM json_each(a.freshness) f
              WHERE (f.value ->> 'stale')::boolean ORDER BY f.key), '{}')::varchar(16)[]
            ELSE s.stale_sources END AS stale_sources,
       CASE WHEN s.account_id IS NULL THEN (
              SELECT max((f.value ->> 'last_data_at')::timestamptz)
              FROM json_each(a.freshness) f)
            ELSE s.data_at END AS data_at,
       coalesce(s.updated_at, a.updated_at) AS updated_at
FROM accounts a LEFT JOIN account_states s ON s.account_id = a.account_id
"""
# ... and from revision 0016, every account being converted
VIEW = """
CREATE VIEW account_views AS
SELECT a.account_id, a.partition, a.name, a.industry, a.region, a.tier, a.lifecycle_stage,
       a.segment, a.owner, a.parent_account_id, a.mrr_cents, a.currency, s.state,
       NULL::json AS legacy_state, s.stale_sources, s.data_at,
       coalesce(s.updated_at, a.updated_at) AS updated_at
FROM accounts a LEFT JOIN account_states s ON s.account_id = a.account_id
"""

# A write of release 0014 to a partition this release has taken is refused: it leaves
# `fence_epoch` as it was (this release moves it with every write), so its row is left
# alone, its fence does not hold, and it backs off as a scorer that lost the partition does.
FENCE_FUNCTION = """
CREATE FUNCTION fence_of_this_release() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.store_format >= 2 AND NEW.fence_epoch = OLD.fence_epoch THEN
    RETURN NULL;
  END IF;
  RETURN NEW;
END $$
"""

# The market news a score read, which this release derives explanations with, from the
# explanation release 0014 stored: for the scores there are, and for those its scorers write
# while the two releases run side by side.
NEWS_READ = (
    "ARRAY(SELECT n ->> 'event_id' FROM json_array_elements({explanation} -> 'news') n)"
    "::varchar(128)[]"
)
BACKFILL_NEWS = (
    f"UPDATE scores SET news = {NEWS_READ.format(explanation='explanation')}"
    " WHERE position('\"news\"' IN explanation::text) > 0"
    " AND json_typeof(explanation -> 'news') = 'array'"
)
NEWS_FUNCTION = f"""
CREATE FUNCTION news_of_release_0014() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.explanation IS NOT NULL AND (TG_OP = 'INSERT'
      OR NEW.explanation::text IS DISTINCT FROM OLD.explanation::text) THEN
    NEW.news := CASE WHEN json_typeof(NEW.explanation -> 'news') = 'array'
                     THEN {NEWS_READ.format(explanation="NEW.explanation")} END;
  END IF;
  RETURN NEW;
END $$
"""

# --- release 0014 -> this release ---------------------------------------------------------

# the next chunk of accounts of the partitions (all: NULL) not converted yet, after an id
TO_CONVERT = text(
    """
SELECT a.account_id, a.partition, a.state::text AS state, a.freshness::text AS freshness,
       a.next_review_at, a.updated_at
FROM accounts a
WHERE (CAST(:partitions AS INTEGER[]) IS NULL OR a.partition = ANY(:partitions))
  AND (CAST(:after AS VARCHAR) IS NULL OR a.account_id > :after)
  AND NOT EXISTS (SELECT 1 FROM account_states s WHERE s.account_id = a.account_id)
ORDER BY a.account_id LIMIT :limit"""
)
CONVERT = text(
    """
WITH states AS (
  INSERT INTO account_states (account_id, partition, state, next_review_at, stale_sources,
                              data_at, seen_periods, updated_at)
  SELECT u.account_id, u.partition, decode(u.state, 'hex'), u.next_review_at,
         CASE WHEN u.stale = '' THEN NULL ELSE string_to_array(u.stale, ',') END, u.data_at,
         CASE WHEN u.periods = '' THEN NULL ELSE string_to_array(u.periods, ',')::INTEGER[] END,
         u.updated_at
  FROM unnest(CAST(:ids AS VARCHAR[]), CAST(:partitions AS INTEGER[]), CAST(:states AS TEXT[]),
              CAST(:reviews AS TIMESTAMPTZ[]), CAST(:stale AS TEXT[]),
              CAST(:data_at AS TIMESTAMPTZ[]), CAST(:periods AS TEXT[]),
              CAST(:updated AS TIMESTAMPTZ[]))
       AS u(account_id, partition, state, next_review_at, stale, data_at, periods, updated_at)
  ON CONFLICT DO NOTHING)
INSERT INTO seen_signals (account_id, period, ids)
SELECT m.account_id, m.period, decode(m.ids, 'hex')
FROM unnest(CAST(:seen_ids AS VARCHAR[]), CAST(:seen_periods AS INTEGER[]),
            CAST(:seen_digests AS TEXT[])) AS m(account_id, period, ids)
ON CONFLICT DO NOTHING"""
)


def converted(row: Any, now: datetime) -> tuple[dict[str, Any], list[tuple[int, bytes]]]:
    """A release 0014 account row as this release stores it: its account_states values and
    its memory, the digests of each period."""
    state = from_document(orjson.loads(row.state)) if row.state else AccountState()
    periods: dict[int, bytearray] = defaultdict(bytearray)
    for digest, ingested in state.memory.seen.items():
        periods[seen_period(ingested)] += digest.to_bytes(8)
    freshness = orjson.loads(row.freshness) if row.freshness else {}
    stale = sorted(source for source, f in freshness.items() if f.get("stale"))
    newest = [
        datetime.fromisoformat(f["last_data_at"])
        for f in freshness.values()
        if f.get("last_data_at")
    ]
    values = {
        "account_id": row.account_id,
        "partition": row.partition,
        "state": state.to_bytes().hex(),
        "next_review_at": row.next_review_at or now,
        "stale": ",".join(stale),
        "data_at": max(newest, default=None),
        "updated_at": row.updated_at or now,
    }
    return values, [(period, bytes(ids)) for period, ids in sorted(periods.items())]


def convert_parameters(rows: Iterable[Any], now: datetime) -> dict[str, list[Any]]:
    """CONVERT's parameters for a chunk of TO_CONVERT's rows."""
    columns: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        values, periods = converted(row, now)
        columns["ids"].append(values["account_id"])
        columns["partitions"].append(values["partition"])
        columns["states"].append(values["state"])
        columns["reviews"].append(values["next_review_at"])
        columns["stale"].append(values["stale"])
        columns["data_at"].append(values["data_at"])
        columns["periods"].append(",".join(str(period) for period, _ in periods))
        columns["updated"].append(values["updated_at"])
        for period, ids in periods:
            columns["seen_ids"].append(values["account_id"])
            columns["seen_periods"].append(period)
            columns["seen_digests"].append(ids.hex())
    for name in ("seen_ids", "seen_periods", "seen_digests"):
        columns.setdefault(name, [])
    return dict(columns)


def upgrade_accounts(bind: Any, partitions: list[int] | None = None) -> int:
    """Convert every account of `partitions` (None: all) still as release 0014 wrote it; how
    many. `bind`: a synchronous SQLAlchemy connection in autocommit."""
    done, after = 0, None
    while True:
        rows = list(
            bind.execute(TO_CONVERT, {"partitions": partitions, "after": after, "limit": CHUNK})
        )
        if not rows:
            return done
        bind.execute(CONVERT, convert_parameters(rows, datetime.now(UTC)))
        done += len(rows)
        after = rows[-1].account_id


# --- this release -> release 0014 ---------------------------------------------------------

TO_RESTORE = text(
    """
SELECT s.account_id, s.state, s.next_review_at, s.updated_at,
       (SELECT coalesce(array_agg(m.period ORDER BY m.period), '{}') FROM seen_signals m
        WHERE m.account_id = s.account_id) AS periods,
       (SELECT coalesce(array_agg(m.ids ORDER BY m.period), '{}') FROM seen_signals m
        WHERE m.account_id = s.account_id) AS memory
FROM account_states s
WHERE CAST(:after AS VARCHAR) IS NULL OR s.account_id > :after
ORDER BY s.account_id LIMIT :limit"""
)
SCORES_TO_RESTORE = text(
    """
SELECT account_id, objective, model_role, model_version, band, evaluated_at, news
FROM scores WHERE account_id = ANY(:ids)"""
)
RESTORE = text(
    """
WITH accounts_ AS (
  UPDATE accounts a SET state = u.state::json, freshness = u.freshness::json,
         last_event_at = u.last_event_at, next_review_at = u.next_review_at,
         updated_at = u.updated_at
  FROM unnest(CAST(:ids AS VARCHAR[]), CAST(:states AS TEXT[]), CAST(:freshness AS TEXT[]),
              CAST(:last_events AS TIMESTAMPTZ[]), CAST(:reviews AS TIMESTAMPTZ[]),
              CAST(:updated AS TIMESTAMPTZ[]))
       AS u(account_id, state, freshness, last_event_at, next_review_at, updated_at)
  WHERE a.account_id = u.account_id),
scores_ AS (
  UPDATE scores s SET explanation = u.explanation::json, updated_at = u.updated_at
  FROM unnest(CAST(:score_ids AS VARCHAR[]), CAST(:objectives AS VARCHAR[]),
              CAST(:roles AS VARCHAR[]), CAST(:explanations AS TEXT[]),
              CAST(:score_updated AS TIMESTAMPTZ[]))
       AS u(account_id, objective, model_role, explanation, updated_at)
  WHERE (s.account_id, s.objective, s.model_role) = (u.account_id, u.objective, u.model_role)),
memory AS (DELETE FROM seen_signals WHERE account_id = ANY(:ids))
DELETE FROM account_states WHERE account_id = ANY(:ids)"""
)


def restored_state(row: Any) -> AccountState:
    """The account's state with its memory, as release 0014 kept it in the document."""
    state = AccountState.from_bytes(row.state)
    state.memory.remember_stored(list(zip(row.periods, row.memory, strict=True)), SEEN_PERIOD)
    return state


def restore_parameters(
    rows: list[Any], scores: list[Any], models: dict[str, Model], news: dict[str, NewsItem]
) -> dict[str, list[Any]]:
    """RESTORE's parameters: each account's JSON state, freshness, last event and next
    review; each score's explanation, derived from the state as the API derives it."""
    columns: dict[str, list[Any]] = defaultdict(list)
    by_account: dict[str, list[Any]] = defaultdict(list)
    for score in scores:
        by_account[score.account_id].append(score)
    for row in rows:
        state = restored_state(row)
        freshness: dict[str, Any] = {}
        for score in by_account[row.account_id]:
            model = models.get(score.model_version)
            if model is None:
                raise LookupError(
                    f"model version {score.model_version} (account {row.account_id}) is not in"
                    " model_versions: `healthscore migrate` records the model file that"
                    " HEALTHSCORE_SCORER__MODEL_PATH names"
                )
            items = ordered(news[e] for e in score.news or () if e in news)
            at = score.evaluated_at.timestamp()
            evaluation = evaluate(model, state, at, {score.objective: score.band}, items)
            columns["score_ids"].append(row.account_id)
            columns["objectives"].append(score.objective)
            columns["roles"].append(score.model_role)
            explanation = evaluation.scores[score.objective].explanation()
            columns["explanations"].append(jsonbytes.dumps(explanation).decode())
            columns["score_updated"].append(row.updated_at)
            if score.model_role == "active":
                freshness = {
                    source: {
                        "last_data_at": None
                        if f["last_data_at"] is None
                        else datetime.fromtimestamp(f["last_data_at"], UTC),
                        "stale": f["stale"],
                    }
                    for source, f in evaluation.freshness.items()
                }
        columns["ids"].append(row.account_id)
        columns["states"].append(orjson.dumps(to_document(state)).decode())
        columns["freshness"].append(jsonbytes.dumps(freshness).decode())
        newest = state.newest
        columns["last_events"].append(None if not newest else datetime.fromtimestamp(newest, UTC))
        columns["reviews"].append(row.next_review_at)
        columns["updated"].append(row.updated_at)
    for name in ("score_ids", "objectives", "roles", "explanations", "score_updated"):
        columns.setdefault(name, [])
    return dict(columns)


def stored_models(bind: Any) -> dict[str, Model]:
    rows = bind.execute(text("SELECT version, document FROM model_versions"))
    return {version: Model.model_validate(document) for version, document in rows}


def stored_news(bind: Any) -> dict[str, NewsItem]:
    rows = bind.execute(
        text("SELECT event_id, occurred_at, scope, topic, impact, title FROM market_news")
    )
    return {
        r.event_id: NewsItem.of(
            r.event_id,
            r.occurred_at.timestamp(),
            {"scope": r.scope, "topic": r.topic, "impact": r.impact, "title": r.title},
        )
        for r in rows
    }


def downgrade_accounts(bind: Any) -> int:
    """Write every converted account back as release 0014 wrote it; how many."""
    models, news = stored_models(bind), stored_news(bind)
    done, after = 0, None
    while True:
        rows = list(bind.execute(TO_RESTORE, {"after": after, "limit": CHUNK}))
        if not rows:
            return done
        ids = [r.account_id for r in rows]
        scores = list(bind.execute(SCORES_TO_RESTORE, {"ids": ids}))
        bind.execute(RESTORE, restore_parameters(rows, scores, models, news))
        done += len(rows)
        after = rows[-1].account_id

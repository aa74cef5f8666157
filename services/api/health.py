"""An account's health, as `GET .../health` and the console's account page show it.

The scorer stores each account's state and its scores' numbers, not their explanations
(docs/adr/0018): an explanation is `evaluate`'s, of the stored state at the score's
`evaluated_at` under its model version, with the market news it read, and is derived here
again on read. The scorer stores state and scores in one transaction, so what is derived is
what the scorer computed; a derived score that differs from the stored one would show a defect,
and is counted (`healthscore_api_explanation_mismatches_total`) and logged.

One round trip reads the account (through `account_views`, which also shows an account not yet
converted from release 0014's layout), its scores and its active overrides; the models of the
scores' versions come from `model_versions` and the news they read from `market_news`, each
read once per process and kept.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import structlog
from prometheus_client import CollectorRegistry, Counter

from shared.events import monthly_revenue
from shared.scoring.document import from_document
from shared.scoring.engine import Evaluation, actions, evaluate
from shared.scoring.model import Model
from shared.scoring.news import NewsItem, ordered
from shared.scoring.state import AccountState

log = structlog.get_logger(__name__)

# The account, its scores (as records, in the answer's order) and its active overrides (as the
# answer's JSON, with when the first of them expires).
READ_SQL = """
SELECT v.account_id, v.name, v.industry, v.region, v.tier, v.lifecycle_stage, v.segment,
       v.owner, v.parent_account_id, v.mrr_cents, v.currency, v.state,
       v.legacy_state::text AS legacy_state, v.updated_at,
       ARRAY(SELECT ROW(s.objective, s.model_role, s.model_version, s.score, s.band,
                        s.confidence, s.evaluated_at, s.changed_at, array_to_json(s.news)::text)
             FROM scores s WHERE s.account_id = v.account_id
             ORDER BY s.model_role, s.objective) AS scores,
       o.active::text AS active_overrides, o.until
FROM account_views v, LATERAL (
  SELECT coalesce(json_agg(to_jsonb(o) || '{"status": "active"}' ORDER BY o.created_at), '[]')
           AS active,
         extract(epoch FROM min(o.expires_at))::float8 AS until
  FROM overrides o WHERE o.account_id = v.account_id AND o.revoked_at IS NULL
    AND o.expires_at > now()) o
WHERE v.account_id = $1
"""
_MODELS = "SELECT version, document FROM model_versions WHERE version = ANY($1::VARCHAR[])"
_NEWS = """SELECT event_id, occurred_at, scope::text, topic, impact, title FROM market_news
WHERE event_id = ANY($1::VARCHAR[])"""
# what an explanation is when its model version is not known here (never stored, or lost)
UNEXPLAINED: dict[str, Any] = {"weighted_score": None, "factors": [], "caps": [], "overrides": []}


@dataclass
class AccountHealth:
    """The answer, and what it was made from."""

    document: dict[str, Any]  # in AccountHealthResponse's shape, its fields in its order
    state: AccountState
    until: float  # when the first active override expires (inf: none)

    def to_json(self) -> bytes:
        return orjson.dumps(self.document, option=orjson.OPT_NAIVE_UTC)


def stored_state(state: bytes | None, legacy: str | None) -> AccountState:
    """The account's state, from this release's binary form or release 0014's document."""
    if state:
        return AccountState.from_bytes(state)
    if legacy:
        return from_document(orjson.loads(legacy))
    return AccountState()


class HealthReader:
    """Reads accounts' health on a plain asyncpg pool, keeping the models and news it read."""

    def __init__(self, pool: asyncpg.Pool, registry: CollectorRegistry) -> None:
        self.pool = pool
        self.models: dict[str, Model] = {}
        self.news: dict[str, NewsItem] = {}
        self.mismatches = Counter(
            "healthscore_api_explanation_mismatches",
            "explanations derived on read whose score is not the stored one (a defect)",
            registry=registry,
        )

    async def read(self, account_id: str) -> AccountHealth | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(READ_SQL, account_id)
            if row is None:
                return None
            scores = [(*s[:8], orjson.loads(s[8]) if s[8] else None) for s in row["scores"]]
            await self._know(conn, scores)
        return self.health(row, scores)

    async def _know(self, conn: Any, scores: list[Any]) -> None:
        """Read the models and news these scores name that are not known yet."""
        versions = {s[2] for s in scores} - self.models.keys()
        if versions:
            for version, document in await conn.fetch(_MODELS, sorted(versions)):
                self.models[version] = Model.model_validate(orjson.loads(document))
        events = {e for s in scores for e in s[8] or ()} - self.news.keys()
        if events:
            for r in await conn.fetch(_NEWS, sorted(events)):
                data = {
                    "scope": orjson.loads(r["scope"]),
                    "topic": r["topic"],
                    "impact": r["impact"],
                    "title": r["title"],
                }
                self.news[r["event_id"]] = NewsItem.of(
                    r["event_id"], r["occurred_at"].timestamp(), data
                )

    def health(self, row: Any, scores: list[Any]) -> AccountHealth:
        """The answer from the row READ_SQL read and its scores (their news ids decoded)."""
        state = stored_state(row["state"], row["legacy_state"])
        evaluations = self._evaluations(state, scores)
        objectives, freshness = [], {}
        for objective, role, version, score, band, confidence, at, changed_at, _ in scores:
            evaluation = evaluations.get((version, at))
            explanation, helps = UNEXPLAINED, []
            if evaluation is not None:
                derived = evaluation.scores.get(objective)
                if derived is not None:
                    explanation = derived.explanation()
                    helps = actions(self.models[version], evaluation, objective)
                    if derived.score != score:
                        self.mismatches.inc()
                        log.error(
                            "api.explanation_mismatch",
                            account_id=row["account_id"],
                            objective=objective,
                            stored=score,
                            derived=derived.score,
                        )
                if role == "active":
                    freshness = _freshness(evaluation)
            objectives.append(
                {
                    "objective": objective,
                    "model_role": role,
                    "model_version": version,
                    "score": score,
                    "band": band,
                    "confidence": confidence,
                    "evaluated_at": at,
                    "changed_at": changed_at,
                    **explanation,
                    "actions": helps,
                }
            )
        document = {
            "account_id": row["account_id"],
            "name": row["name"],
            "industry": row["industry"],
            "region": row["region"],
            "tier": row["tier"],
            "lifecycle_stage": row["lifecycle_stage"],
            "segment": row["segment"],
            "owner": row["owner"],
            "parent_account_id": row["parent_account_id"],
            "mrr": None
            if row["mrr_cents"] is None
            else monthly_revenue(row["mrr_cents"], row["currency"]),
            "currency": row["currency"],
            "last_event_at": _time(state.newest) if state.newest else None,
            "updated_at": row["updated_at"],
            "freshness": freshness,
            "active_overrides": orjson.loads(row["active_overrides"]),
            "objectives": objectives,
        }
        until = row["until"]
        return AccountHealth(document, state, math.inf if until is None else until)

    def _evaluations(
        self, state: AccountState, scores: list[Any]
    ) -> dict[tuple[str, datetime], Evaluation]:
        """One evaluation per model version and time the scores were made at, as the scorer
        made it (the bands given for their hysteresis; the news each read)."""
        groups: dict[tuple[str, datetime], list[Any]] = defaultdict(list)
        for score in scores:
            groups[(score[2], score[6])].append(score)
        found = {}
        for (version, at), group in groups.items():
            model = self.models.get(version)
            if model is None:
                log.warning("api.model_version_unknown", version=version)
                continue
            bands = {s[0]: s[4] for s in group}
            news = ordered(self.news[e] for s in group for e in s[8] or () if e in self.news)
            read = tuple(dict.fromkeys(news))  # each item once, in the order evaluations read
            found[(version, at)] = evaluate(model, state, at.timestamp(), bands, read)
        return found


def _time(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


def _freshness(evaluation: Evaluation) -> dict[str, Any]:
    return {
        source: {"last_data_at": _time(f["last_data_at"]), "stale": f["stale"]}
        for source, f in evaluation.freshness.items()
    }

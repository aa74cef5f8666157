"""Parents' rollups, and a parent's band change as an event like any other.

A batch that writes the scores of an account with a parent queues that parent in `parents_due`
(and the parent it had, when it moved to another), in the batch's own transaction. Each turn of
a scorer's relay takes queued parents (FOR UPDATE SKIP LOCKED: no two scorers take one) and,
in one transaction, rolls each up from its children's active scores as committed
(shared/scoring/rollup.py: the definition the API's `/children` serves), stores the rollup in
`parent_rollups`, and puts an `io.account-health.rollup.changed` event in the outbox when its
band changed. A parent's first rollup is told to no one, as an account's first score is not.

A batch that queues a parent while a rollup has it waits on that transaction (the queue's
key), so one transaction at a time rolls a parent up, from scores at least as new as those
that queued it: no change is missed, none is told twice. While a child holds a catch-up's
change (`held`), the parent's rollup is kept up to date but its change is not told: the band
subscribers last heard (`told_band`) stays, and the first rollup with no child holding tells the
net change from it, as an account's catch-up does (the write of a child's net change queues
the parent). A parent that only batches catching up on the past queued is told with `replay`
true, as they would be.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.scorer.rescore import EVENT_NAMESPACE, EVENT_SOURCE, points, structured
from shared.db import OutboxRow, OutboxValues
from shared.events import monthly_revenue
from shared.scoring.model import Model
from shared.scoring.rollup import RolledUp, roll_up

log = structlog.get_logger(__name__)

ROLLUP_CHANGED = "io.account-health.rollup.changed"

_TAKE = text("""
DELETE FROM parents_due WHERE parent_account_id IN (
  SELECT parent_account_id FROM parents_due ORDER BY parent_account_id
  LIMIT :limit FOR UPDATE SKIP LOCKED)
RETURNING parent_account_id, replay
""")
_BACKLOG = text("SELECT count(*) FROM parents_due")
_CHILDREN = text("""
SELECT a.parent_account_id AS parent, a.account_id, a.mrr_cents, a.currency, s.objective,
       s.score, s.band, s.held IS NOT NULL AS held, st.data_at
FROM accounts a JOIN scores s ON s.account_id = a.account_id AND s.model_role = 'active'
LEFT JOIN account_states st ON st.account_id = a.account_id
WHERE a.parent_account_id = ANY(:parents)
""")
_PARENTS = text("""
SELECT account_id, name, owner, segment FROM accounts WHERE account_id = ANY(:parents)
""")
_STORED = text("""
SELECT parent_account_id, objective, score, band, told_score, told_band FROM parent_rollups
WHERE parent_account_id = ANY(:parents)
""")
_STORE = text("""
INSERT INTO parent_rollups AS r (parent_account_id, objective, score, band, children,
                                 weakest_account_id, told_score, told_band, model_version,
                                 changed_at, updated_at)
SELECT u.parent, u.objective, u.score, u.band, u.children, u.weakest, u.told_score,
       u.told_band, :version, :now, :now
FROM unnest(CAST(:parents AS VARCHAR[]), CAST(:objectives AS VARCHAR[]),
            CAST(:scores AS FLOAT[]), CAST(:bands AS VARCHAR[]), CAST(:children AS INTEGER[]),
            CAST(:weakest AS VARCHAR[]), CAST(:told_scores AS FLOAT[]),
            CAST(:told_bands AS VARCHAR[]))
     AS u(parent, objective, score, band, children, weakest, told_score, told_band)
ON CONFLICT (parent_account_id, objective) DO UPDATE SET
  score = EXCLUDED.score, band = EXCLUDED.band, children = EXCLUDED.children,
  told_score = EXCLUDED.told_score, told_band = EXCLUDED.told_band,
  weakest_account_id = EXCLUDED.weakest_account_id, model_version = EXCLUDED.model_version,
  changed_at = CASE WHEN r.band = EXCLUDED.band THEN r.changed_at ELSE EXCLUDED.changed_at END,
  updated_at = EXCLUDED.updated_at
""")
# the objectives of parents rolled up that no child of theirs is scored in any more
_FORGET = text("""
DELETE FROM parent_rollups r WHERE r.parent_account_id = ANY(:ready) AND NOT EXISTS (
  SELECT FROM unnest(CAST(:parents AS VARCHAR[]), CAST(:objectives AS VARCHAR[])) AS u(p, o)
  WHERE u.p = r.parent_account_id AND u.o = r.objective)
""")


@dataclass(frozen=True, slots=True)
class ChildScore:
    account_id: str
    score: float | None
    band: str
    mrr: float | None


@dataclass(frozen=True, slots=True)
class Parent:
    account_id: str
    profile: Any  # its `accounts` row (name, owner, segment), or None: known only as a parent
    replay: bool  # only the past being caught up on moved it
    reflects: datetime  # the newest data of any child


@dataclass(frozen=True, slots=True)
class Stored:
    score: float | None
    band: str


@dataclass(frozen=True, slots=True)
class Rolled:
    parent: str
    new: RolledUp[ChildScore]
    told: Stored  # what subscribers last heard


class Rollups:
    def __init__(
        self,
        engine: AsyncEngine,
        active: Callable[[], Model],
        topic: str,
        clock: Callable[[], datetime],
    ) -> None:
        self.engine = engine
        self.active = active
        self.topic = topic
        self.clock = clock

    async def backlog(self) -> int:
        """How many parents are queued (the relay's gauge of it)."""
        async with self.engine.connect() as conn:
            return int(await conn.scalar(_BACKLOG) or 0)

    async def roll_up_due(self, limit: int = 200) -> int:
        """Roll up to `limit` queued parents; the number of band changes put in the outbox."""
        async with self.engine.begin() as conn:
            taken = {
                r.parent_account_id: r.replay for r in await conn.execute(_TAKE, {"limit": limit})
            }
            if not taken:
                return 0
            return await self._roll_up(conn, taken)

    async def _roll_up(self, conn: AsyncConnection, taken: dict[str, bool]) -> int:
        due = list(taken)
        model, now = self.active(), self.clock()
        children: dict[tuple[str, str], list[ChildScore]] = defaultdict(list)
        waiting: set[str] = set()  # a child holds a catch-up's change
        data_at: dict[str, datetime] = {}  # the newest data of any child: the event time
        for r in await conn.execute(_CHILDREN, {"parents": due}):
            if r.data_at is not None:
                data_at[r.parent] = max(data_at.get(r.parent, r.data_at), r.data_at)
            mrr = None if r.mrr_cents is None else monthly_revenue(r.mrr_cents, r.currency)
            children[(r.parent, r.objective)].append(ChildScore(r.account_id, r.score, r.band, mrr))
            if r.held:
                waiting.add(r.parent)
        stored = {
            (r.parent_account_id, r.objective): (r.band, Stored(r.told_score, r.told_band))
            for r in await conn.execute(_STORED, {"parents": due})
        }
        profiles = {r.account_id: r for r in await conn.execute(_PARENTS, {"parents": due})}
        rolled: list[Rolled] = []
        events: list[OutboxValues] = []
        for (parent, objective), kids in sorted(children.items()):
            band, told = stored.get((parent, objective), (None, None))
            new = roll_up(model, objective, kids, band)
            if told is None:  # the first rollup: told to no one
                told = Stored(new.score, new.band)
            elif told.band != new.band and parent not in waiting:
                about = Parent(
                    parent, profiles.get(parent), taken[parent], data_at.get(parent, now)
                )
                events.append(self._event(about, told, new, model, now))
                log.info(
                    "scorer.rollup_changed",
                    parent_account_id=parent,
                    objective=objective,
                    old_band=told.band,
                    new_band=new.band,
                    score=new.score,
                )
                told = Stored(new.score, new.band)
            rolled.append(Rolled(parent, new, told))
        keys = {
            "parents": [r.parent for r in rolled],
            "objectives": [r.new.objective for r in rolled],
        }
        await conn.execute(_FORGET, {"ready": due, **keys})
        if rolled:
            await conn.execute(
                _STORE,
                {
                    **keys,
                    "version": model.version,
                    "now": now,
                    "scores": [r.new.score for r in rolled],
                    "bands": [r.new.band for r in rolled],
                    "children": [r.new.children for r in rolled],
                    "weakest": [
                        r.new.weakest.account_id if r.new.weakest else None for r in rolled
                    ],
                    "told_scores": [r.told.score for r in rolled],
                    "told_bands": [r.told.band for r in rolled],
                },
            )
        if events:
            await conn.execute(insert(OutboxRow).values(events).on_conflict_do_nothing())
        return len(events)

    def _event(
        self, about: Parent, heard: Stored, new: RolledUp[ChildScore], model: Model, now: datetime
    ) -> OutboxValues:
        """The parent's band change as a CloudEvent, shaped as an account's own change is
        (what a webhook filter reads is where it is there), with the rollup's figures."""
        parent, profile = about.account_id, about.profile
        name = profile.name if profile is not None else None
        event_id = str(
            uuid.uuid5(
                EVENT_NAMESPACE,
                "|".join(
                    [
                        "rollup",
                        parent,
                        new.objective,
                        model.version,
                        now.isoformat(),
                        str(new.score),
                        new.band,
                    ]
                ),
            )
        )
        weakest = new.weakest
        payload = structured(
            {
                "id": event_id,
                "source": EVENT_SOURCE,
                "type": ROLLUP_CHANGED,
                "subject": parent,
                "time": about.reflects,
                "datacontenttype": "application/json",
                "scoredat": now,
                "replay": about.replay,
            },
            {
                "account_id": parent,
                "name": name,
                "segment": profile.segment if profile is not None else None,
                "owner": profile.owner if profile is not None else None,
                "objective": new.objective,
                "old_score": heard.score,
                "new_score": new.score,
                "old_band": heard.band,
                "new_band": new.band,
                "cause": "children",
                "top_movers": [],  # the children moved it: `weakest` names the lowest
                "signal_ids": [],
                "next_action": None,  # the weakest child's own health says what would help
                "children": new.children,
                "weakest": None
                if weakest is None
                else {
                    "account_id": weakest.account_id,
                    "score": weakest.score,
                    "band": weakest.band,
                },
                "model_version": model.version,
                "text": _text(parent, name, heard, new),
            },
        )
        return {
            "event_id": event_id,
            "topic": self.topic,
            "key": parent,
            "payload": payload,
            "content_type": "application/cloudevents+json",
            "created_at": now,
            "sent_at": None,
        }


def _text(parent: str, name: str | None, heard: Stored, new: RolledUp[ChildScore]) -> str:
    """The change in one line for people, as an account's change has (Slack's mrkdwn)."""
    who = f"*{name}* ({parent})" if name else f"*{parent}*"
    scores = f"{points(heard.score)} → {points(new.score)}"
    line = f"{who}: {new.objective} of its {new.children} children {heard.band} → {new.band}"
    line += f" (score {scores})."
    if new.weakest is not None:
        line += f" Weakest: {new.weakest.account_id} ({points(new.weakest.score)})."
    return line

"""Turn an account's new evaluation into rows: current scores, history and change events.

Pure (no I/O): `rescore` compares the new evaluation of each objective with the stored score
and decides what to record. A history row is written when the band changes, when the score has
moved by at least `history_min_delta` since the last history row, on an override, and when the
model version changes; never once per event. A change event (CloudEvents 1.0, structured JSON)
goes to the outbox on band transitions, on drops of at least the objective's `alert_drop`
points, and on overrides; shadow models never emit change events.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict

import orjson
from cloudevents.core.bindings.kafka import to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from shared.scoring.engine import (
    Contributions,
    Evaluation,
    ObjectiveScore,
    contributions,
    evaluate,
    top_movers,
)
from shared.scoring.model import Model
from shared.scoring.state import AccountState

EVENT_NAMESPACE = uuid.UUID("5b0c6c1e-4f4e-4a39-9d3e-6f0c2a9a1d57")
EVENT_SOURCE = "/account-health/scorer"
# What a change is -> its CloudEvents type.
CHANGE_TYPES = {
    "band_changed": "io.account-health.band.changed",
    "score_dropped": "io.account-health.score.dropped",
    "override": "io.account-health.override.applied",
}
_FORMAT = JSONFormat()


@dataclass
class StoredScore:
    """What the scorer keeps of an account's current score for one (objective, role)."""

    score: float | None
    band: str
    factors: Contributions  # compact: what top_movers needs, not the whole explanation
    recorded_score: float | None
    previous_score: float | None
    alert_baseline: float | None
    model_version: str
    changed_at: datetime


@dataclass
class AccountEntry:
    """What the scorer holds for one account between batches."""

    state: AccountState
    partition: int
    scores: dict[tuple[str, str], StoredScore] = field(default_factory=dict)


# The rows the scorer writes, by column (shared/db.py names the tables): what crosses from
# here to the store. Documents travel already serialised (bytes), to hold less memory.
class AccountValues(TypedDict):
    account_id: str
    name: str | None
    industry: str | None
    region: str | None
    tier: str | None
    lifecycle_stage: str | None
    segment: str
    freshness: bytes
    partition: int
    state: bytes
    last_event_at: datetime | None
    next_review_at: datetime
    updated_at: datetime


class ScoreValues(TypedDict):
    account_id: str
    objective: str
    model_role: str
    model_version: str
    score: float | None
    band: str
    confidence: float
    explanation: bytes
    recorded_score: float | None
    previous_score: float | None
    alert_baseline: float | None
    evaluated_at: datetime
    changed_at: datetime
    updated_at: datetime


class HistoryValues(TypedDict):
    account_id: str
    objective: str
    model_role: str
    model_version: str
    at: datetime
    old_score: float | None
    new_score: float | None
    old_band: str | None
    new_band: str
    cause: str
    top_movers: list[dict[str, Any]]
    signal_ids: list[str]
    recorded_at: datetime


class OutboxValues(TypedDict):
    event_id: str
    topic: str
    key: str
    payload: bytes
    content_type: str
    created_at: datetime
    sent_at: datetime | None


@dataclass
class Rows:
    scores: list[ScoreValues] = field(default_factory=list)
    history: list[HistoryValues] = field(default_factory=list)
    outbox: list[OutboxValues] = field(default_factory=list)


def _ts(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def account_row(
    account_id: str, entry: AccountEntry, now: datetime, next_review: float, active: Evaluation
) -> AccountValues:
    """The `accounts` row: attributes for filtering, segment, the sources' freshness, partition
    and state."""
    state = entry.state
    return {
        "account_id": account_id,
        "name": state.attribute("name"),
        "industry": state.attribute("industry"),
        "region": state.attribute("region"),
        "tier": state.attribute("tier"),
        "lifecycle_stage": state.attribute("lifecycle_stage"),
        "segment": active.segment,
        # as the API shows it: PostgreSQL hands it out as stored
        "freshness": orjson.dumps(
            {
                source: {
                    "last_data_at": None if f["last_data_at"] is None else _ts(f["last_data_at"]),
                    "stale": f["stale"],
                }
                for source, f in active.freshness.items()
            }
        ),
        "partition": entry.partition,
        # serialised now: the state goes on changing while the batch is being committed
        "state": orjson.dumps(state.to_json()),
        "last_event_at": _ts(state.newest) if state.newest else None,
        "next_review_at": _ts(next_review),
        "updated_at": now,
    }


def change_event(
    *,
    account_id: str,
    objective: str,
    model_version: str,
    at: datetime,
    change: str,
    old: StoredScore | None,
    new: ObjectiveScore,
    cause: str,
    movers: list[dict[str, Any]],
    signal_ids: list[str],
    confidence: float,
    reflects: datetime,
    replay: bool,
) -> tuple[str, bytes]:
    """A stable id (the same inputs always give the same id) and the structured payload.
    `time` is the event time the change reflects (its newest signal's, or the scoring time for
    a change of time alone); the extension attributes say when it was scored (`scoredat`) and
    whether it reflects the past being caught up on (`replay`), so that an alerting consumer can
    tell news from a back-fill or the end of an outage."""
    event_id = str(
        uuid.uuid5(
            EVENT_NAMESPACE,
            "|".join(
                [
                    account_id,
                    objective,
                    model_version,
                    at.isoformat(),
                    change,
                    str(new.score),
                    new.band,
                ]
            ),
        )
    )
    event = CloudEvent(
        attributes={
            "id": event_id,
            "source": EVENT_SOURCE,
            "type": CHANGE_TYPES[change],
            "subject": account_id,
            "time": reflects,
            "datacontenttype": "application/json",
            "scoredat": at,
            "replay": replay,
        },
        data={
            "account_id": account_id,
            "objective": objective,
            "old_score": old.score if old else None,
            "new_score": new.score,
            "old_band": old.band if old else None,
            "new_band": new.band,
            "confidence": confidence,
            "cause": cause,
            "top_movers": movers,
            "overrides": list(new.overrides),
            "model_version": model_version,
            "signal_ids": signal_ids,
        },
    )
    return event_id, to_structured(event, _FORMAT).value


def rescore(
    *,
    models: dict[str, Model],
    account_id: str,
    entry: AccountEntry,
    at: float,
    cause: str,
    signal_ids: list[str],
    history_min_delta: float,
    changes_topic: str,
    recorded_at: datetime,
    reflects: float | None = None,
    replay: bool = False,
) -> tuple[Rows, Evaluation]:
    """Evaluate every model role for one account and build the rows to write.

    `cause` is why we are here: "signals", "override" or "time" (the sweep); it becomes
    "model_change" for a role whose stored score came from another model version. `at` is the
    scoring time (epoch seconds), `recorded_at` when the rows are written, `reflects` the event
    time of the newest signal behind the change (default: `at`) and `replay` whether that is
    the past being caught up on."""
    rows = Rows()
    when = _ts(at)
    written = recorded_at
    active: Evaluation | None = None
    for role, model in models.items():
        previous = {obj: s.band for (obj, r), s in entry.scores.items() if r == role}
        evaluation = evaluate(model, entry.state, at, previous)
        if role == "active":
            active = evaluation
        for objective, new in evaluation.scores.items():
            old = entry.scores.get((objective, role))
            why = cause
            if old is not None and old.model_version != model.version:
                why = "model_change"
            band_changed = old is None or old.band != new.band
            baseline = old.recorded_score if old else None
            moved = (
                new.score is not None
                and baseline is not None
                and abs(new.score - baseline) >= history_min_delta
            ) or ((new.score is None) != (baseline is None))
            change = _change(model, objective, old, new, why)
            record = band_changed or moved or change is not None or why == "model_change"
            changed_at = old.changed_at if old else when
            recorded = old.recorded_score if old else None
            previous_score = old.previous_score if old else None
            baseline_alert = _peak(old.alert_baseline if old else None, new.score)
            # serialised now: as JSON it is a tenth of the memory it takes as Python objects,
            # and a batch's rows are held until its commit
            explanation = orjson.dumps(new.explanation())
            if record:
                movers = top_movers(old.factors if old else None, new)
                rows.history.append(
                    {
                        "account_id": account_id,
                        "objective": objective,
                        "model_role": role,
                        "model_version": model.version,
                        "at": when,
                        "old_score": old.score if old else None,
                        "new_score": new.score,
                        "old_band": old.band if old else None,
                        "new_band": new.band,
                        "cause": why,
                        "top_movers": movers,
                        "signal_ids": signal_ids[:50],
                        "recorded_at": written,
                    }
                )
                changed_at, previous_score, recorded = when, (old.score if old else None), new.score
                if change is not None:
                    baseline_alert = new.score
                if role == "active" and change is not None:
                    event_id, payload = change_event(
                        account_id=account_id,
                        objective=objective,
                        model_version=model.version,
                        at=when,
                        change=change,
                        old=old,
                        new=new,
                        cause=why,
                        movers=movers,
                        signal_ids=signal_ids[:50],
                        confidence=new.confidence,
                        reflects=when if reflects is None else _ts(reflects),
                        replay=replay,
                    )
                    rows.outbox.append(
                        {
                            "event_id": event_id,
                            "topic": changes_topic,
                            "key": account_id,
                            "payload": payload,
                            "content_type": "application/cloudevents+json",
                            "created_at": written,
                            "sent_at": None,
                        }
                    )
            stored = StoredScore(
                new.score,
                new.band,
                contributions(new.factors),
                recorded,
                previous_score,
                baseline_alert,
                model.version,
                changed_at,
            )
            entry.scores[(objective, role)] = stored
            rows.scores.append(
                {
                    "account_id": account_id,
                    "objective": objective,
                    "model_role": role,
                    "model_version": model.version,
                    "score": new.score,
                    "band": new.band,
                    "confidence": new.confidence,
                    "explanation": explanation,
                    "recorded_score": recorded,
                    "previous_score": previous_score,
                    "alert_baseline": baseline_alert,
                    "evaluated_at": when,
                    "changed_at": changed_at,
                    "updated_at": written,
                }
            )
    assert active is not None
    return rows, active


def _change(
    model: Model, objective: str, old: StoredScore | None, new: ObjectiveScore, cause: str
) -> str | None:
    if cause == "override":
        return "override"
    if old is None:
        return None  # an account's first score is history, not news
    if old.band != new.band:
        return "band_changed"
    drop = model.objectives[objective].alert_drop
    if (
        old.alert_baseline is not None
        and new.score is not None
        and old.alert_baseline - new.score >= drop
    ):
        return "score_dropped"
    return None


def _peak(baseline: float | None, score: float | None) -> float | None:
    if score is None:
        return baseline
    return score if baseline is None else max(baseline, score)

"""Turn an account's new evaluation into rows: current scores, history and change events.

Pure (no I/O): `rescore` compares the new evaluation of each objective with the stored score
and decides what to record. A history row is written when the band changes, when the score has
moved by at least `history_min_delta` since the last history row, on an override, and when the
model version changes; never once per event. A change event (CloudEvents 1.0, structured JSON)
goes to the outbox on band transitions, on drops of at least the objective's `alert_drop`
points, and on overrides; shadow models never emit change events.

Catching up on the past (`replay`: the newest signal behind a change is older than the
scorer's `replay_after_seconds`), band changes and drops are held, not sent: the stored score
keeps what subscribers last heard (`Held`), and the first rescore that is not a replay (a live
signal, or the sweep once the account has been quiet for `replay_hold_seconds`) sends one net
change from it, or none if the account ended where it was. Overrides are sent at once. History
rows are written as always, so what happened when stays visible, and at the time of the newest
signal behind them (`_described`): a catch-up's history says when health changed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from cloudevents.core.bindings.kafka import to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from shared import jsonbytes
from shared.db import (
    SEEN_PERIOD,
    HistoryValues,
    OutboxValues,
    ProfileValues,
    ScoreValues,
    SeenValues,
    StateValues,
)
from shared.scoring.engine import (
    Contributions,
    Evaluation,
    ObjectiveScore,
    actions,
    contributions,
    evaluate,
    top_movers,
)
from shared.scoring.model import Model
from shared.scoring.news import News, NewsItem, ordered
from shared.scoring.state import ATTRIBUTES, PROFILE, AccountState

EVENT_NAMESPACE = uuid.UUID("5b0c6c1e-4f4e-4a39-9d3e-6f0c2a9a1d57")
EVENT_SOURCE = "/account-health/scorer"
# What a change is -> its CloudEvents type.
CHANGE_TYPES = {
    "band_changed": "io.account-health.band.changed",
    "score_dropped": "io.account-health.score.dropped",
    "override": "io.account-health.override.applied",
}
_FORMAT = JSONFormat()


# Changes that wait for the end of a catch-up; an override is a person's act, sent at once.
_HELD_CHANGES = ("band_changed", "score_dropped")


@dataclass(frozen=True, slots=True)
class Held:
    """What subscribers last heard of a score whose changes are held during a catch-up."""

    score: float | None
    band: str
    alert_baseline: float | None
    factors: list[dict[str, Any]]  # as an explanation stores them: factor, contribution, sub_score
    reflects: float  # the newest event time held (epoch seconds)
    signal_ids: list[str]  # the newest (at most 50) behind the held changes

    def to_json(self) -> bytes:
        return jsonbytes.dumps(
            {
                "score": self.score,
                "band": self.band,
                "alert_baseline": self.alert_baseline,
                "factors": self.factors,
                "reflects": self.reflects,
                "signal_ids": self.signal_ids,
            }
        )

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Held:
        return cls(**doc)


@dataclass
class StoredScore:
    """What the scorer keeps of an account's current score for one (objective, role)."""

    score: float | None
    band: str
    # compact: what top_movers needs, not the whole explanation; None when the score was
    # read from the store, until `Prior` derives it from the state it was evaluated from
    factors: Contributions | None
    recorded_score: float | None
    previous_score: float | None
    alert_baseline: float | None
    model_version: str
    changed_at: datetime
    held: Held | None = None
    evaluated_at: datetime | None = None
    news: tuple[str, ...] = ()  # the market news items it read (event ids)


Profile = tuple[Any, ...]  # an `accounts` row's values as stored (id and time left out)


@dataclass
class AccountEntry:
    """What the scorer holds for one account between batches: its state, and what is stored
    of it (the profile, the state its stored scores were evaluated from, whether its
    de-duplication memory is loaded)."""

    state: AccountState
    partition: int
    scores: dict[tuple[str, str], StoredScore] = field(default_factory=dict)
    profile: Profile | None = None  # as stored; None: no `accounts` row yet
    stored: bytes | None = None  # the stored state the stored scores were evaluated from
    memory_loaded: bool = True  # False: read for a re-score, without its memory
    periods: set[int] = field(default_factory=set)  # the periods its memory has rows in

    def previous_bands(self, role: str) -> dict[str, str]:
        return {obj: s.band for (obj, r), s in self.scores.items() if r == role}


@dataclass(frozen=True)
class Prior:
    """Derives what the scorer no longer stores: the contributions of a stored score, from
    the stored state at its `evaluated_at` under its model version (the API derives the whole
    explanation the same way). `versions`: the models by version; `news`: items by event id."""

    versions: dict[str, Model]
    news: dict[str, NewsItem] = field(default_factory=dict)

    def factors(self, entry: AccountEntry, key: tuple[str, str]) -> Contributions | None:
        old = entry.scores.get(key)
        if old is None:
            return None
        if old.factors is None and entry.stored is not None:
            self._derive(entry, key[1], old)
        return old.factors

    def _derive(self, entry: AccountEntry, role: str, old: StoredScore) -> None:
        model = self.versions.get(old.model_version)
        if model is None or old.evaluated_at is None or entry.stored is None:
            return  # a version no longer known: the change is told against nothing
        state = AccountState.from_bytes(entry.stored)
        news = ordered(self.news[e] for e in old.news if e in self.news)
        at = old.evaluated_at.timestamp()
        evaluation = evaluate(model, state, at, entry.previous_bands(role), news)
        for name, result in evaluation.scores.items():
            stored = entry.scores.get((name, role))
            if (
                stored is not None
                and stored.factors is None
                and stored.evaluated_at == old.evaluated_at
            ):
                stored.factors = contributions(result.factors)


@dataclass
class Rows:
    scores: list[ScoreValues] = field(default_factory=list)
    history: list[HistoryValues] = field(default_factory=list)
    outbox: list[OutboxValues] = field(default_factory=list)
    parents: tuple[str, ...] = ()  # whose rollups are due: the account's parent, and its last
    replay: bool = False  # whether what they change is the past being caught up on


# where the parent is in a stored profile (profile_row)
_PARENT = len(ATTRIBUTES) + 1 + PROFILE.index("parent_account_id")


def parents(entry: AccountEntry) -> tuple[str, ...]:
    """The account's parent, and the one stored until now when it moved to another."""
    now = entry.state.attribute("parent_account_id")
    stored = entry.profile[_PARENT] if entry.profile is not None else None
    return tuple(p for p in dict.fromkeys((now, stored)) if isinstance(p, str) and p)


def _ts(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def profile_row(
    account_id: str, entry: AccountEntry, now: datetime, active: Evaluation
) -> ProfileValues | None:
    """The `accounts` row, when it differs from the stored one (None: it does not)."""
    state = entry.state
    profile: Profile = (
        *(state.attribute(name) for name in ATTRIBUTES),
        active.segment,
        *(state.attribute(name) for name in PROFILE),
        entry.partition,
    )
    if profile == entry.profile:
        return None
    entry.profile = profile
    return {
        "account_id": account_id,
        "name": profile[0],
        "industry": profile[1],
        "region": profile[2],
        "tier": profile[3],
        "lifecycle_stage": profile[4],
        "segment": active.segment,
        "owner": profile[6],
        "parent_account_id": profile[7],
        "mrr_cents": profile[8],
        "currency": profile[9],
        "partition": entry.partition,
        "updated_at": now,
    }


def state_row(
    account_id: str,
    entry: AccountEntry,
    now: datetime,
    next_review: float,
    active: Evaluation,
    state_changed: bool = True,
) -> StateValues:
    """The `account_states` row: the state (empty when no signal changed it, as in a
    re-score of time alone: `store.write_batch` keeps the stored one), the next review (which
    the store moves only earlier, or once it has come), and what the lists show of the
    sources' freshness."""
    stale = sorted(source for source, f in active.freshness.items() if f["stale"])
    newest = [f["last_data_at"] for f in active.freshness.values() if f["last_data_at"]]
    periods = sorted(entry.periods)
    return {
        "account_id": account_id,
        "partition": entry.partition,
        # serialised now: the state goes on changing while the batch is being committed
        "state": entry.state.to_bytes() if state_changed else b"",
        "next_review_at": _ts(next_review),
        "stale_sources": stale or None,
        "data_at": _ts(max(newest)) if newest else None,
        "seen_periods": periods or None,
        "updated_at": now,
    }


def seen_rows(
    account_id: str, entry: AccountEntry, keep_from: int, at: float | None
) -> list[SeenValues]:
    """The ids the account's memory took since it was last stored, in the period of `at` (the
    write: they are kept for the horizon from then; None: each in its ingestion's); the
    entry's periods then are those it has rows in from `keep_from` on (earlier ones are let
    go)."""
    rows: list[SeenValues] = [
        {"account_id": account_id, "period": period, "ids": ids}
        for period, ids in entry.state.memory.unstored_ids(SEEN_PERIOD, at).items()
    ]
    entry.periods = {p for p in entry.periods | {r["period"] for r in rows} if p >= keep_from}
    return rows


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
    action: dict[str, Any] | None = None,
    name: str | None = None,
    segment: str | None = None,
    owner: str | None = None,
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
    return event_id, structured(
        {
            "id": event_id,
            "source": EVENT_SOURCE,
            "type": CHANGE_TYPES[change],
            "subject": account_id,
            "time": reflects,
            "datacontenttype": "application/json",
            "scoredat": at,
            "replay": replay,
        },
        {
            "account_id": account_id,
            "name": name,
            "segment": segment,
            "owner": owner,
            "objective": objective,
            "old_score": old.score if old else None,
            "new_score": new.score,
            "old_band": old.band if old else None,
            "new_band": new.band,
            "probability": new.probability,
            "confidence": confidence,
            "cause": cause,
            "top_movers": movers,
            "next_action": action,
            "overrides": list(new.overrides),
            "model_version": model_version,
            "signal_ids": signal_ids,
            "text": change_text(account_id, name, objective, old, new, movers, action),
        },
    )


def structured(attributes: dict[str, Any], data: dict[str, Any]) -> bytes:
    """A CloudEvent in structured JSON, as the changes topic carries it."""
    return to_structured(CloudEvent(attributes=attributes, data=data), _FORMAT).value


def change_text(
    account_id: str,
    name: str | None,
    objective: str,
    old: StoredScore | None,
    new: ObjectiveScore,
    movers: list[dict[str, Any]],
    action: dict[str, Any] | None,
) -> str:
    """The change in one line for people (Slack's mrkdwn: a webhook pointed at a Slack
    incoming webhook in binary mode posts it as it is)."""
    who = f"*{name}* ({account_id})" if name else f"*{account_id}*"
    scores = f"{points(old.score if old else None)} → {points(new.score)}"
    if old is None or old.band != new.band:
        what = f"{objective} {old.band if old else 'new'} → {new.band} (score {scores})"
    else:
        what = f"{objective} score {scores}, still {new.band}"
    parts = [f"{who}: {what}."]
    if movers:
        parts.append(
            "Moved most: "
            + ", ".join(f"{m['factor']} ({m['delta']:+.1f})" for m in movers[:2])
            + "."
        )
    if action is not None:
        advice = f": {action['advice']}" if action["advice"] else "."
        parts.append(f"Would help most: {action['factor']} (+{action['points']:.1f}){advice}")
    return " ".join(parts)


def points(score: float | None) -> str:
    return "none" if score is None else f"{score:.1f}"


@dataclass(frozen=True, slots=True)
class _Turn:
    """One account's re-score: what every objective of every role is written with."""

    account_id: str
    entry: AccountEntry
    at: float
    when: datetime  # `at`, as the rows store it
    cause: str
    signal_ids: list[str]
    history_min_delta: float
    changes_topic: str
    written: datetime
    reflects: float | None
    replay: bool
    prior: Prior
    listed: tuple[Any, ...]  # industry, region, tier: the score rows' list columns
    rows: Rows


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
    news: News = (),
    prior: Prior | None = None,
) -> tuple[Rows, Evaluation]:
    """Evaluate every model role for one account and build the rows to write.

    `cause` is why we are here: "signals", "override" or "time" (the sweep); it becomes
    "model_change" for a role whose stored score came from another model version. `at` is the
    scoring time (epoch seconds), `recorded_at` when the rows are written, `reflects` the event
    time of the newest signal behind the change (default: `at`) and `replay` whether that is
    the past being caught up on; `news` the market news known; `prior` derives the
    contributions of scores read from the store, when a change is to be told against them."""
    listed = tuple(entry.state.attribute(a) for a in ("industry", "region", "tier"))
    turn = _Turn(
        account_id,
        entry,
        at,
        _ts(at),
        cause,
        signal_ids,
        history_min_delta,
        changes_topic,
        recorded_at,
        reflects,
        replay,
        prior or Prior({}),
        listed,
        Rows(),
    )
    replaced: dict[tuple[str, str], StoredScore] = {}
    active: Evaluation | None = None
    for role, model in models.items():
        evaluation = evaluate(model, entry.state, at, entry.previous_bands(role), news)
        if role == "active":
            active = evaluation
        for objective, new in evaluation.scores.items():
            replaced[(objective, role)] = _objective(turn, model, role, evaluation, objective, new)
    rows = turn.rows
    rows.parents, rows.replay = parents(entry), rows.replay or replay
    # what is kept from here on: the scores just made, the state they were evaluated from
    entry.scores.update(replaced)
    entry.stored = None
    assert active is not None
    return rows, active


def _objective(
    turn: _Turn,
    model: Model,
    role: str,
    evaluation: Evaluation,
    objective: str,
    new: ObjectiveScore,
) -> StoredScore:
    """One objective of one role: its history point, change event and score row, when due;
    the score as it is kept from now on."""
    entry, key = turn.entry, (objective, role)
    old = entry.scores.get(key)
    why = turn.cause
    if old is not None and old.model_version != model.version:
        why = "model_change"
    baseline = old.recorded_score if old else None
    moved = (
        new.score is not None
        and baseline is not None
        and abs(new.score - baseline) >= turn.history_min_delta
    ) or ((new.score is None) != (baseline is None))
    change = _change(model, objective, old, new, why)
    band_changed = old is None or old.band != new.band
    record = band_changed or moved or change is not None or why == "model_change"
    changed_at = old.changed_at if old else turn.when
    recorded = old.recorded_score if old else None
    previous_score = old.previous_score if old else None
    baseline_alert = _peak(old.alert_baseline if old else None, new.score)
    held = old.held if old else None
    movers = top_movers(turn.prior.factors(entry, key), new) if record else []
    causes = turn.signal_ids + (
        _news_causes(model, turn.prior.factors(entry, key), new) if new.news else []
    )
    if record:
        stamped = _described(turn.when, turn.reflects, turn.replay, old)
        turn.rows.history.append(
            _history_row(turn, model, role, objective, old, new, stamped, why, movers, causes)
        )
        changed_at, previous_score, recorded = stamped, (old.score if old else None), new.score
    heard, ids, news_of, past = old, causes, turn.reflects, turn.replay  # for the event
    if role != "active":
        change = None  # shadow models never emit change events
    elif old is not None and turn.replay and change in _HELD_CHANGES:
        reflects = turn.reflects if turn.reflects is not None else turn.at
        held = _hold(held, old, turn.prior.factors(entry, key), reflects, turn.signal_ids)
        change, baseline_alert = None, new.score  # as if sent; `held` has the one heard
    elif held is not None and not turn.replay:  # the catch-up is over: the net change
        heard = _heard(held, old)
        if change in _HELD_CHANGES or change is None:
            change = _change(model, objective, heard, new, why)
        movers, ids = top_movers(heard.factors, new), turn.signal_ids or held.signal_ids
        if turn.reflects is None:  # the sweep: the net of past events, sent now
            news_of, past = held.reflects, True
            turn.rows.replay = True  # and so is what it moves the parent by
        held = None
    if change is not None:
        baseline_alert = new.score
        turn.rows.outbox.append(
            _outbox_row(
                turn,
                model,
                evaluation,
                objective,
                change,
                heard,
                new,
                why,
                movers,
                ids,
                news_of,
                past,
            )
        )
    read = tuple(item["event_id"] for item in new.news)
    stored = StoredScore(
        new.score,
        new.band,
        contributions(new.factors),
        recorded,
        previous_score,
        baseline_alert,
        model.version,
        changed_at,
        held,
        turn.when,
        read,
    )
    turn.rows.scores.append(_score_row(turn, model, role, evaluation, objective, new, stored))
    return stored


def _score_row(
    turn: _Turn,
    model: Model,
    role: str,
    evaluation: Evaluation,
    objective: str,
    new: ObjectiveScore,
    stored: StoredScore,
) -> ScoreValues:
    industry, region, tier = turn.listed
    return {
        "account_id": turn.account_id,
        "objective": objective,
        "model_role": role,
        "model_version": model.version,
        "score": new.score,
        "band": new.band,
        "confidence": new.confidence,
        "probability": new.probability,
        "industry": industry,
        "region": region,
        "tier": tier,
        "segment": evaluation.segment,
        "news": list(stored.news) or None,
        "recorded_score": stored.recorded_score,
        "previous_score": stored.previous_score,
        "alert_baseline": stored.alert_baseline,
        "held": stored.held.to_json() if stored.held else None,
        "evaluated_at": turn.when,
        "changed_at": stored.changed_at,
    }


def _outbox_row(
    turn: _Turn,
    model: Model,
    evaluation: Evaluation,
    objective: str,
    change: str,
    heard: StoredScore | None,
    new: ObjectiveScore,
    why: str,
    movers: list[dict[str, Any]],
    ids: list[str],
    news_of: float | None,
    past: bool,
) -> OutboxValues:
    """The change event of one objective, told against `heard` (what subscribers last heard)."""
    event_id, payload = change_event(
        account_id=turn.account_id,
        objective=objective,
        model_version=model.version,
        at=turn.when,
        change=change,
        old=heard,
        new=new,
        cause=why,
        movers=movers,
        signal_ids=ids[:50],
        confidence=new.confidence,
        reflects=turn.when if news_of is None else _ts(news_of),
        replay=past,
        action=next(iter(actions(model, evaluation, objective)), None),
        name=turn.entry.state.attribute("name"),
        segment=evaluation.segment,
        owner=turn.entry.state.attribute("owner"),
    )
    return {
        "event_id": event_id,
        "topic": turn.changes_topic,
        "key": turn.account_id,
        "payload": payload,
        "content_type": "application/cloudevents+json",
        "created_at": turn.written,
        "sent_at": None,
    }


def _history_row(
    turn: _Turn,
    model: Model,
    role: str,
    objective: str,
    old: StoredScore | None,
    new: ObjectiveScore,
    at: datetime,
    why: str,
    movers: list[dict[str, Any]],
    causes: list[str],
) -> HistoryValues:
    return {
        "account_id": turn.account_id,
        "objective": objective,
        "model_role": role,
        "model_version": model.version,
        "at": at,
        "old_score": old.score if old else None,
        "new_score": new.score,
        "old_band": old.band if old else None,
        "new_band": new.band,
        "probability": new.probability,
        "cause": why,
        "top_movers": movers,
        "signal_ids": causes[:50],
        "recorded_at": turn.written,
    }


def _described(
    when: datetime, reflects: float | None, replay: bool, old: StoredScore | None
) -> datetime:
    """When a history point says health changed: catching up on the past, at the time of the
    newest signal behind it (as the import does), so that charts, lead times and model quality
    see when it changed, not when it was computed; never before the score's last point nor
    after now. Live, when it was scored."""
    if not replay or reflects is None:
        return when
    described = _ts(reflects)
    if old is not None:
        described = max(described, old.changed_at)
    return min(described, when)


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


def _news_causes(model: Model, old: Contributions | None, new: ObjectiveScore) -> list[str]:
    """The market news a score read, when a market factor's sub-score moved with it: the ids
    go with the signals behind the change."""
    if not new.news:
        return []
    for f in new.factors:
        if model.factors[f.factor].market is not None:
            before = old.get(f.factor) if old else None
            if before is None or before[1] != f.sub_score:
                return [item["event_id"] for item in new.news]
    return []


def _hold(
    held: Held | None,
    old: StoredScore,
    before: Contributions | None,
    reflects: float,
    signal_ids: list[str],
) -> Held:
    """`held`, or what subscribers heard before this catch-up (`old`, its contributions
    `before`), now holding one more change."""
    if held is None:
        names = before.names if before is not None else ()
        factors = [
            {"factor": name, "contribution": c, "sub_score": sub}
            for name in names
            if before is not None and (got := before.get(name)) is not None
            for c, sub in [got]
        ]
        held = Held(old.score, old.band, old.alert_baseline, factors, reflects, [])
    return replace(
        held,
        reflects=max(held.reflects, reflects),
        signal_ids=(held.signal_ids + signal_ids)[-50:],
    )


def _heard(held: Held, current: StoredScore | None) -> StoredScore:
    """The score subscribers last heard, to measure the net change from."""
    assert current is not None  # only a stored score holds changes
    return replace(
        current,
        score=held.score,
        band=held.band,
        alert_baseline=held.alert_baseline,
        factors=contributions(held.factors),
        held=None,
    )


def _peak(baseline: float | None, score: float | None) -> float | None:
    if score is None:
        return baseline
    return score if baseline is None else max(baseline, score)

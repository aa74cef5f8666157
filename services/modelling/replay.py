"""Replay raw events in event time through ingest's validation and the scoring core: no broker.

Reads the simulator's files (or any export in the same shape): `events.jsonl`, one raw v1 event
per line, and `outcomes.csv` (what happened to accounts and when: `load_outcomes`). Every line goes
through `shared.validate` exactly as a raw record on its source topic would (shared.event_files),
and every signal is folded into per-account `AccountState`s with the same `apply` the scorer
uses, in event time. `replay` then yields the states at each requested cut, so a score computed
here is the score the live service would have shown at that moment (it has seen every event up
to then).
"""

from __future__ import annotations

import csv
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from shared.errors import ConfigurationError
from shared.event_files import EventLog
from shared.outcomes import NAME, lapsed, within
from shared.scoring.kinds import KindIndex
from shared.scoring.seen import DedupPolicy
from shared.scoring.state import AccountState

# Every event is replayed once, so de-duplication only needs to catch ids repeated in the file.
REPLAY_DEDUP = DedupPolicy(horizon_seconds=float("inf"), max_ids=1 << 30)


@dataclass(frozen=True)
class Outcomes:
    """What happened to each account and when: `churn`, `return` (back after a churn),
    `renewal`, `expansion` or any other named event, several per account. An account is out
    of the population from a churn until a return (lapse and return)."""

    events: dict[str, list[tuple[float, str]]]  # account -> (time, event), ascending

    def lapsed(self, account_id: str, at: float) -> bool:
        """Whether the account had churned by `at` and not come back."""
        return lapsed(self.events.get(account_id, ()), at)

    def within(self, account_id: str, event: str, after: float, until: float) -> bool:
        """Whether `event` happened to the account in (after, until]."""
        return within(self.events.get(account_id, ()), event, after, until)

    def first(self, event: str) -> dict[str, float]:
        """account -> time of its first `event`."""
        firsts: dict[str, float] = {}
        for account_id, events in self.events.items():
            for t, e in events:
                if e == event:
                    firsts[account_id] = t
                    break
        return firsts

    def counts(self) -> dict[str, int]:
        """event -> how many accounts had it at least once."""
        counted: dict[str, int] = {}
        for events in self.events.values():
            for name in {e for _, e in events}:
                counted[name] = counted.get(name, 0) + 1
        return dict(sorted(counted.items()))

    @classmethod
    def churn(cls, churn_at: dict[str, float]) -> Outcomes:
        """One churn per account (the simulator's outcomes, most tests)."""
        return cls({a: [(t, "churn")] for a, t in churn_at.items()})


def load_outcomes(path: Path) -> Outcomes:
    """The outcomes CSV: either `account_id,event,at` (a row per event: churn, return,
    renewal, expansion, ...) or `account_id,churned_at` (a row per account, empty = retained).
    More columns are ignored."""
    events: dict[str, list[tuple[float, str]]] = {}
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            columns = set(reader.fieldnames or ())
            if {"account_id", "event", "at"} <= columns:
                rows = ((r["account_id"], r["event"].strip(), r["at"]) for r in reader)
            elif {"account_id", "churned_at"} <= columns:
                rows = ((r["account_id"], "churn", r["churned_at"]) for r in reader)
            else:
                raise ConfigurationError(
                    f"{path}: needs the columns account_id,event,at or account_id,churned_at"
                )
            for line, (account_id, event, text) in enumerate(rows, start=2):
                if not text:
                    continue
                if not NAME.match(event):
                    raise ValueError(f"line {line}: {event!r} is not an outcome name")
                at = datetime.fromisoformat(text)
                at = at if at.tzinfo else at.replace(tzinfo=UTC)
                events.setdefault(account_id, []).append((at.timestamp(), event))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{path}: cannot read outcomes: {exc}") from exc
    for happened in events.values():
        happened.sort()
    return Outcomes(events)


def replay(
    events: EventLog, kinds: KindIndex, cuts: list[float]
) -> Iterator[tuple[float, dict[str, AccountState]]]:
    """The states of every account seen so far, after all facts up to each cut (ascending).
    The same dict is updated in place between cuts: copy what must outlive the next step."""
    states: dict[str, AccountState] = {}
    facts = events.facts
    times = [f.t for f in facts]
    done = 0
    for cut in sorted(cuts):
        until = bisect_right(times, cut)
        for fact in facts[done:until]:
            state = states.get(fact.account_id)
            if state is None:
                state = states[fact.account_id] = AccountState()
            state.apply(kinds, fact, REPLAY_DEDUP)
        done = max(done, until)
        yield cut, states

"""Replay raw events in event time through ingest's validation and the scoring core: no broker.

Reads the simulator's files (or any export in the same shape): `events.jsonl`, one raw v1 event
per line, and `outcomes.csv` (`account_id,churned_at`, more columns ignored). Every line goes
through `shared.validate` exactly as a raw record on its source topic would, and every
signal is folded into per-account `AccountState`s with the same `apply` the scorer uses, in event
time. `replay` then yields the states at each requested cut, so a score computed here is the
score the live service would have shown at that moment (it has seen every event up to then).
"""

from __future__ import annotations

import csv
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from shared.errors import ConfigurationError
from shared.events import EVENT_TYPE_SOURCE, Source
from shared.scoring.kinds import KindIndex
from shared.scoring.state import AccountState, DedupPolicy, Fact
from shared.validate import Limits, Rejection, Sentiment, validate

# A backtest replays old events on purpose: event times are judged against the cuts, not the
# wall clock, so the ingest age and skew limits are opened up.
REPLAY_LIMITS = Limits(max_future_skew=timedelta(days=36_500), max_age=timedelta(days=36_500))
# Every event is replayed once, so de-duplication only needs to catch ids repeated in the file.
REPLAY_DEDUP = DedupPolicy(horizon_seconds=float("inf"), max_ids=1 << 30)


@dataclass(frozen=True)
class History:
    """Validated signals in event-time order, and what validation refused."""

    facts: list[Fact]
    lines: int
    rejected: Counter[str]

    @property
    def first(self) -> float:
        return self.facts[0].t

    @property
    def last(self) -> float:
        return self.facts[-1].t


def load_events(path: Path) -> History:
    """Validate every line of a raw-event JSONL file as ingest would on the event's topic."""
    sentiment = Sentiment()
    now = datetime.now(UTC)
    facts: list[Fact] = []
    rejected: Counter[str] = Counter()
    lines = 0
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read events: {exc}") from exc
    with handle:
        for line in handle:
            if not line.strip():
                continue
            lines += 1
            result = validate(
                line.rstrip(b"\r\n"),
                source=_source_of(line),
                now=now,
                limits=REPLAY_LIMITS,
                sentiment=sentiment,
            )
            if isinstance(result, Rejection):
                rejected[result.reason] += 1
            else:
                facts.append(Fact.from_signal(result))
    if not facts:
        raise ConfigurationError(f"{path}: no valid events in {lines} lines")
    facts.sort(key=lambda f: (f.t, f.signal_id))
    return History(facts, lines, rejected)


def _source_of(line: bytes) -> Source:
    """The topic this event would have arrived on (validation refuses a mismatch anyway)."""
    try:
        kind = orjson.loads(line).get("type")
    except (orjson.JSONDecodeError, AttributeError):
        return "usage"  # validate gives the precise reason
    return EVENT_TYPE_SOURCE.get(kind, "usage") if isinstance(kind, str) else "usage"


def load_outcomes(path: Path) -> dict[str, float]:
    """account_id -> churn time (epoch seconds) for every account that churned."""
    churned: dict[str, float] = {}
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"account_id", "churned_at"} <= set(reader.fieldnames):
                raise ConfigurationError(f"{path}: needs the columns account_id and churned_at")
            for row in reader:
                if row["churned_at"]:
                    at = datetime.fromisoformat(row["churned_at"])
                    at = at if at.tzinfo else at.replace(tzinfo=UTC)
                    churned[row["account_id"]] = at.timestamp()
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{path}: cannot read outcomes: {exc}") from exc
    return churned


def replay(
    history: History, kinds: KindIndex, cuts: list[float]
) -> Iterator[tuple[float, dict[str, AccountState]]]:
    """The states of every account seen so far, after all facts up to each cut (ascending).
    The same dict is updated in place between cuts: copy what must outlive the next step."""
    states: dict[str, AccountState] = {}
    facts = history.facts
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

"""Replay raw events in event time through ingest's validation and the scoring core: no broker.

Reads the simulator's files (or any export in the same shape): `events.jsonl`, one raw v1 event
per line, and `outcomes.csv` (`account_id,churned_at`, more columns ignored). Every line goes
through `shared.validate` exactly as a raw record on its source topic would (shared.history),
and every signal is folded into per-account `AccountState`s with the same `apply` the scorer
uses, in event time. `replay` then yields the states at each requested cut, so a score computed
here is the score the live service would have shown at that moment (it has seen every event up
to then).
"""

from __future__ import annotations

import csv
from bisect import bisect_right
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from shared.errors import ConfigurationError
from shared.history import History
from shared.scoring.kinds import KindIndex
from shared.scoring.state import AccountState, DedupPolicy

# Every event is replayed once, so de-duplication only needs to catch ids repeated in the file.
REPLAY_DEDUP = DedupPolicy(horizon_seconds=float("inf"), max_ids=1 << 30)


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

"""Raw event history from files: every line validated exactly as ingest validates a record.

Reads one raw v1 event per line (JSON Lines), as exports of a source give them: each line goes
through `shared.validate` as ingest would take it, so what a backtest or a history import
takes is what the live service would have taken. Old events are expected here:
the ingest age and skew limits are opened up.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.errors import ConfigurationError
from shared.scoring.news import News, NewsItem
from shared.scoring.state import Fact
from shared.validate import Limits, Rejection, Sentiment, validate

# The events are old on purpose: event times are judged against each other, not the wall clock.
REPLAY_LIMITS = Limits(max_future_skew=timedelta(days=36_500), max_age=timedelta(days=36_500))


@dataclass(frozen=True)
class EventLog:
    """Validated signals in event-time order, and what validation refused. Market events,
    about segments rather than accounts, are `news`."""

    facts: list[Fact]
    lines: int
    rejected: Counter[str]
    news: News = ()

    @property
    def first(self) -> float:
        return self.facts[0].t

    @property
    def last(self) -> float:
        return self.facts[-1].t


def load_events(path: Path) -> EventLog:
    """Validate every line of a raw-event JSONL file as ingest would."""
    sentiment = Sentiment()
    now = datetime.now(UTC)
    facts: list[Fact] = []
    news: list[NewsItem] = []
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
                now=now,
                limits=REPLAY_LIMITS,
                sentiment=sentiment,
            )
            if isinstance(result, Rejection):
                rejected[result.reason] += 1
            elif result.kind == "market_event":
                news.append(
                    NewsItem.of(result.signal_id, result.occurred_at.timestamp(), result.data)
                )
            elif result.kind != "outcome_recorded":  # an outcome is not scored
                facts.append(Fact.from_signal(result))
    if not facts:
        raise ConfigurationError(f"{path}: no valid events in {lines} lines")
    facts.sort(key=lambda f: (f.t, f.signal_id))
    return EventLog(facts, lines, rejected, tuple(sorted(news, key=lambda item: item.t)))

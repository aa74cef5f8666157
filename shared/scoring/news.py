"""News about whole segments (market events), as the scoring engine reads it.

A market event names no account: it concerns every account whose attributes match its scope.
The scorer keeps the news of the last `news_retention_days` in memory and hands it to every
evaluation; a model's `market` factor sums the impact of the items that concern the account,
each decayed by the factor's half-life since it happened.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

SCOPES = frozenset({"industry", "region", "tier"})  # the account attributes a scope names


@dataclass(frozen=True, slots=True)
class NewsItem:
    event_id: str
    t: float  # when it happened (epoch seconds)
    scope: tuple[tuple[str, frozenset[str]], ...]  # attribute -> the values it concerns
    topic: str
    impact: float  # -1 (harmful) .. 1 (helpful)
    title: str = ""

    @classmethod
    def of(cls, event_id: str, t: float, data: dict[str, Any]) -> NewsItem:
        """From a market event signal's data; ValueError if it is not one."""
        scope = tuple(
            (name, frozenset(values)) for name, values in sorted(data["scope"].items()) if values
        )
        impact = float(data["impact"])
        if not scope or {name for name, _ in scope} - SCOPES or not -1 <= impact <= 1:
            raise ValueError(f"not a market event's scope and impact: {data!r:.200}")
        return cls(event_id, t, scope, data["topic"], impact, data.get("title", ""))

    def concerns(self, attributes: dict[str, Any]) -> bool:
        return all(attributes.get(name) in values for name, values in self.scope)


News = tuple[NewsItem, ...]


def ordered(items: Iterable[NewsItem]) -> News:
    """News in the order every evaluation reads it: by time, then event id. A market factor
    sums the impacts in this order, so the API deriving an explanation adds as the scorer did."""
    return tuple(sorted(items, key=lambda item: (item.t, item.event_id)))

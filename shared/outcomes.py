"""Outcomes: what happened to an account, which a score should have foreseen.

An outcome is named (`churn`, `return`, `renewal`, `expansion`, or any other name a CRM
uses) and timed. A favourable one (renewal, expansion, return) is what a higher score should
make likelier; any other is adverse. An account is out of the population that a score is
judged on from a churn until a return (`lapsed`).

The stream shows three of them as they happen (services/scorer/outcomes.py): a cancellation
is a churn; a new subscription after a cancellation is a return; a subscription change that
raises the recurring revenue by at least a share of it is an expansion. A renewal, and
anything the stream cannot see, comes from a CRM or a person: the API, the console, or an
`outcome_recorded` event on any v1 topic.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from prometheus_client import CollectorRegistry, Counter

FAVOURABLE: Final = frozenset({"renewal", "expansion", "return"})
NAME_PATTERN: Final = r"^[a-z][a-z0-9_]{0,31}$"  # an outcome's name, wherever one is given
SOURCE_PATTERN: Final = r"^[a-z][a-z0-9_\-]{0,31}$"  # the system that tells one
NAME: Final = re.compile(NAME_PATTERN)
STREAM: Final = "stream"  # the source of the outcomes the scorer records


def recorded_counter(registry: CollectorRegistry) -> Counter:
    """The count of outcomes recorded, in each process that records them (the scorer, the
    API)."""
    return Counter(
        "healthscore_model_outcomes_total",
        "Outcomes recorded, by outcome and source (stream: shown by a signal; api)",
        ["outcome", "source"],
        registry=registry,
    )


Timeline = Sequence[tuple[float, str]]  # one account's outcomes: (epoch seconds, name), in order


def lapsed(timeline: Timeline, at: float) -> bool:
    """Whether the account had churned by `at` and not come back."""
    out = False
    for t, name in timeline:
        if t > at:
            break
        if name == "churn":
            out = True
        elif name == "return":
            out = False
    return out


def within(timeline: Timeline, name: str, after: float, until: float) -> bool:
    """Whether `name` happened in (after, until]."""
    return any(after < t <= until and e == name for t, e in timeline)

"""A parent's health rolled up from its children's: one definition, which the API's
`/children` serves and the scorer's rollups (services/scorer/rollups.py) turn into events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from shared.scoring.engine import UNKNOWN_BAND, band_for
from shared.scoring.model import Model


class Child(Protocol):
    @property
    def account_id(self) -> str: ...
    @property
    def score(self) -> float | None: ...
    @property
    def mrr(self) -> float | None: ...


C = TypeVar("C", bound=Child)


@dataclass(frozen=True, slots=True)
class RolledUp(Generic[C]):
    objective: str
    score: float | None  # None: no child is scored
    band: str
    children: int  # the children scored
    weakest: C | None


def roll_up(
    model: Model, objective: str, children: Sequence[C], previous: str | None
) -> RolledUp[C]:
    """The children's scores weighted by their MRR, or equally where none reports any; its
    band leaves `previous` (the band last rolled up) only past the objective's hysteresis, as
    an account's own band does."""
    scored = [c for c in children if c.score is not None]
    weights = [c.mrr or 0.0 for c in scored]
    if not any(weights):
        weights = [1.0] * len(scored)
    total = sum(weights)
    weighted = sum(w * (c.score or 0.0) for w, c in zip(weights, scored, strict=True))
    score = round(weighted / total, 4) if total else None
    spec = model.objectives.get(objective)
    band = band_for(score, spec.bands, previous, spec.hysteresis) if spec else UNKNOWN_BAND
    weakest = min(scored, key=lambda c: (c.score, c.account_id)) if scored else None
    return RolledUp(objective, score, band, len(scored), weakest)

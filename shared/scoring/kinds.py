"""Which aggregates each signal kind feeds: a model's aggregate definitions flattened for
`AccountState.apply`, which runs for every signal. Derived once per model version (a version
names the model's content exactly), kept here beside the model rather than inside it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from shared.errors import ConfigurationError
from shared.scoring.model import Aggregate, Model


class Feed(NamedTuple):
    """What one aggregate takes from one signal kind: its definition flattened for `apply`,
    which runs for every signal."""

    name: str
    aggregation: str  # the aggregate's `kind` in the model file: latest, decayed_sum, ...
    where: tuple[tuple[str, Any], ...]
    by_kind: bool  # a fixed value per signal kind (`fixed`) instead of a field
    fixed: float | None
    field: str | None
    weight_by: str | None
    weights: dict[str, float]
    half_life_days: float
    window_days: int  # 0 unless windowed


KindIndex = dict[str, tuple[Feed, ...]]
_BY_VERSION: dict[str, KindIndex] = {}


def kinds_of(model: Model) -> KindIndex:
    """The kind index of one model, derived once per version."""
    index = _BY_VERSION.get(model.version)
    if index is None:
        index = _BY_VERSION[model.version] = kind_index([model])
    return index


def kind_index(models: list[Model]) -> KindIndex:
    """The aggregates every model needs, by signal kind. Models sharing an aggregate name must
    define it identically, since they share the state."""
    merged: dict[str, Aggregate] = {}
    for model in models:
        for name, agg in model.aggregates.items():
            if merged.setdefault(name, agg) != agg:
                raise ConfigurationError(
                    f"aggregate {name!r} differs between models {[m.version for m in models]}"
                )
    index: dict[str, list[Feed]] = {}
    for name, agg in merged.items():
        for kind in agg.signals:
            index.setdefault(kind, []).append(
                Feed(
                    name,
                    agg.kind,
                    tuple(agg.where.items()),
                    bool(agg.by_kind),
                    agg.by_kind.get(kind),
                    agg.field,
                    agg.weight_by,
                    agg.weights,
                    agg.half_life_days or 0.0,
                    agg.window_days or 0,
                )
            )
    return {kind: tuple(feeds) for kind, feeds in index.items()}

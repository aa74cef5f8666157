"""What every part of one scorer shares: its settings, database, served models, the cache of
its accounts, the partitions it owns, the market news, its metrics and its clock. The Scorer
(consume.py) makes one and hands it to each part it builds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from services.scorer.cache import StateCache
from services.scorer.metrics import ScorerMetrics
from services.scorer.news import NewsBook
from services.scorer.partitions import Partitions
from services.scorer.serving import ModelSet
from shared.config import ScorerSettings, Settings


@dataclass(frozen=True)
class ScorerContext:
    settings: Settings
    engine: AsyncEngine
    models: ModelSet
    cache: StateCache
    partitions: Partitions
    news: NewsBook
    metrics: ScorerMetrics
    clock: Callable[[], datetime]

    @property
    def cfg(self) -> ScorerSettings:
        return self.settings.scorer

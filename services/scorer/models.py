"""The models the scorer serves (active, and shadow when configured), and switching them.

A switch (SIGHUP) re-reads the model files without stopping consumption: an invalid file
changes nothing; a valid one takes effect for the next batch, and every account whose scores
came from another version is made due for the sweep, which re-scores it from stored state.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scorer import store
from services.scorer.metrics import ScorerMetrics
from shared.config import ScorerSettings
from shared.errors import ConfigurationError
from shared.scoring.kinds import KindIndex, kind_index
from shared.scoring.model import Model, load_model

log = structlog.get_logger(__name__)


def configured(cfg: ScorerSettings) -> dict[str, Model]:
    """The models the settings name, by role: active, and shadow when configured."""
    models = {"active": load_model(cfg.model_path)}
    if cfg.shadow_model_path is not None:
        models["shadow"] = load_model(cfg.shadow_model_path)
    return models


class ModelSet:
    def __init__(
        self, cfg: ScorerSettings, metrics: ScorerMetrics, models: dict[str, Model] | None = None
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.models: dict[str, Model] = {}
        self.kinds: KindIndex = {}
        self._use(models or configured(cfg))

    def _use(self, models: dict[str, Model]) -> None:
        kinds = kind_index(list(models.values()))  # raises if the models' aggregates clash
        for role, model in self.models.items():
            self.metrics.model.remove(role, model.version)
        self.models, self.kinds = models, kinds
        for role, model in models.items():
            self.metrics.model.labels(role, model.version).set(1)

    def versions(self) -> dict[str, str]:
        return {role: model.version for role, model in self.models.items()}

    def expected(self) -> list[tuple[str, str, str]]:
        """(role, objective, version) of every score row an account should have."""
        return [
            (role, objective, model.version)
            for role, model in self.models.items()
            for objective in model.objectives
        ]

    def reload(self) -> bool:
        """Switch to the configured files; False (and nothing changed) if one is invalid."""
        try:
            self._use(configured(self.cfg))
        except ConfigurationError as exc:
            self.metrics.model_reloads.labels("invalid").inc()
            log.error("scorer.model_reload_failed", error=str(exc))
            return False
        self.metrics.model_reloads.labels("ok").inc()
        log.info("scorer.models_loaded", models=self.versions())
        return True


class Rescheduling:
    """After a model switch or a rebalance: the owned accounts whose scores came from another
    model are made due for the sweep, a window of accounts (in id order) per pass of the loop,
    each its own short transaction, between batches. One transaction for a million accounts
    would lock every account row for a minute: the batches would stall behind it, or deadlock
    with it. The sweep starts on the first accounts found while the scan goes on."""

    WINDOW = 10_000  # accounts looked at per pass

    def __init__(self) -> None:
        self.partitions: set[int] = set()  # still to scan; none: nothing to do
        self.after: str | None = None  # the last account id scanned
        self.scheduled = 0

    @property
    def pending(self) -> bool:
        return bool(self.partitions)

    def restart(self, partitions: Iterable[int]) -> None:
        """Scan these partitions from their first account (what was scanned before may have
        been scheduled for another model)."""
        self.partitions, self.after, self.scheduled = set(partitions), None, 0

    async def step(
        self,
        engine: AsyncEngine,
        owned: set[int],
        models: ModelSet,
        now: datetime,
    ) -> int:
        """One window; how many accounts it made due. Partitions no longer owned are left to
        their new owner, which scans them on assignment."""
        partitions, expected = sorted(self.partitions & owned), models.expected()
        if partitions and self.after is None:
            await store.drop_unconfigured_scores(engine, partitions, expected)
        count, self.after = await store.schedule_model_change(
            engine, partitions, expected, now, self.after, self.WINDOW
        )
        self.scheduled += count
        if self.after is None:  # the end: every owned account was looked at
            self.partitions.clear()
            if self.scheduled:
                log.info("scorer.model_change_scheduled", accounts=self.scheduled)
        return count

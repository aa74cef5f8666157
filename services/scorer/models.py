"""The models the scorer serves (active, and shadow when configured), and switching them.

A switch (SIGHUP) re-reads the model files without stopping consumption: an invalid file
changes nothing; a valid one takes effect for the next batch, and every account whose scores
came from another version is then re-scored from stored state, a window at a time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

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
    model are re-scored from stored state, a window of accounts (in id order) per pass of the
    loop, between batches. The window is read, its outdated accounts re-scored and written in
    short transactions (`sweep`: `BatchWriter.sweep`); nothing marks them first, so each is written
    once, and a restart simply scans again: what is outdated is read from the scores."""

    WINDOW = 2_000  # accounts looked at per pass: a few seconds of re-scoring at most

    def __init__(self) -> None:
        self.partitions: set[int] = set()  # still to scan; none: nothing to do
        self.after: str | None = None  # the last account id scanned
        self.rescored = 0

    @property
    def pending(self) -> bool:
        return bool(self.partitions)

    def restart(self, partitions: Iterable[int]) -> None:
        """Scan these partitions from their first account (what was scanned before may have
        been re-scored for another model)."""
        self.partitions, self.after, self.rescored = set(partitions), None, 0

    async def step(
        self,
        engine: AsyncEngine,
        models: ModelSet,
        sweep: Callable[[store.Find], Awaitable[int]],
    ) -> int:
        """Re-score the outdated accounts of the next window; how many. Partitions no longer
        owned are left to their new owner, which scans them on assignment. The scan moves on
        only once the window is stored: a failed one is looked at again."""
        expected = models.expected()
        ends: list[str | None] = []

        async def outdated(owned: list[int]) -> list[tuple[str, int]]:
            partitions = sorted(self.partitions.intersection(owned))
            if partitions and self.after is None:
                await store.drop_unconfigured_scores(engine, partitions, expected)
            found, end = await store.outdated_accounts(
                engine, partitions, expected, self.after, self.WINDOW
            )
            ends.append(end)
            return found

        count = await sweep(outdated)
        self.after = ends[0]
        self.rescored += count
        if self.after is None:  # the end: every owned account was looked at
            self.partitions.clear()
            if self.rescored:
                log.info("scorer.model_change_rescored", accounts=self.rescored)
        return count

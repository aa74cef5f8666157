"""The models the scorer serves (the active model, and the shadow when there is one), and
following them as they change.

The scorer looks at the model proposals in the database (shared/proposals.py) every
`model_follow_seconds`, and at once on SIGHUP, without stopping consumption. A new active or
shadow model takes effect for the next batch, and every account whose scores came from another
version is then re-scored from stored state, a window at a time (sweep.Rescheduling). An empty
database is seeded from the configured model files. Every version served is recorded in
`model_versions`, and the versions of stored scores are read back from there: explanations are
derived from them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from datetime import UTC, datetime

import orjson
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scorer import store
from services.scorer.metrics import ScorerMetrics
from services.scorer.rescore import AccountEntry
from shared import proposals
from shared.config import ScorerSettings
from shared.errors import ConfigurationError
from shared.proposals import configured
from shared.scoring.kinds import KindIndex, kind_index
from shared.scoring.model import Model

log = structlog.get_logger(__name__)


class ModelSet:
    def __init__(
        self, cfg: ScorerSettings, metrics: ScorerMetrics, models: dict[str, Model] | None = None
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.models: dict[str, Model] = {}
        self.kinds: KindIndex = {}
        # every version met: the served ones, and those of stored scores (from model_versions)
        self.versions: dict[str, Model] = {}
        self._unknown: set[str] = set()  # versions the database does not have either
        self._registered = False
        files = models or configured(cfg)
        self._files = files  # what an empty database is seeded with, and served before 0018
        self._look_at = 0.0  # monotonic time of the next look at the proposals
        self._use(files)

    async def register(self, engine: AsyncEngine) -> None:
        """Record the served versions in the database (once per switch): the API derives
        explanations with them."""
        if not self._registered:
            await store.register_models(engine, self.models.values(), datetime.now(UTC))
            self._registered = True

    async def learn(self, engine: AsyncEngine, entries: Iterable[AccountEntry]) -> None:
        """Know the versions of these accounts' stored scores: a change is told against the
        score before it, derived from its version (rescore.Prior)."""
        await self.register(engine)
        wanted = (
            {
                score.model_version
                for entry in entries
                for score in entry.scores.values()
                if score.factors is None
            }
            - self.versions.keys()
            - self._unknown
        )
        if wanted:
            found = await store.model_versions(engine, wanted)
            self.versions.update(found)
            if missing := wanted - found.keys():
                self._unknown |= missing
                log.warning("scorer.model_versions_unknown", versions=sorted(missing))

    def _use(self, models: dict[str, Model]) -> None:
        kinds = kind_index(list(models.values()))  # raises if the models' aggregates clash
        for role, model in self.models.items():
            self.metrics.model.remove(role, model.version)
        self.models, self.kinds = models, kinds
        self.versions.update({model.version: model for model in models.values()})
        self._registered = False
        for role, model in models.items():
            self.metrics.model.labels(role, model.version).set(1)

    def served(self) -> dict[str, str]:
        """The version of each role's model."""
        return {role: model.version for role, model in self.models.items()}

    def fingerprint(self) -> str:
        """What the served models make of an account's score rows, in 16 hex digits: a
        partition whose accounts were all scanned to it needs no scan again (sweep.py)."""
        return hashlib.sha256(orjson.dumps(sorted(self.expected()))).hexdigest()[:16]

    def expected(self) -> list[tuple[str, str, str]]:
        """(role, objective, version) of every score row an account should have."""
        return [
            (role, objective, model.version)
            for role, model in self.models.items()
            for objective in model.objectives
        ]

    def due(self) -> bool:
        return time.monotonic() >= self._look_at

    def hurry(self) -> None:
        """SIGHUP: look at the proposals before the next batch."""
        self._look_at = 0.0

    async def look(self, engine: AsyncEngine) -> dict[str, Model] | None:
        """The active and shadow models when they differ from the served models, else None."""
        self._look_at = time.monotonic() + self.cfg.model_follow_seconds
        return await proposals.changed(engine, self._files, self.served(), datetime.now(UTC))

    def switch(self, models: dict[str, Model]) -> bool:
        """Serve these models from the next batch; False (and nothing changed) if they cannot
        be served together."""
        try:
            self._use(models)
        except ConfigurationError as exc:
            self.metrics.model_reloads.labels("invalid").inc()
            log.error("scorer.model_switch_failed", error=str(exc))
            return False
        self.metrics.model_reloads.labels("ok").inc()
        log.info("scorer.models_loaded", models=self.served())
        return True

"""The relay (relay.py): one scorer, the owner of partition 0, counts the bands."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from services.scorer import portfolio, store
from services.scorer.metrics import ScorerMetrics
from services.scorer.partitions import Partitions
from services.scorer.relay import Relay
from shared.config import ScorerSettings
from tests.unit.scorer.fakes import P0, P1


async def test_only_the_owner_of_partition_0_counts_bands_and_the_others_clear_the_gauge(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counted: list[int] = []

    async def count(engine: object, day: object) -> list[portfolio.BandFigures]:
        counted.append(1)
        return [
            portfolio.BandFigures("churn", "active", "healthy", "USD", 5, 1_000_00),
            portfolio.BandFigures("churn", "active", "healthy", "", 2, 0),
        ]

    async def nothing(*args: object) -> int:
        return 0

    monkeypatch.setattr(portfolio, "count", count)
    monkeypatch.setattr(store, "outbox_backlog", nothing)
    monkeypatch.setattr(store, "prune_outbox", nothing)
    registry = CollectorRegistry()
    partitions = Partitions()
    relay = Relay(
        None,  # type: ignore[arg-type]
        ScorerMetrics(registry),
        lambda: datetime.now(UTC),
        ScorerSettings(),
        partitions.owns_first,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
    )
    labels = {"objective": "churn", "model_role": "active", "band": "healthy"}

    partitions.adopt({P0: 0, P1: 0})
    await relay.refresh_bands()
    assert registry.get_sample_value("healthscore_scorer_accounts", labels) == 7
    mrr = {"objective": "churn", "band": "healthy", "currency": "USD"}
    assert registry.get_sample_value("healthscore_scorer_mrr", mrr) == 1000.0

    partitions.forget([P0])  # a rebalance gives partition 0 to another scorer
    await relay.refresh_bands()
    assert registry.get_sample_value("healthscore_scorer_accounts", labels) is None
    assert registry.get_sample_value("healthscore_scorer_mrr", mrr) is None
    assert len(counted) == 1

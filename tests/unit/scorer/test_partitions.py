"""A scorer's partitions (partitions.py): positions chain on from what was prepared; progress
follows what was committed."""

from __future__ import annotations

from services.scorer.partitions import Partitions
from tests.unit.scorer.fakes import P0, P1


def test_positions_chain_from_prepared_and_progress_follows_committed() -> None:
    partitions = Partitions()
    partitions.adopt({P0: 0, P1: 7})
    fences = partitions.fences({P0: 5, P1: 9})
    assert fences == {("s", 0): (0, 5), ("s", 1): (7, 9)}
    partitions.prepared_to(fences)
    assert partitions.fences({P1: 12}) == {("s", 1): (9, 12)}  # chains on before the commit
    assert partitions.committed == {P0: 0, P1: 7}  # nothing is stored yet
    generation = partitions.generation
    partitions.committed_to(fences, generation)
    assert partitions.committed == {P0: 5, P1: 9}
    assert partitions.hold() == {("s", 0): (5, 5), ("s", 1): (9, 9)}
    partitions.forget([P0])
    partitions.committed_to({("s", 1): (9, 20)}, generation)  # voided by the rebalance
    assert partitions.committed == {P1: 9}

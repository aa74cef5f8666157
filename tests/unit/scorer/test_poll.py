"""The scorer's poll (poll.py): only adopted partitions' records are taken."""

from __future__ import annotations

from types import SimpleNamespace

from aiokafka import TopicPartition

from services.scorer.partitions import Partitions
from services.scorer.poll import Poller
from shared.config import ScorerSettings
from tests.unit.scorer.fakes import P0, P1, records


class _Fetched:
    """A consumer that hands out what it was given, one answer per getmany (a stand-in for
    the broker's fetches; the poll's own logic is under test)."""

    def __init__(self, *answers: dict[TopicPartition, list[SimpleNamespace]]) -> None:
        self.answers = list(answers)

    async def getmany(self, **_: object) -> dict[TopicPartition, list[SimpleNamespace]]:
        return self.answers.pop(0) if self.answers else {}

    def highwater(self, tp: TopicPartition) -> None:
        return None


async def test_records_of_a_partition_not_yet_adopted_are_neither_taken_nor_carried() -> None:
    """The consumer may fetch a partition it was given while the scorer is still reading its
    stored offset. Those records are dropped, not carried into the next batch: carried, they
    would start it past the offset adopt() seeks to, and the records before them would be
    skipped (an account's signals lost, seen as state mismatches in the outage test)."""
    partitions = Partitions()
    partitions.adopt({P1: 0})
    poller = Poller(ScorerSettings(batch_max_accounts=1, batch_timeout_ms=1), partitions)
    poller.consumer = _Fetched({P0: records(0, "aabb"), P1: records(1, "cc")})  # type: ignore[assignment]
    taken = await poller.poll()
    assert {tp: [r.key for r in rs] for tp, rs in taken.items()} == {P1: [b"c", b"c"]}
    assert poller.carry == {}

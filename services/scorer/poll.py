"""Collecting a batch from the consumer: as much as is there, and more while catching up.

Bigger batches under load mean each busy account is re-scored once for many signals, in one
transaction; the account cap bounds the memory and the size of that transaction. What does
not fit (`batching.cut`) is carried, in order, to start the next batch.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.scorer import batching
from services.scorer.batching import Records
from services.scorer.partitions import Partitions
from shared.config import ScorerSettings


class Poller:
    def __init__(self, cfg: ScorerSettings, partitions: Partitions) -> None:
        self.cfg = cfg
        self.partitions = partitions
        self.consumer: AIOKafkaConsumer | None = None  # set once the scorer has subscribed
        self.carry: Records = {}  # polled, left for the next batch

    async def poll(self) -> Records:
        """One batch: wait up to batch_timeout for the first records, then collect more until
        the batch holds batch_max_records or more than batch_max_accounts distinct accounts,
        and cut it (`batching.cut`; what is cut off, in order, starts the next batch). Bigger
        batches under load mean each busy account is re-scored once for many signals, in one
        transaction; the account cap bounds the memory and the size of that transaction.

        While records keep arriving, it collects for up to batch_timeout_ms (a broker may
        answer each fetch with a single producer batch) and stops at the first quiet moment,
        unless the broker said it holds more than is in hand: then the scorer is catching up,
        and waiting for the next fetch makes a bigger batch.

        Nothing if a rebalance came meanwhile: records fetched before its seeks to the stored
        offsets may be among those collected, so none is used, and the consumer is put back at
        the positions the scorer adopted. Nor anything of a partition the consumer was given
        but the scorer has not yet adopted (its offsets are still being read)."""
        consumer = self.consumer
        assert consumer is not None
        limit, cap = self.cfg.batch_max_records, self.cfg.batch_max_accounts
        generation = self.partitions.generation
        batch, self.carry = self.carry, {}
        if not batch:
            batch = await consumer.getmany(timeout_ms=self.cfg.batch_timeout_ms, max_records=limit)
        total = batching.count(batch)
        accounts = {record.key for records in batch.values() for record in records}
        deadline = time.monotonic() + self.cfg.batch_timeout_ms / 1000
        while (
            batch
            and total < limit
            and len(accounts) <= cap
            and (left := deadline - time.monotonic()) > 0
        ):
            behind = batching.behind(batch, self.partitions.prepared, consumer.highwater)
            more = await consumer.getmany(
                timeout_ms=max(int(left * 1000), 1) if behind else 2, max_records=limit - total
            )
            if not more:
                break
            for tp, records in more.items():
                batch.setdefault(tp, []).extend(records)
                accounts.update(record.key for record in records)
                total += len(records)
        if self.partitions.generation != generation:
            owned = self.partitions.owned()
            seek(consumer, {tp: self.partitions.prepared[tp] for tp in owned})
            return {}
        # records of a partition taken but not yet adopted: adopt() seeks it to its stored
        # offset, and they are read again from there (carried, they would skip that seek)
        batch = {tp: records for tp, records in batch.items() if tp in self.partitions}
        taken, self.carry = batching.cut(batch, cap)
        return taken


def seek(consumer: AIOKafkaConsumer, positions: Mapping[TopicPartition, int]) -> None:
    """Put the consumer at these offsets."""
    for tp, offset in positions.items():
        consumer.seek(tp, offset)

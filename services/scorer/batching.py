"""How the scorer cuts what it polls into batches: pure functions over {partition: records}.

A record is anything with `.key` (the account id's bytes) and `.offset`; an account's records
all come from one partition. Nothing here does I/O or reads a clock, so the tests call these
functions directly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import TopicPartition

Records = dict[TopicPartition, list[Any]]


def count(records: Records) -> int:
    return sum(len(rs) for rs in records.values())


def onward(records: list[Any], start: int | None) -> tuple[list[Any], int]:
    """(kept, dropped): the records at or after `start` (the partition's next offset to
    prepare; None: anything) whose offsets keep rising. A batch is collected from several
    fetches, and a consumer may hand out records again: what it hands out again is stored
    already, or in this batch. (A poll that spans a rebalance is voided before this: records
    fetched before a seek would otherwise start past `start`.)"""
    kept: list[Any] = []
    for record in records:
        if start is None or record.offset >= start:
            kept.append(record)
            start = record.offset + 1
    return kept, len(records) - len(kept)


def cut(polled: Records, cap: int) -> tuple[Records, Records]:
    """(taken, carried): keep a batch within `cap` distinct accounts, taking whole partitions'
    records while they fit. Records are interleaved in time, so a prefix of a partition already
    holds most of its accounts with only a few signals each. A partition that does not fit
    waits, whole, for the next batch (it comes first there); only one that does not fit alone
    is cut, at the first record of an account beyond the cap. What is carried keeps its order."""
    accounts: set[bytes | None] = set()
    taken: Records = {}
    carried: Records = {}
    for tp, records in polled.items():
        keys = {record.key for record in records}
        if len(accounts | keys) <= cap:
            taken[tp] = records
            accounts |= keys
            continue
        end = 0
        if not taken:  # this partition alone has more accounts than the cap
            while records[end].key in accounts or len(accounts) < cap:
                accounts.add(records[end].key)
                end += 1
            taken[tp] = records[:end]
        carried[tp] = records[end:]
    return taken, carried


def behind(
    in_hand: Records,
    positions: Mapping[TopicPartition, int | None],
    highwater: Callable[[TopicPartition], int | None],
) -> bool:
    """Whether the broker's last fetch answer reported records past those in hand (or past
    `positions`, where the next read starts, for partitions with nothing in hand)."""
    for tp, position in positions.items():
        records = in_hand.get(tp)
        end = records[-1].offset + 1 if records else position or 0
        mark = highwater(tp)
        if mark is not None and mark > end:
            return True
    return False


def halves(records: Records) -> tuple[Records, Records]:
    """Two batches that together are `records`, each partition's records still in order and the
    first half's before the second's: half the partitions each, or, for one partition, the two
    halves of its records. Isolating a poison record by halving takes log2(n) steps."""
    tps = [tp for tp, rs in records.items() if rs]
    if len(tps) > 1:
        middle = len(tps) // 2
        return {tp: records[tp] for tp in tps[:middle]}, {tp: records[tp] for tp in tps[middle:]}
    if not tps:
        return {}, {}
    (tp,) = tps
    middle = len(records[tp]) // 2
    return {tp: records[tp][:middle]}, {tp: records[tp][middle:]}

"""Back-test work split by account over processes: each part replays its own accounts' facts.

An account's samples and lead time depend on its facts alone, so the accounts can be cut into
parts (by a digest of their id) and scored in parallel. The parts run in forked processes,
which see this process's memory as it is (the loaded events are not copied or pickled on the
way in); only their results come back. Where fork is not available, or with one part, the work
runs here.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from shared.event_files import EventLog

T = TypeVar("T")

_JOBS: Sequence[Callable[[], Any]] = ()


def default_parts() -> int:
    """One part per core this process may use, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, 8))


def split(events: EventLog, parts: int) -> list[EventLog]:
    """The events cut into `parts` by account (a stable digest of the id)."""
    if parts <= 1:
        return [events]
    facts: list[list[Any]] = [[] for _ in range(parts)]
    part_of: dict[str, int] = {}
    for fact in events.facts:
        i = part_of.get(fact.account_id)
        if i is None:
            i = part_of[fact.account_id] = zlib.crc32(fact.account_id.encode()) % parts
        facts[i].append(fact)
    return [dataclasses.replace(events, facts=chosen) for chosen in facts]


def _run(i: int) -> Any:
    return _JOBS[i]()


def run(jobs: Sequence[Callable[[], T]]) -> list[T]:
    """Every job's result, in order; the jobs run in parallel in forked processes."""
    global _JOBS
    if len(jobs) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [job() for job in jobs]
    _JOBS = jobs
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(len(jobs), mp_context=context) as pool:
            return list(pool.map(_run, range(len(jobs))))
    finally:
        _JOBS = ()

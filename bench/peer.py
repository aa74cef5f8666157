"""Peer: the scorer against Quix Streams doing the core of the same job, on the same broker, in
the same run.

The peer (bench/peer_quix.py, in the virtual environment `make bench-peer` makes: Quix
Streams' own wheels) folds each signal into its account's state in Quix's RocksDB state store
with the scorer's own fold and model evaluation, and produces the account's scores to a topic;
at least once (the local broker has no transactions, which Quix's exactly-once needs). The
scorer does all it does: state, scores, explanations derivable, history, change events and
offsets in one PostgreSQL transaction a batch, exactly once.

Two workloads of the same signals (2,000 simulated accounts over 10 days, as bench/scorer.py):
- hot: as simulated, each account's signals one after another in its partition (state read
  once, then in the cache / RocksDB's memtable);
- cold: each signal renamed to an account of its own (every signal a state miss and a new
  account: for the scorer, a PostgreSQL read that finds nothing and a new row).
Each workload runs ROUNDS rounds of the peer followed by the scorer (from an empty database),
both consuming the whole topic from the start with a group of their own. The scorer's rate
runs from its first signal in hand to the commit that covers the last; the peer's, from its
first signal processed to its last, leaving out its final checkpoint's commit (in the peer's
favour; the time to `run`'s return is printed beside it). The ratio is the median of
the rounds' scorer/peer ratios. BENCH_PYSPY=FOLDER samples both (bench/common.py `profiled`).
Last line: {"bench": "peer", "hot_ratio": ..., "cold_ratio": ..., ...}
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from statistics import median

from common import infrastructure, own_group, own_topic, profiled, report, run
from scorer import SCORER_TABLES, catch_up
from sqlalchemy import text

from shared.config import Settings
from shared.db import create_engine
from shared.events import Signal, encode_signal
from shared.ops import STREAM_YOUNG_GC_THRESHOLD, settle_heap
from tests.support.kafka_io import produce
from tests.support.signals import simulated_signals

ROOT = Path(__file__).resolve().parents[1]
PEER_PYTHON = Path(os.environ.get("PEER_PYTHON", ROOT / ".venv-peer" / "bin" / "python"))
ROUNDS = 3


def renamed(signals: list[Signal]) -> list[Signal]:
    """Each signal an account of its own."""
    return [s.model_copy(update={"account_id": f"cold-{i:07d}"}) for i, s in enumerate(signals)]


def peer(settings: Settings, name: str, total: int, round_: int) -> float:
    """The peer's signals/s on the workload's topic, with a consumer group of its own."""
    topic = settings.kafka.topics.signals
    process = subprocess.Popen(
        [str(PEER_PYTHON), str(ROOT / "bench" / "peer_quix.py"), settings.kafka.bootstrap_servers,
         topic, str(total), str(settings.scorer.model_path), f"{topic}-{round_}"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with profiled(f"{name}-peer-{round_}", process.pid):
        out, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"the peer failed ({process.returncode}):\n{err[-3000:]}")
    rates = json.loads(out.splitlines()[-1])
    print(f"    peer {rates['eps']:,.0f}/s to its last signal processed,"
          f" {rates['eps_to_return']:,.0f}/s to its shutdown", file=sys.stderr)  # fmt: skip
    return float(rates["eps"])


async def scorer(settings: Settings, name: str, total: int, round_: int) -> float:
    """The scorer's signals/s on the workload's topic, from an empty database."""
    engine = create_engine(settings.database)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {', '.join(SCORER_TABLES)}"))
        own = own_group(settings, str(round_))
        with profiled(f"{name}-scorer-{round_}"):
            rate, _, stop, task = await catch_up(own, engine, total)
        stop.set()
        await task
        return rate
    finally:
        await engine.dispose()


async def main() -> None:
    if not PEER_PYTHON.exists():
        raise SystemExit(f"no peer environment at {PEER_PYTHON}: `make bench-peer` makes it")
    signals = simulated_signals(2000, 10, seed=3)
    figures: dict[str, object] = {"bench": "peer", "signals": len(signals)}
    with infrastructure() as base:
        settle_heap(STREAM_YOUNG_GC_THRESHOLD)  # as `healthscore scorer` does once started
        for name, stream in (("hot", signals), ("cold", renamed(signals))):
            settings = own_topic(base, name)
            total = await produce(
                settings,
                settings.kafka.topics.signals,
                [(s.account_id.encode(), encode_signal(s)) for s in stream],
            )
            peers, ours = [], []
            for round_ in range(ROUNDS):
                peers.append(await asyncio.to_thread(peer, settings, name, total, round_))
                ours.append(await scorer(settings, name, total, round_))
                print(f"  {name} round {round_ + 1}: scorer {ours[-1]:,.0f}/s,"
                      f" peer {peers[-1]:,.0f}/s", file=sys.stderr)  # fmt: skip
            figures[f"{name}_scorer_eps"] = round(median(ours))
            figures[f"{name}_peer_eps"] = round(median(peers))
            figures[f"{name}_ratio"] = round(
                median(o / p for o, p in zip(ours, peers, strict=True)), 3
            )
    report(figures)


if __name__ == "__main__":
    run(main)

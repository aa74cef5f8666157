"""The peer: Quix Streams doing the core of the scorer's job, run by bench/peer.py in a virtual
environment of its own (Quix Streams and its librdkafka and RocksDB wheels, with this
repository on the path).

It consumes the signals topic named on the command line with a consumer group of its own,
from the earliest offset, and for each signal, in a stateful step keyed by account (Quix's
RocksDB state store, with its changelog topic): reads the account's state, folds the signal
in with the scorer's own `AccountState.apply` (de-duplication included), evaluates the
scorer's model with its own `evaluate`, stores the state back, and produces the account's
scores to an output topic. At least once: the local broker has no transactions, and Quix's
exactly-once needs them. It does not do what the scorer does beyond that: no explanation,
history, change events, overrides or news, and nothing in PostgreSQL.

argv: broker address, topic, signals expected, model path, consumer group. Prints one JSON
line: the signals/s from the first signal processed to the last (and to `run`'s return, after
the last checkpoint's commit and the shutdown).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

import msgspec
from quixstreams import Application, State
from quixstreams.state.rocksdb import RocksDBOptions

from shared.events import decode_signal
from shared.scoring.engine import evaluate
from shared.scoring.model import load_model
from shared.scoring.seen import DedupPolicy, SeenIds
from shared.scoring.state import AccountState, Fact

broker, topic, count, model_path, group = sys.argv[1:6]
expected = int(count)
model = load_model(Path(model_path))
dedup = DedupPolicy()
first: list[float] = []
last = [0.0]


def fold(raw: bytes, state: State) -> dict[str, Any]:
    """One signal into its account's state; the account's scores after it."""
    if not first:
        first.append(time.perf_counter())
    signal = decode_signal(raw)
    stored = state.get("account")
    if stored is None:
        account = AccountState()
    else:
        body, digests, ingested = stored
        account = AccountState.from_bytes(body)
        account.memory = SeenIds(bytearray(digests), array("I", ingested))
    fact = Fact.from_signal(signal)
    account.apply(model, fact, dedup)
    account.memory.unstored = {}
    evaluation = evaluate(model, account, fact.t, {}, ())
    memory = account.memory
    state.set("account", (account.to_bytes(), bytes(memory.digests), memory.ingested.tolist()))
    last[0] = time.perf_counter()
    return {
        "account_id": signal.account_id,
        "scores": {name: [s.score, s.band] for name, s in evaluation.scores.items()},
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="peer-quix-") as state_dir:
        app = Application(
            broker_address=broker,
            consumer_group=group,
            auto_offset_reset="earliest",
            processing_guarantee="at-least-once",
            state_dir=state_dir,
            loglevel="WARNING",
            # state values in MessagePack (Quix's default is JSON, which has no bytes)
            rocksdb_options=RocksDBOptions(
                dumps=msgspec.msgpack.encode, loads=msgspec.msgpack.decode
            ),
        )
        signals = app.topic(topic, value_deserializer="bytes", key_deserializer="bytes")
        # the local broker (tansu) describes no retention; Quix copies it to the changelog
        signals.broker_config.extra_config.setdefault("retention.ms", "-1")
        scores = app.topic(f"{topic}-peer-scores", value_serializer="json")
        frame = app.dataframe(signals)
        frame = frame.apply(fold, stateful=True)
        frame.to_topic(scores)
        app.run(count=expected, collect=False)  # returns after the checkpoint that follows
        ended = time.perf_counter()
    # to the last signal processed: its final checkpoint (and shutdown) not counted, which
    # favours the peer; the scorer's rate runs to the commit of its last batch
    print(
        json.dumps(
            {
                "signals": expected,
                "eps": expected / (last[0] - first[0]),
                "eps_to_return": expected / (ended - first[0]),
            }
        )
    )


if __name__ == "__main__":
    main()

"""Shared set-up for the benchmarks: real broker and PostgreSQL, started like the tests do.

TEST_KAFKA_BOOTSTRAP_SERVERS / TEST_DATABASE_URL point at existing ones instead. Figures are
printed as ratios against a reference measured in the same run, since these machines are noisy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.config import DatabaseSettings, KafkaSettings, Settings, TopicSettings
from shared.db import migrate
from shared.devstack import Broker, Postgres


@contextlib.contextmanager
def infrastructure(*, database: bool = True) -> Iterator[Settings]:
    workdir = Path(tempfile.mkdtemp(prefix="healthscore-bench-"))
    broker = postgres = None
    try:
        bootstrap = os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            broker = Broker(log_path=workdir / "broker.log").start()
            bootstrap = broker.bootstrap_servers
        db = DatabaseSettings()
        if database:
            postgres = Postgres(
                workdir / "pg", durable=True, log_path=workdir / "postgres.log"
            ).start()
            postgres.create_database("bench")
            db = DatabaseSettings(port=postgres.port, name="bench", pool_size=10)
            # alembic runs its own event loop: give it a thread of its own
            with ThreadPoolExecutor(1) as pool:
                pool.submit(migrate, db).result()
        tag = uuid.uuid4().hex[:8]
        topics = TopicSettings(
            usage=f"usage-{tag}",
            support=f"support-{tag}",
            billing=f"billing-{tag}",
            signals=f"signals-{tag}",
            dlq=f"dlq-{tag}",
            changes=f"changes-{tag}",
        )
        yield Settings(
            environment="test",
            kafka=KafkaSettings(
                bootstrap_servers=bootstrap, topics=topics, partitions=4, session_timeout_ms=6000
            ),
            database=db,
            ingest={"group_id": f"ingest-{tag}"},
            scorer={"group_id": f"scorer-{tag}", "sweep_interval_seconds": 3600},
        )
    finally:
        if postgres is not None:
            postgres.stop()
        if broker is not None:
            broker.stop()


def report(figures: dict[str, object]) -> None:
    """The last line of every benchmark: one JSON object."""
    print(orjson.dumps(figures).decode(), flush=True)


def run(main) -> None:  # type: ignore[no-untyped-def]
    import uvloop

    uvloop.run(main())
    asyncio.set_event_loop_policy(None)

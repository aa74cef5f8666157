"""Real infrastructure for the tests and the benchmarks: a Kafka-protocol broker and PostgreSQL.

With TEST_KAFKA_BOOTSTRAP_SERVERS / TEST_DATABASE_URL unset (CI, a fresh machine), the session
starts a tansu broker and a throwaway PostgreSQL cluster itself and stops both by PID at the
end. Every test gets its own topics, consumer groups and database (a copy of a template that is
migrated once), so tests are independent and run in any order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson
from sqlalchemy.engine import make_url

from healthscore.devstack import PG_SUPERUSER, Broker, Postgres, end_left_behind
from shared.config import DatabaseSettings, KafkaSettings, Settings, TopicSettings
from shared.db import migrate

TEMPLATE_DB = f"healthscore_template_{os.getpid()}"


@dataclass(frozen=True)
class Infra:
    bootstrap_servers: str
    database: DatabaseSettings
    postgres: Postgres | None  # set when the session started it (for restart tests)
    broker: Broker | None


@contextlib.contextmanager
def running_infrastructure(
    workdir: Path,
    *,
    durable: bool = False,
    database: bool = True,
    own: bool = False,
    server_settings: dict[str, str] | None = None,
) -> Iterator[Infra]:
    """The broker and PostgreSQL the environment names, else (or with `own`: always) ones
    started here (PostgreSQL with `server_settings`) and stopped by PID on exit. Shared by the
    test session and the benchmarks. First, what a killed run of them left is ended."""
    for what in end_left_behind():
        print(f"ended {what}, left by a run that was killed", file=sys.stderr)
    broker = postgres = None
    try:
        bootstrap = None if own else os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            broker = Broker(log_path=workdir / "broker.log").start()
            bootstrap = broker.bootstrap_servers
        url = None if own else os.environ.get("TEST_DATABASE_URL")
        settings = DatabaseSettings()
        if url:
            parsed = make_url(url)
            settings = DatabaseSettings(
                host=parsed.host or "127.0.0.1",
                port=parsed.port or 5432,
                user=parsed.username or PG_SUPERUSER,
                password=parsed.password or "",
                name=parsed.database or "postgres",
                pool_size=5,
            )
        elif database:
            postgres = Postgres(
                workdir / "pg",
                durable=durable,
                settings=server_settings or {},
                log_path=workdir / "postgres.log",
            ).start()
            settings = DatabaseSettings(port=postgres.port, name="postgres", pool_size=5)
        yield Infra(bootstrap, settings, postgres, broker)
    finally:
        if postgres is not None:
            postgres.stop()
        if broker is not None:
            broker.stop()


def isolated_settings(
    infra: Infra, tag: str, database_name: str, **sections: dict[str, object]
) -> Settings:
    """Settings with topics and consumer groups of their own (suffixed with `tag`)."""
    names = [name for name in TopicSettings.model_fields if name != "sources"]
    topics = TopicSettings(**{name: f"{name}-{tag}" for name in names})
    return Settings(
        environment="test",
        kafka=KafkaSettings(
            bootstrap_servers=infra.bootstrap_servers,
            topics=topics,
            partitions=4,
            session_timeout_ms=6000,
        ),
        database=infra.database.model_copy(update={"name": database_name}),
        ingest={"group_id": f"ingest-{tag}", **sections.get("ingest", {})},
        scorer={"group_id": f"scorer-{tag}", **sections.get("scorer", {})},
        api=sections.get("api", {}),
    )


def create_template(database: DatabaseSettings) -> None:
    import asyncio

    asyncio.run(admin_sql(database, f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}"'))
    asyncio.run(admin_sql(database, f'CREATE DATABASE "{TEMPLATE_DB}"'))
    migrate(database, name=TEMPLATE_DB)


async def connect(database: DatabaseSettings) -> Any:
    """A plain asyncpg connection to `database` (close it)."""
    import asyncpg

    return await asyncpg.connect(
        host=database.host,
        port=database.port,
        user=database.user,
        password=database.password.get_secret_value(),
        database=database.name,
    )


async def admin_sql(database: DatabaseSettings, sql: str) -> None:
    conn = await connect(database)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class Worker(Protocol):
    async def run(self, stop: asyncio.Event) -> None: ...


W = TypeVar("W", bound=Worker)


@contextlib.asynccontextmanager
async def running(worker: W) -> AsyncIterator[W]:
    """A service's worker (ingest, scorer) running in this event loop until the block ends."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def fresh_settings(infra: Infra, revision: str | None = None) -> AsyncIterator[Settings]:
    """Settings for one test: fresh topics, consumer groups and a database migrated to the
    head, or to `revision` (an earlier release's schema)."""
    tag = uuid.uuid4().hex[:10]
    db_name = f"test_{tag}"
    template = "" if revision else f' TEMPLATE "{TEMPLATE_DB}"'
    await admin_sql(infra.database, f'CREATE DATABASE "{db_name}"{template}')
    try:
        settings = isolated_settings(
            infra,
            tag,
            db_name,
            ingest={"metrics_port": 0},
            scorer={
                "metrics_port": 0,
                "batch_max_records": 1000,
                "sweep_interval_seconds": 3600,
                "relay_interval_seconds": 0.05,
            },
            api={"max_override_days": 90},
        )
        if revision:
            await asyncio.to_thread(migrate, settings.database, to=revision)
        yield settings
    finally:
        await admin_sql(infra.database, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a `healthscore` subprocess use these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHSCORE_")}
    flat: dict[str, str] = {
        "HEALTHSCORE_ENVIRONMENT": settings.environment,
        "HEALTHSCORE_LOG__FORMAT": "json",
        "HEALTHSCORE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "HEALTHSCORE_KAFKA__SESSION_TIMEOUT_MS": str(settings.kafka.session_timeout_ms),
        "HEALTHSCORE_DATABASE__HOST": settings.database.host,
        "HEALTHSCORE_DATABASE__PORT": str(settings.database.port),
        "HEALTHSCORE_DATABASE__USER": settings.database.user,
        "HEALTHSCORE_DATABASE__PASSWORD": settings.database.password.get_secret_value(),
        "HEALTHSCORE_DATABASE__NAME": settings.database.name,
    }
    for name, value in settings.kafka.topics.model_dump().items():
        flat[f"HEALTHSCORE_KAFKA__TOPICS__{name.upper()}"] = _env_value(value)
    for section in ("ingest", "scorer"):
        for name, value in getattr(settings, section).model_dump().items():
            if value is not None:
                flat[f"HEALTHSCORE_{section.upper()}__{name.upper()}"] = _env_value(value)
    env.update(flat)
    return env


def _env_value(value: object) -> str:
    return orjson.dumps(value).decode() if isinstance(value, list | dict) else str(value)


def with_sources(settings: Settings, formats: list[str], **ingest: object) -> Settings:
    """`settings` with one more raw topic per format (named after it, with the test's suffix),
    and these ingest options."""
    topics = settings.kafka.topics
    tag = topics.usage.removeprefix("usage-")
    sources = {f"{fmt.replace(':', '-')}-{tag}": fmt for fmt in formats}
    kafka = settings.kafka.model_copy(
        update={"topics": topics.model_copy(update={"sources": sources})}
    )
    return settings.model_copy(
        update={"kafka": kafka, "ingest": settings.ingest.model_copy(update=ingest)}
    )


def source_topic(settings: Settings, fmt: str) -> str:
    """The raw topic `with_sources` gave format `fmt`."""
    return next(t for t, f in settings.kafka.topics.sources.items() if f == fmt)


@contextlib.contextmanager
def ingest_process(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    """A `healthscore ingest` process on these settings; on leaving, it must stop cleanly
    on SIGTERM."""
    proc = subprocess.Popen(
        healthscore_argv("ingest"),
        env=settings_env(settings),
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        assert proc.returncode == 0, "ingest did not stop cleanly on SIGTERM"


def healthscore_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "healthscore", *args]


def run_cli(settings: Settings, *args: str, timeout: float = 120) -> str:
    result = subprocess.run(
        healthscore_argv(*args),
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout

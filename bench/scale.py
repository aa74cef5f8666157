"""Scale: one million accounts of generated state and history, and what that does to the scorer,
the sweep, the API and PostgreSQL.

1. Builds the database directly (no broker): 2,000 simulated accounts are folded and scored
   with the scorer's own code at eight times over 56 days (so each has the history the scorer
   writes), then copied by SQL into BENCH_SCALE_ACCOUNTS accounts (default 1,000,000), each
   on the partition ingest's producer would choose for its id, with its next review spread
   over the model's review interval as in a running system; then VACUUM ANALYZE.
2. Catch-up with the state cache missing and hitting: the same 100,000 signals, once spread
   over all accounts (nearly every account a cache miss, read back from PostgreSQL) and once
   over 2,000 accounts (cache hits after each one's first), each consumed by a scorer from
   the start of its topic, signals/s committed, against a plain consume+decode of that topic
   in the same run.
3. Model switch: a `healthscore scorer` process started with a changed model re-scores every
   account from stored state (the sweep), while a producer keeps 500 signals/s flowing; the
   time until none is left due and every score has the new version; its peak RSS; where the
   CPU went meanwhile (`rescore_cores`: the scorers', PostgreSQL's and the whole machine's busy
   cores on average, from /proc; PostgreSQL's only when it runs here); the sweep's
   time per run of `sweep_batch_size` accounts, and of a run with nothing due; the scorer's
   gauge refresh (band counts over every score). Then a second switch, by two scorer processes
   sharing the partitions (one a core: how the design grows), `*_two_scorers`.
4. API at 1M, its health cache off: `GET .../health` of random accounts, and four filtered,
   sorted account lists, each under wrk with 8 connections for 10 s; p50/p99 (`api_list_p99_ms`
   is the slowest list's).
5. PostgreSQL bytes per account: state (the accounts and account_states tables), current
   scores, the de-duplication memory apart (seen_signals), history per month of activity.
The bench's own PostgreSQL is started sized as production would be (`server_settings`):
shared_buffers a quarter of memory (reported as the server has it), checkpoints up to 30 min
apart, full-page images in the WAL compressed with zstd (BENCH_WAL_COMPRESSION=off compares).
BENCH_SCALE_PHASES (default "api,catchup,switch") runs a part of 2-4, e.g. "catchup" while
profiling the cold path ("switch2": the two scorers' switch alone). The cold catch-up also
reports where its CPU went (`cold_cpu_us`: the scorer's and PostgreSQL's microseconds of CPU a
signal) and what its WAL holds, by relation (`cold_wal`: record and full-page-image bytes a
signal), read with the server's pg_waldump; BENCH_PG_STATEMENTS adds PostgreSQL's time per
statement (pg_stat_statements); BENCH_PYSPY samples the catch-ups and the switches' scorers.
Last line: {"bench": "scale", "accounts": N, "rescore_all_seconds": ..., ...}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import yaml
from api import run_wrk, serve
from common import (
    cpu_seconds,
    infrastructure,
    machine_busy_seconds,
    own_topic,
    peak_rss_mb,
    profiled,
    report,
    run,
    tree_cpu_seconds,
    wal_by_relation,
)
from prometheus_client import CollectorRegistry
from scorer import STEADY_PRODUCER, catch_up, raw_consume
from sqlalchemy.ext.asyncio import AsyncEngine

from healthscore.devstack import spawn
from services.api.auth import hash_token
from services.scorer import memory, portfolio, store
from services.scorer.imports import partition_of
from shared.config import DEFAULT_MODEL_PATH, Settings
from shared.db import create_engine
from shared.events import Signal, encode_signal
from shared.kafka import ensure_topics
from shared.ops import STREAM_YOUNG_GC_THRESHOLD, settle_heap
from shared.scoring.model import load_model
from tests.support.infra import connect, settings_env
from tests.support.kafka_io import produce
from tests.support.signals import score_and_store, simulated_signals, switch_model

ACCOUNTS = int(os.environ.get("BENCH_SCALE_ACCOUNTS", "1000000"))
TEMPLATES = 2_000
DAYS = 56
STREAM = 100_000
STEADY_RATE = 500
PHASES = set(os.environ.get("BENCH_SCALE_PHASES", "api,catchup,switch").split(","))
STATEMENTS = bool(os.environ.get("BENCH_PG_STATEMENTS"))
ID_FORMAT = "acct-%07d"
# what the build copies from the templates to every account
TABLES = ("accounts", "account_states", "seen_signals", "scores", "score_history")
ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"
SCORER_METRICS_PORT = 19102
LISTS = {  # filtered and sorted account lists, a page of 50
    "band": "/v1/accounts?band=at_risk&sort=score",
    "tier_band": "/v1/accounts?tier=enterprise&band=at_risk&sort=change",
    "industry_region": "/v1/accounts?industry=retail&region=emea&sort=-score",
    "score_range": "/v1/accounts?sort=-change&min_score=20&max_score=60",
}


def server_settings() -> dict[str, str]:
    """PostgreSQL sized as a production server for this data would be (docs/scaling.md):
    a quarter of memory for shared buffers, checkpoints far enough apart that each page's
    first write after one (a full-page image in the WAL) is not most of the writing, and
    those images compressed (BENCH_WAL_COMPRESSION, default zstd; "off" to compare)."""
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    settings = {
        "shared_buffers": f"{memory // 4 // 2**20}MB",
        "max_wal_size": "16GB",
        "checkpoint_timeout": "30min",
        "wal_compression": os.environ.get("BENCH_WAL_COMPRESSION", "zstd"),
    }
    if STATEMENTS:
        settings["shared_preload_libraries"] = "pg_stat_statements"
    return settings


async def statements(settings: Settings, signals: int, reset: bool = False) -> dict[str, object]:
    """With BENCH_PG_STATEMENTS set: PostgreSQL's time per statement (pg_stat_statements), in
    microseconds a signal, the costliest first; `reset` starts counting afresh."""
    if not STATEMENTS:
        return {}
    conn = await connect(settings.database)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        if reset:
            await conn.execute("SELECT pg_stat_statements_reset()")
            return {}
        rows = await conn.fetch(
            "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 60) AS q,"
            " sum(total_exec_time) AS t FROM pg_stat_statements GROUP BY 1 ORDER BY 2 DESC"
            " LIMIT 8"
        )
    finally:
        await conn.close()
    return {r["q"]: round(r["t"] * 1000 / signals) for r in rows}


async def scanned(settings: Settings) -> None:
    """The phase's partitions as a running system's are: every account scored by the models
    served, as the scorer records once a scan is done. (A new consumer group on a database of
    a million accounts would otherwise begin by reading every score; a running one does that
    only after a model switch.)"""
    from services.scorer.metrics import ScorerMetrics
    from services.scorer.serving import ModelSet, configured

    models = ModelSet(
        settings.scorer, ScorerMetrics(CollectorRegistry()), configured(settings.scorer)
    )
    conn = await connect(settings.database)
    try:
        await conn.executemany(
            "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset, updated_at,"
            " store_format, models_scanned) VALUES ($1, $2, $3, 0, now(), 3, $4)"
            " ON CONFLICT DO NOTHING",
            [
                (settings.scorer.group_id, settings.kafka.topics.signals, p, models.fingerprint())
                for p in range(settings.kafka.partitions)
            ],
        )
    finally:
        await conn.close()


# --- 1. the database --------------------------------------------------------------------------


async def build(settings: Settings, engine: AsyncEngine) -> tuple[list[Signal], list[str], float]:
    """The templates scored and stored, then copied into ACCOUNTS accounts. Returns the
    templates' signals, their ids (in template order) and the seconds the build took."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    signals = [  # each ingested as it happened: the memory holds the last 48 hours' ids
        s.model_copy(update={"ingested_at": s.occurred_at + timedelta(seconds=2)})
        for s in simulated_signals(TEMPLATES, DAYS, seed=21, end=now - timedelta(hours=1))
    ]
    at = [now - timedelta(days=d) for d in (56, 49, 42, 35, 28, 21, 14, 7, 0)]
    # the memory's periods, as a running scorer keeps them
    await memory.maintain(engine, now, settings.scorer.dedup_horizon_hours * 3600)
    templates = await score_and_store(engine, signals, at)
    print(f"  {TEMPLATES:,} templates scored at {len(at)} times", flush=True)
    partitions = settings.kafka.partitions
    review_seconds = 6 * 3600  # the default model's review_every_hours
    rng = random.Random(21)
    ids = [
        (
            number,
            ID_FORMAT % number,
            templates[number % TEMPLATES],
            partition_of(ID_FORMAT % number, partitions),
            now + timedelta(seconds=rng.uniform(0, review_seconds)),
        )
        for number in range(ACCOUNTS)
    ]
    conn = await connect(settings.database)
    try:
        for table in TABLES:
            await conn.execute(f"CREATE TABLE template_{table} AS SELECT * FROM {table}")
            await conn.execute(f"TRUNCATE {table}")
        await conn.execute(
            "CREATE UNLOGGED TABLE scale_ids (number INTEGER, account_id VARCHAR, template"
            " VARCHAR, partition INTEGER, next_review_at TIMESTAMPTZ)"
        )
        await conn.copy_records_to_table("scale_ids", records=ids)
        await conn.execute("CREATE INDEX ON scale_ids (number)")
        await conn.execute("ANALYZE scale_ids")
        columns = {
            table: [
                r["column_name"]
                for r in await conn.fetch(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = $1"
                    " AND column_name <> 'id' ORDER BY ordinal_position",
                    table,
                )
            ]
            for table in TABLES
        }
    finally:
        await conn.close()
    replaced = {
        "accounts": {"account_id": "s.account_id", "partition": "s.partition"},
        "account_states": {
            "account_id": "s.account_id",
            "partition": "s.partition",
            "next_review_at": "s.next_review_at",
        },
        "seen_signals": {"account_id": "s.account_id"},
        "scores": {"account_id": "s.account_id"},
        "score_history": {"account_id": "s.account_id"},
    }

    async def copy(low: int, high: int) -> None:
        conn = await connect(settings.database)
        try:
            for table, names in columns.items():
                values = ", ".join(replaced[table].get(c, f"t.{c}") for c in names)
                await conn.execute(
                    f"INSERT INTO {table} ({', '.join(names)}) SELECT {values}"
                    f" FROM scale_ids s JOIN template_{table} t ON t.account_id = s.template"
                    f" WHERE s.number >= {low} AND s.number < {high}"
                )
        finally:
            await conn.close()

    step = 50_000
    chunks = [(low, min(low + step, ACCOUNTS)) for low in range(0, ACCOUNTS, step)]
    pending = list(chunks)

    async def worker() -> None:
        while pending:
            await copy(*pending.pop(0))
            done = len(chunks) - len(pending)
            print(f"  copied {done}/{len(chunks)} chunks", end="\r", flush=True)

    await asyncio.gather(*(worker() for _ in range(2)))  # one per core
    # what a running scorer's upkeep lets go of: memory past the horizon
    await memory.maintain(engine, now, settings.scorer.dedup_horizon_hours * 3600)
    conn = await connect(settings.database)
    try:
        await conn.execute(f"DROP TABLE {', '.join(f'template_{t}' for t in TABLES)}, scale_ids")
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CHECKPOINT")  # the build's own writes flushed before measuring
    finally:
        await conn.close()
    return signals, templates, time.perf_counter() - started


async def sizes(settings: Settings) -> dict[str, object]:
    conn = await connect(settings.database)
    try:
        row = await conn.fetchrow(
            "SELECT pg_total_relation_size('accounts') AS profiles,"
            " pg_total_relation_size('account_states') AS states,"
            " pg_total_relation_size('scores') AS scores,"
            " (SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
            "  WHERE inhparent = 'seen_signals'::regclass)::bigint AS seen,"  # partitioned
            " (SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
            "  WHERE inhparent = 'score_history'::regclass)::bigint AS history,"  # partitioned
            " (SELECT count(*) FROM score_history) AS history_rows,"
            " pg_database_size(current_database()) AS database,"
            # the server's own: one that TEST_DATABASE_URL names keeps its settings
            " current_setting('shared_buffers') AS shared_buffers"
        )
    finally:
        await conn.close()
    months = DAYS / 30.44
    state = row["profiles"] + row["states"]
    return {
        "state_bytes_per_account": round(state / ACCOUNTS),
        "scores_bytes_per_account": round(row["scores"] / ACCOUNTS),
        # the de-duplication memory, apart from the state (~8 bytes an id of the horizon)
        "seen_bytes_per_account": round(row["seen"] / ACCOUNTS),
        "history_bytes_per_account_month": round(row["history"] / ACCOUNTS / months),
        "history_rows_per_account_month": round(row["history_rows"] / ACCOUNTS / months, 2),
        # state + current scores, as every release has counted it
        "bytes_per_account": round((state + row["scores"]) / ACCOUNTS),
        "database_gb": round(row["database"] / 1e9, 2),
        "shared_buffers": row["shared_buffers"],
    }


# --- 2. catch-up, cache missing and hitting -------------------------------------------------


def streams(signals: list[Signal], templates: list[str]) -> dict[str, list[Signal]]:
    """The last STREAM of the templates' signals, made fresh, sent to copies of their
    template: any of its copies (cold: across all accounts) or its first copy (hot)."""
    index = {account_id: i for i, account_id in enumerate(templates)}
    rng = random.Random(5)
    copies = ACCOUNTS // TEMPLATES
    now = datetime.now(UTC)
    out: dict[str, list[Signal]] = {"cold": [], "hot": []}
    for n, source in enumerate(signals[-STREAM:]):
        template = index[source.account_id]
        at = now - timedelta(seconds=60) + timedelta(microseconds=n)
        for name, copy in (("cold", rng.randrange(copies)), ("hot", 0)):
            account = ID_FORMAT % (template + TEMPLATES * copy)
            out[name].append(
                source.model_copy(
                    update={
                        "signal_id": f"{name}-{n}",
                        "account_id": account,
                        "occurred_at": at,
                        "ingested_at": at,
                    }
                )
            )
    return out


async def wal_lsn(settings: Settings) -> str:
    conn = await connect(settings.database)
    try:
        return str(await conn.fetchval("SELECT pg_current_wal_lsn()::text"))
    finally:
        await conn.close()


def wal_bytes(start: str, end: str) -> int:
    """Bytes of WAL between two LSNs as PostgreSQL writes them (`X/Y`)."""
    high, low = (int(part, 16) for part in end.split("/"))
    high0, low0 = (int(part, 16) for part in start.split("/"))
    return ((high << 32) + low) - ((high0 << 32) + low0)


async def wal_breakdown(
    settings: Settings, start: str, end: str, signals: int
) -> dict[str, object]:
    """The WAL of a catch-up by relation, in bytes a signal (records, full-page images)."""
    conn = await connect(settings.database)
    try:
        directory = await conn.fetchval("SHOW data_directory")
        names = {
            int(r["relfilenode"]): r["relname"]
            for r in await conn.fetch(
                "SELECT c.relfilenode, coalesce(t.relname || ' (toast)', c.relname) AS relname"
                " FROM pg_class c LEFT JOIN pg_class t ON t.reltoastrelid = c.oid"
                " WHERE c.relfilenode <> 0"
            )
        }
    finally:
        await conn.close()
    found = await asyncio.to_thread(wal_by_relation, directory, start, end, names)
    return {
        name: {
            "records": round(f["record_bytes"] / signals),
            "fpi": round(f["fpi_bytes"] / signals),
        }
        for name, f in list(found.items())[:12]
    }


async def catch_ups(
    settings: Settings, engine: AsyncEngine, stream: dict[str, list[Signal]]
) -> dict[str, dict[str, object]]:
    """Each stream's scorer signals/s, raw consume+decode signals/s, WAL bytes a signal, the
    scorer's and PostgreSQL's CPU a signal, and the WAL by relation (cold only)."""
    rates = {}
    postgres = await postmaster_pid(settings)
    for name in ("hot", "cold"):
        own = own_topic(settings, name)
        await scanned(own)
        total = await produce(
            own,
            own.kafka.topics.signals,
            [(s.account_id.encode(), encode_signal(s)) for s in stream[name]],
        )
        raw = await raw_consume(own, total)
        await statements(settings, total, reset=True)
        start = await wal_lsn(settings)
        cpu = (cpu_seconds(os.getpid()), tree_cpu_seconds(postgres) if postgres else 0.0)
        with profiled(f"catchup-{name}"):
            rate, _, stop, task = await catch_up(own, engine, total)
        scorer_us = (
            (cpu_seconds(os.getpid()) - cpu[0]) / total * 1e6
        )  # this process: the bench's polls too
        postgres_us = (tree_cpu_seconds(postgres) - cpu[1]) / total * 1e6 if postgres else None
        stop.set()
        await task
        end = await wal_lsn(settings)
        wal_per_signal = wal_bytes(start, end) / total
        figures: dict[str, object] = {
            "rate": rate,
            "raw": raw,
            "wal": wal_per_signal,
            "cpu_us": {"scorer": round(scorer_us), "postgres": postgres_us and round(postgres_us)},
        }
        if name == "cold":
            figures["wal_by_relation"] = await wal_breakdown(settings, start, end, total)
            figures["statements"] = await statements(settings, total)
        rates[name] = figures
        print(
            f"  {name}: scorer {rate:,.0f}/s, raw consume {raw:,.0f}/s,"
            f" {wal_per_signal:,.0f} bytes of WAL a signal, CPU µs a signal {figures['cpu_us']}",
            flush=True,
        )
    return rates


# --- 3. a model switch re-scores every account ----------------------------------------------


def switched_model(workdir: Path, shift: float) -> Path:
    """The default model with churn risk's group weights moved by `shift`: a new version."""
    model = yaml.safe_load(DEFAULT_MODEL_PATH.read_text())
    groups = model["objectives"]["churn_risk"]["groups"]
    groups["usage"], groups["support"] = groups["usage"] - shift, groups["support"] + shift
    path = workdir / f"switched-{shift}.yaml"
    path.write_text(yaml.safe_dump(model))
    return path


async def count(settings: Settings, sql: str, *args: object) -> int:
    conn = await connect(settings.database)
    try:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


async def rescore_all(
    settings: Settings, engine: AsyncEngine, signals: list[Signal], model: Path, scorers: int
) -> dict[str, object]:
    """The model switch to `model` by `scorers` processes, sharing the partitions."""
    own = own_topic(settings, "steady")
    await ensure_topics(own.kafka, [own.kafka.topics.signals])
    env = settings_env(own)
    # the steady stream: the cold stream's signals again, made fresh by the producer (and new
    # to the scorer: ids of this run's own)
    lines = b"\n".join(
        encode_signal(s.model_copy(update={"signal_id": f"steady-{scorers}-{i}"}))
        for i, s in enumerate(
            (signals * (STEADY_RATE * 1800 // len(signals) + 1))[: STEADY_RATE * 1800]
        )
    )
    logs = Path(tempfile.gettempdir()) / "healthscore-bench-scale"
    logs.mkdir(exist_ok=True)
    with tempfile.TemporaryFile() as feed:  # what the producer reads, as its stdin
        feed.write(lines)
        feed.seek(0)
        producer = spawn(
            "steady-producer",
            [sys.executable, "-c", STEADY_PRODUCER.replace("{rate}", str(STEADY_RATE))],
            log_path=logs / "producer.log",
            env=env,
            cwd=ROOT,
            stdin=feed,
        )
    await switch_model(engine, load_model(model))  # the scorers follow it from the database
    postgres = await postmaster_pid(settings)
    cpu_before = (tree_cpu_seconds(postgres) if postgres else 0.0, machine_busy_seconds())
    started = time.perf_counter()
    ports = [SCORER_METRICS_PORT + n for n in range(scorers)]
    scorers_started = [
        spawn(
            f"scorer-{n}",
            [sys.executable, "-m", "healthscore", "scorer"],
            log_path=logs / f"scorer-{n}.log",
            env={
                **env,
                "HEALTHSCORE_SCORER__METRICS_PORT": str(port),
                "HEALTHSCORE_LOG__LEVEL": "WARNING",
            },
            cwd=ROOT,
        )
        for n, port in enumerate(ports)
    ]
    print(f"  scorer and producer logs in {logs}")
    processes = [started.process for started in scorers_started]
    profiling = contextlib.ExitStack()
    for n, process in enumerate(processes):
        profiling.enter_context(profiled(f"switch-{scorers}-{n}", process.pid))
    old_sql = "SELECT count(*) FROM scores WHERE model_version <> $1"
    version = model_version(model)
    scheduled, swept = (  # re-scored for the model change; for any reason (a sweep of time too)
        "healthscore_scorer_model_change_accounts_total",
        "healthscore_scorer_sweep_rescored_total",
    )
    try:
        # the scorer looks for accounts of another model a window at a time and re-scores
        # them, between batches. Followed on its metrics (a count in PostgreSQL would
        # take a core from what is measured), then confirmed by a scan of every score
        last_scheduled, quiet_since, counts = 0.0, time.perf_counter(), [0.0]
        while True:
            assert all(p.poll() is None for p in processes), "a scorer died"
            elapsed = time.perf_counter() - started
            assert elapsed < 1800, f"not done after 30 minutes: {counts[-1]:,.0f} swept"
            figures = scrape(ports)
            if (now_scheduled := metric(figures, scheduled)) != last_scheduled:
                last_scheduled, quiet_since = now_scheduled, time.perf_counter()
            counts.append(metric(figures, swept))
            # the scan is over and re-scoring has run dry (accounts falling due with time alone
            # are ~50/s; a scan or a sweep with a backlog does thousands): confirm in PostgreSQL
            dry = len(counts) > 4 and counts[-1] - counts[-4] < 1000
            settled = now_scheduled and dry and time.perf_counter() - quiet_since > 3
            if settled and await count(settings, old_sql, version) == 0:
                break
            print(
                f"  {elapsed:4.0f} s: {now_scheduled:,.0f} re-scored for the model,"
                f" {metric(figures, swept):,.0f} in all",
                end="\r",
                flush=True,
            )
            await asyncio.sleep(1)
        seconds = time.perf_counter() - started
        rss_mb = max(peak_rss_mb(p.pid) for p in processes)
        cores = {  # where the machine's CPU went, in cores busy on average
            "scorers": sum(cpu_seconds(p.pid) for p in processes) / seconds,
            "postgres": (tree_cpu_seconds(postgres) - cpu_before[0]) / seconds
            if postgres
            else None,
            "machine": (machine_busy_seconds() - cpu_before[1]) / seconds,
        }
        metrics = scrape(ports)
    finally:
        profiling.close()
        for started in scorers_started:
            started.signal(signal.SIGTERM)
        for started in scorers_started:
            started.stop(timeout=60)
        producer.stop(timeout=0)  # it may have sent all it had
    sweeps = metric(metrics, "healthscore_scorer_sweep_runs_total")
    return {
        "rescore_all_seconds": round(seconds, 1),
        "rescore_accounts_per_second": round(ACCOUNTS / seconds),
        "rss_mb": round(rss_mb),
        # `machine` less the other two: the steady stream's producer, the broker, this bench
        "rescore_cores": {k: None if v is None else round(v, 2) for k, v in cores.items()},
        "sweep_seconds_per_run": round(seconds * scorers / max(sweeps, 1), 3),  # in one scorer
    }


async def postmaster_pid(settings: Settings) -> int | None:
    """PostgreSQL's postmaster, when it runs on this machine and its PID file can be read."""
    try:
        conn = await connect(settings.database)
        try:
            directory = await conn.fetchval("SHOW data_directory")
        finally:
            await conn.close()
        pid = int(Path(directory, "postmaster.pid").read_text().split()[0])
        cpu_seconds(pid)  # raises OSError unless the process is one of this machine's
    except (OSError, ValueError, IndexError, asyncpg.PostgresError):
        return None
    return pid


def model_version(path: Path) -> str:
    return load_model(path).version


def scrape(ports: list[int]) -> str:
    """The scorers' metrics, one after the other (`metric` adds up each name's samples)."""
    texts = []
    for port in ports:
        with contextlib.suppress(httpx.TransportError):  # not serving yet
            texts.append(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
    return "\n".join(texts)


def metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


async def idle_sweep_ms(settings: Settings, engine: AsyncEngine) -> float:
    """The sweep's query with nothing due, over every partition (median of 20)."""
    partitions = list(range(settings.kafka.partitions))
    times = []
    for _ in range(20):
        started = time.perf_counter()
        await store.due_for_review(engine, partitions, datetime.now(UTC) - timedelta(days=1), 2000)
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2] * 1000


async def gauges_ms(engine: AsyncEngine) -> float:
    """The scorer's gauge refresh (band counts and MRR over every score, the outbox backlog),
    which one scorer runs at least every 10 s (median of 5)."""
    times = []
    for _ in range(5):
        started = time.perf_counter()
        await portfolio.count(engine, datetime.now(UTC).date())
        await store.outbox_backlog(engine)
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2] * 1000


# --- 4. the API ---------------------------------------------------------------------------


def api_latency(settings: Settings) -> dict[str, object]:
    env = settings_env(settings)
    port = 18095
    env.update(
        HEALTHSCORE_LOG__LEVEL="WARNING",
        HEALTHSCORE_API__PORT=str(port),
        HEALTHSCORE_API__HEALTH_CACHE_MB="0",
        HEALTHSCORE_API__TOKENS=json.dumps(
            [{"name": "bench", "sha256": hash_token(TOKEN), "scopes": ["read"]}]
        ),
    )
    api = serve([sys.executable, "-m", "healthscore", "api"], env, port)
    figures: dict[str, float] = {}
    lists: dict[str, float] = {}
    try:
        for name, paths in (("health", "/v1/accounts/{account}/health"), *LISTS.items()):
            wrk_env = {
                "BENCH_TOKEN": TOKEN,
                "BENCH_PATHS": paths,
                "BENCH_ACCOUNTS": str(ACCOUNTS),
                "BENCH_ID_FORMAT": ID_FORMAT,
            }
            run_wrk(port, "wrk_paths.lua", wrk_env, 3, 8, name)  # warm-up
            rps, p50, p99 = run_wrk(port, "wrk_paths.lua", wrk_env, 10, 8, name)
            if name == "health":
                figures |= {
                    "api_health_rps": round(rps),
                    "api_health_p50_ms": round(p50, 1),
                    "api_health_p99_ms": round(p99, 1),
                }
            else:
                lists[name] = round(p99, 1)
            print(f"  {name}: {rps:,.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms", flush=True)
    finally:
        api.terminate()
        api.wait(20)
    # the slowest list's p99 against the target; each list's too
    return figures | {"api_list_p99_ms": max(lists.values()), "api_lists_p99_ms": lists}


async def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("bench/scale.py needs wrk: apt-get install wrk")
    with infrastructure(server_settings=server_settings()) as settings:
        engine = create_engine(settings.database)
        print(f"building {ACCOUNTS:,} accounts", flush=True)
        signals, templates, build_seconds = await build(settings, engine)
        figures: dict[str, object] = {"accounts": ACCOUNTS, "build_seconds": round(build_seconds)}
        figures |= await sizes(settings)
        print(f"built in {build_seconds:.0f} s: {figures}", flush=True)
        if "api" in PHASES:
            print("API at scale (health cache off)", flush=True)
            figures |= api_latency(settings)
            figures["sweep_idle_ms"] = round(await idle_sweep_ms(settings, engine), 1)
            figures["gauges_ms"] = round(await gauges_ms(engine), 1)
        stream = streams(signals, templates)
        if "catchup" in PHASES:
            print("catch-up, state cache hitting and missing", flush=True)
            settle_heap(STREAM_YOUNG_GC_THRESHOLD)  # as `healthscore scorer` does once started
            rates = await catch_ups(settings, engine, stream)
            hot, cold = rates["hot"], rates["cold"]
            figures |= {
                "catchup_eps_hot": round(hot["rate"]),
                "catchup_eps_cold": round(cold["rate"]),
                "catchup_ratio_hot": round(hot["rate"] / hot["raw"], 3),
                "catchup_ratio_cold": round(cold["rate"] / cold["raw"], 3),
                "raw_consume_eps": round((hot["raw"] + cold["raw"]) / 2),
                "wal_bytes_per_signal_cold": round(cold["wal"]),
                "cold_cpu_us": cold["cpu_us"],
                "hot_cpu_us": hot["cpu_us"],
                "cold_wal": cold["wal_by_relation"],
                **({"cold_statements_us": cold["statements"]} if cold["statements"] else {}),
            }
        workdir = Path(os.environ.get("TMPDIR", "/tmp"))
        if "switch" in PHASES:
            print("model switch: re-score every account", flush=True)
            model = switched_model(workdir, 0.02)
            figures |= await rescore_all(settings, engine, stream["cold"], model, scorers=1)
        if "switch" in PHASES or "switch2" in PHASES:
            print("model switch again, by two scorers (one a core)", flush=True)
            two = await rescore_all(
                settings, engine, stream["cold"], switched_model(workdir, 0.04), 2
            )
            figures |= {f"{name}_two_scorers": value for name, value in two.items()}
        await engine.dispose()
    report({"bench": "scale", **figures})


if __name__ == "__main__":
    run(main)

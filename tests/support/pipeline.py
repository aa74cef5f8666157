"""The whole pipeline as real processes, a raw event stream, faults, and the end-state checks.

`Pipeline` runs ingest, scorer and api as `healthscore` subprocesses (each in its own process
group, with its own metrics port and log file) against the test session's broker and
PostgreSQL. `RawStream` is a deterministic stream of simulator events with hostile records mixed
in, and knows, by running ingest's own `validate` offline, what each record must become.
`settle_and_check` waits for the pipeline to drain and compares everything with that:

- every raw record became exactly one signal (by event id) or one dead letter (by source
  topic/partition/offset), none both, none neither;
- the scorer's stored state and scores of every account equal the pure core's reference;
- every change event in the outbox reached the changes topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
from aiokafka.errors import KafkaError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from healthscore.devstack import free_port
from services.simulator.world import World
from shared.config import DEFAULT_MODEL_PATH, Settings
from shared.events import EVENT_TYPE_SOURCE, Signal, decode_signal, monthly_revenue
from shared.kafka import ensure_topics, make_producer
from shared.scoring.rollup import roll_up
from shared.validate import Rejection, Sentiment, validate
from tests.support.hostile import hostile_record
from tests.support.infra import healthscore_argv, settings_env
from tests.support.kafka_io import header, read_topic
from tests.support.signals import MODEL, consumed, mismatches

ROOT = Path(__file__).resolve().parents[2]

# --- processes ---------------------------------------------------------------------------------


@dataclass
class Service:
    """One `healthscore` process; restarted in place after a kill."""

    name: str
    command: str
    env: dict[str, str]
    log: Path
    metrics_port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    retired: bool = False  # stopped by the test on purpose
    release: Path | None = None  # the code of an earlier release to run (None: this one)

    def start(self) -> Service:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                healthscore_argv(self.command),
                env=self.env,
                stdout=log,
                stderr=log,
                start_new_session=True,
                cwd=self.release,
            )
        self.starts += 1
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9, no warning: whatever was in flight is lost by the process."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int | None:
        self.retired = True
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)

    def metric(self, name: str) -> float | None:
        """Sum of a metric's samples on this process's /metrics; None if it does not answer."""
        if self.metrics_port is None:
            return None
        try:
            body = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return None
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in body.splitlines()
            if line.startswith(name) and not line.startswith("#")
        )

    def healthz(self) -> int | None:
        try:
            return httpx.get(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=2).status_code
        except httpx.HTTPError:
            return None


class Pipeline:
    def __init__(self, settings: Settings, workdir: Path, **env: str) -> None:
        self.settings = settings
        self.workdir = workdir
        self.env = {**settings_env(settings), **env}
        self.services: list[Service] = []

    def _service(
        self, command: str, port_variable: str | None, release: Path | None = None
    ) -> Service:
        port = free_port()
        env = dict(self.env)
        if port_variable:
            env[port_variable] = str(port)
        if release is not None:  # its code first on the path (this one's is installed)
            env["PYTHONPATH"] = str(release)
            # and its own default model, as a release ships it (this one's may be newer)
            if env.get("HEALTHSCORE_SCORER__MODEL_PATH") == str(DEFAULT_MODEL_PATH):
                env["HEALTHSCORE_SCORER__MODEL_PATH"] = str(
                    release / DEFAULT_MODEL_PATH.relative_to(ROOT)
                )
        index = sum(s.command == command for s in self.services)
        service = Service(
            f"{command}-{index}",
            command,
            env,
            self.workdir / f"{command}-{index}.log",
            port if port_variable else None,
            release=release,
        )
        self.services.append(service)
        return service.start()

    def ingest(self, release: Path | None = None) -> Service:
        return self._service("ingest", "HEALTHSCORE_INGEST__METRICS_PORT", release)

    def scorer(self, release: Path | None = None) -> Service:
        """A scorer of this release, or of the earlier one whose code is at `release`."""
        return self._service("scorer", "HEALTHSCORE_SCORER__METRICS_PORT", release)

    def api(self, tokens: list[dict[str, Any]]) -> Service:
        """The API on its own port (`metrics_port` is its HTTP port: it serves /metrics too)."""
        self.env["HEALTHSCORE_API__TOKENS"] = orjson.dumps(tokens).decode()
        return self._service("api", "HEALTHSCORE_API__PORT")

    def stop(self) -> dict[str, int | None]:
        return {s.name: s.stop() for s in self.services}

    def unplanned_exits(self) -> list[str]:
        """Services that died on their own (not killed or stopped by the test)."""
        return [s.name for s in self.services if not s.alive and not s.retired]


# --- the raw stream ----------------------------------------------------------------------------

Record = tuple[str, bytes | None, bytes]  # topic, key, value


@dataclass
class RawStream:
    records: list[Record]
    expected: list[str | None]  # per record: the signal id it must become, or None = DLQ
    reasons: Counter[str]
    signals: list[Signal]  # the reference input: what ingest must produce
    positions: list[tuple[str, int, int]] = field(default_factory=list)


def raw_stream(
    settings: Settings, *, accounts: int, days: int, hostile: int, seed: int, intensity: float = 1.0
) -> RawStream:
    """Simulator events of `accounts` over the `days` before now, with `hostile` broken or
    malicious records mixed in at random places."""
    topics = settings.kafka.topics
    by_source = {"usage": topics.usage, "support": topics.support, "billing": topics.billing}
    end = datetime.now(UTC) - timedelta(hours=1)
    world = World(seed, accounts, start=end - timedelta(days=days), days=days, intensity=intensity)
    rng = random.Random(seed)
    # a world this short churns no one: every 20th account cancels on a day of its own, so
    # that the outcomes the stream shows are checked too (churn_mismatches)
    cancels = {a.account_id: rng.randrange(days) for a in world.accounts[::20]}
    events = []
    for d in range(days):
        for account in world.accounts:
            today = world.day_events(account, d)
            events += today
            if today and cancels.get(account.account_id) == d:
                at = datetime.fromisoformat(today[-1]["occurred_at"]) + timedelta(minutes=1)
                events.append(
                    {
                        "event_id": f"{account.account_id}-cancelled",
                        "account_id": account.account_id,
                        "occurred_at": at.isoformat(),
                        "type": "subscription_cancelled",
                        "schema_version": 1,
                        "reason": "chaos",
                    }
                )
    records: list[Record] = [
        (by_source[EVENT_TYPE_SOURCE[e["type"]]], e["account_id"].encode(), orjson.dumps(e))
        for e in events
    ]
    for _ in range(hostile):
        key, value = hostile_record(rng, rng.choice(events))
        records.insert(rng.randrange(len(records) + 1), (rng.choice(topics.raw), key, value))
    sentiment = Sentiment()
    now = datetime.now(UTC)
    expected: list[str | None] = []
    reasons: Counter[str] = Counter()
    signals: list[Signal] = []
    for _, _, value in records:
        outcome = validate(value, now=now, sentiment=sentiment)
        if isinstance(outcome, Rejection):
            expected.append(None)
            reasons[outcome.reason] += 1
        else:
            expected.append(outcome.signal_id)
            signals.append(outcome)
    return RawStream(records, expected, reasons, signals)


async def produce_stream(settings: Settings, stream: RawStream, rate: float) -> None:
    """Produce the stream at about `rate` records/s, recording where each record landed. A
    chunk the broker fails to take (it is being restarted) is sent again, whole, for up to
    two minutes: records it had taken are then there twice, as a producer without
    idempotence leaves them, for ingest and the scorer to de-duplicate."""
    await ensure_topics(settings.kafka, [*settings.kafka.topics.raw])
    producer = make_producer(settings.kafka)
    await producer.start()
    started = time.monotonic()
    try:
        chunk = max(int(rate / 10), 1)
        for i in range(0, len(stream.records), chunk):
            give_up = time.monotonic() + 120
            while True:
                try:
                    futures = [
                        await producer.send(topic, value=value, key=key)
                        for topic, key, value in stream.records[i : i + chunk]
                    ]
                    landed = await asyncio.gather(*futures)
                    break
                except KafkaError:
                    if time.monotonic() > give_up:
                        raise
                    await asyncio.sleep(0.5)
            stream.positions += [(m.topic, m.partition, m.offset) for m in landed]
            ahead = (i + chunk) / rate - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
    finally:
        await producer.stop()


# --- the checks --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a scenario reports: the row of the summary table."""

    scenario: str
    events_in: int = 0
    signals: int = 0
    dlq: int = 0
    duplicates_dropped: int = 0
    accounts_checked: int = 0
    mismatches: int = 0
    lost: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    recovery_seconds: list[float] = field(default_factory=list)
    unplanned_exits: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    incomplete: str | None = None  # why the check gave up before it could compare

    def row(self) -> dict[str, Any]:
        recovery = sorted(self.recovery_seconds)
        return {
            "scenario": self.scenario,
            "events in": self.events_in,
            "signals": self.signals,
            "DLQ": self.dlq,
            "duplicates dropped": self.duplicates_dropped,
            "accounts checked": self.accounts_checked,
            "mismatches": self.mismatches,
            "lost": self.lost,
            "faults": ", ".join(f"{k} ×{v}" for k, v in sorted(self.faults.items())) or "–",
            "recovery p50/max s": (
                f"{recovery[len(recovery) // 2]:.1f} / {recovery[-1]:.1f}" if recovery else "–"
            ),
            "unplanned exits": self.unplanned_exits,
            "seconds": round(self.seconds) if self.incomplete is None else "gave up",
        }


async def settle_and_check(
    settings: Settings,
    engine: AsyncEngine,
    stream: RawStream,
    outcome: Outcome,
    *,
    timeout: float = 300,
    unkept: Collection[str] = (),
) -> Outcome:
    """Wait until every raw record is accounted for and the scorer has consumed every signal,
    then fill `outcome` with the figures and the differences from the reference (`unkept`:
    attributes an earlier release that folded part of the stream did not keep)."""
    topics = settings.kafka.topics
    want_signals = {sid for sid in stream.expected if sid is not None}
    want_dlq = {p for p, sid in zip(stream.positions, stream.expected, strict=True) if sid is None}
    deadline = time.monotonic() + timeout
    while True:
        signal_records = await read_topic(settings, topics.signals, settle=1.0)
        dlq_records = await read_topic(settings, topics.dlq, settle=0.5)
        got_signals = Counter(decode_signal(r.value).signal_id for r in signal_records)
        got_dlq = Counter(
            (
                header(r, "source_topic") or "",
                int(header(r, "source_partition") or -1),
                int(header(r, "source_offset") or -1),
            )
            for r in dlq_records
        )
        complete = set(got_signals) >= want_signals and set(got_dlq) >= want_dlq
        if complete or time.monotonic() > deadline:
            break
        await asyncio.sleep(2)
    outcome.events_in = len(stream.records)
    outcome.signals = len(got_signals)
    outcome.dlq = len(got_dlq)
    outcome.lost = len(want_signals - set(got_signals)) + len(want_dlq - set(got_dlq))
    unexpected = len(set(got_signals) - want_signals) + len(set(got_dlq) - want_dlq)
    if unexpected:
        outcome.notes.append(f"{unexpected} records that should not exist")
    outcome.mismatches += unexpected
    total_signals = sum(got_signals.values())
    while (done := await consumed(engine, settings)) < total_signals:
        if time.monotonic() > deadline:  # a timeout, not a wrong result: say which
            outcome.incomplete = f"the scorer had consumed {done} of {total_signals} signals"
            outcome.notes.append(f"gave up after {timeout:.0f} s: {outcome.incomplete}")
            return outcome
        await asyncio.sleep(1)
    outcome.duplicates_dropped = total_signals - len(got_signals)
    bad = await mismatches(engine, stream.signals, unkept=unkept)
    if not unkept:  # an earlier release, which queues no parents, wrote part of the stream
        checked: list[str] = []
        rolled = await rollup_mismatches(engine, deadline, checked)
        print(*checked)  # how many the check covered (shown with -s, or on failure)
        if rolled is None:
            outcome.incomplete = "parents were still due a rollup"
            outcome.notes.append(f"gave up after {timeout:.0f} s: {outcome.incomplete}")
            return outcome
        bad += rolled
        bad += await churn_mismatches(engine, stream.signals)
    outcome.accounts_checked = len({s.account_id for s in stream.signals})
    outcome.mismatches += len(bad)
    if bad:
        outcome.notes.append(f"mismatched: {bad[:5]}")
    outcome.notes += await _outbox_delivered(settings, engine)
    return outcome


async def churn_mismatches(engine: AsyncEngine, signals: Sequence[Signal]) -> list[str]:
    """The churns the stream showed (every cancellation the scorer applied: the first signal of
    each id, as the reference folds them) against those the scorer recorded, exactly once each
    (shared/outcomes.py), and no stream outcome from a signal that was not sent."""
    first: dict[tuple[str, str], Signal] = {}  # by account and id, as the state de-duplicates
    for sent in signals:
        first.setdefault((sent.account_id, sent.signal_id), sent)
    want = {i for (_, i), s in first.items() if s.kind == "subscription_cancelled"}
    ids = {i for _, i in first}
    async with engine.connect() as conn:
        rows = list(
            await conn.execute(
                text("SELECT outcome_id, outcome FROM outcomes WHERE source = 'stream'")
            )
        )
    got = {r.outcome_id for r in rows if r.outcome == "churn"}
    bad = [f"churn of {i} not recorded" for i in sorted(want - got)]
    bad += [f"churn of {i} recorded, not shown" for i in sorted(got - want)]
    bad += [f"outcome of {r.outcome_id} from no signal" for r in rows if r.outcome_id not in ids]
    print(f"churns checked: {len(want)}, stream outcomes: {len(rows)}")  # shown with -s
    return bad


async def rollup_mismatches(
    engine: AsyncEngine, deadline: float, checked: list[str] | None = None
) -> list[str] | None:
    """Once no parent is due (None: some still were at `deadline`), the parents whose stored
    rollup is not the one their children's final scores give, or whose children's objectives
    have none (services/scorer/rollups.py; the definition is shared/scoring/rollup.py). A
    parent whose children hold no catch-up's change must have been told its band. `checked`
    gets a line saying how many parents were checked."""
    async with engine.connect() as conn:
        # one snapshot in which none is due: a re-score after it queues a parent again
        await conn.execution_options(isolation_level="REPEATABLE READ")
        while await conn.scalar(text("SELECT count(*) FROM parents_due")):
            if time.monotonic() > deadline:
                return None
            await conn.rollback()
            await asyncio.sleep(0.5)
        children = list(
            await conn.execute(
                text(
                    "SELECT a.parent_account_id AS parent, a.account_id, a.mrr_cents,"
                    " a.currency, s.objective, s.score, s.held IS NOT NULL AS held"
                    " FROM accounts a JOIN scores s"
                    " ON s.account_id = a.account_id AND s.model_role = 'active'"
                    " WHERE a.parent_account_id IS NOT NULL"
                )
            )
        )
        stored = {
            (r.parent_account_id, r.objective): r
            for r in await conn.execute(text("SELECT * FROM parent_rollups"))
        }
    # a parent's change waits to be told while a child holds a catch-up's change
    waiting = {r.parent for r in children if r.held}
    grouped: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for r in children:
        mrr = None if r.mrr_cents is None else monthly_revenue(r.mrr_cents, r.currency)
        grouped[(r.parent, r.objective)].append(SimpleNamespace(**r._asdict(), mrr=mrr))
    if checked is not None:
        checked.append(f"rollups checked: {len({p for p, _ in grouped})} parents")
    bad = [f"rollup {p}/{o}: stored, no child" for p, o in set(stored) - set(grouped)]
    for (parent, objective), kids in sorted(grouped.items()):
        row = stored.get((parent, objective))
        if row is None:
            bad.append(f"rollup {parent}/{objective}: none stored")
            continue
        expected = roll_up(MODEL, objective, kids, row.band)
        if (expected.score, expected.band, expected.children) != (
            row.score,
            row.band,
            row.children,
        ):
            bad.append(f"rollup {parent}/{objective}: {row.score} {row.band}, not {expected}")
        elif parent not in waiting and row.told_band != row.band:
            bad.append(f"rollup {parent}/{objective}: {row.band}, told {row.told_band}")
    return bad


@contextlib.asynccontextmanager
async def flowing(
    pipeline: Pipeline,
    engine: AsyncEngine,
    stream: RawStream,
    outcome: Outcome,
    rate: float,
    unkept: Collection[str] = (),
) -> AsyncIterator[asyncio.Task[None]]:
    """A chaos scenario's frame: the stream produced at `rate` records/s while the body injects
    its faults (it gets the producing task); then the stream's end, the end state checked
    against the reference (`settle_and_check`), the unplanned exits counted, and the pipeline
    stopped however the body ended."""
    producing = asyncio.create_task(produce_stream(pipeline.settings, stream, rate))
    try:
        yield producing
        await producing
        await settle_and_check(pipeline.settings, engine, stream, outcome, unkept=unkept)
        outcome.unplanned_exits = len(pipeline.unplanned_exits())
    finally:
        producing.cancel()
        pipeline.stop()


async def _outbox_delivered(settings: Settings, engine: AsyncEngine) -> list[str]:
    deadline = time.monotonic() + 60
    while True:
        async with engine.connect() as conn:
            pending = await conn.scalar(text("SELECT count(*) FROM outbox WHERE sent_at IS NULL"))
            ids = {r[0] for r in await conn.execute(text("SELECT event_id FROM outbox"))}
        if not pending or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    published = {
        orjson.loads(r.value)["id"]
        for r in await read_topic(settings, settings.kafka.topics.changes, settle=1.0)
    }
    missing = ids - published
    return [f"{len(missing)} change events never published"] if missing or pending else []


async def wait_for(predicate: Any, timeout: float, interval: float = 0.2) -> float:
    """Seconds until `predicate()` (sync or async) holds; raises after `timeout`."""
    started = time.monotonic()
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not recovered within {timeout} s")
        await asyncio.sleep(interval)

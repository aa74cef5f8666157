"""`healthscore import`: history scored in event time, resumed after kill -9, handed over to
the live stream without a gap or a double count."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scorer.imports import GROUP, partition_of
from services.simulator.world import World
from shared.config import Settings
from tests.support.infra import healthscore_argv, run_cli, settings_env
from tests.support.signals import (
    mismatches,
    produce_signals,
    running_scorer,
    signal_of,
    wait_consumed,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

DAYS = 60


def _world_events(end: datetime) -> list[dict[str, object]]:
    world = World(21, 120, start=end - timedelta(days=DAYS), days=DAYS, intensity=0.3)
    events = [
        event
        for day in range(DAYS)
        for account in world.accounts
        for event in world.day_events(account, day)
    ]
    return sorted(events, key=lambda e: str(e["occurred_at"]))


async def _imported(engine: AsyncEngine) -> int:
    return await _scalar(
        engine, "SELECT max(next_offset) FROM consumer_offsets WHERE group_id = :g", g=GROUP
    )


async def _quiet(engine: AsyncEngine) -> None:
    """Until no other session of the database is in a statement or a transaction: a COMMIT that
    the killed import sent is then applied or not (the server finishes it after its client
    died), and what is stored no longer moves."""
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND backend_type = 'client backend' AND pid <> pg_backend_pid() AND state <> 'idle'"
    )
    deadline = time.monotonic() + 30
    while busy := await _scalar(engine, sql):
        assert time.monotonic() < deadline, f"{busy} sessions still busy 30 s after the kill"
        await asyncio.sleep(0.05)


async def _scalar(engine: AsyncEngine, sql: str, **params: object) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text(sql), params) or 0)


async def test_import_resumes_after_kill_9_and_hands_over_to_the_live_stream(
    settings: Settings, engine: AsyncEngine, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    events = _world_events(now)
    go_live = now - timedelta(days=3)
    # the history ends at go-live; the live stream starts a day before it (an overlap)
    history = [e for e in events if datetime.fromisoformat(str(e["occurred_at"])) < go_live]
    live = [
        e
        for e in events
        if datetime.fromisoformat(str(e["occurred_at"])) >= go_live - timedelta(days=1)
    ]
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in history) + b"\n")
    accounts = len({e["account_id"] for e in history})

    proc = subprocess.Popen(
        healthscore_argv("import", str(path), "--chunk", "5"),
        env=settings_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while (done := await _imported(engine)) < 15:
            assert proc.poll() is None, "the import ended before it could be killed"
            assert time.monotonic() < deadline, f"imported {done} of {accounts} accounts"
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    await _quiet(engine)
    killed_at = await _imported(engine)
    assert killed_at < accounts, "killed too late: nothing was left to resume"
    result = orjson.loads(run_cli(settings, "import", str(path), "--chunk", "5").splitlines()[-1])
    assert result["accounts"] == accounts and result["skipped_accounts"] == killed_at
    assert result["events"] == len(history) and result["rejected"] == {}

    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM outbox")) == 0  # the past is no news
        duplicated = await conn.scalar(
            text(
                "SELECT count(*) FROM (SELECT 1 FROM score_history GROUP BY account_id, "
                "objective, model_role, at HAVING count(*) > 1) d"
            )
        )
        assert duplicated == 0  # the resumed run wrote each account once
        days = list(
            await conn.execute(
                text(
                    "SELECT account_id, count(DISTINCT at::date) AS days, min(at) AS first "
                    "FROM score_history GROUP BY account_id"
                )
            )
        )
        partitions = dict(
            (await conn.execute(text("SELECT account_id, partition FROM accounts"))).all()
        )
    assert len(days) == accounts
    first_event = datetime.fromisoformat(str(history[0]["occurred_at"]))
    assert min(d.first for d in days) < first_event + timedelta(days=1)  # as of event time
    assert all(d.days >= 8 for d in days)  # a point for every day the score moved
    assert all(partitions[a] == partition_of(a, settings.kafka.partitions) for a in partitions)

    # the live stream: overlapping the history's last day, each signal ingested as it happened
    signals = [
        signal_of(e, datetime.fromisoformat(str(e["occurred_at"])) + timedelta(seconds=5))
        for e in live
    ]
    total = await produce_signals(settings, signals)
    async with running_scorer(settings, engine) as scorer:
        await wait_consumed(engine, settings, total)
        overlap = sum(datetime.fromisoformat(str(e["occurred_at"])) < go_live for e in live)
        everything = [signal_of(e, now) for e in history] + signals[overlap:]
        assert await mismatches(engine, everything) == []  # nor missed
        assert overlap > 50 and scorer.metrics.duplicates._value.get() == overlap  # nor twice

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

from healthscore.devstack import owned_folder
from shared.config import Settings
from shared.db import migrate
from tests.support.infra import admin_sql, isolated_settings, running_infrastructure


@contextlib.contextmanager
def infrastructure(
    *, database: bool = True, server_settings: dict[str, str] | None = None
) -> Iterator[Settings]:
    """The test session's broker and PostgreSQL (durable here, started with `server_settings`
    when the bench starts it), and settings of their own."""
    tag = uuid.uuid4().hex[:8]
    # the servers stop first, then their data (a durable PostgreSQL's: up to 1.5 GB) goes with
    # the directory
    with (
        tempfile.TemporaryDirectory(prefix="healthscore-bench-", ignore_cleanup_errors=True) as wd,
        owned_folder(Path(wd)),
        running_infrastructure(
            Path(wd), durable=True, database=database, server_settings=server_settings
        ) as infra,
    ):
        name = f"bench_{tag}"
        settings = isolated_settings(infra, tag, name, scorer={"sweep_interval_seconds": 3600})
        database_settings = settings.database.model_copy(update={"pool_size": 10})
        if database:
            # called from inside the benchmark's event loop: these run loops of their own
            with ThreadPoolExecutor(1) as pool:
                pool.submit(
                    asyncio.run, admin_sql(infra.database, f'CREATE DATABASE "{name}"')
                ).result()
                pool.submit(migrate, database_settings).result()
        yield settings.model_copy(update={"database": database_settings})


def own_group(settings: Settings, suffix: str) -> Settings:
    """The settings with the scorer in a consumer group of its own (its group id + suffix)."""
    group = f"{settings.scorer.group_id}-{suffix}"
    return settings.model_copy(
        update={"scorer": settings.scorer.model_copy(update={"group_id": group})}
    )


def own_topic(settings: Settings, suffix: str) -> Settings:
    """The settings with a signals topic of their own (its name + suffix), consumed by a group
    of its own."""
    topics = settings.kafka.topics.model_copy(
        update={"signals": f"{settings.kafka.topics.signals}-{suffix}"}
    )
    kafka = settings.kafka.model_copy(update={"topics": topics})
    return own_group(settings.model_copy(update={"kafka": kafka}), suffix)


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak RSS) of a running process, in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    peak = next(line for line in status.splitlines() if line.startswith("VmHWM"))
    return int(peak.split()[1]) / 1024


TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command name (the first is the state)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a running process so far, in seconds."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICK


def tree_cpu_seconds(root: int) -> float:
    """CPU of a process and of its children, the ones that have exited included: PostgreSQL's
    postmaster and its backends."""
    total = sum(int(f) for f in _stat(root)[11:15]) / TICK  # its own, its exited children's
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                if int(_stat(entry.name)[1]) == root:
                    total += cpu_seconds(int(entry.name))
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (not idle, not waiting for I/O)."""
    # user nice system idle iowait irq softirq steal (guest time is counted in user already)
    jiffies = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(jiffies) - jiffies[3] - jiffies[4]) / TICK


def report(figures: dict[str, object]) -> None:
    """The last line of every benchmark: one JSON object."""
    print(orjson.dumps(figures).decode(), flush=True)


def run(main) -> None:  # type: ignore[no-untyped-def]
    """Run a bench's `main`, ended as by Ctrl-C by a SIGTERM too (a time limit), so that what
    it started is stopped on the way out; a SIGKILL's leftovers the next start ends
    (healthscore/devstack.py)."""
    import signal

    import uvloop

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    uvloop.run(main())
    asyncio.set_event_loop_policy(None)


def wal_by_relation(data_directory: str, start: str, end: str, names: dict[int, str]) -> dict:
    """What the WAL between two LSNs holds, by the relation of each record's first block
    (`names`: relfilenode -> relation name): bytes of records and of full-page images, and
    how many of each. Read with the server's own pg_waldump; {} where it cannot be run here
    (another machine's server, or no pg_waldump)."""
    import re
    import subprocess

    from healthscore.devstack import postgres_bindir

    waldump = postgres_bindir() / "pg_waldump"
    wal = Path(data_directory) / "pg_wal"
    if not waldump.exists() or not wal.is_dir():
        return {}
    out = subprocess.run(
        [str(waldump), "-p", str(wal), "-s", start, "-e", end],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    line_re = re.compile(r"len \(rec/tot\):\s*(\d+)/\s*(\d+)")
    rel_re = re.compile(r"blkref #0: rel \d+/\d+/(\d+)")
    totals: dict[str, list[int]] = {}
    for line in out.splitlines():
        m = line_re.search(line)
        if not m:
            continue
        rec, tot = int(m.group(1)), int(m.group(2))
        found = rel_re.search(line)
        rel = found.group(1) if found else None
        name = names.get(int(rel), f"rel {rel}") if rel else "(no relation)"
        entry = totals.setdefault(name, [0, 0, 0, 0])  # records, record bytes, FPIs, FPI bytes
        entry[0] += 1
        entry[1] += rec
        if "FPW" in line:
            entry[2] += line.count("FPW")
            entry[3] += tot - rec
    return {
        name: {"records": r, "record_bytes": rb, "fpi": f, "fpi_bytes": fb}
        for name, (r, rb, f, fb) in sorted(totals.items(), key=lambda kv: -(kv[1][1] + kv[1][3]))
    }


@contextlib.contextmanager
def profiled(name: str, pid: int | None = None) -> Iterator[None]:
    """With BENCH_PYSPY set to a folder: py-spy samples this process (or `pid`) while the block
    runs, into FOLDER/NAME.txt (collapsed stacks, for flame graphs or a grep by stage)."""
    folder = os.environ.get("BENCH_PYSPY")
    if not folder:
        yield
        return
    import shutil
    import signal
    import subprocess

    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = Path(folder) / f"{name}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [spy, "record", "-p", str(pid or os.getpid()), "-r", "200", "-f", "raw", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)

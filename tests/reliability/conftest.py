"""The reliability suite's scale and its summary table.

RELIABILITY_SCALE=reduced (the default, run by `make test`) uses a deterministic seed and a
stream small enough for CI; RELIABILITY_SCALE=full (`make chaos`) is the full suite: 200k raw
events, 20 kills of each service, 10 of the broker, 10,000 hostile records, many schemathesis
examples. Every
scenario adds its row to the table printed at the end of the session and written to
reports/reliability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.config import Settings
from shared.db import create_engine
from tests.support.infra import Infra, create_template, fresh_settings, running_infrastructure
from tests.support.pipeline import Outcome


@dataclass(frozen=True)
class Scale:
    name: str
    accounts: int  # simulated accounts; about 5 raw events per account and day
    days: int
    kills: int  # kill -9 of each of ingest and the scorer
    hostile: int
    rate: float  # raw records produced per second
    rebalances: int
    schemathesis_examples: int
    broker_kills: int  # kill -9 of the (durable) broker, started again each time
    seed: int = 20261124


SCALES = {
    "reduced": Scale("reduced", 200, 20, 3, 2_000, 1_000, 2, 25, 3),
    "full": Scale("full", 1_950, 25, 20, 10_000, 1_000, 8, 300, 10),
}
OUTCOMES: list[Outcome] = []


@pytest.fixture(scope="session")
def scale() -> Scale:
    name = os.environ.get("RELIABILITY_SCALE", "reduced")
    if name not in SCALES:
        raise pytest.UsageError(f"RELIABILITY_SCALE must be one of {sorted(SCALES)}")
    return SCALES[name]


LEGACY = Path(__file__).resolve().parents[1] / "data" / "legacy"


@pytest.fixture(scope="session")
def release_0014(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The code of release 0014 (tests/data/legacy), the last before the lean store: its
    `healthscore` runs with this folder first on the path and as its working directory."""
    root = tmp_path_factory.mktemp("release-0014")
    with tarfile.open(LEGACY / "release-0014.tar.gz") as archive:
        archive.extractall(root, filter="data")
    return root


@dataclass(frozen=True)
class Controlled:
    infra: Infra
    settings: Settings
    engine: AsyncEngine


@pytest.fixture
async def controlled(infra: Infra, tmp_path: Path) -> AsyncIterator[Controlled]:
    """A broker and PostgreSQL this test may restart or freeze, with settings and an engine for
    them: the session's where it started them itself, else (TEST_* name servers it cannot
    control) ones of the test's own."""
    async with contextlib.AsyncExitStack() as stack:
        if infra.postgres is None or infra.broker is None or infra.broker.proc is None:
            infra = stack.enter_context(running_infrastructure(tmp_path / "infra", own=True))
            await asyncio.to_thread(create_template, infra.database)  # runs a loop of its own
        settings = await stack.enter_async_context(fresh_settings(infra))
        engine = create_engine(settings.database)
        stack.push_async_callback(engine.dispose)
        yield Controlled(infra, settings, engine)


@pytest.fixture
def report() -> Any:
    def add(outcome: Outcome) -> Outcome:
        OUTCOMES.append(outcome)
        return outcome

    return add


def summary_table() -> str:
    rows = [o.row() for o in OUTCOMES]
    columns = list(rows[0])
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows),
    ]
    notes = [f"- {o.scenario}: {note}" for o in OUTCOMES for note in o.notes]
    return "\n".join(lines + (["", *notes] if notes else []))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not OUTCOMES:
        return
    table = summary_table()
    scale = os.environ.get("RELIABILITY_SCALE", "reduced")
    terminalreporter.section(f"reliability summary ({scale})")
    terminalreporter.write_line(table)
    out = Path("reports") / "reliability.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(f"RELIABILITY_SCALE={scale}\n\n{table}\n")

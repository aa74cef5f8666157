"""History import: a back-fill of 20,000 accounts and 500,000 events into PostgreSQL.

1. Writes simulated raw events (20,000 accounts over 50 days) to a JSON Lines file.
2. Reference: validates every line and folds it into account state in memory (the pure core of
   the import, no database), in events/s.
3. `import_history` into an empty, migrated database: validation, scoring in event time (each
   account at the end of every day with signals and weekly through silences), history as of
   then, states and current scores written in chunks of 500 accounts, one transaction each.
Last line: {"bench": "import", "events": N, "accounts": N, "seconds": ..., "events_per_second":
..., "change_events": 0, "history_rows": N, "vs_validate_and_fold": ratio, ...}
"""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from common import infrastructure, report, run
from sqlalchemy import text

from services.scorer.imports import import_history
from services.simulator.world import World
from shared.config import DEFAULT_MODEL_PATH
from shared.db import create_engine
from shared.event_files import load_events
from shared.scoring.kinds import kind_index
from shared.scoring.model import load_model
from shared.scoring.state import AccountState

ACCOUNTS = 20_000
DAYS = 50


def write_history(path: Path) -> int:
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    world = World(17, ACCOUNTS, start=end - timedelta(days=DAYS), days=DAYS, intensity=0.05)
    lines = 0
    with path.open("wb") as out:
        for day in range(DAYS):
            events = [e for a in world.accounts for e in world.day_events(a, day)]
            events.sort(key=lambda e: e["occurred_at"])
            out.write(b"".join(orjson.dumps(e) + b"\n" for e in events))
            lines += len(events)
    return lines


def validate_and_fold(path: Path) -> float:
    """events/s of reading, validating and folding the file in memory."""
    kinds = kind_index([load_model(DEFAULT_MODEL_PATH)])
    started = time.perf_counter()
    history = load_events(path)
    states: dict[str, AccountState] = defaultdict(AccountState)
    for fact in history.facts:
        states[fact.account_id].apply(kinds, fact)
    return len(history.facts) / (time.perf_counter() - started)


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="healthscore-import-") as work:
        path = Path(work) / "history.jsonl"
        started = time.perf_counter()
        lines = write_history(path)
        print(f"generated {lines} events in {time.perf_counter() - started:.0f} s", flush=True)
        reference = validate_and_fold(path)
        print(f"reference: validate and fold {reference:,.0f} events/s", flush=True)
        with infrastructure() as settings:
            engine = create_engine(settings.database)
            try:
                models = {"active": load_model(settings.scorer.model_path)}
                result = await import_history(settings, engine, [path], models)
                async with engine.connect() as conn:
                    outbox = await conn.scalar(text("SELECT count(*) FROM outbox"))
                    history_rows = await conn.scalar(text("SELECT count(*) FROM score_history"))
                    stored = await conn.scalar(text("SELECT count(*) FROM accounts"))
            finally:
                await engine.dispose()
    eps = result.events / result.seconds
    report(
        {
            "bench": "import",
            "events": result.events,
            "accounts": stored,
            "seconds": round(result.seconds, 1),
            "events_per_second": round(eps),
            "change_events": outbox,
            "history_rows": history_rows,
            "history_rows_per_account": round(history_rows / stored, 1),
            "validate_and_fold_eps": round(reference),
            "vs_validate_and_fold": round(eps / reference, 3),
        }
    )


if __name__ == "__main__":
    run(main)

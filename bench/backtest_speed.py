"""`make bench-backtest`: how long a back-test of 25,000 accounts and 100,000 events takes.

The shape of a purchase log (many accounts, few events each, over 18 months): every account
starts on a day of the first year, buys (a `feature_used` per purchase, a session per visit) at
a rate of its own, and 40% of them churn, their rate falling in the months before. The events
are generated into a temporary folder, then timed in this process:

- `load`: reading and validating the events as ingest would (the reference);
- `samples`: scoring every live account at every as-of time;
- `lead_time`: 2,000 churned accounts (a seeded choice) scored daily over the 90 days before
  their churn;
- `backtest`: the whole `healthscore backtest` of the default model, report included.

Prints one JSON line: the seconds of each, the back-test against the load (ratio), and what the
back-test's time goes to.
"""

from __future__ import annotations

import csv
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.modelling.backtest import (
    DAY,
    backtest,
    collect,
    default_as_of,
    default_test_from,
    lead_times,
)
from services.modelling.parts import default_parts
from services.modelling.replay import load_outcomes
from services.modelling.report import write_report
from shared.config import DEFAULT_MODEL_PATH
from shared.event_files import load_events
from shared.scoring.model import load_model

ACCOUNTS = int(os.environ.get("BENCH_ACCOUNTS", "25000"))
EVENTS = int(os.environ.get("BENCH_EVENTS", "100000"))
DAYS = 540
START = datetime(2024, 1, 1, tzinfo=UTC)


def generate(folder: Path, seed: int = 19) -> None:
    rng = random.Random(seed)
    per_account = EVENTS / ACCOUNTS
    lines: list[bytes] = []
    outcomes: list[tuple[str, str]] = []
    for i in range(ACCOUNTS):
        account = f"acc-{i:06d}"
        first = rng.randrange(365)
        churn = first + rng.randrange(60, DAYS - first + 60) if rng.random() < 0.4 else None
        end = min(churn if churn is not None else DAYS, DAYS)
        rate = rng.lognormvariate(0, 0.8) * (per_account - 1) * 0.8 / max(end - first, 1)
        count = 0
        for day in range(first, end):
            fading = 0.3 if churn is not None and churn - day < 90 else 1.0
            if rng.random() < rate * fading or day == first:
                at = START + timedelta(days=day, seconds=rng.randrange(86_400))
                count += 1
                kind = "feature_used" if count % 2 else "session_started"
                event = {
                    "event_id": f"{account}-{count}",
                    "account_id": account,
                    "type": kind,
                    "occurred_at": at.isoformat(),
                    "schema_version": 1,
                    "user_id": "u1",
                    **({"feature": "purchase", "count": rng.randint(1, 5)} if count % 2 else {}),
                }
                lines.append(orjson.dumps(event))
        if churn is not None and churn < DAYS:
            outcomes.append((account, (START + timedelta(days=churn)).isoformat()))
    lines.sort(key=lambda line: orjson.loads(line)["occurred_at"])
    (folder / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    with (folder / "outcomes.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["account_id", "churned_at"])
        writer.writerows(outcomes)


def timed(work):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def main() -> None:
    model = load_model(DEFAULT_MODEL_PATH)
    with tempfile.TemporaryDirectory(prefix="healthscore-backtest-") as folder:
        data = Path(folder)
        generate(data)
        history, load = timed(lambda: load_events(data / "events.jsonl"))
        outcomes = load_outcomes(data / "outcomes.csv")
        horizon = 30 * DAY
        cuts = default_as_of(history, horizon)
        parts = default_parts()
        samples, sampling = timed(
            lambda: collect(history, outcomes, model, cuts, horizon, parts=parts)
        )
        _, leads = timed(lambda: lead_times(history, outcomes, model, parts=parts))

        def whole() -> None:
            loaded = load_events(data / "events.jsonl")
            summary, full = backtest(
                loaded,
                outcomes,
                {"default": model},
                cuts,
                30.0,
                default_test_from(cuts),
                parts=parts,
            )
            write_report(data / "report", summary, full, "test")

        _, total = timed(whole)
    print(
        orjson.dumps(
            {
                "bench": "backtest_speed",
                "accounts": len({f.account_id for f in history.facts}),
                "events": history.lines,
                "churned": len(outcomes.first("churn")),
                "as_of_times": len(cuts),
                "processes": parts,
                "samples": len(samples),
                "load_seconds": round(load, 2),
                "samples_seconds": round(sampling, 2),
                "lead_time_seconds": round(leads, 2),
                "backtest_seconds": round(total, 2),
                "backtest_vs_load": round(total / load, 1),
                "target_seconds": 30,
            }
        ).decode(),
        flush=True,
    )


if __name__ == "__main__":
    main()

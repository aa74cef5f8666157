"""Console: its pages' response times under load at 10,000 accounts, against a bare FastAPI
endpoint served the same way in the same run.

1. Scores 10,000 simulated accounts three times (30 and 10 days ago, now) with the scorer's
   own code into a fresh PostgreSQL, so each has history to chart, then VACUUM ANALYZE.
2. Serves `healthscore api` and bench/bare_app.py (uvicorn, uvloop, httptools, one process
   each), signs in to the console once, and drives each page with wrk in alternating rounds of
   5 s after a warm-up, the median round of each counting: with one connection (the time a
   person waits) and with 16 (under load: throughput, and the wait behind others). An account
   page is a random account per request.
Needs wrk (Debian package `wrk`). Last line: {"bench": "console", "pages": {...}, ...}
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from api import median_round, run_wrk, serve, serve_bare
from common import infrastructure, report, run

from services.api.auth import hash_token
from shared.db import create_engine
from tests.support.infra import settings_env
from tests.support.signals import score_and_store, simulated_signals

ACCOUNTS = 10_000
ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"
ROUNDS = 3
LOADS = (1, 16)  # connections
PAGES = {
    "accounts": "/console/accounts",
    "accounts_filtered": "/console/accounts?band=at_risk&tier=enterprise&sort=change",
    "accounts_search": "/console/accounts?q=Customer+42",
    "account": "/console/accounts/{account}",
    "model": "/console/model",
}


async def seed(settings) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    engine = create_engine(settings.database)
    signals = simulated_signals(ACCOUNTS, 3, seed=13, end=now - timedelta(hours=1))
    at = [now - timedelta(days=30), now - timedelta(days=10), now]
    await score_and_store(engine, signals, at, history_min_delta=0.0)
    # what autovacuum does soon after a bulk load in a running system: planner statistics and
    # the visibility map (index-only counts)
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.exec_driver_sql("VACUUM ANALYZE")
    await engine.dispose()


def sign_in(port: int) -> str:
    """A signed-in session's cookie, as a browser would hold it."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        form = client.get("/console/sign-in")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
        done = client.post("/console/sign-in", data={"csrf": csrf, "token": TOKEN})
        assert done.status_code == 303, done.text
        page = client.get("/console/accounts")
        assert page.status_code == 200 and "Accounts" in page.text
        return "; ".join(f"{name}={value}" for name, value in client.cookies.items())


def wrk(
    port: int, page: str, cookie: str, seconds: int, connections: int = 16
) -> tuple[float, float, float]:
    env = {"BENCH_PATHS": page, "BENCH_COOKIE": cookie, "BENCH_ACCOUNTS": str(ACCOUNTS)}
    return run_wrk(port, "wrk_paths.lua", env, seconds, connections, page)


async def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("bench/console.py needs wrk: apt-get install wrk")
    with infrastructure() as settings:
        await seed(settings)
        env = settings_env(settings)
        api_port, bare_port = 18090, 18091
        env.update(
            HEALTHSCORE_LOG__LEVEL="WARNING",
            HEALTHSCORE_API__TOKENS=json.dumps(
                [{"name": "bench", "sha256": hash_token(TOKEN), "scopes": ["read", "write"]}]
            ),
        )
        api = serve(
            [sys.executable, "-m", "healthscore", "api"],
            {**env, "HEALTHSCORE_API__PORT": str(api_port)},
            api_port,
        )
        bare = serve_bare(env, bare_port)
        try:
            cookie = sign_in(api_port)
            for page in PAGES.values():
                wrk(api_port, page, cookie, 2)  # warm-up: pool, PostgreSQL's buffers
            wrk(bare_port, "/bare", "", 2)
            rounds = {
                load: [
                    {
                        **{
                            name: wrk(api_port, page, cookie, 5, load)
                            for name, page in PAGES.items()
                        },
                        "bare": wrk(bare_port, "/bare", "", 5, load),
                    }
                    for _ in range(ROUNDS)
                ]
                for load in LOADS
            }
        finally:
            for proc in (api, bare):
                proc.terminate()
                proc.wait(20)
    loads: dict[str, object] = {}
    for load, measured in rounds.items():
        figures = {name: median_round([r[name] for r in measured]) for name in [*PAGES, "bare"]}
        bare_rps = figures["bare"][0]
        print(f"{load} connection(s):")
        for name, (rps, p50, p99) in figures.items():
            print(
                f"  {name:<18} {rps:8,.0f} req/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms"
                f"  ({rps / bare_rps:.3f} of bare)"
            )
        loads[str(load)] = {
            name: {
                "rps": round(rps),
                "p50_ms": round(p50, 1),
                "p99_ms": round(p99, 1),
                "ratio": round(rps / figures["bare"][0], 3),
            }
            for name, (rps, p50, p99) in figures.items()
        }
    report({"bench": "console", "accounts": ACCOUNTS, "connections": loads})


if __name__ == "__main__":
    run(main)

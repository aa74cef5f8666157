"""`make soak`: steady traffic through the whole pipeline for a while, to catch memory growth.

Starts its own broker and PostgreSQL (or uses TEST_KAFKA_BOOTSTRAP_SERVERS / TEST_DATABASE_URL),
then ingest, the scorer and the API as real processes, the simulator in live mode at a steady
rate, and a light reader of the API (account lists and health, ~20 requests/s). Every minute it
prints the RSS of each process and the consumer lag of ingest and the scorer; at the end, one
JSON line with first/last/peak RSS per process, the peak lag and the API reads.

    SOAK_MINUTES=60 SOAK_RATE=500 make soak
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from common import infrastructure, report, run

from services.api.auth import hash_token
from tests.support.infra import healthscore_argv
from tests.support.pipeline import Pipeline, Service

MINUTES = float(os.environ.get("SOAK_MINUTES", "30"))
RATE = float(os.environ.get("SOAK_RATE", "500"))
ACCOUNTS = int(os.environ.get("SOAK_ACCOUNTS", "5000"))
INTERVAL = float(os.environ.get("SOAK_INTERVAL_SECONDS", "60"))


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


reads = [0, 0]  # requests done, of which failed


async def read_api(port: int) -> None:
    headers = {"Authorization": "Bearer soak-token"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as http:
        while True:  # until it is up
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get("/readyz")).status_code == 200:
                    break
            await asyncio.sleep(0.2)
        while True:
            await asyncio.sleep(0.05)
            try:
                page = await http.get("/v1/accounts", params={"limit": 20})
                reads[0] += 1
                for item in page.json().get("items", [])[:1]:
                    await http.get(f"/v1/accounts/{item['account_id']}/health")
                    reads[0] += 1
            except (httpx.HTTPError, ValueError):
                reads[1] += 1


async def main() -> None:
    with infrastructure() as settings:
        workdir = Path(tempfile.mkdtemp(prefix="healthscore-soak-"))
        pipeline = Pipeline(settings, workdir)
        token = {"name": "soak", "sha256": hash_token("soak-token"), "scopes": ["read"]}
        services: list[Service] = [pipeline.ingest(), pipeline.scorer(), pipeline.api([token])]
        reading = asyncio.create_task(read_api(services[2].metrics_port or 0))
        simulator = subprocess.Popen(
            healthscore_argv(
                "simulate",
                "--accounts",
                str(ACCOUNTS),
                "--history-days",
                "7",
                "--day-seconds",
                "60",
                "--rate",
                str(RATE),
                "--malformed-fraction",
                "0.01",
            ),
            env=pipeline.env,
            stdout=subprocess.DEVNULL,
            stderr=(workdir / "simulator.log").open("wb"),
            start_new_session=True,
        )
        samples: dict[str, list[float]] = {s.name: [] for s in services}
        peak_lag = 0.0
        started = time.monotonic()
        print(f"soak: {MINUTES} min at {RATE} events/s, {ACCOUNTS} accounts; logs in {workdir}")
        try:
            while time.monotonic() - started < MINUTES * 60:
                await asyncio.sleep(INTERVAL)
                line = [f"{(time.monotonic() - started) / 60:5.1f} min"]
                for service in services:
                    assert service.alive and service.proc is not None, f"{service.name} died"
                    rss = rss_mb(service.proc.pid) or 0.0
                    samples[service.name].append(rss)
                    lag = service.metric(f"healthscore_{service.command}_consumer_lag_records")
                    lag = lag if service.command != "api" else reads[0]
                    if service.command != "api":
                        peak_lag = max(peak_lag, lag or 0.0)
                    what = "lag" if service.command != "api" else "reads"
                    line.append(f"{service.name} RSS {rss:6.1f} MB {what} {lag or 0:8.0f}")
                applied = services[1].metric("healthscore_scorer_signals_applied_total") or 0
                line.append(f"applied {applied:.0f}")
                print(" | ".join(line), flush=True)
        finally:
            reading.cancel()
            simulator.terminate()
            simulator.wait(30)
            pipeline.stop()
    report(
        {
            "bench": "soak",
            "minutes": MINUTES,
            "rate": RATE,
            "rss_mb": {
                name: {
                    "first": round(values[0], 1),
                    "last": round(values[-1], 1),
                    "peak": round(max(values), 1),
                }
                for name, values in samples.items()
                if values
            },
            "peak_lag": peak_lag,
            "api_reads": reads[0],
            "api_read_failures": reads[1],
        }
    )


if __name__ == "__main__":
    run(main)

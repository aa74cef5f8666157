"""`healthscore dev` / `make run`: the whole system on one machine, stopped cleanly by Ctrl-C.

Starts (unless the environment points at existing ones) a tansu broker and a PostgreSQL whose
data lives under .data/ (so scores survive a restart; the broker is memory-only, so topics do
not), migrates, then starts every service as its own process plus the simulator. Each child
runs in its own process group; on SIGINT/SIGTERM they are stopped by PID, newest first.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

from healthscore.devstack import Broker, ManagedProcess, Postgres, free_port, spawn

SERVICES = ("ingest", "scorer", "api")


def _port_or_free(preferred: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


def run_dev(*, accounts: int, data_dir: Path, with_simulator: bool) -> None:
    env = dict(os.environ)
    env.setdefault("HEALTHSCORE_LOG__FORMAT", "console")
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started: list[ManagedProcess] = []
    broker: Broker | None = None
    postgres: Postgres | None = None
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    began = time.monotonic()
    try:
        if "HEALTHSCORE_KAFKA__BOOTSTRAP_SERVERS" not in env:
            broker = Broker(port=_port_or_free(9092), log_path=logs / "broker.log").start()
            env["HEALTHSCORE_KAFKA__BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
            print(
                f"broker     tansu on {broker.bootstrap_servers} (pid {broker.proc.pid})"
                if broker.proc
                else ""
            )
        if "HEALTHSCORE_DATABASE__HOST" not in env:
            postgres = Postgres(
                data_dir / "pg", port=_port_or_free(5432), log_path=logs / "postgres.log"
            ).start()
            postgres.create_database("healthscore")
            env["HEALTHSCORE_DATABASE__HOST"] = "127.0.0.1"
            env["HEALTHSCORE_DATABASE__PORT"] = str(postgres.port)
            print(
                f"database   postgresql://healthscore@127.0.0.1:{postgres.port}/healthscore"
                f" (data in {postgres.datadir})"
            )
        dev_token = None
        if "HEALTHSCORE_API__TOKENS" not in env:
            import orjson

            from services.api.auth import issue_token

            dev_token, digest = issue_token()
            env["HEALTHSCORE_API__TOKENS"] = orjson.dumps(
                [{"name": "dev", "sha256": digest, "scopes": ["read", "write"]}]
            ).decode()
        command = [sys.executable, "-m", "healthscore"]
        migrate = spawn("migrate", [*command, "migrate"], log_path=logs / "migrate.log", env=env)
        if migrate.process.wait(120) != 0:
            raise SystemExit(f"migration failed: see {logs / 'migrate.log'}")

        ports = {
            "ingest": ("HEALTHSCORE_INGEST__METRICS_PORT", _port_or_free(9101)),
            "scorer": ("HEALTHSCORE_SCORER__METRICS_PORT", _port_or_free(9102)),
            "api": ("HEALTHSCORE_API__PORT", _port_or_free(8000)),
        }
        for name in SERVICES:
            var, port = ports[name]
            env[var] = str(port)
            started.append(spawn(name, [*command, name], log_path=logs / f"{name}.log", env=env))
        if with_simulator:
            started.append(
                spawn(
                    "simulate",
                    [*command, "simulate", "--accounts", str(accounts)],
                    log_path=logs / "simulate.log",
                    env=env,
                )
            )
        print(f"started in {time.monotonic() - began:.1f}s:")
        for proc in started:
            print(f"  {proc.name:<9} pid {proc.pid:<7} log {proc.log_path}")
        for name in SERVICES:
            var, port = ports[name]
            if name == "api":
                print(
                    f"API        http://127.0.0.1:{port}/v1/accounts   "
                    f"docs http://127.0.0.1:{port}/docs   metrics http://127.0.0.1:{port}/metrics"
                )
            else:
                print(
                    f"{name:<10} metrics http://127.0.0.1:{port}/metrics   "
                    f"health http://127.0.0.1:{port}/healthz"
                )
        if dev_token:
            print(
                f"API token  {dev_token}  (read+write; e.g. curl -H 'Authorization: Bearer "
                f"{dev_token}' http://127.0.0.1:{ports['api'][1]}/v1/accounts)"
            )
        print("Ctrl-C stops everything.", flush=True)
        reported: set[str] = set()
        while not stopping:
            time.sleep(0.5)
            for proc in started:
                if not proc.alive() and proc.name not in reported:
                    reported.add(proc.name)
                    print(
                        f"{proc.name} exited with code {proc.process.returncode}: "
                        f"see {proc.log_path}",
                        flush=True,
                    )
    finally:
        print("stopping...", flush=True)
        for proc in reversed(started):
            proc.stop()
        if postgres is not None:
            postgres.stop()
        if broker is not None:
            broker.stop()
        print("stopped.", flush=True)

"""`healthscore dev` / `make run`: the whole system on one machine, stopped cleanly by Ctrl-C.

Starts (unless the environment points at existing ones) a tansu broker and a PostgreSQL whose
data live under .data/ (the broker's in an S3 endpoint, copied to .data/broker on stop and back
on start), so topics, offsets and scores survive a restart; migrates, then starts every service
as its own process plus the simulator. Each child
runs in its own process group; on SIGINT/SIGTERM they are stopped by PID, newest first. Every
run comes back on the ports and with the API token of the first (kept in .data/ until
`make clean`).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path

from healthscore.devstack import (
    Broker,
    ManagedProcess,
    ObjectStore,
    Postgres,
    end_left_behind,
    free_port,
    spawn,
)
from services.simulator.world import OWNERS

SERVICES = ("ingest", "scorer", "notify", "api")


# What `make run` listens on the first time, when free; later runs come back on the same ports.
PREFERRED_PORTS = {
    "s3": 9000,
    "broker": 9092,
    "postgres": 5432,
    "ingest": 9101,
    "scorer": 9102,
    "notify": 9103,
    "api": 8000,
}


def port_is_free(port: int) -> bool:
    """Whether a server could listen on `port` now. SO_REUSEADDR as servers set it: a port
    whose last connections linger in TIME_WAIT after the previous run is free to them."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def stable_ports(data_dir: Path, names: list[str], wait: float = 15.0) -> dict[str, int]:
    """The port of each of `names`: the one it had last time (kept in `data_dir`/ports.json
    until `make clean`), waited for up to `wait` seconds; the first time, its preferred port if
    free, else any free one. A port that stays taken is an error naming it, never a silent
    move: clients and bookmarks of the last run would reach something else."""
    path = data_dir / "ports.json"
    saved: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}
    ports = {}
    for name in names:
        if name not in saved:
            preferred = PREFERRED_PORTS[name]
            ports[name] = preferred if port_is_free(preferred) else free_port()
            continue
        port = saved[name]
        deadline = time.monotonic() + wait
        while not port_is_free(port):
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"{name}: port {port} (used by the last `make run`) is taken by another "
                    f"process; stop it, or `make clean` to start afresh on new ports"
                )
            time.sleep(0.5)
        ports[name] = port
    path.write_text(json.dumps({**saved, **ports}))
    return ports


def dev_token(data_dir: Path) -> tuple[str, str]:
    """The read+write token of `make run` and its SHA-256: issued once and kept in
    `data_dir`/dev-token (readable by its owner only) until `make clean`."""
    from services.api.auth import hash_token, issue_token

    path = data_dir / "dev-token"
    if path.exists():
        token = path.read_text().strip()
        return token, hash_token(token)
    token, digest = issue_token()
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    return token, digest


def dev_session_secret(data_dir: Path) -> str:
    """The key signing `make run`'s console sessions, kept like the token: a session outlives
    Ctrl-C and `make run` again."""
    path = data_dir / "session-secret"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


def run_dev(*, accounts: int, data_dir: Path, with_simulator: bool, formats: str = "v1") -> None:
    env = dict(os.environ)
    env.setdefault("HEALTHSCORE_LOG__FORMAT", "console")
    vendors = [f.strip() for f in formats.split(",") if f.strip() not in ("", "v1")]
    if vendors:  # one raw topic per vendor format, beside the three v1 topics
        env.setdefault(
            "HEALTHSCORE_KAFKA__TOPICS__SOURCES", json.dumps({f"{f}.events": f for f in vendors})
        )
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started: list[ManagedProcess] = []
    broker: Broker | None = None
    store: ObjectStore | None = None
    postgres: Postgres | None = None
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    began = time.monotonic()
    for what in end_left_behind():
        print(f"ended {what}, left by a run that was killed")
    try:
        ours = [
            *(["s3", "broker"] if "HEALTHSCORE_KAFKA__BOOTSTRAP_SERVERS" not in env else []),
            *(["postgres"] if "HEALTHSCORE_DATABASE__HOST" not in env else []),
            *SERVICES,
        ]
        fixed = stable_ports(data_dir, ours)
        if "HEALTHSCORE_KAFKA__BOOTSTRAP_SERVERS" not in env:
            # the broker keeps its data in an S3 endpoint, copied to data_dir/broker on stop and
            # back on start: topics, records and offsets survive Ctrl-C and `make run` again
            store = ObjectStore(port=fixed["s3"], log_path=logs / "s3.log").start()
            restored = store.load(data_dir / "broker")
            broker = Broker(port=fixed["broker"], log_path=logs / "broker.log", store=store)
            broker.start()
            env["HEALTHSCORE_KAFKA__BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
            print(
                f"broker     tansu on {broker.bootstrap_servers}, data in S3 at {store.endpoint}"
                f" ({restored} objects restored from {data_dir / 'broker'})"
            )
        if "HEALTHSCORE_DATABASE__HOST" not in env:
            postgres = Postgres(
                data_dir / "pg", port=fixed["postgres"], log_path=logs / "postgres.log"
            ).start()
            postgres.create_database("healthscore")
            env["HEALTHSCORE_DATABASE__HOST"] = "127.0.0.1"
            env["HEALTHSCORE_DATABASE__PORT"] = str(postgres.port)
            print(
                f"database   postgresql://healthscore@127.0.0.1:{postgres.port}/healthscore"
                f" (data in {postgres.datadir})"
            )
        token = None
        if "HEALTHSCORE_API__TOKENS" not in env:
            token, digest = dev_token(data_dir)
            env["HEALTHSCORE_API__TOKENS"] = json.dumps(
                [
                    {
                        "name": OWNERS[0],
                        "sha256": digest,
                        "scopes": ["read", "write", "admin", "model"],
                    }
                ]
            )
        env.setdefault("HEALTHSCORE_API__SESSION_SECRET", dev_session_secret(data_dir))
        command = [sys.executable, "-m", "healthscore"]
        migrate = spawn("migrate", [*command, "migrate"], log_path=logs / "migrate.log", env=env)
        if migrate.process.wait(120) != 0:
            raise SystemExit(f"migration failed: see {logs / 'migrate.log'}")
        migrate.stopped()

        ports = {
            "ingest": ("HEALTHSCORE_INGEST__METRICS_PORT", fixed["ingest"]),
            "scorer": ("HEALTHSCORE_SCORER__METRICS_PORT", fixed["scorer"]),
            "notify": ("HEALTHSCORE_NOTIFY__METRICS_PORT", fixed["notify"]),
            "api": ("HEALTHSCORE_API__PORT", fixed["api"]),
        }
        for name in SERVICES:
            var, port = ports[name]
            env[var] = str(port)
            started.append(spawn(name, [*command, name], log_path=logs / f"{name}.log", env=env))
        if with_simulator:
            started.append(
                spawn(
                    "simulate",
                    [*command, "simulate", "--accounts", str(accounts), "--format", formats],
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
        console = f"http://127.0.0.1:{ports['api'][1]}/console"
        if token:
            # the token rides in the fragment, which the browser keeps to itself: the sign-in
            # page's script signs it in, and it never reaches a server log
            print(f"console    {console}/sign-in#token={token}  (signs you in on first visit)")
        else:
            print(f"console    {console}  (sign in with a token of HEALTHSCORE_API__TOKENS)")
        if token:
            print(
                f"API token  {token}  (read, write, admin; in {data_dir / 'dev-token'}; e.g. curl "
                f"-H 'Authorization: Bearer {token}' http://127.0.0.1:{ports['api'][1]}/v1/accounts)"
            )
        if vendors:
            print(f"sources    {env['HEALTHSCORE_KAFKA__TOPICS__SOURCES']} beside the v1 topics")
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
        if store is not None:
            try:
                print(f"broker data: {store.save(data_dir / 'broker')} objects saved", flush=True)
            except OSError as exc:  # the copy of the last run stays as it was
                print(f"broker data not saved: {exc}", flush=True)
            store.stop()
        print("stopped.", flush=True)

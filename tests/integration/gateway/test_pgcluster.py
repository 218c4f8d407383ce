"""The throwaway PostgreSQL cluster (:mod:`cairn_gateway.pgcluster`) against a real server: it
starts, takes connections and databases, keeps its data across a restart and a SIGKILL of the
postmaster (crash recovery), removes its directory after, and says so plainly when its port is
taken. The ``pg_url`` fixture gives each test a database of its own.

Every test here but the fixture's starts its own cluster (about half a second of ``initdb``):
stopping or killing the shared one would pull it from under other tests of the worker.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import psycopg
import pytest

from cairn_gateway.pgcluster import PostgresCluster, PostgresClusterError, find_bindir
from tests.conftest import missing
from tests.scorecard import record, scale


@pytest.fixture
def bindir() -> Path:
    found = find_bindir()
    if found is None:
        missing("PostgreSQL (initdb, postgres)",
                "run `make test` as root (it installs it with apt-get), or "
                "`apt-get install postgresql`")
    return found


def _rows(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT n FROM t ORDER BY n").fetchall()]


def test_a_cluster_starts_takes_a_database_and_is_gone_after(bindir: Path) -> None:
    with PostgresCluster(fast=True, bindir=bindir) as pg:
        assert pg.running and pg.dir is not None
        where, proc = pg.dir, pg.proc
        assert (pg.data / f".s.PGSQL.{pg.port}").is_socket()  # its socket, in its own dir
        url = pg.create_database("cairn")
        assert url == f"postgresql://postgres@127.0.0.1:{pg.port}/cairn"
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("cairn",)
            assert conn.execute("SHOW fsync").fetchone() == ("off",)
            assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        with pytest.raises(PostgresClusterError, match="already exists"):
            pg.create_database("cairn")
        with pytest.raises(ValueError, match="lower-case"):
            pg.create_database('x"; DROP DATABASE postgres; --')
    assert not where.exists()
    assert proc is not None and proc.poll() is not None


def test_a_restart_keeps_the_data_and_the_port(bindir: Path) -> None:
    with PostgresCluster(fast=True, bindir=bindir) as pg:
        url, port = pg.create_database("keep"), pg.port
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE t (n bigint)")
            conn.execute("INSERT INTO t SELECT generate_series(1, 100)")
        pg.restart()
        assert pg.port == port and pg.running
        assert _rows(url) == list(range(1, 101))


def test_kill_then_start_recovers_every_commit_and_no_uncommitted_row(bindir: Path) -> None:
    """SIGKILL of the postmaster, a session still open with an uncommitted insert: after the
    next start (crash recovery) every committed row is there and the uncommitted one is not."""
    rounds = scale(3, 20)
    lost = extra = 0
    with PostgresCluster(fast=True, bindir=bindir) as pg:
        url = pg.create_database("crash")
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE t (n bigint)")
        committed: list[int] = []
        for r in range(rounds):
            with psycopg.connect(url) as conn:
                batch = list(range(r * 1000, r * 1000 + 1000))
                conn.execute("INSERT INTO t SELECT * FROM unnest(%s::bigint[])", (batch,))
            committed += batch
            open_tx = psycopg.connect(url)
            try:
                open_tx.execute("INSERT INTO t VALUES (-1)")  # never committed
                pg.kill()
                assert not pg.running
            finally:
                open_tx.close()
            pg.start()
            rows = _rows(url)
            lost += len(set(committed) - set(rows))
            extra += len(set(rows) - set(committed))
    line = record("storage", "SIGKILL of the PostgreSQL postmaster with a transaction open, "
                  "then start (crash recovery)", rounds, lost + extra,
                  "rows lost or uncommitted kept", detail=f"{len(committed)} rows committed")
    assert line.passed, (lost, extra)


def test_a_port_taken_by_another_process_is_a_clear_error(bindir: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        pg = PostgresCluster(fast=True, bindir=bindir, port=port)
        with pytest.raises(PostgresClusterError,
                           match=f"port {port} on 127.0.0.1 is already in use") as err, pg:
            pass
        assert "\n" not in str(err.value)
        assert pg.dir is None  # the failed start removed its directory
    record("storage", "a PostgreSQL cluster started on a port another process holds", 1, 0,
           "unclear errors")


def test_pg_url_gives_each_test_its_own_empty_database(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)
        conn.execute("CREATE TABLE t (n bigint)")  # the next test's database will not have it


def test_pg_url_again_sees_nothing_of_the_test_before(pg_url: str) -> None:
    test_pg_url_gives_each_test_its_own_empty_database(pg_url)


@pytest.mark.parametrize("run", [1, 2])
def test_pg_schema_url_gives_each_test_its_own_schema_and_the_store_works_there(
        pg_schema_url: str, run: int) -> None:
    from cairn.frames import Frame, Sample
    from cairn_gateway.store import Store

    schema = pg_schema_url.rsplit("%3D", 1)[1]
    store = Store(pg_schema_url)  # every name through search_path: tables, partitions
    try:
        dev = store.device(bytes([run]) * 32, f"board-{run}", 1_764_000_000.0)
        sid = store.stream(dev, f"board-{run}/t", bytes([run + 8]) * 32, "Cel")
        store.ingest(sid, [(0, 0, Frame((Sample(f"board-{run}/t", "Cel", 1_764_000_000.0,
                                                 20.5),)))])
    finally:
        store.close()
    with psycopg.connect(pg_schema_url) as conn:
        assert conn.execute("SELECT current_schema()").fetchone() == (schema,)
        assert conn.execute("SELECT count(*) FROM samples").fetchone() == (1,)  # its own only
        where = conn.execute("SELECT DISTINCT n.nspname FROM pg_class c JOIN pg_namespace n "
                             "ON n.oid = c.relnamespace WHERE c.relname LIKE 'samples%'")
        assert {r[0] for r in where} == {schema}  # nothing made in public


def test_a_parent_directory_the_server_user_cannot_enter_is_named(bindir: Path,
                                                                 tmp_path: Path) -> None:
    """As root the server runs as ``postgres``, which cannot enter a root-only directory
    (pytest's own temporary directories are 0700): the error says so and which directory."""
    if os.geteuid() != 0:
        pytest.skip("only root hands the cluster to another user")
    closed = tmp_path / "root-only"
    closed.mkdir(mode=0o700)
    pg = PostgresCluster(fast=True, bindir=bindir, parent=closed)
    with pytest.raises(PostgresClusterError, match="cannot reach") as err, pg:
        pass
    assert str(closed) in str(err.value) and "\n" not in str(err.value)
    assert pg.dir is None and not list(closed.iterdir())  # nothing left behind

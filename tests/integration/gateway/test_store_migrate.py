"""``cairn gateway store migrate`` on a real PostgreSQL server (``tests/pg.py``): a store built
by the real ingest path moves without loss (every query and every API answer the same on both
engines), ids and sequences kept; run again it changes nothing; what it refuses, it refuses in
one line with the exit code of its kind. The interrupted migrations (SIGKILL, a dropped
connection) are in test_reliability_migrate.py."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from cairn.datalock import hold
from cairn_gateway.store import SQLiteStore, Store
from cairn_gateway.store.migrate import migrate, plan
from tests.integration.entry import run_entry
from tests.integration.gateway.migrated import answers, build
from tests.scorecard import record


def _migrate(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    ran = run_entry("cairn", "gateway", "store", "migrate", *args, cwd=tmp_path, timeout=120)
    return ran.code, ran.stdout, ran.stderr


def test_a_store_moves_without_loss_and_answers_the_same(tmp_path: Path, pg_url: str) -> None:
    db = tmp_path / "data" / "gw.db"
    db.parent.mkdir()
    build(db)
    code, out, err = _migrate(tmp_path, "--from", str(db), "--to", pg_url, "--chunk", "100")
    assert code == 0, (out, err)
    assert "verified: every table's rows, and the samples and rollups of 14 streams" in out
    assert "DIFFERENT" not in out and "differs" not in out
    source, target = SQLiteStore(db), Store(pg_url)
    try:
        want = answers(source)
        got = answers(target)
        assert want.keys() == got.keys()
        for k in want:
            assert got[k] == want[k], k
        # the ids were kept and the sequences moved past them: a new device gets a new id
        last = max(d.id for d in want["devices"])
        assert target.device(b"n" * 32, "new", 0.0) == last + 1
        s = target.stream(last + 1, "new/t", b"N" * 32, None)
        assert s == len(want["streams"]) + 1
    finally:
        source.close()
        target.close()


def test_run_twice_copies_nothing_the_second_time(tmp_path: Path, pg_url: str) -> None:
    db = tmp_path / "gw.db"
    n = build(db, blocks=30)
    first = migrate(db, pg_url, chunk=1000)
    assert first.ok and first.copied > n and first.resumed == 0
    again = migrate(db, pg_url)
    assert again.ok and again.copied == 0 and again.resumed == first.copied
    assert [c.target for c in again.counts] == [c.source for c in first.counts]


def test_dry_run_writes_nothing(tmp_path: Path, pg_url: str) -> None:
    db = tmp_path / "gw.db"
    build(db, blocks=20)
    p = plan(db, pg_url)
    assert p.target_state.startswith("no store there yet") and p.rows["devices"] == 3
    code, out, err = _migrate(tmp_path, "--from", str(db), "--to", pg_url, "--dry-run")
    assert code == 0, err
    assert "would move" in out and "devices" in out
    with psycopg.connect(pg_url) as c:
        assert c.execute("SELECT to_regclass('devices')").fetchone() == (None,)


def test_the_config_names_both_ends(tmp_path: Path, pg_url: str) -> None:
    ran = run_entry("cairn", "gateway", "init", str(tmp_path / "g"), cwd=tmp_path)
    assert ran.code == 0, ran
    config = tmp_path / "g" / "gateway.toml"
    text = config.read_text()
    assert 'url = ""' in text
    config.write_text(text.replace('url = ""', f'url = "{pg_url}"', 1))
    (tmp_path / "g" / "data").mkdir()
    build(tmp_path / "g" / "data" / "gw.db", blocks=20)
    code, out, err = _migrate(tmp_path, "--config", str(config))
    assert code == 0, (out, err)
    assert "verified" in out
    assert "devices: 3 of 3 rows copied" in err  # plain progress lines (not a terminal)


def test_a_store_an_older_cairn_left_is_brought_up_to_date_and_moved(
        tmp_path: Path, pg_url: str) -> None:
    db = tmp_path / "gw.db"
    build(db, blocks=10)
    with sqlite3.connect(db) as c:  # as before the reach table was a migration
        c.execute("DROP TABLE reach")
        c.execute("DELETE FROM _sqlite_migrations WHERE name = 'm008_reach'")
    p = plan(db, pg_url)
    assert "older Cairn" in p.target_state and "reach" not in p.rows
    report = migrate(db, pg_url)
    assert report.ok and {c.table: c.target for c in report.counts}["reach"] == 0


def test_nul_in_strings_is_stored_as_the_postgresql_store_stores_it(
        tmp_path: Path, pg_url: str) -> None:
    db = tmp_path / "gw.db"
    build(db, blocks=20)
    with sqlite3.connect(db) as c:
        c.execute("UPDATE samples SET text = 'a' || char(0) || 'b' WHERE kind = 2 "
                  "AND block = 3")
        changed = c.execute("SELECT changes()").fetchone()[0]
    report = migrate(db, pg_url)
    assert report.ok and report.nul_replaced == changed > 0
    store = Store(pg_url)
    try:
        texts = {r[0] for r in store.conn.execute("SELECT text FROM samples WHERE block = 3 "
                                                  "AND kind = 2")}
        assert texts == {"a\ufffdb"}
    finally:
        store.close()


# -- what it refuses -----------------------------------------------------------------------------

@pytest.mark.parametrize("what", ["missing", "text", "sqlite", "unknown table", "unknown column",
                                  "newer"])
def test_a_source_that_is_not_a_cairn_store_is_a_usage_error(
        tmp_path: Path, pg_url: str, what: str) -> None:
    db = tmp_path / "gw.db"
    if what == "text":
        db.write_text("not a database\n" * 100)
    elif what == "sqlite":
        with sqlite3.connect(db) as c:
            c.execute("CREATE TABLE t (x)")
    elif what in ("unknown table", "unknown column", "newer"):
        build(db, blocks=5)
        with sqlite3.connect(db) as c:
            if what == "unknown table":
                c.execute("CREATE TABLE gizmos (device_id INTEGER, holder TEXT)")
            elif what == "unknown column":
                c.execute("ALTER TABLE streams ADD COLUMN lease TEXT")
            else:
                c.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                          "VALUES ('cairn-gateway', 'm999_future', 'x')")
    needle = {"missing": "no such file", "text": "is not a Cairn gateway store",
              "sqlite": "is not a Cairn gateway store", "unknown table": "(gizmos)",
              "unknown column": "table streams of", "newer": "m999_future"}[what]
    code, _, err = _migrate(tmp_path, "--from", str(db), "--to", pg_url)
    _one_line(code, err, 2, needle)
    with psycopg.connect(pg_url) as c:  # nothing copied
        assert c.execute("SELECT to_regclass('cairn_migrate')").fetchone() == (None,)
    if what == "missing":
        assert not db.parent.joinpath("cairn.lock").exists() and not db.exists()
    record("storage", f"store migrate from a source that is {what}", 1,
           0 if code == 2 else 1, "accepted")


@pytest.mark.parametrize(("url", "needle"), [
    ("mysql://h/db", "is not a postgresql://"),
    ("postgresql://h:port/db", "--to is not a URL"),
    ("postgresql://u:secret@h/db", "--to holds a password"),
    ("", "--to is empty"),
])
def test_a_wrong_target_url_is_a_usage_error(tmp_path: Path, url: str, needle: str) -> None:
    db = tmp_path / "gw.db"
    build(db, blocks=5)
    code, _, err = _migrate(tmp_path, "--from", str(db), "--to", url)
    line = _one_line(code, err, 2, needle)
    assert "secret" not in err and "secret" not in line


def test_a_server_that_does_not_answer_is_a_runtime_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = tmp_path / "gw.db"
    build(db, blocks=5)
    code, _, err = _migrate(tmp_path, "--from", str(db), "--to",
                            f"postgresql://postgres@127.0.0.1:{port}/x")
    _one_line(code, err, 1, "cannot connect")


def test_a_wrong_password_is_one_line(tmp_path: Path, pg_cluster: object, pg_url: str) -> None:
    from cairn_gateway.pgcluster import PostgresCluster

    assert isinstance(pg_cluster, PostgresCluster)
    hba = pg_cluster.data / "pg_hba.conf"
    rules = hba.read_text()
    if "carol_migrate" not in rules:  # this role alone needs a password
        hba.write_text("host all carol_migrate 127.0.0.1/32 scram-sha-256\n" + rules)
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS carol_migrate")
        admin.execute("CREATE ROLE carol_migrate LOGIN PASSWORD 'right horse battery'")
        admin.execute("SELECT pg_reload_conf()")
    db = tmp_path / "gw.db"
    build(db, blocks=5)
    secret = tmp_path / "pw"
    secret.write_text("wrong staple\n")
    secret.chmod(0o600)
    url = pg_url.replace("postgres@", "carol_migrate@")
    code, _, err = _migrate(tmp_path, "--from", str(db), "--to", url, "--password-file",
                            str(secret))
    line = _one_line(code, err, 1, "password authentication failed", "carol_migrate")
    assert "wrong staple" not in err and "***" in line
    secret.write_text("right horse battery\n")
    code, out, err = _migrate(tmp_path, "--from", str(db), "--to", url, "--password-file",
                              str(secret), "--dry-run")
    assert code == 0 and "would move" in out, err
    record("storage", "store migrate with a wrong database password", 1,
           0 if code == 0 and "wrong staple" not in err else 1, "accepted or shown")


def test_a_target_holding_another_store_is_refused(tmp_path: Path, pg_url: str) -> None:
    other = Store(pg_url)
    other.device(b"o" * 32, "other", 0.0)
    other.close()
    db = tmp_path / "gw.db"
    build(db, blocks=5)
    code, _, err = _migrate(tmp_path, "--from", str(db), "--to", pg_url)
    _one_line(code, err, 2, "already holds a store (1 devices)")
    check = Store(pg_url)
    try:
        assert check.conn.execute("SELECT count(*) FROM devices").fetchone()[0] == 1
    finally:
        check.close()
    record("storage", "store migrate into a database holding another store", 1,
           0 if code == 2 else 1, "merged")


def test_a_source_changed_since_an_interrupted_migration_is_refused(
        tmp_path: Path, pg_url: str) -> None:
    db = tmp_path / "gw.db"
    build(db, blocks=5)
    report = migrate(db, pg_url)
    assert report.ok
    store = SQLiteStore(db)  # a gateway ran on the source since
    store.device(b"z" * 32, None, 1.0)
    store.close()
    code, _, err = _migrate(tmp_path, "--from", str(db), "--to", pg_url)
    _one_line(code, err, 2, "holds the migration of another store, or of this one before it "
              "changed")


def test_a_running_gateway_holds_the_source(tmp_path: Path, pg_url: str) -> None:
    db = tmp_path / "data" / "gw.db"
    db.parent.mkdir()
    build(db, blocks=5)
    with hold(db.parent, "cairn gateway run"):
        code, _, err = _migrate(tmp_path, "--from", str(db), "--to", pg_url)
    _one_line(code, err, 1, "is in use by pid", "cairn gateway run")


def test_a_damaged_row_stops_the_migration_and_names_it(tmp_path: Path, pg_url: str) -> None:
    db = tmp_path / "gw.db"
    build(db, blocks=5)
    with sqlite3.connect(db) as c:  # SQLite keeps text in an INTEGER column as text
        c.execute("UPDATE blocks SET fork = 'x' WHERE stream_id = 2 AND block = 3")
    code, _, err = _migrate(tmp_path, "--from", str(db), "--to", pg_url)
    _one_line(code, err, 1, "table blocks, row stream_id=2, block=3: column fork holds text "
              "'x', not int8")
    with psycopg.connect(pg_url) as c:  # refused before anything moved
        assert c.execute("SELECT to_regclass('cairn_migrate')").fetchone() == (None,)


def _one_line(code: int, err: str, want: int, *needles: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == want, (code, err)
    assert "Traceback" not in err, err
    assert lines and lines[-1].startswith("Error: "), err
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])
    return lines[-1]


def test_a_target_that_differs_fails_verification_and_says_where(tmp_path: Path,
                                                                 pg_url: str) -> None:
    db = tmp_path / "gw.db"
    build(db, blocks=10)
    assert migrate(db, pg_url).ok
    with psycopg.connect(pg_url) as c:  # one sample lost, one value changed, after the move
        c.execute("DELETE FROM samples WHERE stream_id = 1 AND block = 3 AND k = 0")
        c.execute("UPDATE samples SET value = value + 1 WHERE stream_id = 5 AND block = 4")
    code, out, err = _migrate(tmp_path, "--from", str(db), "--to", pg_url)
    _one_line(code, err, 1, "verification failed")
    assert "migrated before" in out
    assert "  samples                     351            350  DIFFERENT" in out
    assert "differs: samples of stream 1: count: 30 in the source, 29 in the target" in out
    assert "differs: samples of stream 5: sum of values: 654.375 in the source, 657.375 " \
        "in the target" in out
    assert "differs: rollup" not in out

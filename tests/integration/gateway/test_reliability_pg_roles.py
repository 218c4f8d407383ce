"""The PostgreSQL store's credentials and rights, as docs/howto/run-several-gateways.md sets them
up, on a real server (``tests/pg.py``):

- the gateways' role needs no more than to own its database: migrations, a month's partition,
  ingest and retention (which drops a month) all run as that role;
- the read-only Grafana role of docs/gateway.md (its SQL read from the page itself) reads what
  the dashboards read, and can neither write, delete, make tables nor read a log key;
- the database password is never in the URL, never read from a file others may read, and never
  in an error or a log line when the server cannot be reached.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.errors
import pytest

from cairn.brokers.mosquitto import free_port
from cairn.frames import Frame, Sample
from cairn_gateway.config import ConfigError, parse_config
from cairn_gateway.daemon import open_store, store_target
from cairn_gateway.store import Store, StoreError
from tests.scorecard import record

GATEWAY_MD = Path(__file__).resolve().parents[3] / "docs" / "gateway.md"
T0 = 1_764_547_200.0  # 2025-12-01 00:00 UTC: the samples span two months
_roles = itertools.count()


def as_role(url: str, role: str) -> str:
    """The URL with another user (the test cluster trusts 127.0.0.1: no password)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, f"{role}@{parts.hostname}:{parts.port}", parts.path,
                       parts.query, parts.fragment))


def superuser(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        for sql in statements:
            c.execute(sql.encode())


def owned_by_new_role(url: str) -> tuple[str, str]:
    """A new login role (no superuser) that owns the test's database: the how-to's ``cairn``."""
    role = f"cairn_{os.getpid()}_{next(_roles)}"
    db = urlsplit(url).path.lstrip("/")
    superuser(url, f"CREATE ROLE {role} LOGIN", f'ALTER DATABASE "{db}" OWNER TO {role}')
    return role, as_role(url, role)


def fill(store: Store) -> int:
    did = store.device(b"\x01" * 32, "board-1", T0)
    sid = store.stream(did, "board-1/temperature", b"\x02" * 32, "Cel")
    blocks = [(i, 0, Frame((Sample("t", "Cel", T0 - 3600 + i * 60.0, 20.0 + i / 10),)))
              for i in range(120)]  # an hour in November, an hour in December
    return store.ingest(sid, blocks)


def test_the_gateways_role_needs_only_to_own_its_database(pg_url: str) -> None:
    role, url = owned_by_new_role(pg_url)
    store = Store(url)
    try:
        assert store.conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                                  ).fetchone()[0] is False
        assert fill(store) == 120
        months = {r[0] for r in store.conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'samples'::regclass")}
        assert {"samples_y2025m11", "samples_y2025m12"} <= months
        assert store.prune(T0) == 60  # November dropped whole, as this role
        assert store.conn.execute("SELECT count(*) FROM samples").fetchone()[0] == 60
    finally:
        store.close()
    again = Store(url)  # a second gateway as the same role: the migrations are applied once
    try:
        assert again.conn.execute("SELECT count(*) FROM cairn_migrations WHERE name = "
                                  "'m001_initial'").fetchone()[0] == 1
        assert again.conn.execute("SELECT current_user").fetchone()[0] == role
    finally:
        again.close()


def grafana_sql(grafana: str, db: str) -> str:
    """docs/gateway.md's SQL for Grafana's read-only role, for this test's role and database
    (tests/integration/gateway/test_grafana_postgres.py runs every dashboard query as it)."""
    text = GATEWAY_MD.read_text(encoding="utf-8")
    grants = text.split("Give Grafana a role")[1].split("```sql")[1].split("```")[0]
    return (grants.replace("cairn_grafana", grafana).replace("'<a long password>'", "'x'")
            .replace("DATABASE cairn", f'DATABASE "{db}"'))


def test_the_grafana_role_reads_and_cannot_write_or_read_log_keys(pg_url: str) -> None:
    _owner, url = owned_by_new_role(pg_url)
    store = Store(url)
    try:
        fill(store)
    finally:
        store.close()
    grafana = f"grafana_{os.getpid()}_{next(_roles)}"
    db = urlsplit(pg_url).path.lstrip("/")
    superuser(pg_url, grafana_sql(grafana, db))

    with psycopg.connect(as_role(pg_url, grafana), autocommit=True) as c:
        # what the dashboards read: names, the latest value of each stream, rollups, holes
        latest = c.execute(
            "SELECT d.name, s.name, s.unit, x.value FROM streams s JOIN devices d "
            "ON d.id = s.device_id CROSS JOIN LATERAL (SELECT value FROM samples WHERE "
            "stream_id = s.id ORDER BY t DESC, block DESC, k DESC LIMIT 1) x").fetchall()
        assert latest == [("board-1", "board-1/temperature", "Cel", pytest.approx(31.9))]
        assert c.execute("SELECT sum(n) FROM rollup_hour").fetchone() == (120,)
        assert c.execute("SELECT sum(n) FROM rollup_minute").fetchone() == (120,)
        c.execute("SELECT count(*) FROM missing_blocks")
        c.execute("SELECT id, status, stored_blocks, problem, kind FROM streams")

        refused = [
            "SELECT log_key FROM streams",
            "SELECT * FROM streams",
            "INSERT INTO samples (stream_id, t, value, block, fork) VALUES (1, 1.0, 6.66, 999, 0)",
            "UPDATE streams SET status = 'ok'",
            "DELETE FROM samples",
            "DELETE FROM devices",
            "TRUNCATE rollup_hour",
            "CREATE TABLE public.mine (x int)",
            "DROP TABLE samples",
            "SELECT * FROM pending",
        ]
        through = []
        for sql in refused:
            try:
                c.execute(sql.encode())
            except psycopg.errors.InsufficientPrivilege:
                continue
            through.append(sql)
    record("storage", "a read-only Grafana role writes, drops or reads log keys",
           len(refused), len(through), "allowed", detail="; ".join(through))
    assert through == []


def _error_of(call: Callable[[], object]) -> str | None:
    """The one-line error ``call`` ends with (None: it was accepted)."""
    try:
        got = call()
    except (ConfigError, StoreError) as exc:
        return str(exc)
    if isinstance(got, Store):
        got.close()
    return None


def test_the_database_password_never_shows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    secret = "pw-3f9c0e1d7a"
    port = free_port("127.0.0.1")  # nothing listens there
    pw = tmp_path / "db.password"
    pw.write_text(secret + "\n")
    cfg = parse_config(f'[store]\nurl = "postgresql://cairn@127.0.0.1:{port}/cairn"\n'
                       'password_file = "db.password"\n', tmp_path)
    monkeypatch.setattr("cairn_gateway.store.postgres.CONNECT_TIMEOUT", 1.0)
    caplog.set_level(logging.DEBUG)

    in_url = _error_of(lambda: parse_config(
        f'[store]\nurl = "postgresql://cairn:{secret}@db.example.net/cairn"\n', tmp_path))
    pw.chmod(0o644)
    shared_file = _error_of(lambda: store_target(cfg))
    pw.chmod(0o600)
    unreachable = _error_of(lambda: open_store(cfg))

    errors = {"a password in [store] url": in_url,
              "a password file readable by others": shared_file,
              "a server that cannot be reached": unreachable}
    bad = [f"{what}: accepted" for what, err in errors.items() if err is None]
    bad += [f"{what}: the password in the error" for what, err in errors.items()
            if err is not None and secret in err]
    if secret in caplog.text:
        bad.append("the password in a log line")
    record("storage", "the database password in the URL, a shared file, an error or a log",
           len(errors) + 1, len(bad), "leaked or accepted", detail="; ".join(bad))
    assert bad == []
    assert in_url is not None and "password_file" in in_url
    assert shared_file is not None and "chmod 600" in shared_file
    assert unreachable is not None and f"127.0.0.1:{port}" in unreachable

"""A migration interrupted halfway through the samples finishes when run again, with nothing
lost and nothing twice: the migrating process killed with SIGKILL, and its connection dropped
by the server. Each runs ``cairn gateway store migrate`` as a process on a store built by the
real ingest path, stops it where the target holds some samples but not all, runs it again,
and compares every query and API answer with the source's (scorecard lines).

Where it stops is made certain, not timed: the test holds the lock of the ``samples`` row of
``cairn_migrate`` (which each chunk's transaction updates last), so the migration waits inside
a chunk whose rows are copied but not committed; the interruption happens there."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from cairn_gateway.store import SQLiteStore, Store, StoreError
from tests.integration.entry import entry_point, run_entry
from tests.integration.gateway.migrated import answers, build
from tests.scorecard import record

WAIT = 60.0


def until(what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    pause = threading.Event()
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {WAIT:g} s")
        pause.wait(0.02)


def _copied(url: str) -> int:
    with psycopg.connect(url) as c:
        row = c.execute("SELECT rows FROM cairn_migrate WHERE tbl = 'samples'").fetchone() \
            if c.execute("SELECT to_regclass('cairn_migrate')").fetchone() != (None,) else None
    return int(row[0]) if row else 0


def _interrupted(tmp_path: Path, url: str,
                 interrupt: Callable[[subprocess.Popen[str], psycopg.Connection], None]
                 ) -> tuple[int, int, str]:
    """Build a store, start its migration, hold it inside a chunk of samples once some are
    committed, ``interrupt`` it there; returns (samples in the source, samples committed in the
    target then, the interrupted run's stderr)."""
    db = tmp_path / "data" / "gw.db"
    db.parent.mkdir()
    total = build(db, blocks=800, per_block=4)  # about 40,000 samples
    argv = [*entry_point("cairn"), "gateway", "store", "migrate", "--from", str(db), "--to",
            url, "--chunk", "100"]
    with open(tmp_path / "first.err", "w+") as err:
        proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err,
                                text=True)
        try:
            until("some samples copied", lambda: _copied(url) > 0 or proc.poll() is not None)
            assert proc.poll() is None, "the migration ended before it could be held"
            with psycopg.connect(url) as holder:  # (a transaction until the with ends)
                row = holder.execute("SELECT rows FROM cairn_migrate WHERE tbl = 'samples' "
                                     "FOR UPDATE").fetchone()
                assert row is not None
                held = int(row[0])
                assert 0 < held < total, (held, total)
                # wait until the migration is inside its next chunk, blocked on our lock
                until("the migration waits for the lock", lambda: _waiting(url))
                interrupt(proc, holder)
                holder.rollback()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(WAIT)
        err.seek(0)
        return total, held, err.read()


def _waiting(url: str) -> bool:
    with psycopg.connect(url) as c:
        return c.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                         "'cairn-migrate' AND wait_event_type = 'Lock'").fetchone() == (1,)


def _finish_and_compare(tmp_path: Path, url: str, total: int, held: int) -> tuple[int, int]:
    """Run the migration again; (samples lost, samples twice) against the source, and every
    query's answer compared."""
    with psycopg.connect(url) as c:  # only whole chunks were committed
        assert c.execute("SELECT count(*) FROM samples").fetchone() == (held,)
    with pytest.raises(StoreError, match="is not finished: run `cairn gateway store migrate`"):
        Store(url)  # no gateway writes into a half-migrated store
    ran = run_entry("cairn", "gateway", "store", "migrate", "--from",
                    str(tmp_path / "data" / "gw.db"), "--to", url, cwd=tmp_path, timeout=300)
    assert ran.code == 0, ran
    assert "copied before, by an interrupted run" in ran.stdout and "verified" in ran.stdout
    source, target = SQLiteStore(tmp_path / "data" / "gw.db"), Store(url)
    try:
        want, got = answers(source), answers(target)
        assert got == want
        n = int(target.conn.execute("SELECT count(*) FROM samples").fetchone()[0])
        distinct = int(target.conn.execute(
            "SELECT count(*) FROM (SELECT DISTINCT stream_id, block, k FROM samples) x"
        ).fetchone()[0])
    finally:
        source.close()
        target.close()
    return max(0, total - n), n - distinct


def test_a_migration_killed_halfway_finishes_when_run_again(tmp_path: Path, pg_url: str
                                                            ) -> None:
    def kill(proc: subprocess.Popen[str], holder: psycopg.Connection) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(WAIT)

    total, held, _ = _interrupted(tmp_path, pg_url, kill)
    lost, twice = _finish_and_compare(tmp_path, pg_url, total, held)
    line = record("storage", "store migrate killed (SIGKILL) mid-chunk, run again", 1,
                  lost + twice, "samples lost or twice",
                  detail=f"{held:,} of {total:,} samples committed when killed")
    assert line.passed, line


def test_a_migration_whose_connection_drops_finishes_when_run_again(tmp_path: Path,
                                                                   pg_url: str) -> None:
    def drop(proc: subprocess.Popen[str], holder: psycopg.Connection) -> None:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                          "application_name = 'cairn-migrate'")
        holder.rollback()
        proc.wait(WAIT)

    total, held, err = _interrupted(tmp_path, pg_url, drop)
    lines = [x for x in err.splitlines() if x.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "terminat" in lines[0] or "connection" in lines[0], lines
    lost, twice = _finish_and_compare(tmp_path, pg_url, total, held)
    line = record("storage", "store migrate's connection dropped mid-chunk, run again", 1,
                  lost + twice, "samples lost or twice",
                  detail=f"{held:,} of {total:,} samples committed when dropped")
    assert line.passed, line

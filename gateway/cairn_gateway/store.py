"""The gateway's sample store: SQLite (WAL), schema by sqlite-utils migrations, raw executemany
on the hot path.

- ``devices``: one row per device (its DHT record key; its name, and when it was enrolled and
  removed: the fleet roster, :mod:`cairn_gateway.roster`), ``pending``: devices seen on the
  fleet topic but not enrolled, ``streams``: one per stream log (its key,
  name, unit, how far it is stored, whether a fork stopped it);
- ``samples``: keyed by (stream, time, block, position in the block), with provenance (block
  index and fork of the log block it came from; the log key is the stream's). Exactly once: a
  block already ingested is skipped, whoever imports it, and a sample (its block and position)
  is never stored twice; two samples at the same time (Tasmota stamps whole seconds) are both
  kept;
- ``rollup_minute`` / ``rollup_hour``: count, sum, min, max per bucket, kept up to date at
  ingest from the samples actually inserted (set-based, in the same transaction);
- retention by age (:meth:`Store.prune`).
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils
from sqlite_migrate import Migrations

from cairn.frames import Frame

__all__ = ["MIGRATIONS", "RollupRow", "Series", "Store", "StoreError"]

MIGRATIONS = Migrations("cairn-gateway")


@MIGRATIONS()
def m001_initial(db: sqlite_utils.Database) -> None:
    db.executescript("""
        CREATE TABLE devices (
            id INTEGER PRIMARY KEY, record_key BLOB NOT NULL UNIQUE, name TEXT,
            first_seen REAL NOT NULL, last_seen REAL NOT NULL);
        CREATE TABLE streams (
            id INTEGER PRIMARY KEY, device_id INTEGER NOT NULL REFERENCES devices(id),
            name TEXT NOT NULL, log_key BLOB NOT NULL UNIQUE, unit TEXT,
            stored_blocks INTEGER NOT NULL DEFAULT 0, fork INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'ok', UNIQUE (device_id, name));
        CREATE TABLE blocks (
            stream_id INTEGER NOT NULL, block INTEGER NOT NULL, fork INTEGER NOT NULL,
            samples INTEGER NOT NULL, PRIMARY KEY (stream_id, block)) WITHOUT ROWID;
        CREATE TABLE samples (
            stream_id INTEGER NOT NULL, t REAL NOT NULL, value REAL, text TEXT,
            block INTEGER NOT NULL, fork INTEGER NOT NULL,
            PRIMARY KEY (stream_id, t)) WITHOUT ROWID;
        CREATE TABLE rollup_minute (
            stream_id INTEGER NOT NULL, bucket INTEGER NOT NULL, n INTEGER NOT NULL,
            total REAL NOT NULL, lo REAL NOT NULL, hi REAL NOT NULL,
            PRIMARY KEY (stream_id, bucket)) WITHOUT ROWID;
        CREATE TABLE rollup_hour (
            stream_id INTEGER NOT NULL, bucket INTEGER NOT NULL, n INTEGER NOT NULL,
            total REAL NOT NULL, lo REAL NOT NULL, hi REAL NOT NULL,
            PRIMARY KEY (stream_id, bucket)) WITHOUT ROWID;
    """)


@MIGRATIONS()
def m002_samples_at_the_same_time(db: sqlite_utils.Database) -> None:
    """Two samples of a stream may share a time (Tasmota stamps whole seconds: two messages
    in one second): keyed by (stream, time, block, position in the block), not (stream, time),
    which dropped the second one silently. Exactly-once stays per block (``blocks``)."""
    db.executescript("""
        CREATE TABLE samples_new (
            stream_id INTEGER NOT NULL, t REAL NOT NULL, value REAL, text TEXT,
            block INTEGER NOT NULL, fork INTEGER NOT NULL, k INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (stream_id, t, block, k)) WITHOUT ROWID;
        INSERT INTO samples_new (stream_id, t, value, text, block, fork, k)
            SELECT stream_id, t, value, text, block, fork, 0 FROM samples;
        DROP TABLE samples;
        ALTER TABLE samples_new RENAME TO samples;
    """)


@MIGRATIONS()
def m003_fleet_roster(db: sqlite_utils.Database) -> None:
    """The fleet roster (:mod:`cairn_gateway.roster`): a device is collected only when enrolled
    (``enrolled`` set, ``removed`` null) under a name, unique among enrolled devices; a removed
    device keeps its row, name and data (``removed``: when). ``pending``: record keys seen on
    the fleet topic but not enrolled, and what their record said; nothing of them is
    downloaded."""
    db.executescript("""
        ALTER TABLE devices ADD COLUMN enrolled REAL;
        ALTER TABLE devices ADD COLUMN removed REAL;
        CREATE UNIQUE INDEX devices_enrolled_name ON devices (name)
            WHERE enrolled IS NOT NULL AND removed IS NULL;
        CREATE TABLE pending (
            record_key BLOB PRIMARY KEY, first_seen REAL NOT NULL, last_seen REAL NOT NULL,
            checked REAL, record_time REAL, streams TEXT, error TEXT);
    """)


class StoreError(RuntimeError):
    """The store cannot be opened or written: says which file and why."""


@dataclass(frozen=True, slots=True)
class RollupRow:
    bucket: int  # epoch seconds of the bucket's start
    n: int
    mean: float
    lo: float
    hi: float


@dataclass(frozen=True, slots=True)
class Series:
    """Rollup buckets as columns (what a chart reads; no object per bucket)."""

    bucket: list[int]
    n: list[int]
    mean: list[float]
    lo: list[float]
    hi: list[float]

    def rows(self) -> list[RollupRow]:
        return [RollupRow(*r) for r in zip(self.bucket, self.n, self.mean, self.lo, self.hi,
                                            strict=True)]


_BATCH = """CREATE TEMP TABLE IF NOT EXISTS batch (
    stream_id INTEGER NOT NULL, t REAL NOT NULL, value REAL, text TEXT,
    block INTEGER NOT NULL, fork INTEGER NOT NULL, k INTEGER NOT NULL)"""


# Samples of the batch that are not stored yet (and numeric), one row per bucket, merged into
# the bucket's running count, sum, min and max. TABLE and WIDTH are filled from our constants.
_ROLLUP = """
    INSERT INTO TABLE (stream_id, bucket, n, total, lo, hi)
    SELECT b.stream_id, CAST(b.t / WIDTH AS INTEGER) * WIDTH, count(*), sum(b.value),
           min(b.value), max(b.value)
    FROM (SELECT DISTINCT stream_id, t, block, k, value FROM batch) b
    WHERE b.value IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM samples s WHERE s.stream_id = b.stream_id AND s.t = b.t
        AND s.block = b.block AND s.k = b.k)
    GROUP BY 1, 2
    ON CONFLICT (stream_id, bucket) DO UPDATE SET
        n = n + excluded.n, total = total + excluded.total,
        lo = min(lo, excluded.lo), hi = max(hi, excluded.hi)"""
_ROLLUP_MINUTE = _ROLLUP.replace("TABLE", "rollup_minute").replace("WIDTH", "60")
_ROLLUP_HOUR = _ROLLUP.replace("TABLE", "rollup_hour").replace("WIDTH", "3600")
_QUERY = ("SELECT (bucket / ?) * ? AS b, sum(n), sum(total), min(lo), max(hi) FROM TABLE "
          "WHERE stream_id = ? AND bucket >= ? AND bucket < ? GROUP BY b ORDER BY b")
_QUERY_AS_STORED = ("SELECT bucket, n, total, lo, hi FROM TABLE "
                    "WHERE stream_id = ? AND bucket >= ? AND bucket < ? ORDER BY bucket")


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=10000")  # the ingest worker writes too
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self.db = sqlite_utils.Database(conn)
            MIGRATIONS.apply(self.db)
            conn.execute(_BATCH)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: {exc}") from None
        self.conn = conn

    def close(self) -> None:
        self.conn.close()

    # -- devices and streams -------------------------------------------------------------------

    def device(self, record_key: bytes, name: str | None, now: float) -> int:
        c = self.conn
        c.execute("INSERT INTO devices (record_key, name, first_seen, last_seen) VALUES "
                  "(?, ?, ?, ?) ON CONFLICT (record_key) DO UPDATE SET last_seen = ?, "
                  "name = coalesce(excluded.name, name)",
                  (record_key, name, now, now, now))
        row = c.execute("SELECT id FROM devices WHERE record_key = ?", (record_key,)).fetchone()
        return int(row[0])

    def stream(self, device_id: int, name: str, log_key: bytes, unit: str | None = None) -> int:
        c = self.conn
        c.execute("INSERT INTO streams (device_id, name, log_key, unit) VALUES (?, ?, ?, ?) "
                  "ON CONFLICT (log_key) DO NOTHING", (device_id, name, log_key, unit))
        row = c.execute("SELECT id, device_id, name FROM streams WHERE log_key = ?",
                        (log_key,)).fetchone()
        if (row[1], row[2]) != (device_id, name):
            raise StoreError(f"log key {log_key.hex()[:16]}... is already stream {row[2]!r} "
                             f"of device {row[1]}")
        return int(row[0])

    def set_unit(self, stream_id: int, unit: str | None) -> None:
        """Record the stream's unit, the first time it is known."""
        self.conn.execute("UPDATE streams SET unit = coalesce(unit, ?) WHERE id = ?",
                          (unit, stream_id))

    def stop(self, stream_id: int, reason: str) -> None:
        """Stop ingest of a stream and say why (``fork: ...`` when a fork or equivocation was
        found, ``invalid: ...`` when the edge sent data its signature does not cover)."""
        self.conn.execute("UPDATE streams SET status = ? WHERE id = ?", (reason[:500], stream_id))

    def status(self, stream_id: int) -> str:
        row = self.conn.execute("SELECT status FROM streams WHERE id = ?",
                                (stream_id,)).fetchone()
        return str(row[0]) if row else "unknown"

    # -- ingest --------------------------------------------------------------------------------

    def ingest(self, stream_id: int, blocks: Iterable[tuple[int, int, Frame]]) -> int:
        """Store the samples of verified blocks (index, fork, frame) of one stream, in one
        transaction; blocks already ingested are skipped. Returns samples newly stored."""
        c = self.conn
        rows: list[tuple[int, float, float | None, str | None, int, int, int]] = []
        block_rows: list[tuple[int, int, int, int]] = []
        for index, fork, frame in blocks:
            block_rows.append((stream_id, index, fork, len(frame.samples)))
            for k, s in enumerate(frame.samples):
                v = s.value
                if isinstance(v, bool | float | int):
                    rows.append((stream_id, s.time, float(v), None, index, fork, k))
                elif isinstance(v, str):
                    rows.append((stream_id, s.time, None, v, index, fork, k))
                else:
                    rows.append((stream_id, s.time, None, v.hex(), index, fork, k))
        if not block_rows:
            return 0
        c.execute("BEGIN IMMEDIATE")
        try:
            status = self.status(stream_id)
            if status != "ok":
                raise StoreError(f"stream {stream_id} is stopped: {status}")
            indexes = [b for (_, b, _, _) in block_rows]
            old = {int(r[0]) for r in c.execute(
                "SELECT block FROM blocks WHERE stream_id = ? AND block BETWEEN ? AND ?",
                (stream_id, min(indexes), max(indexes)))}
            if old:  # ingested before (a re-download, another gateway's import): skip them
                block_rows = [r for r in block_rows if r[1] not in old]
                rows = [r for r in rows if r[4] not in old]
            c.executemany("INSERT INTO blocks (stream_id, block, fork, samples) "
                          "VALUES (?, ?, ?, ?)", block_rows)
            c.executemany("INSERT INTO batch VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            c.execute(_ROLLUP_MINUTE)
            c.execute(_ROLLUP_HOUR)
            mark = c.total_changes
            c.execute("INSERT OR IGNORE INTO samples (stream_id, t, value, text, block, fork, k) "
                      "SELECT stream_id, t, value, text, block, fork, k FROM batch")
            stored = c.total_changes - mark
            c.execute("DELETE FROM batch")
            c.execute("UPDATE streams SET stored_blocks = stored_blocks + ? WHERE id = ?",
                      (len(block_rows), stream_id))
            c.execute("COMMIT")
        except sqlite3.Error as exc:  # (SQLite may have rolled back already: disk full)
            if c.in_transaction:
                c.execute("ROLLBACK")
            with contextlib.suppress(sqlite3.Error):
                c.execute("DELETE FROM batch")
            raise StoreError(f"{self.path}: {exc}") from None
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            c.execute("DELETE FROM batch")
            raise
        return stored

    def stored_prefix(self, stream_id: int) -> int:
        """N such that blocks 0..N-1 of the stream are all stored."""
        row = self.conn.execute(
            "SELECT min(b.block) + 1 FROM blocks b WHERE b.stream_id = ? AND NOT EXISTS "
            "(SELECT 1 FROM blocks c WHERE c.stream_id = b.stream_id AND c.block = b.block + 1)",
            (stream_id,)).fetchone()
        has_first = self.conn.execute("SELECT 1 FROM blocks WHERE stream_id = ? AND block = 0",
                                      (stream_id,)).fetchone()
        return int(row[0]) if row[0] is not None and has_first else 0

    def missing_blocks(self, stream_id: int, held: list[int]) -> list[int]:
        """Which of these block indexes (sorted) are not stored yet."""
        if not held:
            return []
        stored = {int(r[0]) for r in self.conn.execute(
            "SELECT block FROM blocks WHERE stream_id = ? AND block BETWEEN ? AND ?",
            (stream_id, held[0], held[-1]))}
        return [i for i in held if i not in stored]

    # -- queries -------------------------------------------------------------------------------

    def samples(self, stream_id: int, start: float, end: float
                ) -> list[tuple[float, float | str | None, int, int]]:
        """(time, value, block, fork) of a stream's samples in [start, end), by time."""
        return [(t, v if v is not None else x, b, f) for t, v, x, b, f in self.conn.execute(
            "SELECT t, value, text, block, fork FROM samples WHERE stream_id = ? AND t >= ? "
            "AND t < ? ORDER BY t", (stream_id, start, end))]

    def rollup(self, stream_id: int, start: float, end: float, step: int) -> list[RollupRow]:
        """:meth:`series` as one object per bucket."""
        return self.series(stream_id, start, end, step).rows()

    def series(self, stream_id: int, start: float, end: float, step: int) -> Series:
        """Buckets of ``step`` seconds (a multiple of 60) in [start, end): from the hour table
        when ``step`` is a multiple of 3600, else from the minute table."""
        if step <= 0 or step % 60:
            raise ValueError("step must be a positive multiple of 60 seconds")
        table, width = ("rollup_hour", 3600) if step % 3600 == 0 else ("rollup_minute", 60)
        lo = math.floor(start / width) * width
        if step == width:  # the buckets as stored: no grouping
            rows = self.conn.execute(_QUERY_AS_STORED.replace("TABLE", table),
                                     (stream_id, lo, end))
        else:
            rows = self.conn.execute(_QUERY.replace("TABLE", table),
                                     (step, step, stream_id, lo, end))
        fetched = rows.fetchall()
        if not fetched:
            return Series([], [], [], [], [])
        buckets, ns, totals, los, his = (list(col) for col in zip(*fetched, strict=True))
        return Series(buckets, ns, [t / n for t, n in zip(totals, ns, strict=True)], los, his)

    def prune(self, before: float, rollups_before: float | None = None) -> int:
        """Retention: delete samples older than ``before`` (and minute rollups, and hour
        rollups older than ``rollups_before`` when given). Returns samples deleted."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            mark = c.total_changes
            c.execute("DELETE FROM samples WHERE t < ?", (before,))
            deleted = c.total_changes - mark
            c.execute("DELETE FROM rollup_minute WHERE bucket < ?", (before,))
            if rollups_before is not None:
                c.execute("DELETE FROM rollup_hour WHERE bucket < ?", (rollups_before,))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return deleted

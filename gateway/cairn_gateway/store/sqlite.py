"""The SQLite engine of the store (the embedded default): one file, WAL, schema by
sqlite-utils migrations, raw ``executemany`` on the hot path. The tables are the package's
(:mod:`cairn_gateway.store`)."""
from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import sqlite_utils
from sqlite_migrate import Migrations

from cairn.frames import Frame
from cairn_gateway.store.base import Store
from cairn_gateway.store.common import (
    KINDS,
    ROLLED_UP,
    ROLLUP_BOUND,
    IngestItem,
    SampleRow,
    StoreError,
    rows_of,
    stream_kinds,
    tally,
)

__all__ = ["MIGRATIONS", "SQLiteConn", "SQLiteStore", "used_bytes", "vacuum"]

log = logging.getLogger(__name__)

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


@MIGRATIONS()
def m004_stream_problems(db: sqlite_utils.Database) -> None:
    """What the collector refused of a stream and why: ``refused`` counts samples outside
    the plausible time window (never stored; the blocks holding them are ingested), ``problem``
    is the last round's trouble that does not stop the stream (a time budget used up, a quota
    reached), ``window_since`` the gateway's clock when it first took samples of the stream
    (the past window counts back from there)."""
    db.executescript("""
        ALTER TABLE streams ADD COLUMN refused INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE streams ADD COLUMN problem TEXT;
        ALTER TABLE streams ADD COLUMN window_since REAL;
    """)


@MIGRATIONS()
def m005_missing_blocks(db: sqlite_utils.Database) -> None:
    """Holes: blocks [start, stop) of a stream that its edge signed but would not serve, and
    why (``damaged``: the edge says its copy is damaged; ``not served``: no data, no reason).
    The stream keeps being collected; this says what it will never have."""
    db.executescript("""
        CREATE TABLE missing_blocks (
            stream_id INTEGER NOT NULL REFERENCES streams(id), start INTEGER NOT NULL,
            stop INTEGER NOT NULL, reason TEXT NOT NULL, first_seen REAL NOT NULL,
            last_seen REAL NOT NULL, PRIMARY KEY (stream_id, start)) WITHOUT ROWID;
    """)


@MIGRATIONS()
def m006_finite_rollups(db: sqlite_utils.Database) -> None:
    """Rollups stay finite: values beyond ``ROLLUP_BOUND`` are counted per stream in
    ``rollup_skipped``, not rolled up. Buckets an older version poisoned (a sum that overflowed
    to inf, or bounds that are infinite) are recomputed from the samples still stored (or
    deleted, when none are), and what was left out is counted."""
    bound = repr(ROLLUP_BOUND)
    db.executescript(f"""
        CREATE TABLE rollup_skipped (
            stream_id INTEGER PRIMARY KEY, n INTEGER NOT NULL DEFAULT 0);
        INSERT INTO rollup_skipped (stream_id, n)
            SELECT stream_id, count(*) FROM samples
            WHERE value IS NOT NULL AND NOT abs(value) <= {bound} GROUP BY stream_id;
    """)  # noqa: S608 (our constants only)
    for table, width in (("rollup_minute", 60), ("rollup_hour", 3600)):
        inf = "1.7976931348623157e308"  # the largest double: only infinities are above
        poisoned = (f"(SELECT stream_id, bucket FROM {table} WHERE abs(total) > {inf} "  # noqa: S608
                    f"OR abs(lo) > {inf} OR abs(hi) > {inf})")
        db.executescript(f"""
            CREATE TEMP TABLE poisoned AS SELECT * FROM {poisoned};
            DELETE FROM {table} WHERE (stream_id, bucket) IN (SELECT * FROM poisoned);
            INSERT INTO {table} (stream_id, bucket, n, total, lo, hi)
                SELECT s.stream_id, CAST(s.t / {width} AS INTEGER) * {width}, count(*),
                       sum(s.value), min(s.value), max(s.value)
                FROM samples s JOIN poisoned p ON p.stream_id = s.stream_id
                    AND p.bucket = CAST(s.t / {width} AS INTEGER) * {width}
                WHERE s.value IS NOT NULL AND abs(s.value) <= {bound}
                GROUP BY 1, 2;
            DROP TABLE poisoned;
        """)  # noqa: S608 (our constants only)


@MIGRATIONS()
def m007_value_kinds(db: sqlite_utils.Database) -> None:
    """Kinds of value: ``samples.kind`` (0 number, 1 boolean, 2 string, 3 data); ``streams.kind``
    (the kind of its first stored sample) and ``streams.other_kind`` (samples stored of another
    kind, not rolled up). Samples stored before keep what was stored: text as strings (data
    was stored as hex text then: it reads as a string), numbers as numbers (a boolean was stored
    as 1.0 or 0.0 then: it reads as a number); their rollups are kept as they are."""
    db.executescript("""
        ALTER TABLE samples ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;
        UPDATE samples SET kind = 2 WHERE text IS NOT NULL;
        ALTER TABLE streams ADD COLUMN kind TEXT;
        ALTER TABLE streams ADD COLUMN other_kind INTEGER NOT NULL DEFAULT 0;
        UPDATE streams SET kind = (
            SELECT CASE x.kind WHEN 2 THEN 'string' ELSE 'number' END FROM samples x
            WHERE x.stream_id = streams.id ORDER BY x.t, x.block, x.k LIMIT 1);
        UPDATE streams SET other_kind = (
            SELECT count(*) FROM samples x WHERE x.stream_id = streams.id
            AND x.kind != CASE streams.kind WHEN 'string' THEN 2 ELSE 0 END)
            WHERE kind IS NOT NULL;
    """)


@MIGRATIONS()
def m008_reach(db: sqlite_utils.Database) -> None:
    """``reach``: why each device is or is not collected, as the daemon last noted it
    (:func:`cairn_gateway.roster.note_reach`); made on first use before, by the daemon."""
    db.executescript("""
        CREATE TABLE IF NOT EXISTS reach (
            record_key BLOB PRIMARY KEY, state TEXT NOT NULL, at REAL NOT NULL);
    """)


@MIGRATIONS()
def m009_leases(db: sqlite_utils.Database) -> None:
    """Several gateways, one fleet (:mod:`cairn_gateway.leases`): ``gateways`` (each gateway's
    public key hex, name, last heartbeat, what it advertises, when it stopped cleanly) and
    ``leases`` (which gateway collects each device, until when, since when); times by the
    database's clock. One gateway on SQLite holds every device and never writes them."""
    db.executescript("""
        CREATE TABLE IF NOT EXISTS gateways (
            id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '', heartbeat REAL NOT NULL,
            started REAL NOT NULL, advertises TEXT NOT NULL DEFAULT '', stopped REAL);
        CREATE TABLE IF NOT EXISTS leases (
            record_key BLOB PRIMARY KEY, holder TEXT NOT NULL, expires REAL NOT NULL,
            since REAL NOT NULL);
        CREATE INDEX IF NOT EXISTS leases_holder ON leases (holder);
    """)


_BATCH = """CREATE TEMP TABLE IF NOT EXISTS batch (
    stream_id INTEGER NOT NULL, t REAL NOT NULL, value REAL, text TEXT,
    block INTEGER NOT NULL, fork INTEGER NOT NULL, k INTEGER NOT NULL, kind INTEGER NOT NULL)"""


# what Store.ingest_many checks against ``blocks`` in one statement, and the streams of one
# kind whose samples of the batch it rolls up
_BATCH_BLOCKS = """CREATE TEMP TABLE IF NOT EXISTS batch_blocks (
    stream_id INTEGER NOT NULL, block INTEGER NOT NULL)"""
_BATCH_STREAMS = """CREATE TEMP TABLE IF NOT EXISTS batch_streams (
    stream_id INTEGER PRIMARY KEY)"""



# Samples of the batch that are not stored yet (of the stream's kind, given as the parameter,
# numbers or booleans, within ROLLUP_BOUND), one row per bucket, merged into the bucket's running
# count, sum, min and max. TABLE and WIDTH are filled from our constants.
_ROLLUP = """
    INSERT INTO TABLE (stream_id, bucket, n, total, lo, hi)
    SELECT b.stream_id, CAST(b.t / WIDTH AS INTEGER) * WIDTH, count(*), sum(b.value),
           min(b.value), max(b.value)
    FROM (SELECT DISTINCT stream_id, t, block, k, value, kind FROM batch) b
    WHERE b.kind = ? AND b.value IS NOT NULL AND abs(b.value) <= BOUND AND NOT EXISTS (
        SELECT 1 FROM samples s WHERE s.stream_id = b.stream_id AND s.t = b.t
        AND s.block = b.block AND s.k = b.k)
    GROUP BY 1, 2
    ON CONFLICT (stream_id, bucket) DO UPDATE SET
        n = n + excluded.n, total = total + excluded.total,
        lo = min(lo, excluded.lo), hi = max(hi, excluded.hi)"""
_ROLLUP = _ROLLUP.replace("BOUND", repr(ROLLUP_BOUND))
_ROLLUP_MINUTE = _ROLLUP.replace("TABLE", "rollup_minute").replace("WIDTH", "60")
_ROLLUP_HOUR = _ROLLUP.replace("TABLE", "rollup_hour").replace("WIDTH", "3600")
# the same over the streams of one kind (listed in batch_streams): Store.ingest_many
_OF_KIND = " AND b.stream_id IN (SELECT stream_id FROM batch_streams)"
_ROLLUP_MINUTE_MANY = _ROLLUP_MINUTE.replace(" AND NOT EXISTS", _OF_KIND + " AND NOT EXISTS", 1)
_ROLLUP_HOUR_MANY = _ROLLUP_HOUR.replace(" AND NOT EXISTS", _OF_KIND + " AND NOT EXISTS", 1)
# Numeric samples of the batch, not stored yet, that are too large to roll up: counted per stream.
_UNROLLED = f"""
    INSERT INTO rollup_skipped (stream_id, n)
    SELECT b.stream_id, count(*) FROM (SELECT DISTINCT stream_id, t, block, k, value, kind
                                       FROM batch) b
    WHERE b.kind = ? AND b.value IS NOT NULL AND NOT abs(b.value) <= {ROLLUP_BOUND!r}
    AND NOT EXISTS (
        SELECT 1 FROM samples s WHERE s.stream_id = b.stream_id AND s.t = b.t
        AND s.block = b.block AND s.k = b.k)
    GROUP BY 1
    ON CONFLICT (stream_id) DO UPDATE SET n = n + excluded.n"""  # noqa: S608 (constants)
_UNROLLED_MANY = _UNROLLED.replace(" AND NOT EXISTS", _OF_KIND + " AND NOT EXISTS", 1)

class SQLiteConn(sqlite3.Connection):
    """An SQLite connection as the store's :class:`~cairn_gateway.store.base.Conn`."""

    dialect = "sqlite"

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` .. ``COMMIT``, rolled back on any failure."""
        self.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.execute("COMMIT")
        except BaseException:
            if self.in_transaction:
                self.execute("ROLLBACK")
            raise


class SQLiteStore(Store):
    """The store in one SQLite file."""

    engine: ClassVar[str] = "sqlite"
    conn: SQLiteConn

    def __init__(self, target: str | Path, *args: Any, **kwargs: Any) -> None:
        self.path = Path(target)
        self.target = self.where = str(self.path)
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   factory=SQLiteConn)
            conn.execute("PRAGMA busy_timeout=10000")  # the ingest worker writes too
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self.db = sqlite_utils.Database(conn)
            MIGRATIONS.apply(self.db)
            conn.execute(_BATCH)
            conn.execute(_BATCH_BLOCKS)
            conn.execute(_BATCH_STREAMS)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: {exc}") from None
        self.conn = conn

    def used_bytes(self) -> int:
        return used_bytes(self.conn)

    def vacuum(self) -> bool:
        return vacuum(self.conn)

    @contextlib.contextmanager
    def _writing(self, *scratch: str) -> Iterator[None]:
        """One ``BEGIN IMMEDIATE`` .. ``COMMIT``; on any failure it is rolled back and the
        ``scratch`` tables are emptied, and an SQLite error becomes :class:`StoreError`."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            yield
            c.execute("COMMIT")
        except sqlite3.Error as exc:  # (SQLite may have rolled back already: disk full)
            if c.in_transaction:
                c.execute("ROLLBACK")
            with contextlib.suppress(sqlite3.Error):
                for table in scratch:
                    c.execute(f"DELETE FROM {table}")  # noqa: S608 - our own table names
            raise StoreError(f"{self.path}: {exc}") from None
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            for table in scratch:
                c.execute(f"DELETE FROM {table}")  # noqa: S608 - our own table names
            raise

    def ingest(self, stream_id: int, blocks: Iterable[tuple[int, int, Frame]],
               window: tuple[float, float] | None = None) -> int:
        """(:meth:`Store.ingest`)"""
        c = self.conn
        rows: list[SampleRow] = []
        block_rows: list[tuple[int, int, int, int]] = []
        out: list[int] = []  # block index of each sample refused for its time
        rows_of(stream_id, blocks, window, rows, block_rows, out)
        if not block_rows:
            return 0
        with self._writing("batch"):
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
                out = [b for b in out if b not in old]
            c.executemany("INSERT INTO blocks (stream_id, block, fork, samples) "
                          "VALUES (?, ?, ?, ?)", block_rows)
            c.executemany("INSERT INTO batch VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            kind = self._kind(stream_id, rows)
            if kind in ROLLED_UP:
                param = (KINDS.index(kind),)
                c.execute(_ROLLUP_MINUTE, param)
                c.execute(_ROLLUP_HOUR, param)
                c.execute(_UNROLLED, param)
            mark = c.total_changes
            c.execute("INSERT OR IGNORE INTO samples (stream_id, t, value, text, block, fork, k, "
                      "kind) SELECT stream_id, t, value, text, block, fork, k, kind FROM batch")
            stored = c.total_changes - mark
            c.execute("DELETE FROM batch")
            other = tally(rows, {stream_id: kind})[1].get(stream_id, 0)
            c.execute("UPDATE streams SET stored_blocks = stored_blocks + ?, "
                      "refused = refused + ?, other_kind = other_kind + ? WHERE id = ?",
                      (len(block_rows), len(out), other, stream_id))
        return stored

    def ingest_many(self, items: Sequence[IngestItem]) -> list[int | None]:
        """(:meth:`Store.ingest_many`)"""
        c = self.conn
        rows: list[SampleRow] = []
        block_rows: list[tuple[int, int, int, int]] = []
        refused: dict[int, list[int]] = {}
        for item in items:
            rows_of(item.stream_id, item.blocks, item.window, rows, block_rows,
                     refused.setdefault(item.stream_id, []))
        if not block_rows:
            return [0 for _ in items]
        ids = sorted(refused)
        with self._writing("batch", "batch_blocks", "batch_streams"):
            marks = ",".join("?" * len(ids))
            state = {int(r[0]): (str(r[1]), r[2]) for r in c.execute(
                f"SELECT id, status, kind FROM streams WHERE id IN ({marks})",  # noqa: S608
                ids)}
            live = {sid for sid in ids if state.get(sid, ("unknown", None))[0] == "ok"}
            c.executemany("INSERT INTO batch_blocks VALUES (?, ?)",
                          [(r[0], r[1]) for r in block_rows if r[0] in live])
            old = {(int(r[0]), int(r[1])) for r in c.execute(
                "SELECT b.stream_id, b.block FROM batch_blocks b JOIN blocks o "
                "ON o.stream_id = b.stream_id AND o.block = b.block")}
            c.execute("DELETE FROM batch_blocks")

            def keep(sid: int, block: int) -> bool:
                return sid in live and (sid, block) not in old

            block_rows = [r for r in block_rows if keep(r[0], r[1])]
            rows = [r for r in rows if keep(r[0], r[4])]
            for sid in ids:
                refused[sid] = [b for b in refused[sid] if keep(sid, b)]
            c.executemany("INSERT INTO blocks (stream_id, block, fork, samples) "
                          "VALUES (?, ?, ?, ?)", block_rows)
            c.executemany("INSERT INTO batch VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            kinds, found = stream_kinds(
                {sid: None if state[sid][1] is None else str(state[sid][1]) for sid in live},
                rows)
            c.executemany("UPDATE streams SET kind = ? WHERE id = ?",
                          [(k, sid) for sid, k in sorted(found.items())])
            for kind in sorted({k for k in kinds.values() if k in ROLLED_UP}):
                of_kind = [sid for sid, k in kinds.items() if k == kind]
                c.executemany("INSERT INTO batch_streams VALUES (?)", [(s,) for s in of_kind])
                param = (KINDS.index(kind),)
                c.execute(_ROLLUP_MINUTE_MANY, param)
                c.execute(_ROLLUP_HOUR_MANY, param)
                c.execute(_UNROLLED_MANY, param)
                c.execute("DELETE FROM batch_streams")
            c.execute("INSERT OR IGNORE INTO samples (stream_id, t, value, text, block, fork, k, "
                      "kind) SELECT stream_id, t, value, text, block, fork, k, kind FROM batch")
            c.execute("DELETE FROM batch")
            blocks_of: dict[int, int] = {}
            for br in block_rows:
                blocks_of[br[0]] = blocks_of.get(br[0], 0) + 1
            _count, other = tally(rows, kinds)
            c.executemany("UPDATE streams SET stored_blocks = stored_blocks + ?, "
                          "refused = refused + ?, other_kind = other_kind + ? WHERE id = ?",
                          [(blocks_of.get(sid, 0), len(refused[sid]), other.get(sid, 0), sid)
                           for sid in sorted(live) if sid in blocks_of])
            units = [(item.unit, item.stream_id) for item in items
                     if item.unit is not None and item.stream_id in live]
            if units:
                c.executemany("UPDATE streams SET unit = coalesce(unit, ?) WHERE id = ?", units)
        return [len(refused[item.stream_id]) if item.stream_id in live else None
                for item in items]

    def _kind(self, stream_id: int, rows: list[SampleRow]) -> str | None:
        """The stream's kind of value: as stored, or (the first time) its first new sample's,
        recorded in the open transaction. None: no samples yet."""
        kinds, found = stream_kinds({stream_id: self.kind(stream_id)}, rows)
        if found:
            self.conn.execute("UPDATE streams SET kind = ? WHERE id = ?",
                              (found[stream_id], stream_id))
        return kinds[stream_id]


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of a database in use: its pages less the free ones."""
    pages, free, size = conn.execute(
        "SELECT * FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()"
    ).fetchone()
    return int((pages - free) * size)


def vacuum(conn: sqlite3.Connection) -> bool:
    """Give a file's free pages back to the file system (not inside a transaction); True if
    it did. A file in ``auto_vacuum = INCREMENTAL`` mode returns them all, at little cost; any
    other file, once its free pages are over a quarter of it, is switched to that mode by one
    ``VACUUM`` (which rewrites it)."""
    pages, free, mode = conn.execute(
        "SELECT * FROM pragma_page_count(), pragma_freelist_count(), pragma_auto_vacuum()"
    ).fetchone()
    if conn.in_transaction or not free or (mode != 2 and free * 4 < pages):
        return False
    try:
        if mode == 2:  # incremental
            conn.execute("PRAGMA incremental_vacuum").fetchall()
        else:
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    except sqlite3.OperationalError as exc:  # busy, or a statement still open: next pass
        log.debug("vacuum put off: %s", exc)
        return False
    return True

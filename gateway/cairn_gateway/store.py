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
  ingest from the samples actually inserted (set-based, in the same transaction); values beyond
  ``ROLLUP_BOUND`` are stored but not rolled up (counted in ``rollup_skipped``), so rollups
  stay finite whatever values arrive;
- retention by age (:meth:`Store.prune`);
- kinds of value (m007): each sample keeps its kind (``kind``: 0 number, 1 boolean, 2 string,
  3 data; :data:`KINDS`): a number or a boolean in ``value`` (a boolean as 1.0 or 0.0), a string
  in ``text``, data (SenML ``vd``) as hex in ``text``. A stream's kind (``streams.kind``) is the
  kind of the first sample stored; samples of another kind (an edge that switched, a hostile
  writer) are stored all the same, never rolled up, and counted in ``streams.other_kind``.
  Rollups are kept for number streams (count, sum, min, max) and boolean streams (count, number
  of true in ``total``, so the mean is the share of true); string and data streams have none:
  their buckets (count, last value) are read from the samples (:func:`cairn_gateway.queries.
  states`), so they reach back as far as the samples' retention.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils
from sqlite_migrate import Migrations

from cairn.errors import StorageError
from cairn.frames import Frame

__all__ = ["KINDS", "MIGRATIONS", "MISSING_REASONS", "ROLLED_UP", "ROLLUP_BOUND", "IngestItem",
           "RollupRow", "Series", "Store", "StoreError", "describe_missing", "kind_code",
           "typed_value"]

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


#: what each reason of a hole means, for people (API, CLI, logs)
MISSING_REASONS = {
    "damaged": "the edge says its copy is damaged (its data no longer matches its hash)",
    "not served": "the edge had no data for it and gave no reason (its disk quota cleared it "
                  "before this gateway stored it, or an edge that does not report damage)",
}


def describe_missing(ranges: Iterable[tuple[int, int, str]]) -> str:
    """``blocks 5, 77..79 (damaged); blocks 100..109 (not served)``: a stream's holes in one
    line."""
    by: dict[str, list[str]] = {}
    for a, b, r in ranges:
        by.setdefault(r, []).append(str(a) if b == a + 1 else f"{a}..{b - 1}")
    return "; ".join(f"blocks {', '.join(spans)} ({r})" for r, spans in sorted(by.items()))


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


#: kinds of value by their code in ``samples.kind`` (SenML ``v``, ``vb``, ``vs``, ``vd``)
KINDS = ("number", "boolean", "string", "data")
NUMBER, BOOLEAN, STRING, DATA = range(4)
#: the kinds a stream's rollups are kept for
ROLLED_UP = frozenset({"number", "boolean"})


def kind_code(value: object) -> int:
    """The code of a sample value's kind (:data:`KINDS`)."""
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, str):
        return STRING
    if isinstance(value, bytes | bytearray | memoryview):
        return DATA
    return NUMBER


def typed_value(value: float | None, text: str | None, kind: int) -> float | str | bool | None:
    """A stored sample's value in its kind: a float, a bool, a string (data: its hex)."""
    if kind == BOOLEAN and value is not None:
        return bool(value)
    return value if value is not None else text


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


class StoreError(StorageError, RuntimeError):
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
    block INTEGER NOT NULL, fork INTEGER NOT NULL, k INTEGER NOT NULL, kind INTEGER NOT NULL)"""


# what Store.ingest_many checks against ``blocks`` in one statement, and the streams of one
# kind whose samples of the batch it rolls up
_BATCH_BLOCKS = """CREATE TEMP TABLE IF NOT EXISTS batch_blocks (
    stream_id INTEGER NOT NULL, block INTEGER NOT NULL)"""
_BATCH_STREAMS = """CREATE TEMP TABLE IF NOT EXISTS batch_streams (
    stream_id INTEGER PRIMARY KEY)"""



_SampleRow = tuple[int, float, float | None, str | None, int, int, int, int]


def _rows_of(stream_id: int, blocks: Iterable[tuple[int, int, Frame]],
             window: tuple[float, float] | None, rows: list[_SampleRow],
             block_rows: list[tuple[int, int, int, int]], refused: list[int]) -> None:
    """The sample and block rows of one stream's blocks (appended to ``rows`` and
    ``block_rows``); the block index of each sample timed outside ``window`` goes to
    ``refused`` instead of ``rows``."""
    lo, hi = window if window is not None else (-math.inf, math.inf)
    for index, fork, frame in blocks:
        block_rows.append((stream_id, index, fork, len(frame.samples)))
        for k, smp in enumerate(frame.samples):
            if not lo <= smp.time <= hi:
                refused.append(index)
                continue
            v = smp.value
            code = kind_code(v)
            if isinstance(v, bool | float | int):
                rows.append((stream_id, smp.time, float(v), None, index, fork, k, code))
            elif isinstance(v, str):
                rows.append((stream_id, smp.time, None, v, index, fork, k, code))
            else:
                rows.append((stream_id, smp.time, None, v.hex(), index, fork, k, code))


@dataclass(frozen=True, slots=True)
class IngestItem:
    """One stream's verified blocks (index, fork, frame) for :meth:`Store.ingest_many`; samples
    timed outside ``window`` (lo, hi) are refused and counted; ``unit``: the stream's unit,
    recorded if none is yet."""

    stream_id: int
    blocks: Sequence[tuple[int, int, Frame]]
    window: tuple[float, float] | None = None
    unit: str | None = None


#: Values of larger magnitude (and infinities) are stored but not rolled up: a sum of up to
#: 10**18 values within the bound stays finite (1e290 * 1e18 < 1.7e308), whatever range a
#: query spans, so no rollup and no mean becomes inf or NaN. No sensor reads near 1e290.
ROLLUP_BOUND = 1e290

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
            conn.execute(_BATCH_BLOCKS)
            conn.execute(_BATCH_STREAMS)
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

    def note_device(self, record_key: bytes, now: float) -> None:
        """List a device whose record could not be read (so its status shows), if it is not
        listed yet; ``last_seen`` is not moved."""
        self.conn.execute("INSERT INTO devices (record_key, name, first_seen, last_seen) "
                          "VALUES (?, NULL, ?, ?) ON CONFLICT (record_key) DO NOTHING",
                          (record_key, now, now))

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

    def set_problem(self, stream_id: int, problem: str | None) -> None:
        """The stream's trouble this round that does not stop it (None: none)."""
        self.conn.execute("UPDATE streams SET problem = ? WHERE id = ?",
                          (None if problem is None else problem[:500], stream_id))

    def window_since(self, stream_id: int, now: float) -> float:
        """When the gateway first took samples of the stream (``now`` the first time)."""
        self.conn.execute("UPDATE streams SET window_since = coalesce(window_since, ?) "
                          "WHERE id = ?", (now, stream_id))
        row = self.conn.execute("SELECT window_since FROM streams WHERE id = ?",
                                (stream_id,)).fetchone()
        return float(row[0]) if row and row[0] is not None else now

    def refused(self, stream_id: int) -> int:
        """Samples of the stream refused for their time (outside the plausible window)."""
        row = self.conn.execute("SELECT refused FROM streams WHERE id = ?",
                                (stream_id,)).fetchone()
        return int(row[0]) if row else 0

    def status(self, stream_id: int) -> str:
        row = self.conn.execute("SELECT status FROM streams WHERE id = ?",
                                (stream_id,)).fetchone()
        return str(row[0]) if row else "unknown"

    # -- ingest --------------------------------------------------------------------------------

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
        """Store the samples of verified blocks (index, fork, frame) of one stream, in one
        transaction; blocks already ingested are skipped. Returns samples newly stored. With
        ``window`` (lo, hi): samples timed outside [lo, hi] are not stored but counted in the
        stream's ``refused``; their blocks count as ingested all the same (exactly once)."""
        c = self.conn
        rows: list[_SampleRow] = []
        block_rows: list[tuple[int, int, int, int]] = []
        out: list[int] = []  # block index of each sample refused for its time
        _rows_of(stream_id, blocks, window, rows, block_rows, out)
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
            other = sum(1 for r in rows if kind is not None and KINDS[r[7]] != kind)
            c.execute("UPDATE streams SET stored_blocks = stored_blocks + ?, "
                      "refused = refused + ?, other_kind = other_kind + ? WHERE id = ?",
                      (len(block_rows), len(out), other, stream_id))
        return stored

    def ingest_many(self, items: Sequence[IngestItem]) -> list[int | None]:
        """Store the verified blocks of many streams in ONE transaction (live push: what the
        connected devices sent within a short window), with :meth:`ingest`'s rules per
        stream: exactly once (blocks ingested before are skipped), samples outside the
        item's window refused and counted, the stream's kind, unit and rollups kept. Returns,
        per item, how many of its samples were refused for their time, or None when its
        stream is stopped (nothing of it stored). All or nothing: a database error stores
        nothing of any item (:class:`StoreError`)."""
        c = self.conn
        rows: list[_SampleRow] = []
        block_rows: list[tuple[int, int, int, int]] = []
        refused: dict[int, list[int]] = {}
        for item in items:
            _rows_of(item.stream_id, item.blocks, item.window, rows, block_rows,
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
            kinds: dict[int, str | None] = {}
            for sid in live:  # each stream's kind: as stored, or its first new sample's
                known = state[sid][1]
                if known is None:
                    mine = [r for r in rows if r[0] == sid]
                    if mine:
                        known = KINDS[min(mine, key=lambda r: (r[1], r[4], r[6]))[7]]
                        c.execute("UPDATE streams SET kind = ? WHERE id = ?", (known, sid))
                kinds[sid] = None if known is None else str(known)
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
            other: dict[int, int] = {}
            for r in rows:
                of = kinds.get(r[0])
                if of is not None and KINDS[r[7]] != of:
                    other[r[0]] = other.get(r[0], 0) + 1
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

    def _kind(self, stream_id: int, rows: list[tuple[int, float, float | None, str | None, int,
                                                     int, int, int]]) -> str | None:
        """The stream's kind of value: as stored, or (the first time) its first new sample's,
        recorded in the open transaction. None: no samples yet."""
        row = self.conn.execute("SELECT kind FROM streams WHERE id = ?", (stream_id,)).fetchone()
        if row is not None and row[0] is not None:
            return str(row[0])
        if not rows:
            return None
        first = min(rows, key=lambda r: (r[1], r[4], r[6]))  # (time, block, position)
        kind = KINDS[first[7]]
        self.conn.execute("UPDATE streams SET kind = ? WHERE id = ?", (kind, stream_id))
        return kind

    def kind(self, stream_id: int) -> str | None:
        """The stream's kind of value (:data:`KINDS`), None before its first sample."""
        row = self.conn.execute("SELECT kind FROM streams WHERE id = ?", (stream_id,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def other_kind(self, stream_id: int) -> int:
        """Samples of the stream stored with another kind than its own (not rolled up)."""
        row = self.conn.execute("SELECT other_kind FROM streams WHERE id = ?",
                                (stream_id,)).fetchone()
        return int(row[0]) if row else 0

    def unrolled(self, stream_id: int) -> int:
        """How many of a stream's numeric samples were too large to roll up (ROLLUP_BOUND)."""
        row = self.conn.execute("SELECT n FROM rollup_skipped WHERE stream_id = ?",
                                (stream_id,)).fetchone()
        return int(row[0]) if row else 0

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

    # -- holes ---------------------------------------------------------------------------------

    def set_missing(self, stream_id: int, ranges: Iterable[tuple[int, int, str]],
                    now: float) -> list[tuple[int, int, str]]:
        """A stream's holes as its edge's last full answer showed them: (start, stop, reason)
        runs of blocks it would not serve. Replaces the stream's list (a hole the gateway
        has since stored is gone); returns the runs that were not listed before."""
        c = self.conn
        old = {(a, b, r): f for a, b, r, f in c.execute(
            "SELECT start, stop, reason, first_seen FROM missing_blocks WHERE stream_id = ?",
            (stream_id,))}
        new = sorted(set(ranges))
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute("DELETE FROM missing_blocks WHERE stream_id = ?", (stream_id,))
            c.executemany(
                "INSERT INTO missing_blocks (stream_id, start, stop, reason, first_seen, "
                "last_seen) VALUES (?, ?, ?, ?, ?, ?)",
                [(stream_id, a, b, r[:200], old.get((a, b, r), now), now) for a, b, r in new])
            c.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                c.execute("ROLLBACK")
            raise
        return [x for x in new if x not in old]

    def missing(self, stream_id: int | None = None
                ) -> dict[int, list[tuple[int, int, str, float]]]:
        """Holes by stream: (start, stop, reason, first seen), in block order."""
        sql = "SELECT stream_id, start, stop, reason, first_seen FROM missing_blocks"
        args: tuple[int, ...] = ()
        if stream_id is not None:
            sql += " WHERE stream_id = ?"
            args = (stream_id,)
        out: dict[int, list[tuple[int, int, str, float]]] = {}
        for sid, a, b, r, f in self.conn.execute(sql + " ORDER BY stream_id, start", args):
            out.setdefault(int(sid), []).append((int(a), int(b), str(r), float(f)))
        return out

    # -- queries -------------------------------------------------------------------------------

    def samples(self, stream_id: int, start: float, end: float
                ) -> list[tuple[float, float | str | bool | None, int, int]]:
        """(time, value, block, fork) of a stream's samples in [start, end), by time (then
        block and position); each value in its kind (:func:`typed_value`)."""
        return [(t, typed_value(v, x, kind), b, f) for t, v, x, kind, b, f in self.conn.execute(
            "SELECT t, value, text, kind, block, fork FROM samples WHERE stream_id = ? "
            "AND t >= ? AND t < ? ORDER BY t, block, k", (stream_id, start, end))]

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

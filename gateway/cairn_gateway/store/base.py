"""The store's one interface: :class:`Store`, what the collector, the API, the CLI, retention
and the metrics ask of it, whichever engine holds the data.

``Store(target)`` opens the engine its target names: a path is an SQLite file
(:class:`~cairn_gateway.store.sqlite.SQLiteStore`, the embedded default), a ``postgresql://``
URL a PostgreSQL database (:class:`~cairn_gateway.store.postgres.PostgresStore`). Both hold the
same tables with the same columns; the SQL that reads and keeps them is written once here, in
the subset both engines speak (:data:`PORTABLE`), over :class:`Conn`: a connection whose
``execute`` takes ``?`` placeholders on both engines. What differs (migrations, the ingest
transaction, retention's disk accounting, the clock a lease is measured by) is each engine's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar, Protocol

from cairn.frames import Frame
from cairn_gateway.store.common import IngestItem, RollupRow, Series, StoreError, typed_value

__all__ = ["PORTABLE", "Conn", "Cursor", "Store", "bucket_sql", "check_url", "is_url", "now_sql"]

#: What the SQL written once for both engines keeps to (checked by the store tests running
#: every query on both).
PORTABLE = (
    "? placeholders; ON CONFLICT ... DO NOTHING (never INSERT OR IGNORE); upsert expressions "
    "naming their table (devices.name, not name); count(*) FILTER (WHERE ...) rather than a "
    "sum of booleans; CAST(sum(x) AS BIGINT) for sums of integers (PostgreSQL's is numeric); "
    "TRUE, not 1; no scalar min(a, b); buckets of times through bucket_sql (SQLite's CAST "
    "truncates, PostgreSQL's rounds)")


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """A store's connection: ``?`` placeholders on both engines."""

    dialect: str  # "sqlite" or "postgresql"

    @property
    def IntegrityError(self) -> type[Exception]: ...  # (DB-API's name)

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]], /) -> Any: ...

    def transaction(self) -> AbstractContextManager[Any]: ...

    def close(self) -> None: ...


def bucket_sql(conn: Conn, column: str) -> str:
    """SQL for the start of the ``?``-second bucket holding ``column`` (epoch seconds, not
    negative); its two placeholders both take the width. (SQLite's CAST truncates, which is the
    floor for times after 1970; PostgreSQL's rounds.)"""
    if conn.dialect == "postgresql":
        return f"(floor({column} / ?) * ?)::bigint"
    return f"CAST({column} / ? AS INTEGER) * ?"


def now_sql(conn: Conn) -> str:
    """SQL for the database's clock in epoch seconds: leases are measured by it, so gateways
    whose clocks disagree still agree on who holds what."""
    if conn.dialect == "postgresql":
        return "extract(epoch FROM clock_timestamp())::double precision"
    return "((julianday('now') - 2440587.5) * 86400.0)"


def check_url(url: str, name: str, error: type[Exception], password: str) -> None:
    """Refuse (``error``, naming ``name``: ``--to``, ``[store].url``...) a store URL a person
    gave that is not ``postgresql://user@host[:port]/dbname``, or that holds a password (it
    would show in configs, the process list, a shell's history); ``password`` says where the
    password goes instead."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parses the port (a ValueError when it is not one)
    except ValueError as exc:
        raise error(f"{name} is not a URL: {exc}") from None
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise error(f"{name} {url!r} is not a postgresql://user@host[:port]/dbname URL")
    if parts.password is not None:
        raise error(f"{name} holds a password: {password}")


def is_url(target: str | Path) -> bool:
    """Whether a store target names a PostgreSQL server (else it is an SQLite file)."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


class Store:
    """The gateway's sample store (see the package docstring for what it keeps)."""

    conn: Conn
    #: the SQLite file, or None for a database server
    path: Path | None = None
    #: what to open again in another process (the ingest worker): a path or a URL
    target: str = ""
    #: what to show a person: a path, or the URL without its password
    where: str = ""
    engine: ClassVar[str] = ""

    def __new__(cls, target: str | Path, *args: Any, **kwargs: Any) -> Store:
        if cls is Store:
            if is_url(target):
                from cairn_gateway.store.postgres import PostgresStore
                cls = PostgresStore
            else:
                from cairn_gateway.store.sqlite import SQLiteStore
                cls = SQLiteStore
        return super().__new__(cls)

    def close(self) -> None:
        self.conn.close()

    # -- what each engine does its own way -----------------------------------------------------

    def ingest(self, stream_id: int, blocks: Iterable[tuple[int, int, Frame]],
               window: tuple[float, float] | None = None) -> int:
        """Store the samples of verified blocks (index, fork, frame) of one stream, in one
        transaction; blocks already ingested are skipped. Returns samples newly stored. With
        ``window`` (lo, hi): samples timed outside [lo, hi] are not stored but counted in the
        stream's ``refused``; their blocks count as ingested all the same (exactly once)."""
        raise NotImplementedError

    def ingest_many(self, items: Sequence[IngestItem]) -> list[int | None]:
        """Store the verified blocks of many streams in ONE transaction (live push: what the
        connected devices sent within a short window), with :meth:`ingest`'s rules per
        stream: exactly once (blocks ingested before are skipped), samples outside the
        item's window refused and counted, the stream's kind, unit and rollups kept. Returns,
        per item, how many of its samples were refused for their time, or None when its
        stream is stopped (nothing of it stored). All or nothing: a database error stores
        nothing of any item (:class:`StoreError`)."""
        raise NotImplementedError

    def used_bytes(self) -> int:
        """Bytes the store's data takes (free space not counted)."""
        raise NotImplementedError

    def vacuum(self) -> bool:
        """Give free space back after deletions, when worth it; True if it did."""
        return False

    def writable(self) -> str | None:
        """Why the store takes no writes now (None: it does). A file's is checked by the
        health probe on the file itself."""
        return None

    # -- devices and streams -------------------------------------------------------------------

    def device(self, record_key: bytes, name: str | None, now: float) -> int:
        c = self.conn
        c.execute("INSERT INTO devices (record_key, name, first_seen, last_seen) VALUES "
                  "(?, ?, ?, ?) ON CONFLICT (record_key) DO UPDATE SET last_seen = "
                  "excluded.last_seen, name = coalesce(excluded.name, devices.name)",
                  (record_key, name, now, now))
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

    def collected_log_keys(self) -> list[tuple[int, bytes]]:
        """(stream id, log key) of every stream still collected (not stopped), by id."""
        return [(int(i), bytes(k)) for i, k in self.conn.execute(
            "SELECT id, log_key FROM streams WHERE status = 'ok' ORDER BY id")]

    def oldest_sample(self) -> float | None:
        """The time of the oldest sample stored (None: none)."""
        row = self.conn.execute("SELECT min(t) FROM samples").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    # -- holes ---------------------------------------------------------------------------------

    def set_missing(self, stream_id: int, ranges: Iterable[tuple[int, int, str]],
                    now: float) -> list[tuple[int, int, str]]:
        """A stream's holes as its edge's last full answer showed them: (start, stop, reason)
        runs of blocks it would not serve. Replaces the stream's list (a hole the gateway
        has since stored is gone); returns the runs that were not listed before."""
        c = self.conn
        old = {(int(a), int(b), str(r)): float(f) for a, b, r, f in c.execute(
            "SELECT start, stop, reason, first_seen FROM missing_blocks WHERE stream_id = ?",
            (stream_id,))}
        new = sorted(set(ranges))
        with c.transaction():
            c.execute("DELETE FROM missing_blocks WHERE stream_id = ?", (stream_id,))
            c.executemany(
                "INSERT INTO missing_blocks (stream_id, start, stop, reason, first_seen, "
                "last_seen) VALUES (?, ?, ?, ?, ?, ?)",
                [(stream_id, a, b, r[:200], old.get((a, b, r), now), now) for a, b, r in new])
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

    # -- retention -----------------------------------------------------------------------------

    def prune(self, before: float, rollups_before: float | None = None) -> int:
        """Retention: delete samples older than ``before`` (and minute rollups, and hour
        rollups older than ``rollups_before`` when given). Returns samples deleted."""
        c = self.conn
        with c.transaction():
            deleted = int(c.execute("DELETE FROM samples WHERE t < ?", (before,)).rowcount)
            c.execute("DELETE FROM rollup_minute WHERE bucket < ?", (before,))
            if rollups_before is not None:
                c.execute("DELETE FROM rollup_hour WHERE bucket < ?", (rollups_before,))
        return deleted


_QUERY = ("SELECT (bucket / ?) * ? AS b, CAST(sum(n) AS BIGINT), sum(total), min(lo), max(hi) "
          "FROM TABLE WHERE stream_id = ? AND bucket >= ? AND bucket < ? GROUP BY b ORDER BY b")
_QUERY_AS_STORED = ("SELECT bucket, n, total, lo, hi FROM TABLE "
                    "WHERE stream_id = ? AND bucket >= ? AND bucket < ? ORDER BY bucket")

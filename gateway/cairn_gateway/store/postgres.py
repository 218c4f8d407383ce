"""The PostgreSQL engine of the store: a fleet past one machine, several gateways on one
database (``[store] url = "postgresql://..."``).

The tables and columns are SQLite's (:mod:`cairn_gateway.store`), typed for PostgreSQL
(``bigint``, ``double precision``, ``bytea``); what differs:

- **samples are partitioned by time**: one partition a month (``samples_y2026m12``, made when
  the first sample of the month arrives; a sample timed outside 1970..2200, which only a
  writer with no plausible-time window can send, goes to ``samples_other``); one batch makes
  at most :data:`NEW_MONTHS` partitions (a batch spread over many months leaves the rest in
  ``samples_other`` until a later batch makes theirs and moves them), so in all there are as
  many as the plausible-time window spans; retention drops a month whole once all of it is
  past, and deletes rows only in the month it cuts through;
- **ingest** copies the batch into per-connection temporary tables with ``COPY`` (binary), then
  claims its blocks with ``INSERT INTO blocks ... ON CONFLICT DO NOTHING RETURNING``: only the
  blocks this transaction inserted have their samples stored and rolled up, so two gateways
  storing the same block at once store it once (the second waits for the first to commit, then
  finds it there). The streams of a batch are locked (``FOR UPDATE``, by id) first, so
  concurrent batches never deadlock; a deadlock or serialisation failure all the same is
  retried;
- **migrations** are numbered SQL in ``cairn_migrations``, applied under an advisory lock (two
  gateways starting at once apply them once); a database migrated by a newer Cairn is refused;
- **connections** come from a pool (psycopg_pool), checked before use, so a server restart
  costs the statements in flight (a :class:`StoreError`: their transactions are rolled back,
  the caller's retry stores them once), not the gateway: the pool reconnects by itself, as
  soon as the server is back however long it was away (:data:`RECONNECT_FOR`); while the
  server is unreachable a statement waits :data:`UNREACHABLE_WAIT` for a connection, not the
  pool's :data:`POOL_WAIT`; a server down when the store opens is said at once; a transaction
  keeps its connection for the thread that opened it;
- a string's NUL characters (which PostgreSQL's text cannot hold, and only a hostile writer
  sends: in a sample, a unit, a device or stream name) are stored as U+FFFD; a sample timed
  beyond :data:`ROLLUP_TIMES` is stored, not rolled up (its bucket would not fit a bigint);
- every error of the driver becomes a :class:`StoreError` naming the server (never its
  password) in one line, an integrity violation a :class:`StoreConflict`; a full disk says
  so in words, and :meth:`PostgresStore.writable` (``/readyz``) reports it until a write
  succeeds.

TimescaleDB: when the extension is available its presence is logged; the samples stay on
declarative partitions (the same queries run on both).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool, PoolTimeout

from cairn.frames import Frame
from cairn.logs import quiet_tracebacks
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

__all__ = ["MIGRATIONS", "PgConn", "PostgresStore", "StoreConflict", "redact_url"]

log = logging.getLogger(__name__)

#: what a NUL in a string sample is stored as (PostgreSQL's text cannot hold NUL; only a
#: hostile writer sends one)
NUL_AS = "\ufffd"
CONNECT_TIMEOUT = 10.0  # seconds to reach the server when the store opens
#: seconds a statement waits for a connection of the pool (all busy, or the server just
#: went away: a restart that is over by then costs nothing)
POOL_WAIT = 3.0
#: seconds a statement waits for a connection while the server is known unreachable (the
#: pool reconnects meanwhile): an outage costs each caller (an API request holds the event
#: loop) this, not the pool's timeout
UNREACHABLE_WAIT = 0.1
#: seconds the pool tries to replace a lost connection before it gives up (the next statement
#: starts a new try): psycopg_pool's own 300 s, with its attempts spaced twice as far each time,
#: left a gateway without its store 88 to 117 s after a 150 s outage had ended, 0.1 to 2.8 s
#: with 10 (bench/pg_outage.py)
RECONNECT_FOR = 10.0
#: seconds the reason the server is unreachable (a connection tried apart) is reused
REASON_FOR = 2.0
POOL_SIZE = 4  # connections at most (the collector, the API's threads, retention)
RETRIES = 5  # attempts of an ingest transaction that deadlocked or failed to serialise
#: new monthly partitions one ingest makes at most (each takes a lock on ``samples`` that
#: every writer waits for): a batch spread over more months stores the rest in
#: ``samples_other``, moved to their month's partition by the batch that makes it
NEW_MONTHS = 12
#: samples timed further from 1970 (in seconds: 31 million years) are stored but not rolled
#: up (counted as values beyond the bound are): their bucket would not fit a bigint
ROLLUP_TIMES = 1e15
#: samples timed in [FIRST, LAST) go to monthly partitions; others to ``samples_other``
FIRST_MONTH = datetime(1970, 1, 1, tzinfo=UTC)
LAST_MONTH = datetime(2200, 1, 1, tzinfo=UTC)


class StoreConflict(StoreError):
    """A write the database refused for a constraint (a name already bound, a key taken)."""


def redact_url(url: str) -> str:
    """The URL without its password (what logs and errors show)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://(unreadable URL)"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, user + host + port, parts.path, parts.query, parts.fragment))


@lru_cache(maxsize=512)
def _pg(sql: str) -> str:
    """qmark SQL (both engines' dialect here) in psycopg's placeholders."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Rows:
    """A statement's result, read at once (the connection goes back to the pool)."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self.rowcount = cur.rowcount
        self._rows: list[Any] = cur.fetchall() if cur.description is not None else []

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Any]:
        return self._rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


class PgConn:
    """The store's :class:`~cairn_gateway.store.base.Conn` over a pool of PostgreSQL
    connections."""

    dialect = "postgresql"
    IntegrityError: type[Exception] = StoreConflict

    def __init__(self, pool: ConnectionPool[Any], where: str) -> None:
        self.pool = pool
        self.where = where
        self._local = threading.local()
        self.unreachable = False  # the last wait for a connection timed out
        self._reason: tuple[float, str] = (-math.inf, "")  # when found, why unreachable

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection of the pool (a short wait while the server is unreachable)."""
        wait = min(UNREACHABLE_WAIT, self.pool.timeout) if self.unreachable else None
        with self.pool.connection(timeout=wait) as c:
            if self.unreachable:
                self.unreachable = False
                log.warning("%s: the database server is reachable again", self.where)
            yield c

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """The driver's errors as the store's, naming the server."""
        try:
            yield
        except PoolTimeout:  # (an OperationalError too: first) the server is unreachable
            why = self._why()
            if not self.unreachable:  # one line an outage (the pool's own: info, -v)
                self.unreachable = True
                log.warning("%s: the database server is unreachable: %s (statements fail at "
                            "once until it is back)", self.where, why)
            raise StoreError(f"{self.where}: no connection to the server: {why}") from None
        except psycopg.errors.IntegrityError as exc:
            raise StoreConflict(f"{self.where}: {_first_line(exc)}") from None
        except psycopg.errors.DiskFull as exc:
            raise StoreError(f"{self.where}: the database server's disk is full, nothing of "
                             f"this write was stored: free space there ({_first_line(exc)})"
                             ) from None
        except psycopg.Error as exc:
            raise StoreError(f"{self.where}: {_first_line(exc)}") from None

    def _why(self) -> str:
        """Why the server is unreachable (one connection tried, at most every REASON_FOR)."""
        found, why = self._reason
        if time.monotonic() - found > REASON_FOR:
            info = self.pool.conninfo
            why = _why_not(info) if isinstance(info, str) else "unreachable"
            self._reason = (time.monotonic(), why)
        return why

    def pinned(self) -> psycopg.Connection[Any] | None:
        """The connection of the transaction this thread has open, if any."""
        return getattr(self._local, "conn", None)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on one connection (this thread's statements go to it until it ends);
        a nested one is a savepoint."""
        held = self.pinned()
        if held is not None:
            with self.errors(), held.transaction():
                yield held
            return
        with self.errors(), self._connection() as c:
            self._local.conn = c
            try:
                with c.transaction():
                    yield c
            finally:
                self._local.conn = None

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> _Rows:
        q = _pg(sql)
        parameters = _no_nul(parameters)
        held = self.pinned()
        with self.errors():
            if held is not None:
                return _Rows(held.execute(q, parameters))
            with self._connection() as c:
                return _Rows(c.execute(q, parameters))

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]], /) -> None:
        rows = [_no_nul(r) for r in seq_of_parameters]
        if not rows:
            return
        q = _pg(sql)
        held = self.pinned()
        with self.errors():
            if held is not None:
                with held.cursor() as cur:
                    cur.executemany(q, rows)
                return
            with self._connection() as c, c.transaction(), c.cursor() as cur:
                cur.executemany(q, rows)

    def close(self) -> None:
        self.pool.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _no_nul(parameters: Sequence[Any]) -> Sequence[Any]:
    """The parameters with each string's NUL as U+FFFD (PostgreSQL's text cannot hold NUL: a
    device or stream name with one, which only a hostile record sends, is stored all the
    same, and looked up the same way)."""
    if any(isinstance(v, str) and "\x00" in v for v in parameters):
        return [v.replace("\x00", NUL_AS) if isinstance(v, str) else v for v in parameters]
    return parameters


def _why_not(url: str) -> str:
    """Why a connection fails (the pool only says it timed out)."""
    try:
        with psycopg.connect(url, connect_timeout=2):
            return "the server answers, but no connection of the pool came free (try again)"
    except psycopg.Error as exc:
        return _first_line(exc)


# -- schema -------------------------------------------------------------------------------------

_M001 = """
CREATE TABLE devices (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, record_key bytea NOT NULL UNIQUE,
    name text, first_seen double precision NOT NULL, last_seen double precision NOT NULL,
    enrolled double precision, removed double precision);
CREATE UNIQUE INDEX devices_enrolled_name ON devices (name)
    WHERE enrolled IS NOT NULL AND removed IS NULL;
CREATE TABLE pending (
    record_key bytea PRIMARY KEY, first_seen double precision NOT NULL,
    last_seen double precision NOT NULL, checked double precision,
    record_time double precision, streams text, error text);
CREATE TABLE streams (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    device_id bigint NOT NULL REFERENCES devices(id), name text NOT NULL,
    log_key bytea NOT NULL UNIQUE, unit text, stored_blocks bigint NOT NULL DEFAULT 0,
    fork bigint NOT NULL DEFAULT 0, status text NOT NULL DEFAULT 'ok',
    refused bigint NOT NULL DEFAULT 0, problem text, window_since double precision,
    kind text, other_kind bigint NOT NULL DEFAULT 0, UNIQUE (device_id, name));
CREATE TABLE blocks (
    stream_id bigint NOT NULL, block bigint NOT NULL, fork bigint NOT NULL,
    samples bigint NOT NULL, PRIMARY KEY (stream_id, block));
CREATE TABLE samples (
    stream_id bigint NOT NULL, t double precision NOT NULL, value double precision, text text,
    block bigint NOT NULL, fork bigint NOT NULL, k bigint NOT NULL DEFAULT 0,
    kind smallint NOT NULL DEFAULT 0, PRIMARY KEY (stream_id, t, block, k))
    PARTITION BY RANGE (t);
CREATE TABLE samples_other PARTITION OF samples DEFAULT;
CREATE TABLE rollup_minute (
    stream_id bigint NOT NULL, bucket bigint NOT NULL, n bigint NOT NULL,
    total double precision NOT NULL, lo double precision NOT NULL, hi double precision NOT NULL,
    PRIMARY KEY (stream_id, bucket));
CREATE TABLE rollup_hour (
    stream_id bigint NOT NULL, bucket bigint NOT NULL, n bigint NOT NULL,
    total double precision NOT NULL, lo double precision NOT NULL, hi double precision NOT NULL,
    PRIMARY KEY (stream_id, bucket));
CREATE TABLE rollup_skipped (stream_id bigint PRIMARY KEY, n bigint NOT NULL DEFAULT 0);
CREATE TABLE missing_blocks (
    stream_id bigint NOT NULL REFERENCES streams(id), start bigint NOT NULL,
    stop bigint NOT NULL, reason text NOT NULL, first_seen double precision NOT NULL,
    last_seen double precision NOT NULL, PRIMARY KEY (stream_id, start));
CREATE TABLE reach (
    record_key bytea PRIMARY KEY, state text NOT NULL, at double precision NOT NULL);
"""

_M002 = """
CREATE TABLE gateways (
    id text PRIMARY KEY, name text NOT NULL DEFAULT '', heartbeat double precision NOT NULL,
    started double precision NOT NULL, advertises text NOT NULL DEFAULT '',
    stopped double precision);
CREATE TABLE leases (
    record_key bytea PRIMARY KEY, holder text NOT NULL, expires double precision NOT NULL,
    since double precision NOT NULL);
CREATE INDEX leases_holder ON leases (holder);
"""

#: (name, SQL) in order; a database holds the names it has applied in ``cairn_migrations``
MIGRATIONS: list[tuple[str, str]] = [
    ("m001_initial", _M001),
    ("m002_leases", _M002),  # several gateways, one fleet: cairn_gateway.leases
]

_TEMP = """
CREATE TEMP TABLE IF NOT EXISTS batch (
    stream_id bigint NOT NULL, t double precision NOT NULL, value double precision, text text,
    block bigint NOT NULL, fork bigint NOT NULL, k bigint NOT NULL, kind smallint NOT NULL)
    ON COMMIT DELETE ROWS;
"""

#: a batch's blocks claimed in one statement (four arrays: stream ids, indexes, forks, samples,
#: as array literals: :func:`_bigints`); only the rows it returns are this transaction's to store
_CLAIM = """
    INSERT INTO blocks (stream_id, block, fork, samples)
    SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])
        AS b (stream_id, block, fork, samples)
    ORDER BY stream_id, block
    ON CONFLICT DO NOTHING RETURNING stream_id, block"""

_ROLLUP = """
    INSERT INTO TABLE (stream_id, bucket, n, total, lo, hi)
    SELECT stream_id, (floor(t / WIDTH) * WIDTH)::bigint AS b, count(*), sum(value),
           min(value), max(value)
    FROM batch WHERE kind = %s AND stream_id = ANY(%s::bigint[]) AND value IS NOT NULL
        AND abs(value) <= BOUND AND abs(t) < TIMES
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (stream_id, bucket) DO UPDATE SET
        n = TABLE.n + excluded.n, total = TABLE.total + excluded.total,
        lo = least(TABLE.lo, excluded.lo), hi = greatest(TABLE.hi, excluded.hi)
""".replace("BOUND", repr(ROLLUP_BOUND)).replace("TIMES", repr(ROLLUP_TIMES))
# (the streams as a bigint[]: a list of small ids is dumped as smallint[], and bigint =
# ANY(smallint[]) is searched element by element for each row of the batch, where a bigint[]
# is hashed: 1,000 streams took 100 ms a statement for 60,000 rows)
_ROLLUPS = [_ROLLUP.replace("TABLE", "rollup_minute").replace("WIDTH", "60"),
            _ROLLUP.replace("TABLE", "rollup_hour").replace("WIDTH", "3600")]
_UNROLLED = f"""
    INSERT INTO rollup_skipped (stream_id, n)
    SELECT stream_id, count(*) FROM batch
    WHERE kind = %s AND stream_id = ANY(%s::bigint[]) AND value IS NOT NULL
        AND NOT (abs(value) <= {ROLLUP_BOUND!r} AND abs(t) < {ROLLUP_TIMES!r})
    GROUP BY 1 ORDER BY 1
    ON CONFLICT (stream_id) DO UPDATE SET n = rollup_skipped.n + excluded.n"""  # noqa: S608


def _bigints(values: Iterable[int]) -> str:
    """An array literal of integers (``{1,2,3}``): psycopg dumps a list element by element in
    Python, ten times slower than this for the thousand a batch claims."""
    return "{" + ",".join(map(str, map(int, values))) + "}"


def _month(t: float) -> datetime | None:
    """The first instant of the month holding ``t`` (None: outside the monthly partitions)."""
    if not math.isfinite(t) or not FIRST_MONTH.timestamp() <= t < LAST_MONTH.timestamp():
        return None
    d = datetime.fromtimestamp(t, UTC)
    return datetime(d.year, d.month, 1, tzinfo=UTC)


def _next_month(m: datetime) -> datetime:
    return datetime(m.year + (m.month == 12), m.month % 12 + 1, 1, tzinfo=UTC)


def _partitions_of(tx: psycopg.Connection[Any]) -> set[str]:
    """The names of ``samples``' partitions (the months made, and ``samples_other``)."""
    return {str(r[0]) for r in tx.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'samples'::regclass")}


def _partition(m: datetime) -> str:
    return f"samples_y{m.year:04d}m{m.month:02d}"


class PostgresStore(Store):
    """The store in a PostgreSQL database (its schema: the URL's ``options=-csearch_path=``,
    else the user's default)."""

    engine: ClassVar[str] = "postgresql"
    conn: PgConn

    def __init__(self, target: str | Path, *args: Any, pool_size: int = POOL_SIZE,
                 timeout: float = CONNECT_TIMEOUT, migrating: bool = False,
                 **kwargs: Any) -> None:
        url = str(target)
        self.target = url
        self.where = redact_url(url)
        self.path = None
        quiet_tracebacks("psycopg.pool")  # (a line per reconnection try: the outage's is ours)
        self.retried = 0  # ingest transactions run again after a deadlock or serialisation
        self.full: str | None = None  # the last write's disk-full error, until one succeeds
        try:
            pool: ConnectionPool[Any] = ConnectionPool(
                url, min_size=1, max_size=max(1, pool_size), open=False,
                timeout=min(timeout, POOL_WAIT), check=ConnectionPool.check_connection,
                reconnect_timeout=RECONNECT_FOR,
                configure=self._configure, name="cairn-store",
                kwargs={"autocommit": True, "connect_timeout": max(1, round(timeout)),
                        "application_name": "cairn-gateway"})
        except (psycopg.Error, ValueError) as exc:
            raise StoreError(f"{self.where}: {_first_line(exc)}") from None
        self.conn = PgConn(pool, self.where)
        try:  # a server down or a bad URL said at once (the pool would retry until timeout)
            psycopg.connect(url, connect_timeout=max(1, round(timeout))).close()
        except psycopg.Error as exc:
            raise StoreError(f"{self.where}: cannot connect: {_first_line(exc)}") from None
        try:
            pool.open(wait=True, timeout=timeout)
        except PoolTimeout:
            problem = _why_not(url)
            pool.close()
            raise StoreError(f"{self.where}: cannot connect: {problem}") from None
        try:
            self._migrate()
            if not migrating:
                self._refuse_unfinished_migration()
            self._months: set[str] = self._partitions()
            self.timescale = bool(self.conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone())
        except BaseException:
            pool.close()
            raise
        if self.timescale:
            log.info("%s: TimescaleDB is available; samples stay on monthly partitions",
                     self.where)

    @staticmethod
    def _configure(c: psycopg.Connection[Any]) -> None:
        c.execute(_TEMP)

    # -- schema ----------------------------------------------------------------------------

    def _migrate(self) -> None:
        c = self.conn
        with c.transaction() as tx:
            tx.execute("SELECT pg_advisory_xact_lock(hashtext('cairn-store-migrations'))")
            tx.execute("CREATE TABLE IF NOT EXISTS cairn_migrations (name text PRIMARY KEY, "
                       "applied double precision NOT NULL)")
            done = {str(r[0]) for r in tx.execute("SELECT name FROM cairn_migrations")}
            known = [name for name, _ in MIGRATIONS]
            unknown = sorted(done - set(known))
            if unknown:
                raise StoreError(f"{self.where}: the store was migrated by a newer Cairn "
                                 f"({', '.join(unknown)}): upgrade this gateway")
            for name, sql in MIGRATIONS:
                if name not in done:
                    tx.execute(sql)
                    tx.execute("INSERT INTO cairn_migrations (name, applied) VALUES (%s, %s)",
                               (name, time.time()))
                    log.info("%s: applied migration %s", self.where, name)

    def _refuse_unfinished_migration(self) -> None:
        """A database that ``cairn gateway store migrate`` began to fill and did not finish is
        not opened (a gateway writing there would take ids the rest of the copy brings)."""
        if self.conn.execute("SELECT to_regclass('cairn_migrate')").fetchone() == (None,):
            return
        row = self.conn.execute("SELECT count(*) FILTER (WHERE NOT done), min(source) "
                                "FROM cairn_migrate").fetchone()
        if row and row[0]:
            raise StoreError(f"{self.where}: the migration of {row[1]} into this database is "
                             "not finished: run `cairn gateway store migrate` again to finish "
                             "it before a gateway uses the store")

    def applied(self) -> list[str]:
        """The migrations this database holds."""
        return [str(r[0]) for r in self.conn.execute(
            "SELECT name FROM cairn_migrations ORDER BY name")]

    def _partitions(self) -> set[str]:
        with self.conn.transaction() as tx:
            return _partitions_of(tx)

    def _ensure_months(self, times: Iterable[float], at_most: int | None = NEW_MONTHS) -> None:
        """Make the monthly partitions these times need, ``at_most`` of them (the latest: the
        rest wait in ``samples_other`` for a later batch; None: all, for a migration of the
        operator's own data), under an advisory lock (two gateways make each once). A month's
        samples already in ``samples_other`` (a batch past the bound) move to its new
        partition."""
        seq = times if isinstance(times, Sequence) else list(times)
        if seq:  # a batch within one month already made (the common case): nothing to do
            first = _month(min(seq))
            if first is not None and first == _month(max(seq)) \
                    and _partition(first) in self._months:
                return
        wanted = {m for m in map(_month, seq) if m is not None}
        missing = sorted(m for m in wanted if _partition(m) not in self._months)
        missing = missing[-at_most:] if at_most is not None else missing
        if not missing:
            return
        with self.conn.transaction() as tx:
            tx.execute("SELECT pg_advisory_xact_lock(hashtext('cairn-store-partitions'))")
            have = _partitions_of(tx)
            for m in missing:
                name = _partition(m)
                if name not in have:
                    self._attach(tx, name, m.timestamp(), _next_month(m).timestamp())
                    have.add(name)
        self._months = have  # (once committed: a lost commit makes them again next time)

    @staticmethod
    def _attach(tx: psycopg.Connection[Any], name: str, lo: float, hi: float) -> None:
        """Partition ``name`` for [lo, hi), with the rows ``samples_other`` holds there."""
        tx.execute(f"CREATE TABLE {name} (LIKE samples INCLUDING DEFAULTS)")
        tx.execute(f"WITH moved AS (DELETE FROM samples_other WHERE t >= %s AND t < %s "  # noqa: S608
                   f"RETURNING *) INSERT INTO {name} SELECT * FROM moved", (lo, hi))
        tx.execute(f"ALTER TABLE samples ATTACH PARTITION {name} "
                   f"FOR VALUES FROM ({lo!r}) TO ({hi!r})")

    def stream(self, device_id: int, name: str, log_key: bytes, unit: str | None = None) -> int:
        # (a name with NUL is stored with U+FFFD: compared as stored)
        return super().stream(device_id, name.replace("\x00", NUL_AS), log_key, unit)

    # -- ingest ----------------------------------------------------------------------------

    def ingest(self, stream_id: int, blocks: Iterable[tuple[int, int, Frame]],
               window: tuple[float, float] | None = None) -> int:
        stored: list[int] = []  # (a stopped stream is found under its lock: one round trip)
        got = self._ingest([IngestItem(stream_id, list(blocks), window)], stored)
        if got[0] is None:
            raise StoreError(f"stream {stream_id} is stopped: {self.status(stream_id)}")
        return stored[0]

    def ingest_many(self, items: Sequence[IngestItem]) -> list[int | None]:
        return self._ingest(items, [])

    def _ingest(self, items: Sequence[IngestItem], stored: list[int]) -> list[int | None]:
        """:meth:`ingest_many`; ``stored`` gets the samples stored of each stream, by the
        items' order of first appearance."""
        rows: list[SampleRow] = []
        block_rows: list[tuple[int, int, int, int]] = []
        refused: dict[int, list[int]] = {}
        for item in items:
            rows_of(item.stream_id, item.blocks, item.window, rows, block_rows,
                    refused.setdefault(item.stream_id, []))
        if not block_rows:
            stored.extend(0 for _ in refused)
            return [0 for _ in items]
        self._ensure_months([r[1] for r in rows])
        for attempt in range(RETRIES):
            try:
                got = self._ingest_once(items, rows, block_rows, refused, stored)
            except StoreError as exc:
                if "disk is full" in str(exc):
                    self.full = str(exc)
                if ("deadlock detected" not in str(exc) and "serializ" not in str(exc)) \
                        or attempt == RETRIES - 1:
                    raise
                stored.clear()
                self.retried += 1
                log.debug("ingest retried: %s", exc)
            else:
                self.full = None
                return got
        raise AssertionError("unreachable")

    def _ingest_once(self, items: Sequence[IngestItem], rows: list[SampleRow],
                     block_rows: list[tuple[int, int, int, int]], refused: dict[int, list[int]],
                     stored: list[int]) -> list[int | None]:
        ids = sorted(refused)
        with self.conn.transaction() as tx:
            state = {int(r[0]): (str(r[1]), r[2]) for r in tx.execute(
                "SELECT id, status, kind FROM streams WHERE id = ANY(%s) ORDER BY id "
                "FOR UPDATE", (ids,))}
            live = {sid for sid in ids if state.get(sid, ("unknown", None))[0] == "ok"}
            firsts: dict[tuple[int, int], tuple[int, int, int, int]] = {}
            for br in block_rows:
                if br[0] in live:
                    firsts.setdefault((br[0], br[1]), br)
            columns = list(zip(*firsts.values(), strict=True)) or [()] * 4
            new = {(int(a), int(b)) for a, b in tx.execute(
                _CLAIM, [_bigints(c) for c in columns]).fetchall()}
            seen: set[tuple[int, int, int]] = set()
            mine: list[SampleRow] = []
            for r in rows:
                if (r[0], r[4]) in new and (r[0], r[4], r[6]) not in seen:
                    seen.add((r[0], r[4], r[6]))
                    if r[3] is not None and "\x00" in r[3]:  # (text holds no NUL here)
                        r = (*r[:3], r[3].replace("\x00", NUL_AS), *r[4:])
                    mine.append(r)
            for sid in ids:
                refused[sid] = [b for b in refused[sid] if (sid, b) in new]
            kinds, found = stream_kinds(
                {sid: None if state[sid][1] is None else str(state[sid][1]) for sid in live},
                mine)
            first_kinds = sorted((k, sid) for sid, k in found.items())
            blocks_of: dict[int, int] = {}
            for sid, _b in new:
                blocks_of[sid] = blocks_of.get(sid, 0) + 1
            count, other = tally(mine, kinds)
            updates = [(blocks_of.get(sid, 0), len(refused[sid]), other.get(sid, 0), sid)
                       for sid in sorted(live) if sid in blocks_of]
            units = sorted({(item.stream_id, item.unit) for item in items
                            if item.unit is not None and item.stream_id in live})
            with tx.cursor() as cur:
                if mine:
                    with cur.copy("COPY batch (stream_id, t, value, text, block, fork, k, kind) "
                                  "FROM STDIN (FORMAT BINARY)") as cp:
                        cp.set_types(["int8", "float8", "float8", "text", "int8", "int8",
                                      "int8", "int2"])
                        for r in mine:
                            cp.write_row(r)
                with tx.pipeline():  # the rest in one round trip
                    if first_kinds:
                        cur.executemany("UPDATE streams SET kind = %s WHERE id = %s",
                                        first_kinds)
                    if mine:
                        for kind in sorted({k for k in kinds.values() if k in ROLLED_UP}):
                            of_kind = sorted(sid for sid, k in kinds.items() if k == kind)
                            param = (KINDS.index(kind), _bigints(of_kind))
                            for sql in _ROLLUPS:
                                cur.execute(sql, param)
                            cur.execute(_UNROLLED, param)
                        cur.execute("INSERT INTO samples (stream_id, t, value, text, block, "
                                    "fork, k, kind) SELECT stream_id, t, value, text, block, "
                                    "fork, k, kind FROM batch ON CONFLICT DO NOTHING")
                    if updates:
                        cur.executemany("UPDATE streams SET stored_blocks = stored_blocks + "
                                        "%s, refused = refused + %s, other_kind = other_kind "
                                        "+ %s WHERE id = %s", updates)
                    if units:
                        cur.executemany("UPDATE streams SET unit = coalesce(unit, %s) "
                                        "WHERE id = %s", [_no_nul((u, sid)) for sid, u in units])
        order: list[int] = []
        for item in items:
            if item.stream_id not in order:
                order.append(item.stream_id)
        stored.extend(count.get(sid, 0) for sid in order)
        return [len(refused[item.stream_id]) if item.stream_id in live else None
                for item in items]

    # -- retention -------------------------------------------------------------------------

    def prune(self, before: float, rollups_before: float | None = None) -> int:
        """:meth:`Store.prune`; a month wholly before ``before`` is dropped, not deleted row
        by row."""
        deleted = 0
        with self.conn.transaction() as tx:
            for name in sorted(self._partitions_before(tx, before)):
                row = tx.execute(f"SELECT count(*) FROM {name}").fetchone()  # noqa: S608
                deleted += int(row[0]) if row else 0
                tx.execute(f"DROP TABLE {name}")
                self._months.discard(name)
            deleted += int(tx.execute("DELETE FROM samples WHERE t < %s", (before,)).rowcount)
            tx.execute("DELETE FROM rollup_minute WHERE bucket < %s", (before,))
            if rollups_before is not None:
                tx.execute("DELETE FROM rollup_hour WHERE bucket < %s", (rollups_before,))
        return deleted

    @staticmethod
    def _partitions_before(tx: psycopg.Connection[Any], before: float) -> list[str]:
        out = []
        for name in _partitions_of(tx):
            if name.startswith("samples_y"):  # (not samples_other)
                y, m = int(name[9:13]), int(name[14:16])
                if _next_month(datetime(y, m, 1, tzinfo=UTC)).timestamp() <= before:
                    out.append(name)
        return out

    def writable(self) -> str | None:
        """Why the server takes no writes now: unreachable, a standby, or its disk full at
        the last ingest (None: it takes them). Without the server's address: ``/readyz``, which
        says it, needs no token."""
        try:
            row = self.conn.execute("SELECT pg_is_in_recovery()").fetchone()
        except StoreError as exc:
            log.debug("readiness: %s", exc)
            return "not answering (the gateway's log names it and says why)"
        if row and row[0]:
            return "it is a read-only standby"
        return None if self.full is None else _unnamed(self.full, self.where)

    def used_bytes(self) -> int:
        row = self.conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'"
        ).fetchone()
        return int(row[0])


def _unnamed(problem: str, where: str) -> str:
    """A store error without the server's address (user, host, port, database) in it."""
    return problem.removeprefix(f"{where}: ").replace(where, "the server")


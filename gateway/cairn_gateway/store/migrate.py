"""Move an SQLite store into a PostgreSQL one, without loss (``cairn gateway store migrate``).

What :func:`migrate` does, in order:

1. **the source** (a gateway's ``gw.db``) is checked to be a Cairn store before anything opens
   it for writing: an SQLite file whose ``_sqlite_migrations`` lists the ``cairn-gateway``
   migrations (a newer Cairn's is refused); one an older Cairn left is brought to this
   version's schema (what the gateway itself would do at its next start). Every table of its
   schema must be one this module copies (:data:`TABLES`): a table it does not know would be
   left behind, so the migration refuses to start. The rows are read in ONE read transaction
   (a snapshot; the caller holds the data directory's lock, so no gateway writes meanwhile);
2. **the target**: opening :class:`~cairn_gateway.store.postgres.PostgresStore` makes its
   schema (its migrations). One migration at a time writes a database (an advisory lock).
   Progress lives in the target, in ``cairn_migrate``: one row per table with the last key
   copied and the rows copied, and the source's *fingerprint* (the small tables whole and the
   large ones' row counts, hashed). A target that holds Cairn data but no migration, or the
   migration of another source (or of this one before a gateway changed it), is refused
   (:class:`TargetInUseError`): there is no ``--force-merge``, because ids are kept (devices
   and streams keep theirs, so links and dashboards keep working) and two stores' ids collide;
   gateways that share a store each collect into it instead;
3. **the copy**: each table in key order (the source's primary key, so a resume starts after
   the last key with one indexed query), in chunks, each chunk ONE transaction in the target:
   a binary ``COPY`` of the rows and the update of its ``cairn_migrate`` row. A migration killed
   anywhere (``kill -9``, a dropped connection, the server restarted) has committed whole chunks
   with their progress, nothing else: run again, it goes on after the last chunk, so nothing is
   copied twice and nothing is skipped. Samples' monthly partitions are made before each chunk
   (:meth:`PostgresStore._ensure_months`). (Samples go in key order, stream by stream, not in
   time order: SQLite has no index on time alone, so a time order would sort the whole table
   again at every run; a chunk makes whatever months it holds.) Until the migration is
   finished, :class:`PostgresStore` refuses to open the target for a gateway. A string's NUL
   characters become U+FFFD, as the PostgreSQL store stores them (its text cannot hold NUL;
   counted in the report). Before anything moves, one scan per table checks every value
   against its column in the target (SQLite keeps any value in any column): a damaged row
   stops the migration, named; nothing is dropped silently;
4. **the identity sequences** of ``devices.id`` and ``streams.id`` are moved past the ids kept;
5. **verification**: row counts of every table, and per stream a checksum of its samples (count,
   first and last time, sum of times, values: count, min, max, sum; blocks, positions and kinds
   summed) and of its rollups (buckets, samples counted, min, max, sum), equal on both sides
   (sums of floats within the rounding error two summation orders can make). The report says
   what differs; the command exits 0 only when nothing does.

:func:`plan` answers ``--dry-run`` without writing anything anywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg

from cairn.errors import UsageError
from cairn_gateway.store.common import ROLLUP_BOUND, StoreError
from cairn_gateway.store.postgres import NUL_AS, PostgresStore, redact_url
from cairn_gateway.store.sqlite import MIGRATIONS, SQLiteStore

__all__ = ["CHUNK", "TABLES", "MigrationReport", "Plan", "SourceStoreError", "TableCount",
           "TargetInUseError", "check_source", "migrate", "plan"]

#: Every table of a store, in the order they are copied (a table before those referring to
#: it), each with its primary key: the order rows are copied in and resumed after.
TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("devices", ("id",)),
    ("pending", ("record_key",)),
    ("reach", ("record_key",)),
    ("streams", ("id",)),
    ("missing_blocks", ("stream_id", "start")),
    ("rollup_skipped", ("stream_id",)),
    ("blocks", ("stream_id", "block")),
    ("rollup_minute", ("stream_id", "bucket")),
    ("rollup_hour", ("stream_id", "bucket")),
    ("samples", ("stream_id", "t", "block", "k")),
)
#: the tables whose rows the fingerprint hashes whole (small); the others are counted
_SMALL = ("devices", "pending", "reach", "streams", "missing_blocks", "rollup_skipped")
#: tables of an SQLite file that are not the store's data: its migrations, and the gateways
#: and their leases (who collects what, on a shared database: a store moved there starts with
#: none, and its gateways register and claim as they start)
_NOT_DATA = ("_sqlite_migrations", "gateways", "leases")
CHUNK = 10_000  # rows per chunk (one transaction in the target)
LOCK_WAIT = 15.0  # seconds to wait for another migration's lock (a killed one's session ends)
#: PostgreSQL column types -> COPY's name for it, the SQLite storage classes (``typeof``) a
#: value of the source may have there, and the range an integer must be in (SQL, or "")
_TYPES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "bigint": ("int8", ("integer",), ""),
    "smallint": ("int2", ("integer",), "BETWEEN -32768 AND 32767"),
    "double precision": ("float8", ("real", "integer"), ""),
    "text": ("text", ("text",), ""),
    "bytea": ("bytea", ("blob",), ""),
}


class SourceStoreError(UsageError, ValueError):
    """The source is not a Cairn store this version can move (missing, not SQLite, not ours,
    a newer Cairn's, a table this migrator does not know)."""


class TargetInUseError(UsageError):
    """The target database already holds other data (another store, another migration)."""


@dataclass(frozen=True, slots=True)
class TableCount:
    table: str
    source: int
    target: int

    @property
    def equal(self) -> bool:
        return self.source == self.target


@dataclass
class MigrationReport:
    """What :func:`migrate` did and found."""

    source: Path
    target: str  # the URL without its password
    counts: list[TableCount] = field(default_factory=list)
    streams: int = 0  # streams whose samples and rollups were compared
    differ: list[str] = field(default_factory=list)  # what is not equal, one line each
    copied: int = 0  # rows copied by this run
    resumed: int = 0  # rows an earlier run had copied
    finished_before: bool = False  # an earlier run had copied everything (this one verified)
    nul_replaced: int = 0  # strings whose NUL characters became U+FFFD
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.differ and all(c.equal for c in self.counts)


@dataclass(frozen=True, slots=True)
class Plan:
    """What a migration would do (``--dry-run``): rows per table in the source, and what the
    target holds."""

    source: Path
    target: str
    rows: dict[str, int]
    target_state: str  # "empty", "no store there yet", "resumes ...", "migrated before", or
    # why it is refused


Progress = Callable[[str, int, int], None]  # (table, rows done, rows in the table)


# -- the source --------------------------------------------------------------------------------

def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True,
                           isolation_level=None)


def _known_migrations() -> list[str]:
    return [m.name for m in MIGRATIONS._migrations]


def open_source(path: Path) -> sqlite3.Connection:
    """A read-only connection to the store at ``path``, checked to be a Cairn store with every
    table known (:class:`SourceStoreError` if not), in a read transaction (a snapshot)."""
    check_source(path)
    if set(_known_migrations()) - set(_applied(path)):  # an older Cairn's: as the gateway would
        SQLiteStore(path).close()
    conn = _ro(path)
    try:
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("BEGIN")
        tables = {str(r[0]) for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'")}
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise SourceStoreError(f"{path} cannot be read: {exc}") from None
    unknown = sorted(tables - {t for t, _ in TABLES} - set(_NOT_DATA))
    absent = sorted({t for t, _ in TABLES} - tables)
    if unknown or absent:
        conn.close()
        if unknown:
            raise SourceStoreError(
                f"{path} holds table(s) this migrator does not know ({', '.join(unknown)}): "
                "they would be left behind; nothing was moved (a newer Cairn's store?)")
        raise SourceStoreError(f"{path} lacks table(s) {', '.join(absent)}: not a whole "
                               "Cairn store")
    return conn


def _applied(path: Path) -> list[str]:
    """The cairn-gateway migrations an SQLite file lists; :class:`SourceStoreError` when it is
    missing, not an SQLite file or not a Cairn store."""
    if not path.is_file():
        raise SourceStoreError(f"{path}: no such file (the gateway's store is "
                               "DATA_DIR/gw.db; give it with --from)")
    try:
        with contextlib.closing(_ro(path)) as c:
            names = {str(r[0]) for r in c.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "_sqlite_migrations" not in names:
                raise SourceStoreError(f"{path} is not a Cairn gateway store (an SQLite file "
                                       "without Cairn's migrations)")
            rows = [str(r[0]) for r in c.execute(
                "SELECT name FROM _sqlite_migrations WHERE migration_set = ?",
                (MIGRATIONS.name,))]
    except sqlite3.DatabaseError as exc:
        raise SourceStoreError(f"{path} is not a Cairn gateway store: {exc}") from None
    if not rows:
        raise SourceStoreError(f"{path} is not a Cairn gateway store (no {MIGRATIONS.name} "
                               "migrations in it)")
    return rows


def _columns(src: sqlite3.Connection, table: str) -> list[str]:
    return [str(r[1]) for r in src.execute(f"PRAGMA table_info({table})")]


def fingerprint(src: sqlite3.Connection) -> str:
    """What identifies the source as it is now: its small tables whole, the others' row
    counts (a gateway that ran on it between two runs of a migration changes it)."""
    h = hashlib.sha256()
    for table, key in TABLES:
        if table in _SMALL:
            cols = ", ".join(_columns(src, table))
            for row in src.execute(f"SELECT {cols} FROM {table} "  # noqa: S608 (our names)
                                   f"ORDER BY {', '.join(key)}"):
                h.update(repr(tuple(row)).encode())
        else:
            n = src.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
            h.update(f"{table}={n};".encode())
    return h.hexdigest()


def _counts(conn: Any) -> dict[str, int]:
    return dict(_counts_of(conn, [t for t, _ in TABLES]))


def _counts_of(conn: Any, tables: list[str]) -> list[tuple[str, int]]:
    return [(t, int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]))  # noqa: S608
            for t in tables]


def check_source(path: Path) -> None:
    """:class:`SourceStoreError` unless ``path`` is a Cairn gateway store this version can
    move (read only: nothing is made, not even its directory)."""
    newer = sorted(set(_applied(path)) - set(_known_migrations()))
    if newer:
        raise SourceStoreError(f"{path} was migrated by a newer Cairn ({', '.join(newer)}): "
                               "migrate it with that version")


# -- keys kept in cairn_migrate ------------------------------------------------------------------

def _key_text(values: Sequence[Any]) -> str:
    """A row's key as JSON, exactly (floats as hex, bytes as hex)."""
    out: list[list[Any]] = []
    for v in values:
        if isinstance(v, bytes):
            out.append(["b", v.hex()])
        elif isinstance(v, float):
            out.append(["f", v.hex()])
        elif isinstance(v, int):
            out.append(["i", v])
        else:
            out.append(["s", str(v)])
    return json.dumps(out)


def _key_values(text: str) -> list[Any]:
    decode: dict[str, Callable[[Any], Any]] = {"b": bytes.fromhex, "f": float.fromhex,
                                               "i": int, "s": str}
    return [decode[t](v) for t, v in json.loads(text)]


# -- the target --------------------------------------------------------------------------------

_PROGRESS = """CREATE TABLE IF NOT EXISTS cairn_migrate (
    tbl text PRIMARY KEY, source text NOT NULL, fingerprint text NOT NULL, last_key text,
    rows bigint NOT NULL DEFAULT 0, done boolean NOT NULL DEFAULT false,
    started double precision NOT NULL, finished double precision)"""


def _connect(url: str, where: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10,
                               application_name="cairn-migrate")
    except psycopg.Error as exc:
        raise StoreError(f"{where}: cannot connect: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextlib.contextmanager
def _errors(where: str) -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        raise StoreError(f"{where}: {_first_line(exc)}") from None


def _lock(pg: psycopg.Connection[Any], where: str) -> None:
    """This session's advisory lock: one migration at a time into a database."""
    deadline = time.monotonic() + LOCK_WAIT
    while not pg.execute("SELECT pg_try_advisory_lock(hashtext('cairn-store-migrate'))"
                         ).fetchone()[0]:  # type: ignore[index]
        if time.monotonic() > deadline:
            raise StoreError(f"{where}: another `cairn gateway store migrate` is writing this "
                             "database: wait for it to end")
        time.sleep(0.1)


def _state(pg: psycopg.Connection[Any]) -> dict[str, tuple[str, str, str | None, int, bool]]:
    """cairn_migrate's rows: table -> (source, fingerprint, last key, rows, done)."""
    exists = pg.execute("SELECT to_regclass('cairn_migrate') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    return {str(r[0]): (str(r[1]), str(r[2]), r[3], int(r[4]), bool(r[5])) for r in pg.execute(
        "SELECT tbl, source, fingerprint, last_key, rows, done FROM cairn_migrate")}


def _check_target(state: dict[str, tuple[str, str, str | None, int, bool]],
                  counts: dict[str, int], print_: str, where: str) -> str:
    """Refuse a target holding other data; say what it holds: "empty", "resumes" or "done"."""
    if not state:
        held = {t: n for t, n in counts.items() if n}
        if held:
            what = ", ".join(f"{n:,} {t}" for t, n in held.items())
            raise TargetInUseError(
                f"{where} already holds a store ({what}): a migration goes into an empty "
                "database (create one, or drop this one's tables if its data is not needed)")
        return "empty"
    sources = {s for s, _, _, _, _ in state.values()}
    prints = {f for _, f, _, _, _ in state.values()}
    if set(state) != {t for t, _ in TABLES}:
        raise TargetInUseError(f"{where} holds a migration begun by another version of Cairn "
                               f"(of {', '.join(sorted(sources))}): finish it with that "
                               "version, or migrate into a new, empty database")
    if prints != {print_}:
        raise TargetInUseError(
            f"{where} holds the migration of another store, or of this one before it changed "
            f"(from {', '.join(sorted(sources))}; a gateway ran on it since?): migrate into a "
            "new, empty database")
    return "done" if all(done for *_, done in state.values()) else "resumes"


def _target_columns(pg: psycopg.Connection[Any], table: str) -> dict[str, str]:
    return {str(r[0]): str(r[1]) for r in pg.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s", (table,))}


# -- the migration -------------------------------------------------------------------------------

def plan(source: Path, target: str) -> Plan:
    """What :func:`migrate` would do, writing nothing (a source an older Cairn left is read as
    it is)."""
    where = redact_url(target)
    if set(_known_migrations()) - set(_applied(source)):
        with contextlib.closing(_ro(source)) as old:
            have = {str(r[0]) for r in old.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            rows = dict(_counts_of(old, [t for t, _ in TABLES if t in have]))
        return Plan(source, where, rows, "the source is an older Cairn's store: it is first "
                    "brought to this version's schema, as the gateway does when it starts")
    with contextlib.closing(open_source(source)) as src:
        rows = _counts(src)
        print_ = fingerprint(src)
    with contextlib.closing(_connect(target, where)) as pg, _errors(where):
        made = pg.execute("SELECT to_regclass('devices') IS NOT NULL").fetchone()
        if not made or not made[0]:
            return Plan(source, where, rows, "no store there yet: its schema is made first")
        state = _state(pg)
        try:
            how = _check_target(state, _counts(pg), print_, where)
        except TargetInUseError as exc:
            return Plan(source, where, rows, f"refused: {exc}")
        if how == "resumes":
            copied = sum(r for *_, r, _ in state.values())
            how = f"resumes an interrupted migration ({copied:,} rows copied)"
        elif how == "done":
            how = "migrated before: it would verify again"
    return Plan(source, where, rows, how)


def migrate(source: Path, target: str, *, chunk: int = CHUNK,
            progress: Progress | None = None) -> MigrationReport:
    """Copy the store at ``source`` (an SQLite file) into the PostgreSQL database ``target``
    (a URL), or finish an interrupted copy; verify; return the report (its ``ok``: equal).
    The caller holds the source's data directory lock."""
    began = time.monotonic()
    where = redact_url(target)
    report = MigrationReport(source, where)
    tell = progress or (lambda table, done, total: None)
    with contextlib.closing(open_source(source)) as src, \
            contextlib.closing(_connect(target, where)) as pg:  # (fails fast: no pool)
        print_ = fingerprint(src)
        store = PostgresStore(target, pool_size=2, migrating=True)  # its schema, partitions
        try:
            with _errors(where):
                _check_source(src, pg, source)
                _lock(pg, where)
                state = _state(pg)
                _check_target(state, _counts(pg), print_, where)
                if not state:
                    with pg.transaction():
                        pg.execute(_PROGRESS)
                        for table, _ in TABLES:
                            pg.execute("INSERT INTO cairn_migrate (tbl, source, fingerprint, "
                                       "started) VALUES (%s, %s, %s, %s)",
                                       (table, str(source.resolve()), print_, time.time()))
                    state = _state(pg)
                totals = _counts(src)
                report.finished_before = all(done for *_, done in state.values())
                for table, key in TABLES:
                    _, _, last, rows, done = state[table]
                    report.resumed += rows
                    if done:
                        tell(table, rows, totals[table])
                        continue
                    _copy(src, pg, store, table, key, last, rows, totals[table], chunk,
                          report, tell)
                _sequences(pg)
                _verify(src, pg, report)
        finally:
            store.close()
    report.seconds = time.monotonic() - began
    return report


def _check_source(src: sqlite3.Connection, pg: psycopg.Connection[Any], source: Path) -> None:
    """Before anything moves: every column of every table of the source has one of the same
    name in the target, of a type this migrator copies (else nothing would carry it:
    :class:`SourceStoreError`), and every value fits its column there (SQLite keeps any value
    in any column: a damaged row is a :class:`StoreError` naming it)."""
    for table, key in TABLES:
        types = _target_columns(pg, table)
        cols = _columns(src, table)
        lost = [c for c in cols if types.get(c) not in _TYPES]
        if lost:
            raise SourceStoreError(f"table {table} of {source} has column(s) {', '.join(lost)} "
                                   "the PostgreSQL store lacks: nothing would carry them; "
                                   "nothing was moved (a newer Cairn's store?)")
        _check_values(src, table, key, {c: _TYPES[types[c]] for c in cols}, source)


def _check_values(src: sqlite3.Connection, table: str, key: tuple[str, ...],
                  wanted: dict[str, tuple[str, tuple[str, ...], str]], source: Path) -> None:
    """One scan of ``table`` for a value its PostgreSQL column cannot take."""
    bad = []
    for c, (_, classes, span) in wanted.items():
        allowed = ", ".join(f"'{x}'" for x in ("null", *classes))
        bad.append(f"typeof({c}) NOT IN ({allowed})" + (f" OR {c} NOT {span}" if span else ""))
    row = src.execute(f"SELECT {', '.join(key)}, {', '.join(wanted)} FROM {table} "  # noqa: S608
                      f"WHERE {' OR '.join(f'({b})' for b in bad)} LIMIT 1").fetchone()
    if row is None:
        return
    where = ", ".join(f"{k}={v!r}" for k, v in zip(key, row, strict=False))
    for (c, (name, classes, _)), v in zip(wanted.items(), row[len(key):], strict=True):
        kind = {int: "integer", float: "real", str: "text", bytes: "blob"}.get(type(v), "null")
        if kind not in ("null", *classes) or (name == "int2" and not -32768 <= v <= 32767):
            raise StoreError(f"{source}: table {table}, row {where}: column {c} holds {kind} "
                             f"{v!r:.40}, not {name}: the source is damaged; nothing was moved "
                             "(repair or remove that row)")


def _copy(src: sqlite3.Connection, pg: psycopg.Connection[Any], store: PostgresStore,
          table: str, key: tuple[str, ...], last: str | None, rows: int, total: int,
          chunk: int, report: MigrationReport, tell: Progress) -> None:
    """Copy ``table`` after its last key copied, a chunk per transaction with its progress."""
    cols = _columns(src, table)
    types = _target_columns(pg, table)
    names = [_TYPES[types[c]][0] for c in cols]
    texts = [i for i, n in enumerate(names) if n == "text"]
    at = [cols.index(k) for k in key]
    sql = f"SELECT {', '.join(cols)} FROM {table}"  # noqa: S608 (our names)
    args: list[Any] = []
    if last is not None:
        sql += f" WHERE ({', '.join(key)}) > ({', '.join('?' * len(key))})"
        args = _key_values(last)
    cur = src.execute(sql + f" ORDER BY {', '.join(key)}", args)
    copy = f"COPY {table} ({', '.join(cols)}) FROM STDIN (FORMAT BINARY)"
    t_at = cols.index("t") if table == "samples" else -1
    tell(table, rows, total)
    while batch := cur.fetchmany(chunk):
        out = [_without_nul(r, texts, report) for r in batch] if texts else batch
        if t_at >= 0:  # a time a day of the samples' (a day is in one month)
            store._ensure_months({t - t % 86400.0 if math.isfinite(t) else t
                                  for t in (r[t_at] for r in out)}, at_most=None)
        with pg.transaction(), pg.cursor() as c:
            with c.copy(copy) as cp:
                cp.set_types(names)
                for r in out:
                    cp.write_row(r)
            c.execute("UPDATE cairn_migrate SET last_key = %s, rows = rows + %s WHERE tbl = %s",
                      (_key_text([out[-1][i] for i in at]), len(out), table))
        rows += len(out)
        report.copied += len(out)
        tell(table, rows, total)
    pg.execute("UPDATE cairn_migrate SET done = true, finished = %s WHERE tbl = %s",
               (time.time(), table))


def _without_nul(row: tuple[Any, ...], texts: list[int], report: MigrationReport
                 ) -> tuple[Any, ...]:
    """The row with NUL in its strings as U+FFFD (PostgreSQL's text cannot hold NUL)."""
    if not any(row[i] is not None and "\x00" in row[i] for i in texts):
        return row
    out = list(row)
    for i in texts:
        if out[i] is not None and "\x00" in out[i]:
            out[i] = out[i].replace("\x00", NUL_AS)
            report.nul_replaced += 1
    return tuple(out)


def _sequences(pg: psycopg.Connection[Any]) -> None:
    """Move the identity sequences past the ids kept (the next device, stream gets a new id)."""
    for table in ("devices", "streams"):
        pg.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                   f"coalesce(max(id), 0) + 1, false) FROM {table}")


# -- verification -------------------------------------------------------------------------------

#: per stream: count; t: min, max, sum, sum |t|; values: count, min, max, and the sum and sum of
#: magnitudes of those rolled up; block, k and kind summed; strings counted
_SAMPLES = ("SELECT stream_id, count(*), min(t), max(t), sum(t), sum(abs(t)), count(value), "
            "min(value), max(value), sum(CASE WHEN abs(value) <= BOUND THEN value END), "
            "sum(CASE WHEN abs(value) <= BOUND THEN abs(value) END), CAST(sum(block) AS BIGINT), "
            "CAST(sum(k) AS BIGINT), CAST(sum(kind) AS BIGINT), count(text) "
            "FROM samples GROUP BY stream_id ORDER BY stream_id").replace(
                "BOUND", repr(ROLLUP_BOUND))
#: per stream: buckets, samples counted, buckets summed, min, max, sum of totals and of their
#: magnitudes
_ROLLUPS = ("SELECT stream_id, count(*), CAST(sum(n) AS BIGINT), CAST(sum(bucket) AS BIGINT), "
            "min(lo), max(hi), sum(total), sum(abs(total)) FROM TABLE GROUP BY stream_id "
            "ORDER BY stream_id")
#: which columns of a checksum (0: its count) are sums of floats, compared within the
#: rounding error two summation orders can make, each with the column of its magnitude
_FLOAT_SUMS = {"samples": {3: 4, 4: 4, 8: 9, 9: 9}, "rollups": {5: 6, 6: 6}}
#: what each column of a checksum is, for the report
_COLUMNS = {"samples": ("count", "first time", "last time", "sum of times", "sum of |times|",
                        "values", "smallest value", "largest value", "sum of values",
                        "sum of |values|", "sum of blocks", "sum of positions", "sum of kinds",
                        "strings"),
            "rollups": ("buckets", "samples counted", "sum of buckets", "smallest", "largest",
                        "sum of totals", "sum of |totals|")}
_EPS = 2.3e-16  # a little more than the unit round-off of a double


def _verify(src: sqlite3.Connection, pg: psycopg.Connection[Any],
            report: MigrationReport) -> None:
    theirs = _counts(pg)
    report.counts = [TableCount(t, n, theirs[t]) for t, n in _counts(src).items()]
    checks = [("samples", _SAMPLES, "samples")]
    checks += [(t, _ROLLUPS.replace("TABLE", t), "rollups")
               for t in ("rollup_minute", "rollup_hour")]
    streams: set[int] = set()
    for table, sql, shape in checks:
        a = {int(r[0]): tuple(r[1:]) for r in src.execute(sql)}
        b = {int(r[0]): tuple(r[1:]) for r in pg.execute(sql)}
        streams |= set(a) | set(b)
        for sid in sorted(set(a) | set(b)):
            if sid not in a or sid not in b:
                report.differ.append(f"{table} of stream {sid}: only in the "
                                     f"{'source' if sid in a else 'target'}")
                continue
            bad = _unequal(a[sid], b[sid], _FLOAT_SUMS[shape])
            if bad is not None:
                col, x, y = bad
                report.differ.append(f"{table} of stream {sid}: {_COLUMNS[shape][col]}: "
                                     f"{x!r} in the source, {y!r} in the target")
    report.streams = len(streams)


def _unequal(a: tuple[Any, ...], b: tuple[Any, ...], sums: dict[int, int]
             ) -> tuple[int, Any, Any] | None:
    """None when two checksums agree, else the first column that differs and its two values.
    Exact, but for the sums of floats (``sums``: column -> the column of its magnitudes):
    within 2 n u sum|x|, the bound of the rounding error of two summations of n terms in any
    order."""
    n = max(int(a[0]), 1)
    for col, (x, y) in enumerate(zip(a, b, strict=True)):
        if col in sums and x is not None and y is not None:
            bound = 2 * n * _EPS * abs(float(a[sums[col]] or 0.0)) + 1e-300
            same = abs(float(x) - float(y)) <= bound
        else:
            same = x == y
        if not same:
            return col, x, y
    return None

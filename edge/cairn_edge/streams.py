"""The edge's stream logs: one signed log per stream, keys derived from the device's seed.

A stream is ``<source device>/<quantity>`` (``board-1/temperature``). Its log's key pair is
derived corestore-style from the edge device's primary seed and the stream's name, so the seed
is the only secret to back up. All the logs live in one SQLite file, ``<data_dir>/streams.db``
(:class:`cairn.storage.SharedDB`: one connection, one transaction per commit for every stream),
with the index of streams (name, unit, key) and the agent's state (the time floor, the DHT seq).

:meth:`StreamStore.commit` appends one frame per stream that has samples: the samples sorted by
time, one signature per stream per commit. Frames of a stream are time-ordered (seeking by time
relies on it): a sample older than the stream's last committed sample goes to the stream's
``late`` companion (``board-1/temperature/late``), counted, never dropped.

Duplicates: a sample identical to one already in the stream's last frames or in the same commit
(same time, same kind of value, same value, same unit: :func:`sample_key`) is a redelivery (the
broker sends again what was not acknowledged when the agent stopped) and is not stored twice.
Two samples that differ in any of these are never collapsed, whatever their times: ``True``
and ``1.0`` (which Python calls equal) are different kinds, so both are kept; a new value at
the same time as the stream's last committed sample joins the stream (frames stay in time
order: equal times are in order), not its ``late`` companion.

Frame size: a stream's samples of one commit go in one frame, split into several frames (still
one signature) when their values would make a frame larger than :data:`FRAME_BUDGET` bytes
(strings and bytes: a commit of 10,000 64 KB strings would pass the frames' 16 MiB limit) or
hold more than the frames' :data:`~cairn.frames.MAX_RECORDS` samples.

Durability between checkpoints (decision 0008): a commit's appends join one SQLite transaction
held open for ``checkpoint_interval`` seconds, and the commit is made durable by writing its
frames to ``streams.journal`` (:mod:`cairn_edge.journal`). A checkpoint commits the transaction
and empties the journal; opening the store appends again whatever the journal holds beyond the
database. ``checkpoint_interval = 0`` commits every commit to SQLite directly (no journal).
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cairn.crypto import Manifest, derive_stream_key_pair, manifest_hash
from cairn.errors import DamagedBlockError, DecodeError, StorageError
from cairn.frames import MAX_RECORDS, Frame, Sample, frame_at
from cairn.log import Log
from cairn.storage import SharedDB
from cairn_edge.journal import (
    Journal,
    StateRecord,
    StreamRecord,
    TickRecord,
    encode_state,
    encode_stream,
    encode_tick,
    generation,
    read_journal,
)

__all__ = ["FRAME_BUDGET", "CommitResult", "StreamStore", "StreamsError", "copy_database", "peek",
           "sample_key", "stream_log_key", "value_kind"]

log = logging.getLogger("cairn.edge")

LATE = "late"
DB_NAME = "streams.db"
JOURNAL_NAME = "streams.journal"
GENERATION_KEY = "journal_generation"  # state: the journal generation the last checkpoint began
PAGE_SIZE = 1024  # a checkpoint rewrites each log's last pages: small pages, fewer bytes
RECENT_FRAMES = 64  # frames looked back through for a redelivered sample


#: A frame's values may weigh about this many bytes before the samples go in a second frame
#: (the frames' own limit, MAX_FRAME_BYTES, is 16 MiB).
FRAME_BUDGET = 4 << 20
_SAMPLE_OVERHEAD = 64  # bytes a record costs besides its value's text or bytes, at most
#: kinds of value, as the gateway and the API name them
NUMBER, BOOLEAN, STRING, DATA = "number", "boolean", "string", "data"

SampleKey = tuple[float, str, object, str | None]


def value_kind(value: object) -> str:
    """``number``, ``boolean``, ``string`` or ``data`` (SenML ``v``, ``vb``, ``vs``, ``vd``)."""
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, str):
        return STRING
    if isinstance(value, bytes | bytearray | memoryview):
        return DATA
    return NUMBER


_KIND_OF_TYPE = {float: NUMBER, bool: BOOLEAN, str: STRING, bytes: DATA}  # a Sample's types


def sample_key(s: Sample) -> SampleKey:
    """What makes a sample the same as another of its stream: its time, the kind of its value,
    the value and the unit. The kind is there because Python calls ``True == 1.0``."""
    v = s.value
    kind = _KIND_OF_TYPE.get(type(v))
    return (s.time, kind if kind is not None else value_kind(v), v, s.unit)


def _unique(samples: list[Sample]) -> list[Sample]:
    """Samples that differ (:func:`sample_key`): a message delivered twice in one batch."""
    out: list[Sample] = []
    seen: set[SampleKey] = set()
    kinds = _KIND_OF_TYPE
    for s in samples:
        v = s.value
        k = (s.time, kinds.get(type(v)) or value_kind(v), v, s.unit)  # sample_key, inlined
        if k not in seen:
            seen.add(k)
            out.append(s)
    return out


def _weight(s: Sample) -> int:
    v = s.value
    return _SAMPLE_OVERHEAD + (len(v) * 4 if isinstance(v, str) else
                               len(v) if isinstance(v, bytes) else 0)


def _frames(samples: list[Sample]) -> list[Frame]:
    """The samples (in order) as frames of at most :data:`FRAME_BUDGET` bytes of values and
    :data:`~cairn.frames.MAX_RECORDS` samples each."""
    out: list[Frame] = []
    run: list[Sample] = []
    size = 0
    for s in samples:
        w = _weight(s)
        if run and (size + w > FRAME_BUDGET or len(run) == MAX_RECORDS):
            out.append(Frame(tuple(run)))
            run, size = [], 0
        run.append(s)
        size += w
    if run:
        out.append(Frame(tuple(run)))
    return out


class StreamsError(StorageError):
    """The stream store cannot be opened or written: says which file and why."""


@dataclass(slots=True)
class CommitResult:
    frames: int = 0
    samples: int = 0
    late: int = 0
    duplicates: int = 0
    streams: dict[str, int] = field(default_factory=dict)  # stream -> log length after


def stream_log_key(seed: bytes, name: str) -> bytes:
    """The key of stream ``name``'s log (what a gateway is given), from the device's seed."""
    return manifest_hash(Manifest(derive_stream_key_pair(seed, name).public_key))


def peek(data_dir: str | Path) -> dict[str, int]:
    """Each stream's length, read only (the agent may be running): the database, then the
    journal's commits since its last checkpoint."""
    path = Path(data_dir) / DB_NAME
    lengths: dict[str, int] = {}
    current: int | None = None
    if path.exists():
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                db.execute("PRAGMA busy_timeout=5000")
                ids = dict(db.execute("SELECT name, id FROM logs").fetchall())
                for (name,) in db.execute("SELECT name FROM streams").fetchall():
                    table = f"l{int(ids[name])}_head"  # a number from the file, checked int
                    row = db.execute(f"SELECT length FROM {table}").fetchone()  # noqa: S608
                    lengths[name] = int(row[0]) if row else 0
                row = db.execute("SELECT value FROM state WHERE key = ?",
                                 (GENERATION_KEY,)).fetchone()
                current = _generation_of(row[0], path) if row else None
            finally:
                db.close()
        except (sqlite3.DatabaseError, KeyError) as exc:
            raise StreamsError(f"{path}: not readable ({exc})") from None
    try:
        records = read_journal(Path(data_dir) / JOURNAL_NAME, current)
    except DecodeError as exc:
        raise StreamsError(str(exc)) from None
    names: dict[int, str] = {}
    for rec in records:
        if isinstance(rec, StreamRecord):
            names[rec.index] = rec.name
            lengths.setdefault(rec.name, 0)
        elif isinstance(rec, TickRecord):
            for index, start, blocks in rec.appends:
                name = names.get(index)
                if name is not None:
                    lengths[name] = max(lengths.get(name, 0), start + len(blocks))
    return lengths


def copy_database(src: Path, dst: Path) -> None:
    """A consistent copy of the SQLite file ``src`` (which an agent may be writing: read-only,
    SQLite's backup API) at ``dst``; :class:`StreamsError` naming ``src`` if it cannot be."""
    out = sqlite3.connect(dst)
    try:
        source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
        try:
            source.execute("PRAGMA busy_timeout=5000")
            source.backup(out)
        finally:
            source.close()
    except sqlite3.DatabaseError as exc:
        raise StreamsError(f"{src}: cannot be copied ({exc})") from None
    finally:
        out.close()


def _generation_of(value: object, path: Path) -> int:
    """The journal generation a database's state holds, checked (the file may be damaged)."""
    if type(value) is not int or not 0 <= value < 1 << 63:
        raise StreamsError(f"{path}: state {GENERATION_KEY} is {value!r}, not a generation")
    return value


class StreamStore:
    def __init__(self, data_dir: str | Path, primary_seed: bytes, *, sync: str = "normal",
                 checkpoint_interval: float = 300.0, checkpoint_bytes: int = 256 << 10,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if len(primary_seed) != 32:
            raise ValueError("the primary seed is 32 bytes")
        self.dir = Path(data_dir)
        self.seed = primary_seed
        self.sync = sync
        self.checkpoint_interval = checkpoint_interval
        self.checkpoint_bytes = checkpoint_bytes
        self.clock = clock
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self.shared = SharedDB(self.dir / DB_NAME, sync="full" if sync == "full" else "normal",
                                   journal="rollback", page_size=PAGE_SIZE)
        except StorageError as exc:
            raise StreamsError(str(exc)) from None
        self.db = self.shared.raw
        try:
            self.db.execute("CREATE TABLE IF NOT EXISTS streams (name TEXT PRIMARY KEY, "
                            "unit TEXT, key BLOB NOT NULL, created REAL NOT NULL)")
            self.db.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value)")
        except sqlite3.DatabaseError as exc:
            self.shared.close()
            raise StreamsError(f"{self.dir / DB_NAME}: {exc}") from None
        self.logs: dict[str, Log] = {}
        self.units: dict[str, str | None] = {}
        self._last: dict[str, float] = {}  # stream -> time of its last committed sample
        self.journal: Journal | None = None
        self._jindex: dict[str, int] = {}  # stream -> its number in the journal
        self._held_since = 0.0
        self._tick: list[tuple[str, int, list[bytes]]] = []  # this commit's appends
        self._replaying = False
        self._broken: str | None = None
        self.checkpoints = 0
        try:
            self._load()
            if checkpoint_interval > 0:
                try:
                    self.journal = Journal(self.dir / JOURNAL_NAME, sync=sync == "full")
                except DecodeError as exc:
                    raise StreamsError(str(exc)) from None
                current = self.get_state(GENERATION_KEY)
                if current is not None:
                    self.journal.adopt(_generation_of(current, self.dir / DB_NAME))
                self._replay()
        except BaseException:
            if self.journal is not None:
                self.journal.close()
            self.shared.close()
            raise

    def _load(self) -> None:
        """The logs as the database holds them."""
        try:
            rows = self.db.execute("SELECT name, unit, key FROM streams").fetchall()
        except sqlite3.DatabaseError as exc:
            raise StreamsError(f"{self.dir / DB_NAME}: {exc}") from None
        for old in self.logs.values():  # (after a rollback: these are stale now)
            old.close()
        self.logs.clear()
        self.units.clear()
        for name, unit, key in rows:
            lg = Log.open_in(self.shared, name)
            if lg.key != key:
                raise StreamsError(f"{name}: its log key is not the one the index says")
            self.logs[name] = lg
            self.units[name] = unit
        self._reset_last()

    def _reset_last(self) -> None:
        """Each stream's last committed sample time, from its log's newest block."""
        self._last = {n: frame_at(lg, lg.length - 1).end
                      for n, lg in self.logs.items() if lg.length and lg.has(lg.length - 1)}

    def _replay(self) -> None:
        """Append again what the journal holds beyond the database (after a crash, or a commit
        that failed), then checkpoint. Blocks the database already holds are compared."""
        assert self.journal is not None
        records = self.journal.records()
        for offset, aside in self.journal.damaged:
            log.warning("%s: a damaged record at byte %d ends the journal (never "
                        "acknowledged); the bytes from there are kept in %s",
                        self.journal.path, offset, aside)
        self.journal.damaged.clear()
        for offset, old, size in self.journal.stale:
            log.warning("%s: %d bytes from byte %d are records of generation %s, from before "
                        "the last checkpoint (a power cut kept them; the database holds them): "
                        "cut off", self.journal.path, size, offset,
                        "legacy" if old < 0 else old)
        self.journal.stale.clear()
        if not records:
            return
        names: dict[int, tuple[str, str | None]] = {}
        self._replaying = True
        self.shared.hold()
        try:
            for rec in records:
                if isinstance(rec, StreamRecord):
                    names[rec.index] = (rec.name, rec.unit)
                elif isinstance(rec, StateRecord):
                    self.set_state(rec.key, rec.value)
                else:
                    for index, start, blocks in rec.appends:
                        if index not in names:
                            raise StreamsError(f"{self.journal.path}: a commit names stream "
                                               f"number {index}, which the journal never "
                                               "introduced")
                        self._redo(*names[index], start, list(blocks))
            self._replaying = False
            self.checkpoint()
        except BaseException:
            self._replaying = False
            self.shared.rollback()
            self._load()
            raise
        self._reset_last()
        log.info("%s: %d commits since the last checkpoint appended again",
                 self.journal.path, sum(isinstance(r, TickRecord) for r in records))

    def _redo(self, name: str, unit: str | None, start: int, blocks: list[bytes]) -> None:
        lg = self.log(name, unit)
        if start > lg.length:
            raise StreamsError(f"{self.journal.path if self.journal else ''}: {name} continues "
                               f"at block {start}, but its log holds {lg.length} blocks")
        for k in range(min(len(blocks), lg.length - start)):
            i = start + k
            if lg.has(i) and lg.get(i) != blocks[k]:
                raise StreamsError(f"{name}: block {i} in the journal differs from the log's; "
                                   "nothing was changed (keep both files for inspection)")
        rest = blocks[lg.length - start:]
        if rest:
            lg.append(rest)

    @classmethod
    def snapshot(cls, data_dir: str | Path, primary_seed: bytes, into: str | Path
                 ) -> StreamStore:
        """A private copy of a store another process may be writing (an agent running): its
        database copied whole with SQLite's backup, its journal read around it (again, when a
        checkpoint came in between), opened in ``into``."""
        src_dir, into = Path(data_dir), Path(into)
        into.mkdir(parents=True, exist_ok=True)
        jpath = src_dir / JOURNAL_NAME
        for _ in range(20):
            before = jpath.read_bytes() if jpath.exists() else b""
            copy_database(src_dir / DB_NAME, into / DB_NAME)
            after = jpath.read_bytes() if jpath.exists() else b""
            if generation(before) == generation(after):
                (into / JOURNAL_NAME).write_bytes(after)
                return cls(into, primary_seed)
        raise StreamsError(f"{src_dir}: checkpoints kept coming while it was copied")

    def checkpoint(self) -> None:
        """Commit the held transaction and empty the journal."""
        if not self.shared.held:
            return
        self._check_open()
        try:
            if self.journal is not None:  # the generation the emptied journal is read as
                self._put_state(GENERATION_KEY, self.journal.generation + 1)
            self.shared.release()
            if self.journal is not None:
                self.journal.clear()
        except (StorageError, OSError) as exc:
            self._stop(exc)
            raise StreamsError(f"{self.dir}: a checkpoint failed: {exc}") from None
        self._jindex.clear()
        self.checkpoints += 1

    @property
    def broken(self) -> str | None:
        """Why the store stopped taking commits (a write failed), or None."""
        return self._broken

    def _check_open(self) -> None:
        if self._broken is not None:
            raise StreamsError(
                f"{self.dir}: the store stopped after a failed write ({self._broken}); "
                f"restart once the disk is writable: opening the store appends "
                f"{JOURNAL_NAME} again")

    def _stop(self, exc: BaseException) -> None:
        """A write failed: take back what the journal does not hold (the held transaction is
        rolled back) and take no more commits. What was acknowledged is in the database or
        the journal; opening the store again (a restart) appends the journal again. Carrying
        on in this process would mean trusting in-memory state a failed write left behind."""
        self._broken = f"{type(exc).__name__}: {exc}"
        self._tick = []
        with contextlib.suppress(Exception):
            self.shared.rollback()
        log.error("%s: a write failed (%s): the store takes no more commits until it is "
                  "opened again", self.dir, self._broken)

    def close(self) -> None:
        try:
            if self.journal is not None and self._broken is None:
                self.checkpoint()
        finally:
            if self.journal is not None:
                self.journal.close()
            self.logs.clear()
            self.shared.close()

    # -- state ---------------------------------------------------------------------------------

    def get_state(self, key: str) -> object:
        row = self.db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_state(self, key: str, value: object) -> None:
        """Durable when it returns (through the journal while a transaction is held)."""
        if self.journal is not None:
            self._check_open()
        if self.shared.held and self.journal is not None and not self._replaying:
            try:
                self.journal.write(encode_state(key, value))
            except OSError as exc:
                self._stop(exc)
                raise
        self._put_state(key, value)

    def _put_state(self, key: str, value: object) -> None:
        """Write one state row in the open transaction (not journaled: the callers do that)."""
        self.db.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, value))

    # -- streams -------------------------------------------------------------------------------

    def log(self, name: str, unit: str | None = None) -> Log:
        """The log of stream ``name``, made (and indexed) the first time it is asked for, in
        the same transaction as what it is made for."""
        lg = self.logs.get(name)
        if lg is not None:
            return lg
        kp = derive_stream_key_pair(self.seed, name)
        with self.shared.transaction():
            lg = Log.create_in(self.shared, name, kp)
            self.db.execute("INSERT INTO streams (name, unit, key, created) VALUES (?,?,?,?)",
                            (name, unit, lg.key, time.time()))
        self.logs[name] = lg
        self.units[name] = unit
        return lg

    def last_time(self, name: str) -> float | None:
        return self._last.get(name)

    def kind(self, name: str) -> str | None:
        """The kind of value (:func:`value_kind`) of a stream's newest held sample, or None
        (no such stream, or its newest block is not held or not readable)."""
        lg = self.logs.get(name)
        if lg is None or not lg.length or not lg.has(lg.length - 1):
            return None
        try:
            return value_kind(frame_at(lg, lg.length - 1).samples[-1].value)
        except (DamagedBlockError, DecodeError):
            return None

    def commit(self, batches: Mapping[str, Iterable[Sample]]) -> CommitResult:
        """Append one frame per stream with samples (sorted by time); late samples to the
        stream's ``late`` companion. Durable when it returns. Returns what was written."""
        if self.journal is None:
            return self._commit_now(batches)
        journal = self.journal
        self._check_open()
        if not self.shared.held:
            self.shared.hold()
            self._held_since = self.clock()
        self._tick = []
        try:
            with self.shared.transaction():  # joins the held one
                result = self._commit(batches)
            bodies = []
            appends = []
            for name, start, blocks in self._tick:
                index = self._jindex.get(name)
                if index is None:
                    index = self._jindex[name] = len(self._jindex)
                    bodies.append(encode_stream(index, name, self.units.get(name)))
                appends.append((index, start, blocks))
            if appends:
                bodies.append(encode_tick(appends))
                journal.write(*bodies)  # the commit is durable here
            self.shared.settle()
        except sqlite3.Error as exc:  # the database refused (full, failing): name it
            self._stop(exc)
            raise StreamsError(f"{self.dir / DB_NAME}: {exc}") from None
        except BaseException as exc:
            self._stop(exc)
            raise
        finally:
            self._tick = []
        if (self.clock() - self._held_since >= self.checkpoint_interval
                or journal.size >= self.checkpoint_bytes):
            self.checkpoint()
        return result

    def _commit_now(self, batches: Mapping[str, Iterable[Sample]]) -> CommitResult:
        made = set(self.logs)
        try:
            with self.shared.transaction():  # every stream's frame of this commit, or none
                return self._commit(batches)
        except sqlite3.Error as exc:
            self._load()
            raise StreamsError(f"{self.dir / DB_NAME}: {exc}") from None
        except BaseException:
            for name in set(self.logs) - made:  # logs made in the failed commit are gone
                del self.logs[name]
                self.units.pop(name, None)
            self._reset_last()
            raise

    def _commit(self, batches: Mapping[str, Iterable[Sample]]) -> CommitResult:
        result = CommitResult()
        late_batches: dict[str, list[Sample]] = {}
        for name, given in batches.items():
            samples = list(given)
            ordered = _unique(sorted(samples, key=lambda s: s.time))
            result.duplicates += len(samples) - len(ordered)
            if not ordered:
                continue
            last = self._last.get(name)
            if last is not None and ordered[0].time <= last:
                # at or before what is committed: a redelivered message (the broker resends
                # what we had not acknowledged when we stopped) or a late sample
                old = [s for s in ordered if s.time <= last]
                seen = self._recent(name, old[0].time) | self._recent(f"{name}/{LATE}",
                                                                      old[0].time)
                new = [s for s in old if sample_key(s) not in seen]
                result.duplicates += len(old) - len(new)
                # a new value at the last committed time is in time order: it joins the stream
                ordered = [s for s in new if s.time == last] + [s for s in ordered
                                                                 if s.time > last]
                late = [s for s in new if s.time < last]
                if late:
                    late_batches[f"{name}/{LATE}"] = late
                    result.late += len(late)
            if ordered:
                self._append(name, ordered, result)
        for name, samples in late_batches.items():
            self._append(name, samples, result, late=True)
        return result

    def disk_bytes(self) -> int:
        """Bytes of the streams' database in use (its free pages not counted)."""
        return self.shared.used_bytes()

    def enforce_quota(self, limit: int) -> list[tuple[str, int, int]]:
        """Clear the oldest block data (by sample time, any stream) until the logs use at most
        ``limit`` bytes; tree nodes stay, so every log still verifies. Each stream keeps its
        newest block. Returns what was cleared: (stream, start, end)."""
        cleared: list[tuple[str, int, int]] = []
        used = self.disk_bytes()
        if used <= limit:
            return cleared
        # each stream's oldest clearable run, oldest first; only the stream just cleared is
        # looked at again (not every stream for every run cleared)
        heap = [c for c in (self._oldest_run(name) for name in self.logs) if c is not None]
        heapq.heapify(heap)
        while used > limit and heap:
            _, name, start, end = heapq.heappop(heap)
            self.logs[name].clear(start, end)
            cleared.append((name, start, end))
            used = self.disk_bytes()
            nxt = self._oldest_run(name)
            if nxt is not None:
                heapq.heappush(heap, nxt)
        return cleared

    def _oldest_run(self, name: str) -> tuple[float, str, int, int] | None:
        """(time of its first held sample, name, start, end) of the run of a stream's oldest
        held blocks to clear next (a tenth of what it holds, at least one block, never its
        newest block), or None."""
        lg = self.logs[name]
        ranges = lg.held_ranges()
        if not ranges:
            return None
        first = ranges[0][0]
        if first >= lg.length - 1:
            return None  # only the newest block is left
        held = sum(e - s for s, e in ranges)
        chunk = max(1, min(held // 10, ranges[0][1] - first, lg.length - 1 - first))
        return frame_at(lg, first).start, name, first, first + chunk

    def _recent(self, name: str, since: float, most: int = RECENT_FRAMES) -> set[SampleKey]:
        """:func:`sample_key` of the samples in a stream's last frames that reach ``since``."""
        lg = self.logs.get(name)
        out: set[SampleKey] = set()
        if lg is None:
            return out
        i = lg.length - 1
        while i >= 0 and most > 0:
            if not lg.has(i):
                break
            try:
                frame = frame_at(lg, i)
            except DamagedBlockError:  # a bad sector (the log said so): its samples cannot be
                i -= 1                 # compared, so a redelivery of one is kept as late
                most -= 1
                continue
            out.update(sample_key(s) for s in frame.samples)
            if frame.end < since and not name.endswith(f"/{LATE}"):
                break
            i -= 1
            most -= 1
        return out

    def _append(self, name: str, samples: list[Sample], result: CommitResult,
                late: bool = False) -> None:
        lg = self.log(name, samples[0].unit)
        frames = _frames(samples)
        blocks = [f.encode() for f in frames]
        self._tick.append((name, lg.length, blocks))
        lg.append(blocks)  # one signature
        if not late:
            self._last[name] = max(f.end for f in frames)
        result.frames += len(frames)
        result.samples += len(samples)
        result.streams[name] = lg.length

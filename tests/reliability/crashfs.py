"""A crash-simulating storage layer for the reliability tests: what a disk holds after a crash.

Two kinds of crash, both seeded:

- **kill -9** (``power=False``): the process dies, the OS survives. Every byte a ``write``
  system call handed to the OS is on the disk; what sat in a user-space buffer (Python's
  ``BufferedWriter``, SQLite's page cache) is gone; a write cut by the crash leaves a prefix.
- **power cut** (``power=True``): only what was synced is sure to be on the disk. Every write
  the OS took since the file's last fsync is, page by page, *kept*, *dropped* or *torn*
  (some 512-byte sectors of it written, the rest old or zero), chosen by the seeded rng; a
  truncate not yet synced is kept or dropped.

How each file is modelled, and why so. Python's :mod:`sqlite3` cannot be given a Python VFS
(apsw can, but it links its own SQLite, which the code under test does not use), so:

- **The edge's tick journal** (:mod:`cairn_edge.journal`, plain Python file I/O) runs on this
  layer for real: :meth:`CrashDisk.install` replaces the journal module's ``open`` with one
  that gives a real ``io.BufferedRandom`` (CPython's own buffering, flush and error paths)
  over :class:`CrashRaw`, a raw file that forwards each system call to the real file (the
  OS's view) and remembers, per file, the bytes as of the last ``fsync``/``fdatasync`` and
  the writes and truncates since. ``os.fsync``/``os.fdatasync`` of the journal module go to
  :meth:`CrashDisk.sync`. Faults are injected here too: the disk *fills* at a seeded write
  (a short write of the room left, then ``ENOSPC`` for every write that grows a file until
  :meth:`CrashDisk.free` is called), ``fdatasync`` fails with ``EIO`` at seeded syncs (the
  data it did not sync stays in the OS, unsure, as on Linux), and a crash is raised
  (:class:`Crash`) at a seeded operation, a write being cut at a seeded byte.
- **SQLite files** (the edge's ``streams.db`` with its rollback journal, the gateway's
  database with its WAL) are captured as snapshots: at the crash the files are copied as the
  OS holds them (kill -9 is exact). Crash points inside SQLite come from
  :meth:`CrashDisk.watch_sqlite`: a progress handler that, at a seeded count of virtual
  machine steps, takes the snapshot in the middle of a statement or transaction and then
  interrupts it (with a small ``cache_size`` SQLite spills uncommitted pages to the database
  file before a commit, so a hot rollback journal is exercised). For a power cut the test
  tells the layer when SQLite has synced a file (:meth:`CrashDisk.synced`: after a commit
  with ``synchronous=FULL``; after a close, which checkpoints the WAL); a database page that
  changed since is kept, dropped (old content) or torn, and the WAL's unsynced pages likewise
  (it is only synced at a checkpoint with ``synchronous=NORMAL``). SQLite's rollback journal
  is kept whole as the OS holds it: SQLite syncs it before it writes any database page, and
  records it appended after the last sync only cover pages not written yet. The ``-shm``
  wal-index is dropped: the first connection after a crash rebuilds it from the WAL.

Not modelled: crash points inside a single SQLite statement's commit (the progress handler is
not called while the pager writes and syncs; SQLite's own crash tests cover that, its VFS is
not reachable from here), tearing of the SQLite rollback journal's unsynced tail, the order
in which the kernel writes back pages of different files (each file is modelled alone),
directory entries (a file created or renamed and never followed by a directory fsync is
treated as there), a failed fsync dropping pages from the OS's own view of the file (Linux
may; here the OS keeps showing them), and ``ENOSPC`` inside SQLite (the tests that need it
use a small tmpfs instead).
"""

from __future__ import annotations

import errno
import io
import os
import random
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from cairn_edge import journal as journal_module

__all__ = ["SECTOR", "Crash", "CrashDisk", "CrashRaw", "FileModel", "tear_pages"]

SECTOR = 512  # the unit a torn write is made of
OS_PAGE = 4096  # what the kernel writes back at once


class Crash(BaseException):
    """The simulated crash, raised into the code under test at the chosen point and at every
    file operation after it: the disk's contents were captured when it was first raised.
    A BaseException, so the code's ``except Exception`` clean-ups do not swallow it."""


@dataclass(slots=True)
class _Write:
    offset: int
    data: bytes


@dataclass(slots=True)
class _Truncate:
    size: int


@dataclass(slots=True)
class FileModel:
    """A file written through the layer: its bytes as of the last sync, and what the OS was
    given since, in order."""

    durable: bytes = b""
    pending: list[_Write | _Truncate] = field(default_factory=list)


def _apply(buf: bytearray, op: _Write | _Truncate) -> None:
    if isinstance(op, _Truncate):
        del buf[op.size:]
        return
    end = op.offset + len(op.data)
    if len(buf) < op.offset:
        buf.extend(bytes(op.offset - len(buf)))
    buf[op.offset:end] = op.data


def _torn(rng: random.Random, old: bytes, new: bytes) -> bytes:
    """A page partly written: each sector from ``new`` or left as ``old`` (zeros past it)."""
    old = old.ljust(len(new), b"\0")[:len(new)]
    out = bytearray()
    for i in range(0, len(new), SECTOR):
        out += (new if rng.random() < 0.5 else old)[i:i + SECTOR]
    return bytes(out)


def tear_pages(rng: random.Random, durable: bytes, current: bytes, page: int) -> bytes:
    """What a power cut leaves of a file whose ``current`` contents (as the OS holds them)
    were last synced as ``durable``: each page that differs kept, dropped or torn; a file that
    grew may also end early (its size not written yet), at a sector."""
    out = bytearray()
    for i in range(0, len(current), page):
        new, old = current[i:i + page], durable[i:i + page]
        if new == old:
            out += new
            continue
        pick = rng.randrange(3)
        out += new if pick == 0 else old.ljust(len(new), b"\0")[:len(new)] if pick == 1 \
            else _torn(rng, old, new)
    if len(current) > len(durable) and rng.random() < 0.3:
        end = rng.randrange(len(durable), len(current) + 1)
        del out[max(len(durable), end - end % SECTOR):]
    return bytes(out)


class CrashRaw(io.RawIOBase):
    """A raw file on a :class:`CrashDisk`: every call is one system call on the real file."""

    def __init__(self, disk: CrashDisk, path: Path, mode: str) -> None:
        super().__init__()
        self.disk = disk
        self.path = path
        writes = "w" in mode or "x" in mode
        flags = os.O_RDWR if "+" in mode else os.O_WRONLY if writes else os.O_RDONLY
        if "w" in mode:
            flags |= os.O_CREAT | os.O_TRUNC
        if "x" in mode:
            flags |= os.O_CREAT | os.O_EXCL
        self._fd = os.open(path, flags, 0o644)
        self.model = disk.model(path, truncate=writes)
        self._pos = 0
        self._mode = mode
        disk.fds[self._fd] = self

    def readable(self) -> bool:
        return "r" in self._mode or "+" in self._mode

    def writable(self) -> bool:
        return any(c in self._mode for c in "wx+")

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self.disk.check()
        if whence == os.SEEK_SET:
            self._pos = offset
        elif whence == os.SEEK_CUR:
            self._pos += offset
        else:
            self._pos = os.fstat(self._fd).st_size + offset
        return self._pos

    def readinto(self, b: Any) -> int:
        self.disk.check()
        view = memoryview(b).cast("B")
        data = os.pread(self._fd, len(view), self._pos)
        view[:len(data)] = data
        self._pos += len(data)
        return len(data)

    def write(self, b: Any) -> int:
        data = bytes(b)
        n = self.disk.write(self, self._pos, data)
        if n:
            os.pwrite(self._fd, data[:n], self._pos)
            self.model.pending.append(_Write(self._pos, data[:n]))
            self._pos += n
        return n

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        self.disk.operation()
        os.ftruncate(self._fd, size)
        self.model.pending.append(_Truncate(size))
        return size

    def close(self) -> None:
        if not self.closed:
            self.disk.fds.pop(self._fd, None)
            os.close(self._fd)
        super().close()


class _OsShim:
    """The journal module's ``os``: syncs go to the disk model, the rest to :mod:`os`."""

    def __init__(self, disk: CrashDisk) -> None:
        self.fsync = disk.sync
        self.fdatasync = disk.sync

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


class CrashDisk:
    """The disk of one run: its files, its faults, the crash and what the crash left.

    ``crash_at`` is the number of the file operation (write, truncate or sync, counted from
    0 over the run) at which the crash comes; ``fill_at`` the write at which the disk fills
    (``room`` bytes of it still written); ``eio_at`` the syncs that fail with ``EIO``.
    """

    def __init__(self, rng: random.Random, *, power: bool, crash_at: int | None = None,
                 fill_at: int | None = None, eio_at: frozenset[int] = frozenset()) -> None:
        self.rng = rng
        self.power = power
        self.crash_at = crash_at
        self.fill_at = fill_at
        self.eio_at = eio_at
        self.ops = 0  # file operations so far
        self.full = False
        self.room = 0
        self.crashed = False
        self.image: dict[str, bytes] | None = None  # name -> bytes, once crashed
        self.models: dict[Path, FileModel] = {}
        self.fds: dict[int, CrashRaw] = {}
        self.dirs: list[Path] = []
        self.sqlite_durable: dict[Path, bytes] = {}
        self.sqlite_page: dict[Path, int] = {}
        self.tracked: dict[Path, sqlite3.Connection] = {}
        self.faults: list[str] = []  # what was injected, for messages
        self.drop_all = False  # a power cut that writes back nothing unsynced (the worst)

    # -- wiring ----------------------------------------------------------------------------

    @contextmanager
    def install(self) -> Iterator[CrashDisk]:
        """Run the journal module's file I/O on this disk while the context lasts."""
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(journal_module, "open", self.open, raising=False)
            mp.setattr(journal_module, "os", _OsShim(self))
            yield self

    def open(self, file: str | os.PathLike[str], mode: str = "r", buffering: int = -1,
             **_: Any) -> Any:
        """``open`` for binary modes, over :class:`CrashRaw` (buffered as the real one)."""
        if "b" not in mode:
            raise ValueError(f"the crash disk opens binary files only, not {mode!r}")
        raw = CrashRaw(self, Path(file), mode)
        if buffering == 0:
            return raw
        if "+" in mode:
            return io.BufferedRandom(raw)
        return io.BufferedReader(raw) if mode.startswith("r") else io.BufferedWriter(raw)

    def model(self, path: Path, *, truncate: bool) -> FileModel:
        m = self.models.get(path)
        if m is None:
            old = path.read_bytes() if path.exists() else b""
            m = self.models[path] = FileModel(durable=old)  # on the disk when first seen
        if truncate:
            m.pending.append(_Truncate(0))
        return m

    def watch(self, directory: Path) -> None:
        """Capture this directory's files at the crash."""
        self.dirs.append(directory)

    def synced(self, path: Path, page: int) -> None:
        """SQLite has synced ``path`` (a commit with synchronous=FULL, a checkpoint): its
        contents now are what a power cut leaves, until it changes again."""
        self.sqlite_durable[path] = path.read_bytes() if path.exists() else b""
        self.sqlite_page[path] = page

    def track_commits(self, conn: sqlite3.Connection, path: Path, page: int) -> None:
        """A database in rollback-journal mode is synced at each commit (``synchronous`` FULL
        and NORMAL alike), so whenever a statement starts outside a transaction the file is
        durable as it is; at the crash too, when no transaction is open."""
        self.synced(path, page)
        self.tracked[path] = conn

        def trace(_sql: str) -> None:
            if not self.crashed and not conn.in_transaction:
                self.synced(path, page)

        conn.set_trace_callback(trace)

    def watch_sqlite(self, conn: sqlite3.Connection, at: int, every: int = 50) -> None:
        """Crash in the middle of SQLite's work: after ``at`` calls of a progress handler
        (every ``every`` virtual machine steps), capture the disk and interrupt."""
        calls = 0

        def handler() -> int:
            nonlocal calls
            if self.crashed:
                return 1
            calls += 1
            if calls >= at:
                self._capture()
                return 1
            return 0

        conn.set_progress_handler(handler, every)

    # -- the system calls ------------------------------------------------------------------

    def check(self) -> None:
        if self.crashed:
            raise Crash("the disk crashed")

    def operation(self) -> int:
        """Count one file operation; crash here when it is the chosen one."""
        self.check()
        n = self.ops
        self.ops += 1
        if n == self.crash_at:
            self._capture()
            raise Crash(f"crash at file operation {n}")
        return n

    def write(self, raw: CrashRaw, offset: int, data: bytes) -> int:
        """How much of a write the OS takes (raises ENOSPC or Crash)."""
        self.check()
        n = self.ops
        self.ops += 1
        if n == self.crash_at:  # cut: a prefix reached the OS, then the process died
            cut = self.rng.randrange(len(data) + 1)
            if cut:
                os.pwrite(raw.fileno(), data[:cut], offset)
                raw.model.pending.append(_Write(offset, data[:cut]))
            self._capture()
            raise Crash(f"crash in the write at file operation {n} after {cut} bytes")
        if n == self.fill_at and not self.full:
            self.full = True
            self.room = self.rng.randrange(len(data) + 1)
            self.faults.append(f"disk full at operation {n} ({self.room} bytes left)")
        size = os.fstat(raw.fileno()).st_size
        grows = offset + len(data) - size
        if self.full and grows > 0:
            if self.room > 0:
                take = min(self.room, grows)
                self.room -= take
                return len(data) - grows + take
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return len(data)

    def sync(self, fd: int) -> None:
        """``fsync``/``fdatasync``: the file's contents become its durable contents."""
        raw = self.fds.get(fd)
        n = self.operation()
        if raw is None:
            os.fsync(fd)
            return
        if n in self.eio_at:
            self.faults.append(f"EIO from fdatasync at operation {n}")
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        raw.model.durable = raw.path.read_bytes()
        raw.model.pending.clear()

    def free(self) -> None:
        """Space again (files deleted, a card swapped)."""
        self.full = False

    # -- the crash -------------------------------------------------------------------------

    def crash(self) -> dict[str, bytes]:
        """Crash now (between operations): the disk's contents, by file name."""
        if not self.crashed:
            self._capture()
        assert self.image is not None
        return self.image

    def _capture(self) -> None:
        self.crashed = True
        image: dict[str, bytes] = {}
        for d in self.dirs:
            for p in sorted(d.iterdir()):
                if not p.is_file() or p.name.endswith("-shm"):
                    continue
                image[p.name] = self._after(p)
        self.image = image

    def _after(self, path: Path) -> bytes:
        current = path.read_bytes()
        if not self.power:
            return current
        m = self.models.get(path)
        if m is not None:
            return self._replay_pending(m)
        durable = self.sqlite_durable.get(path)
        if durable is None:
            return current  # not written since the test started watching (synced)
        conn = self.tracked.get(path)
        if conn is not None and not conn.in_transaction:
            return current  # committed, so synced
        if self.drop_all:
            return durable
        return tear_pages(self.rng, durable, current, self.sqlite_page[path])

    def _replay_pending(self, m: FileModel) -> bytes:
        buf = bytearray(m.durable)
        if self.drop_all:
            return bytes(buf)
        for op in m.pending:
            pick: Literal["kept", "dropped", "torn"] = self.rng.choice(
                ("kept", "dropped", "torn"))
            if isinstance(op, _Truncate):
                if pick != "dropped":
                    _apply(buf, op)
                continue
            if pick == "kept":
                _apply(buf, op)
            elif pick == "torn":
                cut = self.rng.randrange(len(op.data) + 1)
                _apply(buf, _Write(op.offset, op.data[:cut]))
                tail = self.rng.randrange(3)  # the rest: not there, zeros, or garbage
                rest = len(op.data) - cut
                if tail == 1:
                    _apply(buf, _Write(op.offset + cut, bytes(rest)))
                elif tail == 2:
                    _apply(buf, _Write(op.offset + cut, self.rng.randbytes(rest)))
        return bytes(buf)

    def restore(self, into: Path) -> None:
        """Write what the crash left into an empty directory (the machine restarted)."""
        assert self.image is not None
        into.mkdir(parents=True, exist_ok=True)
        for name, data in self.image.items():
            (into / name).write_bytes(data)

"""The edge's tick journal: what makes a commit durable between checkpoints of the database.

A commit of the stream store appends its frames to the logs inside one SQLite transaction that
stays open for minutes (a *checkpoint interval*), and writes the same frames to this append-only
file, which is what makes the commit durable: the MQTT acknowledgement follows the journal
write (and its fsync with ``sync = "full"``). At a checkpoint the transaction commits and the
journal is emptied. After a crash the transaction is gone and the journal holds every commit
since the last checkpoint: opening the store appends them again. The appends are deterministic
(same blocks, same tree, same Ed25519 signature), so the logs come back byte for byte.

Writing a tick costs what its frames weigh (about 55 bytes a sample) instead of the SQLite
pages it touches (8.5 KB a sample at 10 streams and 1 Hz with a commit a second; decision 0008).

File: an 8-byte magic, a u64 generation (one more at every checkpoint: a reader copying a
running store sees whether a checkpoint came between its reads), then records
``u32 length | u32 crc32 | body``. Bodies:

- ``1 stream``: uint index (journal-local), string name, uint flag (1: unit follows), string unit
- ``2 tick``: uint count, then per log: uint index, uint start (the log's length before),
  uint blocks, then each block as a buffer
- ``3 state``: string key, string JSON value

A record that is cut short or fails its checksum ends the journal: it was never acknowledged
(its write had not returned). What follows a damaged record is kept aside in
``<journal>.damaged-<n>`` and reported, never silently dropped.
"""

from __future__ import annotations

import errno
import json
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cairn.encoding import Reader, write_buffer, write_string, write_uint
from cairn.errors import DecodeError

__all__ = [
    "HEADER",
    "MAGIC",
    "Journal",
    "JournalRecord",
    "StateRecord",
    "StreamRecord",
    "TickRecord",
    "encode_state",
    "encode_stream",
    "encode_tick",
    "generation",
    "read_journal",
    "scan",
]

MAGIC = b"CAIRNJ1\n"
HEADER = len(MAGIC) + 8
_STREAM, _TICK, _STATE = 1, 2, 3
_MAX_RECORD = 64 << 20  # a tick of 10,000 samples is about 0.6 MB


@dataclass(frozen=True, slots=True)
class StreamRecord:
    index: int
    name: str
    unit: str | None


@dataclass(frozen=True, slots=True)
class TickRecord:
    appends: tuple[tuple[int, int, tuple[bytes, ...]], ...]  # (stream index, start, blocks)


@dataclass(frozen=True, slots=True)
class StateRecord:
    key: str
    value: object


JournalRecord = StreamRecord | TickRecord | StateRecord


def _frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "little") + zlib.crc32(body).to_bytes(4, "little") + body


def encode_stream(index: int, name: str, unit: str | None) -> bytes:
    out = bytearray([_STREAM])
    write_uint(out, index)
    write_string(out, name)
    write_uint(out, 0 if unit is None else 1)
    write_string(out, unit or "")
    return _frame(bytes(out))


def encode_tick(appends: Sequence[tuple[int, int, Sequence[bytes]]]) -> bytes:
    out = bytearray([_TICK])
    write_uint(out, len(appends))
    for index, start, blocks in appends:
        write_uint(out, index)
        write_uint(out, start)
        write_uint(out, len(blocks))
        for b in blocks:
            write_buffer(out, b)
    return _frame(bytes(out))


def encode_state(key: str, value: object) -> bytes:
    out = bytearray([_STATE])
    write_string(out, key)
    write_string(out, json.dumps(value))
    return _frame(bytes(out))


def _decode(body: bytes) -> JournalRecord:
    r = Reader(body)
    kind = r.uint()
    if kind == _STREAM:
        index, name = r.uint(), r.string()
        has_unit, unit = r.uint(), r.string()
        rec: JournalRecord = StreamRecord(index, name, unit if has_unit else None)
    elif kind == _TICK:
        appends = []
        for _ in range(r.uint()):
            index, start, n = r.uint(), r.uint(), r.uint()
            appends.append((index, start, tuple(r.buffer() or b"" for _ in range(n))))
        rec = TickRecord(tuple(appends))
    elif kind == _STATE:
        rec = StateRecord(r.string(), json.loads(r.string()))
    else:
        raise DecodeError(f"unknown journal record type {kind}")
    r.done()
    return rec


def scan(data: bytes) -> tuple[list[JournalRecord], int | None]:
    """The whole records of a journal's body (the bytes after the magic), and the offset of
    the first record cut short or damaged (None when there is none)."""
    out: list[JournalRecord] = []
    off = 0
    while off < len(data):
        end = off + 8
        length = int.from_bytes(data[off:off + 4], "little")
        crc = int.from_bytes(data[off + 4:off + 8], "little")
        body = data[end:end + length]
        if end > len(data) or length > _MAX_RECORD or len(body) != length \
                or zlib.crc32(body) != crc:
            return out, off
        try:
            out.append(_decode(body))
        except (DecodeError, ValueError, UnicodeDecodeError, RecursionError):
            return out, off
        off = end + length
    return out, None


def generation(data: bytes) -> int:
    """The generation of a journal file's bytes."""
    return int.from_bytes(data[len(MAGIC):HEADER], "little")


def read_journal(path: Path) -> list[JournalRecord]:
    """The whole records of a journal file, read only (another process may be writing it)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    if not data.startswith(MAGIC) or len(data) < HEADER:
        raise DecodeError(f"{path}: not a Cairn journal")
    return scan(data[HEADER:])[0]


class Journal:
    """An append-only file of records; ``sync=True`` fsyncs every write."""

    def __init__(self, path: Path, *, sync: bool = False) -> None:
        self.path = path
        self.sync = sync
        self.damaged: list[tuple[int, Path]] = []  # (offset, where the rest was kept)
        if not path.exists() or path.stat().st_size == 0:
            with open(path, "wb") as f:
                f.write(MAGIC + bytes(8))
                f.flush()
                os.fsync(f.fileno())
        # unbuffered: a write that fails (the disk full) leaves nothing in a user-space buffer
        # that a later seek or truncate would flush to the file after all
        self._f = open(path, "r+b", buffering=0)  # noqa: SIM115 (kept open for the store's life)
        head = self._f.read(HEADER)
        if not head.startswith(MAGIC) or len(head) < HEADER:
            self._f.close()
            raise DecodeError(f"{path}: not a Cairn journal (bad magic {head[:8]!r})")
        self.generation = generation(head)
        self.size = self._f.seek(0, os.SEEK_END)

    def records(self) -> list[JournalRecord]:
        """Every whole record, in order. A record cut short or failing its checksum ends the
        journal: the file is cut there, and anything after it kept aside and reported."""
        self._f.seek(HEADER)
        records, damaged = scan(self._f.read())
        if damaged is not None:
            self._f.seek(HEADER + damaged)
            self._cut(HEADER + damaged, self._f.read())
        self._f.seek(0, os.SEEK_END)
        return records

    def _cut(self, offset: int, rest: bytes) -> None:
        aside = self.path.with_name(f"{self.path.name}.damaged-{offset}")
        n = 1
        while aside.exists():  # kept from an earlier crash: never overwritten
            n += 1
            aside = self.path.with_name(f"{self.path.name}.damaged-{offset}-{n}")
        with open(aside, "xb") as f:
            f.write(rest)
            f.flush()
            if self.sync:
                os.fsync(f.fileno())
        self.damaged.append((offset, aside))
        self._f.truncate(offset)
        self._f.seek(0, os.SEEK_END)
        self.size = offset

    def write(self, data: bytes) -> None:
        """Append records (already encoded): in the OS when this returns, on the disk too
        with ``sync``."""
        f = self._f
        try:
            f.seek(self.size)
            self._write_all(data)
            if self.sync:
                os.fdatasync(f.fileno())
        except OSError as exc:
            # nothing half-written stays: the next write goes where this one started
            f.truncate(self.size)
            raise OSError(exc.errno, f"{self.path}: {exc.strerror or exc}") from exc
        self.size += len(data)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self._f.write(view)
            if not n:
                raise OSError(errno.EIO, "the write took no bytes")
            view = view[n:]

    def clear(self) -> None:
        """Empty it (after a checkpoint made everything in it part of the database), and
        count one more generation."""
        self.generation += 1
        try:
            self._f.seek(len(MAGIC))
            self._write_all(self.generation.to_bytes(8, "little"))
            self._f.truncate(HEADER)
            self.size = HEADER  # emptied, even when the sync below fails
            if self.sync:
                os.fdatasync(self._f.fileno())
        except OSError as exc:
            raise OSError(exc.errno, f"{self.path}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        self._f.close()

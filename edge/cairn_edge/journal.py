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
``u32 length | u32 crc32 | body``. The checksum is seeded with the generation (the crc32 of
its 8 bytes), so a record belongs to one generation: the database stores the generation each
checkpoint starts (state ``journal_generation``, committed with the checkpoint), and opening
reads the journal as that generation. Without the seed, a power cut that keeps a
generation's new records but drops the truncate before them left the older generation's
records after them, whole and checksummed, and read as this generation's: their journal-local
stream numbers named other streams, and a block of one stream was appended to another.
Files with the older magic ``CAIRNJ1`` (checksums without a seed) are read as they are and
become ``CAIRNJ2`` at their first checkpoint. Bodies:

- ``1 stream``: uint index (journal-local), string name, uint flag (1: unit follows), string unit
- ``2 tick``: uint count, then per log: uint index, uint start (the log's length before),
  uint blocks, then each block as a buffer
- ``3 state``: string key, string JSON value

A record that is cut short or fails its checksum ends the journal: it was never acknowledged
(its write had not returned). What follows a damaged record is kept aside in
``<journal>.damaged-<n>`` and reported, never silently dropped. Records of an older generation
(left by a truncate a power cut dropped, or a crash between a checkpoint's commit and the
emptying) are in the database already: they end the journal too, and are cut off with a
report, not kept.
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
    "LEGACY_MAGIC",
    "MAGIC",
    "Journal",
    "JournalRecord",
    "StateRecord",
    "StreamRecord",
    "TickRecord",
    "encode_state",
    "encode_stream",
    "encode_tick",
    "frame",
    "generation",
    "read_journal",
    "scan",
    "seed",
    "stale_generation",
]

MAGIC = b"CAIRNJ2\n"
LEGACY_MAGIC = b"CAIRNJ1\n"  # checksums not seeded with the generation
HEADER = len(MAGIC) + 8
STALE_LOOKBACK = 8  # older generations a record is recognised as coming from
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


def seed(generation: int | None) -> int:
    """The checksum seed of a generation's records (None: a legacy file's, no seed)."""
    return 0 if generation is None else zlib.crc32(generation.to_bytes(8, "little"))


def frame(body: bytes, crc_seed: int = 0) -> bytes:
    """One record: ``body`` with its length and its checksum seeded with ``crc_seed``."""
    return (len(body).to_bytes(4, "little") + zlib.crc32(body, crc_seed).to_bytes(4, "little")
            + body)


def encode_stream(index: int, name: str, unit: str | None) -> bytes:
    out = bytearray([_STREAM])
    write_uint(out, index)
    write_string(out, name)
    write_uint(out, 0 if unit is None else 1)
    write_string(out, unit or "")
    return bytes(out)


def encode_tick(appends: Sequence[tuple[int, int, Sequence[bytes]]]) -> bytes:
    out = bytearray([_TICK])
    write_uint(out, len(appends))
    for index, start, blocks in appends:
        write_uint(out, index)
        write_uint(out, start)
        write_uint(out, len(blocks))
        for b in blocks:
            write_buffer(out, b)
    return bytes(out)


def encode_state(key: str, value: object) -> bytes:
    out = bytearray([_STATE])
    write_string(out, key)
    write_string(out, json.dumps(value))
    return bytes(out)


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


def scan(data: bytes, crc_seed: int = 0) -> tuple[list[JournalRecord], int | None]:
    """The whole records of a journal's body (the bytes after the header) whose checksums are
    seeded with ``crc_seed``, and the offset of the first record cut short, damaged or of
    another generation (None when there is none)."""
    out: list[JournalRecord] = []
    off = 0
    while off < len(data):
        body = _checked(data, off, crc_seed)
        if body is None:
            return out, off
        try:
            out.append(_decode(body))
        except (DecodeError, ValueError, UnicodeDecodeError, RecursionError):
            return out, off
        off += 8 + len(body)
    return out, None


def _checked(data: bytes, off: int, crc_seed: int) -> bytes | None:
    """The body of the record at ``off`` when it is whole and its checksum (seeded with
    ``crc_seed``) matches, else None."""
    end = off + 8
    if end > len(data):
        return None
    length = int.from_bytes(data[off:off + 4], "little")
    crc = int.from_bytes(data[off + 4:end], "little")
    body = data[end:end + length]
    if length > _MAX_RECORD or len(body) != length or zlib.crc32(body, crc_seed) != crc:
        return None
    return body


def stale_generation(data: bytes, off: int, generation: int) -> int | None:
    """The older generation (one of the ``STALE_LOOKBACK`` before ``generation``, or the
    legacy unseeded one, as -1) whose whole record sits at ``off``, or None."""
    for g in range(generation - 1, max(-1, generation - 1 - STALE_LOOKBACK), -1):
        if _checked(data, off, seed(g)) is not None:
            return g
    return -1 if _checked(data, off, 0) is not None else None


def generation(data: bytes) -> int:
    """The generation in a journal file's header."""
    return int.from_bytes(data[len(MAGIC):HEADER], "little")


def _header(data: bytes, path: Path) -> bool:
    """Whether a journal file's bytes are a legacy (unseeded) one; raises when they are not a
    journal at all."""
    if len(data) < HEADER or data[:len(MAGIC)] not in (MAGIC, LEGACY_MAGIC):
        raise DecodeError(f"{path}: not a Cairn journal (bad magic {data[:len(MAGIC)]!r})")
    return data.startswith(LEGACY_MAGIC)


def read_journal(path: Path, current: int | None = None) -> list[JournalRecord]:
    """The whole records of a journal file, read only (another process may be writing it), as
    generation ``current`` (the database's; the file's header when None)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    legacy = _header(data, path)
    gen = generation(data) if current is None else current
    return scan(data[HEADER:], 0 if legacy and current is None else seed(gen))[0]


class Journal:
    """An append-only file of records; ``sync=True`` fsyncs every write.

    Its records are read and written as generation :attr:`generation`: the file header's
    until :meth:`adopt` sets the database's."""

    def __init__(self, path: Path, *, sync: bool = False) -> None:
        self.path = path
        self.sync = sync
        self.damaged: list[tuple[int, Path]] = []  # (offset, where the rest was kept)
        self.stale: list[tuple[int, int, int]] = []  # (offset, generation, bytes cut off)
        if not path.exists() or path.stat().st_size == 0:
            with open(path, "wb") as f:
                f.write(MAGIC + bytes(8))
                f.flush()
                os.fsync(f.fileno())
        # unbuffered: a write that fails (the disk full) leaves nothing in a user-space buffer
        # that a later seek or truncate would flush to the file after all
        self._f = open(path, "r+b", buffering=0)  # noqa: SIM115 (kept open for the store's life)
        head = self._f.read(HEADER)
        try:
            self.legacy = _header(head, path)
        except DecodeError:
            self._f.close()
            raise
        self.generation = generation(head)
        self.size = self._f.seek(0, os.SEEK_END)

    @property
    def _seed(self) -> int:
        return 0 if self.legacy else seed(self.generation)

    def adopt(self, current: int) -> None:
        """Read and write as generation ``current`` (the one the database says its last
        checkpoint started), whatever the header says (a power cut may have dropped its
        update)."""
        self.generation = current
        self.legacy = False

    def records(self) -> list[JournalRecord]:
        """Every whole record of this generation, in order. A record cut short or failing its
        checksum ends the journal: the file is cut there, and anything after it kept aside and
        reported; records of an older generation (in the database already) are cut off and
        reported."""
        self._f.seek(HEADER)
        data = self._f.read()
        records, damaged = scan(data, self._seed)
        if damaged is not None:
            old = None if self.legacy else stale_generation(data, damaged, self.generation)
            if old is None:
                self._cut(HEADER + damaged, data[damaged:])
            else:
                self.stale.append((HEADER + damaged, old, len(data) - damaged))
                self._truncate(HEADER + damaged)
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
        self._truncate(offset)

    def _truncate(self, offset: int) -> None:
        self._f.truncate(offset)
        self._f.seek(0, os.SEEK_END)
        self.size = offset

    def write(self, *bodies: bytes) -> None:
        """Append records (bodies from the ``encode_*`` functions): in the OS when this
        returns, on the disk too with ``sync``."""
        f = self._f
        crc_seed = self._seed
        data = b"".join(frame(b, crc_seed) for b in bodies)
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
        """Empty it (after a checkpoint made everything in it part of the database, and
        stored ``generation + 1`` as the database's journal generation), and count one more
        generation."""
        self.generation += 1
        try:
            if self.legacy:
                self._f.seek(0)
                self._write_all(MAGIC)
                self.legacy = False
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

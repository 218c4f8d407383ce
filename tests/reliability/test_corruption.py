"""Every byte of a known-good log database flipped, and the file cut at every page boundary.

Two databases are damaged: a log in a file of its own (``Log.create``, several append batches,
one of them a multi-block segment whose data overflows onto several pages, and a truncation
to a new fork) and a :class:`~cairn.storage.SharedDB` file holding
two logs the way the edge keeps them (rollback journal, 1 KiB pages, appends to both logs in one
transaction).

For each damaged copy (one copy per position: byte ``p`` xor ``0xff``; under ``make soak`` a
bigger file and each of ``0x01``, ``0x80``, ``0xff``; and the file cut at every page boundary and
at a seeded sample of other offsets), the copy is opened and everything is read and checked:
``Log.open`` / ``SharedDB`` + ``Log.open_in``, ``verify_all``, every block by ``get`` and by
``iter_blocks``, every tree node, the head, key, manifest and signature, the writer's key pair,
held ranges, evidence, block / seek proofs with an upgrade, and a range proof of the whole log.

A damaged copy is **detected** when either

* opening or reading it raises a documented error (:class:`~cairn.errors.CairnError`,
  of which :class:`~cairn.errors.StorageError` is the one for damaged files), or
* everything read from it is exactly what the undamaged file gives (same blocks, nodes, head,
  proofs bytes...): the flip landed in bytes SQLite never reads (free pages, the unused tail of
  a page, a free slot), so it is *undetected but harmless*. These are counted apart.

Anything else is counted as **wrong or crashed**: an exception that is not a ``CairnError``
(``sqlite3.DatabaseError``, ``KeyError``, ``MemoryError``...), or a read that returned
something other than the original (a wrong block, node, proof or head). The issue's figure,
"100% detected, no crash, nothing wrong returned", is that count being 0.

One cut is not damage: a shared file cut to 0 bytes is, by SharedDB's contract, a new empty
database (the edge starts afresh), so it is checked for exactly that and not counted.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cairn import crypto
from cairn.errors import CairnError
from cairn.log import Log
from cairn.messages import Request, RequestBlock, RequestSeek, RequestUpgrade, encode_data
from cairn.storage import SharedDB
from tests.scorecard import record, scale, soak

SHARED_PAGE = 1024  # the edge's page size (cairn_edge.streams.PAGE_SIZE)
SIDE_FILES = ("-wal", "-shm", "-journal")

Reader = Callable[[Path], list[object]]


def masks() -> tuple[int, ...]:
    return (0x01, 0x80, 0xFF) if soak() else (0xFF,)


# -- the known-good databases -------------------------------------------------------------------


def write_single(path: Path, big: bool) -> None:
    """A writer's log in a file of its own: 36 KB (short), 84 KB (soak)."""
    rng = random.Random(21)
    run = 30 if big else 4
    with Log.create(path, crypto.key_pair(bytes([1]) * 32)) as lg:
        lg.append([b"first block"])
        # one multi-block segment: its data (~6 KB) overflows onto several pages
        lg.append([rng.randbytes(rng.randint(1000, 1800)) for _ in range(run)])
        lg.append([rng.randbytes(rng.randint(20, 90)) for _ in range(3)])
        lg.append([rng.randbytes(3000 if big else 1200)])
        lg.append([rng.randbytes(1500), rng.randbytes(40)])
        # a truncation: fork 1, the cut segment re-packed
        lg.truncate(lg.length - 2)
        for _ in range(4):
            lg.append([rng.randbytes(rng.randint(10, 200))])
        lg.append([rng.randbytes(rng.randint(100, 600)) for _ in range(run // 2)])
    # closing checkpoints the WAL: the whole log is in the one file
    assert not any(Path(f"{path}{s}").exists() for s in ("-wal", "-shm"))


def write_shared(path: Path, big: bool) -> None:
    """Two logs in one SharedDB file, as the edge keeps its streams: 21 KB / 33 KB."""
    rng = random.Random(22)
    shared = SharedDB(path, journal="rollback", page_size=SHARED_PAGE)
    a = Log.create_in(shared, "temperature", crypto.key_pair(bytes([2]) * 32))
    b = Log.create_in(shared, "humidity", crypto.key_pair(bytes([3]) * 32), compat=True)
    for _ in range(12 if big else 3):
        with shared.transaction():
            a.append([rng.randbytes(rng.randint(50, 300)) for _ in range(4)])
            b.append([rng.randbytes(rng.randint(20, 80))])
    a.append([rng.randbytes(1500)])  # one block over two pages
    shared.close()


# -- reading everything -------------------------------------------------------------------------


def observe(lg: Log) -> list[object]:
    """Everything a user of the log can read from it, and the writer's key pair."""
    n = lg.length
    out: list[object] = [
        lg.key, lg.discovery_key, lg.manifest, lg.compat, lg.writable, lg.frozen,
        lg.public_key, n, lg.byte_length, lg.fork, lg.signature, lg.tree_hash(),
        lg.contiguous_length, lg.roots,
        # what the next append will sign with: a damaged secret key must not go unnoticed
        lg._meta.secret_key,
        lg.verify_all(),
        [lg.get(i) for i in range(n)],
        list(lg.iter_blocks()),
        lg.held_ranges(),
        [lg.get_node(i) for i in range(2 * n)],
        lg.evidence(),
        lg.range_proof(0, n),
    ]
    for i in (0, n // 2, n - 1):
        req = Request(block=RequestBlock(i, 0), upgrade=RequestUpgrade(0, n), manifest=True,
                      fork=lg.fork)
        out.append(encode_data(lg.proof(req)))
    seek = Request(seek=RequestSeek(lg.byte_length // 3), upgrade=RequestUpgrade(0, n))
    out.append(encode_data(lg.proof(seek)))
    return out


def read_single(path: Path) -> list[object]:
    with Log.open(path) as lg:
        return observe(lg)


def read_shared(path: Path) -> list[object]:
    shared = SharedDB(path, journal="rollback", page_size=SHARED_PAGE)
    try:
        out: list[object] = [shared.names()]
        for name in ("temperature", "humidity"):
            out.append(observe(Log.open_in(shared, name)))
        return out
    finally:
        shared.close()


# -- damaging copies ----------------------------------------------------------------------------


@dataclass
class Tally:
    """What the damaged copies of one database gave."""

    runs: int = 0
    errors: int = 0  # a documented error (CairnError)
    harmless: int = 0  # no error, and exactly the original content
    bad: list[str] = field(default_factory=list)  # wrong data or another exception

    def line(self) -> str:
        return (f"{self.runs:,} copies: {self.errors:,} raised, {self.harmless:,} undetected "
                f"but harmless, {len(self.bad)} wrong or crashed")


def check(read: Reader, path: Path, damaged: bytes, want: list[object], what: str,
          tally: Tally) -> None:
    for suffix in SIDE_FILES:
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(damaged)
    tally.runs += 1
    try:
        got = read(path)
    except CairnError:
        tally.errors += 1
        return
    except Exception as exc:  # anything else is the crash this test is looking for
        tally.bad.append(f"{what}: crashed with {type(exc).__name__}: {exc}")
        return
    if got == want:
        tally.harmless += 1
    else:
        diff = next(k for k, (g, w) in enumerate(zip(got, want, strict=True)) if g != w)
        tally.bad.append(f"{what}: returned wrong data (observation {diff} differs)")


def flips(original: bytes) -> Iterator[tuple[str, bytes]]:
    for mask in masks():
        for pos in range(len(original)):
            damaged = bytearray(original)
            damaged[pos] ^= mask
            yield f"byte {pos} ^ {mask:#04x}", bytes(damaged)


def cuts(original: bytes, page: int, samples: int, *, empty: bool) -> Iterator[tuple[str, bytes]]:
    rng = random.Random(len(original))
    size = len(original)
    offsets = set(range(page, size, page)) | {1, 99, 100, 101, size - 1} | ({0} if empty else set())
    offsets |= {rng.randrange(size) for _ in range(samples)}
    for cut in sorted(offsets):
        yield f"cut at {cut}", original[:cut]


Writer = Callable[[Path, bool], None]
DATABASES: dict[str, tuple[Writer, Reader, str]] = {
    "single log": (write_single, read_single, "log.db"),
    "shared file": (write_shared, read_shared, "shared.db"),
}


@pytest.mark.timeout(scale(600, 7200))  # a byte at a time: about a minute each here
@pytest.mark.parametrize("db", list(DATABASES))
def test_every_byte_flipped_and_every_cut(db: str, tmp_path: Path) -> None:
    write, read, name = DATABASES[db]
    good = tmp_path / "good" / name
    good.parent.mkdir()
    write(good, soak())
    original = good.read_bytes()
    page = int.from_bytes(original[16:18], "big")
    want = read(good)
    assert good.read_bytes() == original, "reading the good file changed it"

    work = tmp_path / "work" / name
    work.parent.mkdir()
    flipped, cut = Tally(), Tally()
    for what, damaged in flips(original):
        check(read, work, damaged, want, what, flipped)
    shared = write is write_shared
    for what, damaged in cuts(original, page, 400 if soak() else 60, empty=not shared):
        check(read, work, damaged, want, what, cut)

    if shared:  # cut to nothing: a new, empty database
        work.write_bytes(b"")
        with pytest.raises(FileNotFoundError, match="no log 'temperature'"):
            read_shared(work)

    print(f"{db} ({len(original):,} bytes, {page}-byte pages): flips: {flipped.line()}; "
          f"cuts: {cut.line()}")
    bad = flipped.bad + cut.bad
    record("corruption", f"every byte of a log database flipped ({db})", flipped.runs,
           len(flipped.bad), "wrong or crashed",
           detail=f"{len(original):,} bytes, masks {', '.join(f'{m:#04x}' for m in masks())}; "
                  f"{flipped.errors:,} raised, {flipped.harmless:,} undetected but harmless")
    record("corruption", f"log database cut at every page and sampled offsets ({db})", cut.runs,
           len(cut.bad), "wrong or crashed",
           detail=f"{cut.errors:,} raised, {cut.harmless:,} undetected but harmless")
    assert not bad, f"{len(bad)} damaged copies were not detected:\n" + "\n".join(bad[:40])
    # the flips really reached the data: most of a database is rows SQLite reads
    assert flipped.errors > flipped.runs // 4, flipped.line()

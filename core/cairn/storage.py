"""SQLite storage of one log: its head, blocks in segments, tree nodes and fork evidence.

One file per log, WAL journal. Blocks are stored in *segments*: one row per append batch (or per
verified block on a replica) holding the blocks' data back to back, their sizes, their leaf
hashes, and the parent tree nodes the append created. A batch of 1,000 blocks is one row, not
2,000, which is what makes batched appends cheap. Tree nodes that belong to no segment (proof
siblings on a replica, and the nodes of cleared blocks) live one per row in ``nodes``.
Every write the log makes is one transaction.

``sync="normal"`` (the default) survives a crash of the process at any point, as JS hypercore's
storage does; ``sync="full"`` also fsyncs every commit, to survive power loss.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import struct
import sys
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cairn import flat_tree
from cairn.errors import StorageError
from cairn.messages import Node

__all__ = [
    "FORMAT",
    "NODE_STRUCT",
    "Head",
    "LogStorage",
    "Meta",
    "Segment",
    "SyncMode",
    "pack_nodes",
]

FORMAT = 2
SyncMode = Literal["normal", "full"]

NODE_STRUCT = _NODE = struct.Struct("<QQ32s")  # a packed tree node: index, size, hash
# What reading a damaged file can raise: SQLite's errors, and a flipped byte inside a TEXT value.
_DB_ERRORS = (sqlite3.DatabaseError, UnicodeDecodeError)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    format INTEGER NOT NULL,
    key BLOB NOT NULL,
    public_key BLOB,
    secret_key BLOB,
    manifest BLOB,
    compat INTEGER NOT NULL,
    frozen INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    fork INTEGER NOT NULL,
    length INTEGER NOT NULL,
    byte_length INTEGER NOT NULL,
    tree_hash BLOB NOT NULL,
    signature BLOB
);
CREATE TABLE IF NOT EXISTS segments (
    start INTEGER PRIMARY KEY,
    count INTEGER NOT NULL,
    sizes BLOB NOT NULL,
    hashes BLOB NOT NULL,
    data BLOB NOT NULL,
    nodes BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    idx INTEGER PRIMARY KEY, size INTEGER NOT NULL, hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS evidence (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    local BLOB,
    remote BLOB
);
"""

_SEGMENT_CACHE = 16
_NODE_CACHE = 1 << 16

_TABLES = {"meta", "head", "segments", "nodes", "evidence"}


def pack_nodes(nodes: Iterable[Node]) -> bytes:
    return b"".join(_NODE.pack(n.index, n.size, n.hash) for n in nodes)


@dataclass(frozen=True, slots=True)
class Meta:
    key: bytes
    public_key: bytes | None
    secret_key: bytes | None
    manifest: bytes | None
    compat: bool
    frozen: bool


@dataclass(frozen=True, slots=True)
class Head:
    fork: int
    length: int
    byte_length: int
    tree_hash: bytes
    signature: bytes | None


class Segment:
    """A decoded ``segments`` row: blocks start .. start+count-1 and the nodes made with them."""

    __slots__ = ("_nodes", "_packed", "count", "data", "hashes", "offsets", "start")

    def __init__(
        self,
        path: Path,
        start: int,
        count: int,
        sizes: bytes,
        hashes: bytes,
        data: bytes,
        nodes: bytes,
    ) -> None:
        if (
            count <= 0
            or len(sizes) != 4 * count
            or len(hashes) != 32 * count
            or len(nodes) % _NODE.size
        ):
            raise StorageError(f"{path}: segment at block {start} is damaged")
        lengths = array("I")
        lengths.frombytes(sizes)
        if sys.byteorder != "little":  # pragma: no cover - every board we ship to is LE
            lengths.byteswap()
        offsets = [0, *itertools.accumulate(lengths)]
        if offsets[-1] != len(data):
            raise StorageError(f"{path}: segment at block {start} is damaged (sizes)")
        self.start = start
        self.count = count
        self.offsets = offsets
        self.hashes = hashes
        self.data = data
        self._packed = nodes
        self._nodes: dict[int, Node] | None = None

    def block(self, i: int) -> tuple[bytes, bytes]:
        j = i - self.start
        return (self.data[self.offsets[j] : self.offsets[j + 1]], self.hashes[32 * j : 32 * j + 32])

    def leaf(self, i: int) -> Node:
        j = i - self.start
        return Node(2 * i, self.offsets[j + 1] - self.offsets[j], self.hashes[32 * j : 32 * j + 32])

    def nodes(self) -> dict[int, Node]:
        if self._nodes is None:
            self._nodes = {i: Node(i, s, h) for i, s, h in _NODE.iter_unpack(self._packed)}
        return self._nodes


class LogStorage:
    def __init__(self, path: str | os.PathLike[str], *, create: bool, sync: SyncMode = "normal"):
        self.path = Path(path)
        exists = self.path.exists()
        if create and exists and self.path.stat().st_size > 0:
            raise FileExistsError(f"{self.path} already exists")
        if not create and not exists:
            raise FileNotFoundError(f"no log at {self.path}")
        self._cache: Segment | None = None  # the segment read last
        self._segs: OrderedDict[int, Segment] = OrderedDict()  # a few more, by start
        self._node_cache: dict[int, Node] = {}  # nodes read
        self._absent: set[int] = set()  # nodes looked for and not held (until one is written)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            if not create:
                self._check_file()
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
            self.db.execute("PRAGMA cache_size=-8000")
            if create:
                self.db.executescript(_SCHEMA)
        except _DB_ERRORS as exc:
            raise StorageError(f"{self.path}: not a readable Cairn log ({exc})") from exc

    def _check_file(self) -> None:
        """Catch a truncated or foreign file before anything is read from it."""
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            header = f.read(100)
        if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
            raise StorageError(f"{self.path}: not an SQLite database (bad header)")
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        pages = int.from_bytes(header[28:32], "big")
        if pages and size < pages * page_size:
            raise StorageError(
                f"{self.path}: file is truncated ({size} bytes, header says {pages * page_size})"
            )
        try:
            rows = self.db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
        except _DB_ERRORS as exc:
            raise StorageError(f"{self.path}: schema is damaged ({exc})") from exc
        missing = _TABLES - {r[0] for r in rows}
        if missing:
            raise StorageError(
                f"{self.path}: not a Cairn log (missing {', '.join(sorted(missing))})"
            )

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; nested calls join the outer one."""
        db = self.db
        if db.in_transaction:
            yield db
            return
        try:
            db.execute("BEGIN IMMEDIATE")
        except _DB_ERRORS as exc:
            raise StorageError(f"{self.path}: {exc}") from exc
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            self._invalidate()
            raise
        try:
            db.execute("COMMIT")
        except _DB_ERRORS as exc:
            raise StorageError(f"{self.path}: {exc}") from exc

    def rollback(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")
        self._invalidate()

    # -- reads ---------------------------------------------------------------------------------

    def _rows(self, sql: str, args: Sequence[object] = ()) -> list[tuple[object, ...]]:
        try:
            rows: list[tuple[object, ...]] = self.db.execute(sql, args).fetchall()
        except _DB_ERRORS as exc:
            raise StorageError(f"{self.path}: {exc}") from exc
        return rows

    def _row(self, sql: str, args: Sequence[object] = ()) -> tuple[object, ...] | None:
        rows = self._rows(sql, args)
        return rows[0] if rows else None

    def read_meta(self) -> Meta:
        row = self._row(
            "SELECT format, key, public_key, secret_key, manifest, compat, frozen "
            "FROM meta WHERE id = 1"
        )
        if row is None:
            raise StorageError(f"{self.path}: log metadata is missing")
        fmt, key, pk, sk, manifest, compat, frozen = row
        if fmt != FORMAT:
            raise StorageError(f"{self.path}: unknown log format {fmt!r}")
        if not isinstance(key, bytes) or len(key) != 32:
            raise StorageError(f"{self.path}: log key is damaged")
        for name, val, size in (("public key", pk, 32), ("secret key", sk, 64)):
            if val is not None and (not isinstance(val, bytes) or len(val) != size):
                raise StorageError(f"{self.path}: {name} is damaged")
        if manifest is not None and not isinstance(manifest, bytes):
            raise StorageError(f"{self.path}: manifest is damaged")
        if compat not in (0, 1) or frozen not in (0, 1):
            raise StorageError(f"{self.path}: log flags are damaged")
        return Meta(key, pk, sk, manifest, bool(compat), bool(frozen))  # type: ignore[arg-type]

    def read_head(self) -> Head:
        row = self._row(
            "SELECT fork, length, byte_length, tree_hash, signature FROM head WHERE id = 1"
        )
        if row is None:
            raise StorageError(f"{self.path}: log head is missing")
        fork, length, byte_length, tree_hash, signature = row
        if not (
            isinstance(fork, int)
            and isinstance(length, int)
            and isinstance(byte_length, int)
            and fork >= 0
            and length >= 0
            and byte_length >= 0
        ):
            raise StorageError(f"{self.path}: log head is damaged")
        if not isinstance(tree_hash, bytes) or len(tree_hash) != 32:
            raise StorageError(f"{self.path}: log head tree hash is damaged")
        if signature is not None and not isinstance(signature, bytes):
            raise StorageError(f"{self.path}: log head signature is damaged")
        return Head(fork, length, byte_length, tree_hash, signature)

    def _decode(self, row: tuple[object, ...]) -> Segment:
        start, count, sizes, hashes, data, nodes = row
        if not (
            isinstance(start, int)
            and isinstance(count, int)
            and isinstance(sizes, bytes)
            and isinstance(hashes, bytes)
            and isinstance(data, bytes)
            and isinstance(nodes, bytes)
        ):
            raise StorageError(f"{self.path}: segment at block {start!r} is damaged")
        return Segment(self.path, start, count, sizes, hashes, data, nodes)

    def _invalidate(self) -> None:
        """Forget cached segments and nodes (after a rollback, or blocks were cut out)."""
        self._cache = None
        self._segs.clear()
        self._node_cache.clear()
        self._absent.clear()

    def segment(self, i: int) -> Segment | None:
        """The segment holding block ``i``, if any."""
        seg = self._cache
        if seg is not None and seg.start <= i < seg.start + seg.count:
            return seg
        for seg in self._segs.values():  # proofs hop between a few segments: keep them
            if seg.start <= i < seg.start + seg.count:
                self._cache = seg
                return seg
        row = self._row(
            "SELECT start, count, sizes, hashes, data, nodes FROM segments "
            "WHERE start <= ? ORDER BY start DESC LIMIT 1",
            (i,),
        )
        if row is None:
            return None
        seg = self._decode(row)
        if i >= seg.start + seg.count:
            return None
        self._cache = seg
        self._segs[seg.start] = seg
        if len(self._segs) > _SEGMENT_CACHE:
            self._segs.popitem(last=False)
        return seg

    def segments(self, start: int = 0, end: int = 1 << 62) -> Iterator[Segment]:
        first = self.segment(start)
        lo = first.start if first is not None else start
        try:
            cur = self.db.execute(
                "SELECT start, count, sizes, hashes, data, nodes FROM segments "
                "WHERE start >= ? AND start < ? ORDER BY start",
                (lo, end),
            )
            for row in cur:
                yield self._decode(row)
        except _DB_ERRORS as exc:
            raise StorageError(f"{self.path}: {exc}") from exc

    def block_ranges(self) -> list[tuple[int, int]]:
        rows = self._rows("SELECT start, count FROM segments ORDER BY start")
        out = []
        for start, count in rows:
            if not isinstance(start, int) or not isinstance(count, int) or count <= 0:
                raise StorageError(f"{self.path}: segment index is damaged")
            out.append((start, count))
        return out

    def get_node(self, index: int) -> Node | None:
        cached = self._node_cache.get(index)
        if cached is not None:
            return cached
        if index in self._absent:
            return None
        node = self._read_node(index)
        if node is not None:
            if len(self._node_cache) >= _NODE_CACHE:
                self._node_cache.clear()
            self._node_cache[index] = node
        else:
            if len(self._absent) >= _NODE_CACHE:
                self._absent.clear()
            self._absent.add(index)
        return node

    def _read_node(self, index: int) -> Node | None:
        row = self._row("SELECT size, hash FROM nodes WHERE idx = ?", (index,))
        if row is not None:
            size, digest = row
            if not isinstance(size, int) or not isinstance(digest, bytes) or len(digest) != 32:
                raise StorageError(f"{self.path}: tree node {index} is damaged")
            return Node(index, size, digest)
        if not index & 1:
            seg = self.segment(index >> 1)
            return seg.leaf(index >> 1) if seg is not None else None
        seg = self.segment(flat_tree.right_span(index) >> 1)
        return seg.nodes().get(index) if seg is not None else None

    def get_block(self, index: int) -> tuple[bytes, bytes] | None:
        """(data, stored leaf hash) of a held block."""
        seg = self.segment(index)
        return seg.block(index) if seg is not None else None

    def iter_blocks(self, start: int, end: int) -> Iterator[tuple[int, bytes, bytes]]:
        for seg in self.segments(start, end):
            for i in range(max(start, seg.start), min(end, seg.start + seg.count)):
                data, digest = seg.block(i)
                yield i, data, digest

    def iter_nodes(self) -> Iterator[Node]:
        """Every stored tree node (leaves of held blocks included)."""
        for seg in self.segments():
            yield from seg.nodes().values()
            for i in range(seg.start, seg.start + seg.count):
                yield seg.leaf(i)
        for idx, size, digest in self._rows("SELECT idx, size, hash FROM nodes"):
            if (
                not isinstance(idx, int)
                or not isinstance(size, int)
                or not isinstance(digest, bytes)
                or len(digest) != 32
            ):
                raise StorageError(f"{self.path}: tree node {idx!r} is damaged")
            yield Node(idx, size, digest)

    def evidence(self) -> list[tuple[str, str, bytes | None, bytes | None]]:
        rows = self._rows("SELECT kind, detail, local, remote FROM evidence ORDER BY id")
        return [
            (str(kind), str(detail), local, remote)  # type: ignore[misc]
            for kind, detail, local, remote in rows
        ]

    # -- writes (inside transaction()) ------------------------------------------------------------

    @staticmethod
    def put_meta(db: sqlite3.Connection, meta: Meta) -> None:
        db.execute(
            "INSERT OR REPLACE INTO meta (id, format, key, public_key, secret_key, manifest, "
            "compat, frozen) VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
            (
                FORMAT,
                meta.key,
                meta.public_key,
                meta.secret_key,
                meta.manifest,
                int(meta.compat),
                int(meta.frozen),
            ),
        )

    @staticmethod
    def put_head(db: sqlite3.Connection, head: Head) -> None:
        db.execute(
            "INSERT OR REPLACE INTO head (id, fork, length, byte_length, tree_hash, signature) "
            "VALUES (1, ?, ?, ?, ?, ?)",
            (head.fork, head.length, head.byte_length, head.tree_hash, head.signature),
        )

    def put_segment(
        self,
        db: sqlite3.Connection,
        start: int,
        sizes: Sequence[int],
        hashes: bytes,
        data: bytes,
        nodes: bytes,
    ) -> None:
        """Blocks start.. with their sizes, concatenated leaf hashes and data, packed parents."""
        if self._absent:
            self._absent.difference_update(range(2 * start, 2 * (start + len(sizes)), 2))
            self._absent.difference_update(i for i, _, _ in _NODE.iter_unpack(nodes))
        db.execute(
            "INSERT INTO segments (start, count, sizes, hashes, data, nodes) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (start, len(sizes), array("I", sizes).tobytes(), hashes, data, nodes),
        )

    def put_nodes(self, db: sqlite3.Connection, nodes: Iterable[Node]) -> None:
        nodes = list(nodes)
        if self._absent:
            self._absent.difference_update(n.index for n in nodes)
        db.executemany("INSERT OR REPLACE INTO nodes (idx, size, hash) VALUES (?, ?, ?)", nodes)

    @staticmethod
    def put_evidence(
        db: sqlite3.Connection, kind: str, detail: str, local: bytes | None, remote: bytes | None
    ) -> None:
        db.execute(
            "INSERT INTO evidence (kind, detail, local, remote) VALUES (?, ?, ?, ?)",
            (kind, detail, local, remote),
        )

    def split_out(
        self, db: sqlite3.Connection, start: int, end: int, keep_leaves: bool
    ) -> list[Segment]:
        """Remove blocks [start, end) from their segments; returns the segments that were cut.

        Blocks outside the range stay, re-packed as segments of their own. The parent nodes of
        the cut segments move to the ``nodes`` table, so the tree stays whole; with
        ``keep_leaves`` the leaf nodes of the removed blocks do too (``clear``).
        """
        cut = list(self.segments(start, end))
        cut = [s for s in cut if s.start < end and s.start + s.count > start]
        self._invalidate()
        for seg in cut:
            db.execute("DELETE FROM segments WHERE start = ?", (seg.start,))
            self.put_nodes(db, seg.nodes().values())
            if keep_leaves:
                self.put_nodes(
                    db,
                    (
                        seg.leaf(i)
                        for i in range(max(start, seg.start), min(end, seg.start + seg.count))
                    ),
                )
            for lo, hi in ((seg.start, start), (end, seg.start + seg.count)):
                lo, hi = max(lo, seg.start), min(hi, seg.start + seg.count)
                if lo < hi:
                    j, k = lo - seg.start, hi - seg.start
                    sizes = [seg.offsets[x + 1] - seg.offsets[x] for x in range(j, k)]
                    self.put_segment(
                        db,
                        lo,
                        sizes,
                        seg.hashes[32 * j : 32 * k],
                        seg.data[seg.offsets[j] : seg.offsets[k]],
                        b"",
                    )
        return cut

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

import bisect
import os
import sqlite3
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cairn import flat_tree
from cairn.errors import StorageError
from cairn.messages import Node
from cairn.storage.segments import NODE_STRUCT as _NODE
from cairn.storage.segments import POOL, Segment
from cairn.storage.shared import SharedDB
from cairn.storage.sqlite import DB_ERRORS as _DB_ERRORS
from cairn.storage.sqlite import Conn, SyncMode, check_header

__all__ = ["FORMAT", "Head", "LogStorage", "Meta"]

FORMAT = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {meta} (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    format INTEGER NOT NULL,
    key BLOB NOT NULL,
    public_key BLOB,
    secret_key BLOB,
    manifest BLOB,
    compat INTEGER NOT NULL,
    frozen INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS {head} (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    fork INTEGER NOT NULL,
    length INTEGER NOT NULL,
    byte_length INTEGER NOT NULL,
    tree_hash BLOB NOT NULL,
    signature BLOB
);
CREATE TABLE IF NOT EXISTS {segments} (
    start INTEGER PRIMARY KEY,
    count INTEGER NOT NULL,
    sizes BLOB NOT NULL,
    hashes BLOB NOT NULL,
    data BLOB NOT NULL,
    nodes BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS {nodes} (
    idx INTEGER PRIMARY KEY, size INTEGER NOT NULL, hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS {evidence} (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    local BLOB,
    remote BLOB
);
"""

_NODE_CACHE = 1 << 16

_TABLES = {"meta", "head", "segments", "nodes", "evidence"}


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


class LogStorage:
    """The tables of one log, in a file of its own or in a :class:`SharedDB` (where it is a
    :class:`~cairn.storage.shared.Participant` of the shared transaction)."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool, sync: SyncMode = "normal",
                 shared: SharedDB | None = None, name: str | None = None):
        self.path = Path(path)
        if shared is None:
            exists = self.path.exists()
            if create and exists and self.path.stat().st_size > 0:
                raise FileExistsError(f"{self.path} already exists")
            if not create and not exists:
                raise FileNotFoundError(f"no log at {self.path}")
        self._cache: Segment | None = None  # the segment read last
        self._segs: dict[int, Segment] = {}  # more, by start, kept in the process's POOL
        self._seg_starts: list[int] = []  # the keys of _segs, sorted
        self._fresh: set[int] = set()  # starts of segments written in the open transaction
        # one-block segments and loose nodes a replica stored in the open transaction, written
        # at the commit (consecutive blocks as one row) or before anything is read with SQL
        self._pending_blocks: list[tuple[int, int, bytes, bytes]] = []  # start, size, hash, data
        self._pending_nodes: list[Node] = []
        # what the log's bitfield says of a block (committed state): set by Log, spares a query
        # for every block not held
        self.holds: Callable[[int], bool] | None = None
        self._node_cache: dict[int, Node] = {}  # nodes read
        self._absent: set[int] = set()  # nodes looked for and not held (until one is written)
        self.shared = shared
        if shared is not None:
            if name is None:
                raise ValueError("a log in a shared database needs a name")
            try:
                self.db = Conn(shared.raw, shared.prefix(name, create))
                if create:
                    # one statement at a time: executescript would COMMIT a transaction the
                    # caller has open (a log made during an edge's commit)
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            self.db.execute(statement)
                else:
                    self._check_tables()
            except _DB_ERRORS as exc:
                raise StorageError(f"{self.path}: log {name!r} is not readable ({exc})") from exc
            shared.members.append(self)
            shared.tracked.add(id(self))
            return
        try:
            self.db = Conn(sqlite3.connect(self.path, isolation_level=None,
                                           check_same_thread=False))
            if not create:
                self._check_file()
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
            self.db.execute("PRAGMA cache_size=-8000")
            # after a checkpoint the WAL file is cut back to 1 MiB (it does not keep its peak)
            self.db.execute("PRAGMA journal_size_limit=1048576")
            if create:
                self.db.executescript(_SCHEMA)
        except _DB_ERRORS as exc:
            raise StorageError(f"{self.path}: not a readable Cairn log ({exc})") from exc

    def _check_file(self) -> None:
        """Catch a truncated or foreign file before anything is read from it."""
        check_header(self.path)
        self._check_tables()

    def _check_tables(self) -> None:
        try:
            rows = self.db.raw.execute(
                "SELECT name FROM sqlite_master WHERE type='table'").fetchall()
        except _DB_ERRORS as exc:
            raise StorageError(f"{self.path}: schema is damaged ({exc})") from exc
        wanted = {self.db.q("{" + t + "}") for t in _TABLES}
        missing = wanted - {r[0] for r in rows}
        if missing:
            raise StorageError(
                f"{self.path}: not a Cairn log (missing {', '.join(sorted(missing))})"
            )

    def close(self) -> None:
        self._invalidate()
        if self.shared is None:
            self.db.close()
        elif self in self.shared.members:
            self.shared.members.remove(self)
            self.shared.dirty.discard(self)
            self.shared.tracked.discard(id(self))

    @contextmanager
    def transaction(self) -> Iterator[Conn]:
        """One write transaction; nested calls join the outer one (and so do the logs of a
        shared database inside :meth:`SharedDB.transaction`)."""
        db = self.db
        if db.in_transaction:
            yield db
            return
        if self.shared is not None:
            with self.shared.transaction():
                yield db
            return
        try:
            db.execute("BEGIN IMMEDIATE")
        except _DB_ERRORS as exc:
            raise StorageError(f"{self.path}: {exc}") from exc
        try:
            yield db
        except BaseException:
            self._drop_pending()
            db.execute("ROLLBACK")
            self._invalidate()
            raise
        try:
            self._flush_pending(db)
            db.execute("COMMIT")
        except _DB_ERRORS as exc:
            self._invalidate()  # the caches may hold what was written and is now lost
            raise StorageError(f"{self.path}: {exc}") from exc
        self.committed()

    def committed(self) -> None:
        """After a commit: segments written are now in the bitfield too, unpin them."""
        fresh, self._fresh = self._fresh, set()
        for start in fresh:
            if not POOL.holds(self, start):
                self.forget_segment(start)

    def write_pending(self) -> None:
        """Write what was kept back into the open transaction (a shared commit asks)."""
        self._flush_pending(self.db)

    def rolled_back(self) -> None:
        """The shared transaction was rolled back: forget what was kept back and cached."""
        self._drop_pending()
        self._invalidate()

    def _drop_pending(self) -> None:
        self._pending_blocks.clear()
        self._pending_nodes.clear()

    def _flush_pending(self, db: Conn) -> None:
        """Write what put_segment / put_nodes kept back: runs of consecutive blocks as one row."""
        if self._pending_nodes:
            nodes, self._pending_nodes = self._pending_nodes, []
            db.executemany("INSERT OR REPLACE INTO {nodes} (idx, size, hash) VALUES (?, ?, ?)",
                           nodes)
        if not self._pending_blocks:
            return
        blocks, self._pending_blocks = sorted(self._pending_blocks), []
        rows = []
        k = 0
        while k < len(blocks):
            j = k + 1
            while j < len(blocks) and blocks[j][0] == blocks[j - 1][0] + 1:
                j += 1
            run = blocks[k:j]
            rows.append((
                run[0][0],
                len(run),
                array("I", [b[1] for b in run]).tobytes(),
                b"".join(b[2] for b in run),
                b"".join(b[3] for b in run),
                b"",
            ))
            k = j
        db.executemany(
            "INSERT INTO {segments} (start, count, sizes, hashes, data, nodes) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )

    def rollback(self) -> None:
        self._drop_pending()
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")
        self._invalidate()

    # -- reads ---------------------------------------------------------------------------------

    def _rows(self, sql: str, args: Sequence[object] = ()) -> list[tuple[object, ...]]:
        try:
            if self._pending_blocks or self._pending_nodes:
                self._flush_pending(self.db)
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
            "FROM {meta} WHERE id = 1"
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
            "SELECT fork, length, byte_length, tree_hash, signature FROM {head} WHERE id = 1"
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
        POOL.drop(self, self._seg_starts)
        self._segs.clear()
        self._seg_starts.clear()
        self._fresh.clear()
        self._node_cache.clear()
        self._absent.clear()

    def segment(self, i: int) -> Segment | None:
        """The segment holding block ``i``, if any."""
        seg = self._cache
        if seg is not None and seg.start <= i < seg.start + seg.count:
            return seg
        # random reads (a JS peer asks for blocks in random order) and proofs hop between
        # segments: keep the recently used ones, found by bisection on their starts
        k = bisect.bisect_right(self._seg_starts, i) - 1
        if k >= 0:
            start = self._seg_starts[k]
            seg = self._segs[start]
            if i < start + seg.count:
                self._cache = seg
                POOL.touch(self, start)
                return seg
        holds = self.holds
        if holds is not None and not holds(i):
            return None  # not held, or written in this transaction and so found above
        row = self._row(
            "SELECT start, count, sizes, hashes, data, nodes FROM {segments} "
            "WHERE start <= ? ORDER BY start DESC LIMIT 1",
            (i,),
        )
        if row is None:
            return None
        seg = self._decode(row)
        if i >= seg.start + seg.count:
            return None
        self._cache = seg
        self._keep(seg)
        return seg

    def _keep(self, seg: Segment) -> None:
        if seg.start not in self._segs:
            bisect.insort(self._seg_starts, seg.start)
        self._segs[seg.start] = seg
        POOL.add(self, seg)

    def forget_segment(self, start: int) -> None:
        """The pool let go of this segment."""
        if start in self._fresh:
            return  # until the commit, the bitfield does not know it: keep it findable
        if self._segs.pop(start, None) is not None:
            del self._seg_starts[bisect.bisect_left(self._seg_starts, start)]

    def segments(self, start: int = 0, end: int = 1 << 62) -> Iterator[Segment]:
        first = self.segment(start)
        lo = first.start if first is not None else start
        try:
            if self._pending_blocks or self._pending_nodes:
                self._flush_pending(self.db)
            cur = self.db.execute(
                "SELECT start, count, sizes, hashes, data, nodes FROM {segments} "
                "WHERE start >= ? AND start < ? ORDER BY start",
                (lo, end),
            )
            for row in cur:
                yield self._decode(row)
        except _DB_ERRORS as exc:
            raise StorageError(f"{self.path}: {exc}") from exc

    def used_bytes(self) -> int:
        if self.shared is not None:  # this log's tables only (slow: reads the whole file)
            try:
                row = self.db.raw.execute(
                    "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name LIKE ? ESCAPE '!'",
                    (self.db.q("{meta}").removesuffix("meta").replace("_", "!_") + "%",),
                ).fetchone()
            except _DB_ERRORS:
                return 0  # SQLite built without dbstat: only the shared total is known
            return int(row[0])
        rows = self._rows("SELECT * FROM pragma_page_count(), pragma_freelist_count(), "
                          "pragma_page_size()")
        pages, free, size = rows[0]
        assert isinstance(pages, int) and isinstance(free, int) and isinstance(size, int)
        return (pages - free) * size

    def block_ranges(self) -> list[tuple[int, int]]:
        rows = self._rows("SELECT start, count FROM {segments} ORDER BY start")
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
        # the segment first: a writer's nodes all live there, and it is usually cached
        if not index & 1:
            seg = self.segment(index >> 1)
            if seg is not None:
                return seg.leaf(index >> 1)
        else:
            seg = self.segment(flat_tree.right_span(index) >> 1)
            node = seg.node(index) if seg is not None else None
            if node is not None:
                return node
        row = self._row("SELECT size, hash FROM {nodes} WHERE idx = ?", (index,))
        if row is None:
            return None
        size, digest = row
        if not isinstance(size, int) or not isinstance(digest, bytes) or len(digest) != 32:
            raise StorageError(f"{self.path}: tree node {index} is damaged")
        return Node(index, size, digest)

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
        for idx, size, digest in self._rows("SELECT idx, size, hash FROM {nodes}"):
            if (
                not isinstance(idx, int)
                or not isinstance(size, int)
                or not isinstance(digest, bytes)
                or len(digest) != 32
            ):
                raise StorageError(f"{self.path}: tree node {idx!r} is damaged")
            yield Node(idx, size, digest)

    def evidence(self) -> list[tuple[str, str, bytes | None, bytes | None]]:
        rows = self._rows("SELECT kind, detail, local, remote FROM {evidence} ORDER BY id")
        out: list[tuple[str, str, bytes | None, bytes | None]] = []
        for kind, detail, local, remote in rows:
            if not (isinstance(kind, str) and isinstance(detail, str)
                    and all(x is None or isinstance(x, bytes) for x in (local, remote))):
                raise StorageError(f"{self.path}: fork evidence is damaged")
            out.append((kind, detail, local, remote))  # type: ignore[arg-type]
        return out

    # -- writes (inside transaction()) ------------------------------------------------------------

    @staticmethod
    def put_meta(db: Conn, meta: Meta) -> None:
        db.execute(
            "INSERT OR REPLACE INTO {meta} (id, format, key, public_key, secret_key, manifest, "
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
    def put_head(db: Conn, head: Head) -> None:
        db.execute(
            "INSERT OR REPLACE INTO {head} (id, fork, length, byte_length, tree_hash, signature) "
            "VALUES (1, ?, ?, ?, ?, ?)",
            (head.fork, head.length, head.byte_length, head.tree_hash, head.signature),
        )

    def put_segment(
        self,
        db: Conn,
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
        packed_sizes = array("I", sizes).tobytes()
        if len(sizes) == 1 and not nodes and db.in_transaction:
            # a replica stores proofs one block at a time: join consecutive ones at the commit
            self._pending_blocks.append((start, sizes[0], hashes, data))
        else:
            self._flush_pending(db)
            db.execute(
                "INSERT INTO {segments} (start, count, sizes, hashes, data, nodes) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (start, len(sizes), packed_sizes, hashes, data, nodes),
            )
        # written through: the next proof or hint looks here (a rollback forgets it again)
        seg = Segment(self.path, start, len(sizes), packed_sizes, hashes, data, nodes)
        self._cache = seg
        self._fresh.add(start)
        if self.shared is not None:
            self.shared.dirty.add(self)  # (a shared commit visits only the logs it touched)
        self._keep(seg)

    def put_nodes(self, db: Conn, nodes: Iterable[Node]) -> None:
        nodes = list(nodes)
        if self._absent:
            self._absent.difference_update(n.index for n in nodes)
        if db.in_transaction:
            self._pending_nodes.extend(nodes)
            if self.shared is not None:
                self.shared.dirty.add(self)
        else:
            db.executemany(
                "INSERT OR REPLACE INTO {nodes} (idx, size, hash) VALUES (?, ?, ?)", nodes
            )
        cache = self._node_cache
        if len(cache) + len(nodes) > _NODE_CACHE:
            cache.clear()
        for n in nodes:
            cache[n.index] = n

    def delete_nodes(self, db: Conn, from_index: int, more: Iterable[int]) -> None:
        """Remove loose nodes ``from_index`` and up, and the ones listed (a truncation)."""
        self._flush_pending(db)
        db.execute("DELETE FROM {nodes} WHERE idx >= ?", (from_index,))
        db.executemany("DELETE FROM {nodes} WHERE idx = ?", [(i,) for i in more])
        self._invalidate()

    @staticmethod
    def put_evidence(
        db: Conn, kind: str, detail: str, local: bytes | None, remote: bytes | None
    ) -> None:
        db.execute(
            "INSERT INTO {evidence} (kind, detail, local, remote) VALUES (?, ?, ?, ?)",
            (kind, detail, local, remote),
        )

    def split_out(
        self, db: Conn, start: int, end: int, keep_leaves: bool
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
            db.execute("DELETE FROM {segments} WHERE start = ?", (seg.start,))
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

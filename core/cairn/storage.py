"""SQLite storage of one log: its head, tree nodes, blocks and fork evidence.

One file per log, WAL journal. Leaf nodes of held blocks live in the ``blocks`` row beside the
data (size is the data's length), so an append writes one row per block and one per parent node;
a cleared block leaves its leaf node in ``nodes``. Every write the log makes is one transaction.

``sync="normal"`` (the default) survives a crash of the process at any point, as JS hypercore's
storage does; ``sync="full"`` also fsyncs every commit, to survive power loss.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cairn.errors import StorageError
from cairn.messages import Node

__all__ = ["FORMAT", "Head", "LogStorage", "Meta", "SyncMode"]

FORMAT = 1
SyncMode = Literal["normal", "full"]

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
CREATE TABLE IF NOT EXISTS blocks (idx INTEGER PRIMARY KEY, hash BLOB NOT NULL, data BLOB NOT NULL);
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
    def __init__(self, path: str | os.PathLike[str], *, create: bool, sync: SyncMode = "normal"):
        self.path = Path(path)
        exists = self.path.exists()
        if create and exists and self.path.stat().st_size > 0:
            raise FileExistsError(f"{self.path} already exists")
        if not create and not exists:
            raise FileNotFoundError(f"no log at {self.path}")
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            if not create:
                self._check_file()
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
            self.db.execute("PRAGMA cache_size=-8000")
            if create:
                self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
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
        tables = {
            r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        missing = {"meta", "head", "blocks", "nodes", "evidence"} - tables
        if missing:
            raise StorageError(
                f"{self.path}: not a Cairn log (missing {', '.join(sorted(missing))})"
            )

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # -- reads ---------------------------------------------------------------------------------

    def _row(self, sql: str, args: Sequence[object] = ()) -> tuple[object, ...] | None:
        try:
            row: tuple[object, ...] | None = self.db.execute(sql, args).fetchone()
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{self.path}: {exc}") from exc
        return row

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

    def get_node(self, index: int) -> Node | None:
        row = self._row("SELECT size, hash FROM nodes WHERE idx = ?", (index,))
        if row is None and not index & 1:
            row = self._row("SELECT length(data), hash FROM blocks WHERE idx = ?", (index >> 1,))
        if row is None:
            return None
        size, digest = row
        if not isinstance(size, int) or not isinstance(digest, bytes) or len(digest) != 32:
            raise StorageError(f"{self.path}: tree node {index} is damaged")
        return Node(index, size, digest)

    def get_block(self, index: int) -> tuple[bytes, bytes] | None:
        """(data, stored leaf hash) of a held block."""
        row = self._row("SELECT data, hash FROM blocks WHERE idx = ?", (index,))
        if row is None:
            return None
        data, digest = row
        if not isinstance(data, bytes) or not isinstance(digest, bytes):
            raise StorageError(f"{self.path}: block {index} is damaged")
        return data, digest

    def iter_blocks(self, start: int, end: int) -> Iterator[tuple[int, bytes, bytes]]:
        try:
            yield from self.db.execute(
                "SELECT idx, data, hash FROM blocks WHERE idx >= ? AND idx < ? ORDER BY idx",
                (start, end),
            )
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{self.path}: {exc}") from exc

    def block_indexes(self) -> Iterator[int]:
        try:
            for (idx,) in self.db.execute("SELECT idx FROM blocks ORDER BY idx"):
                yield idx
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{self.path}: {exc}") from exc

    def iter_nodes(self) -> Iterator[Node]:
        try:
            for idx, size, digest in self.db.execute("SELECT idx, size, hash FROM nodes"):
                yield Node(idx, size, digest)
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{self.path}: {exc}") from exc

    def evidence(self) -> list[tuple[str, str, bytes | None, bytes | None]]:
        rows = self.db.execute("SELECT kind, detail, local, remote FROM evidence ORDER BY id")
        return [(kind, detail, local, remote) for kind, detail, local, remote in rows]

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

    @staticmethod
    def put_blocks(db: sqlite3.Connection, rows: Iterable[tuple[int, bytes, bytes]]) -> None:
        """Rows of (block index, leaf hash, data)."""
        db.executemany("INSERT OR REPLACE INTO blocks (idx, hash, data) VALUES (?, ?, ?)", rows)

    @staticmethod
    def put_nodes(db: sqlite3.Connection, nodes: Iterable[Node]) -> None:
        db.executemany("INSERT OR REPLACE INTO nodes (idx, size, hash) VALUES (?, ?, ?)", nodes)

    @staticmethod
    def put_evidence(
        db: sqlite3.Connection, kind: str, detail: str, local: bytes | None, remote: bytes | None
    ) -> None:
        db.execute(
            "INSERT INTO evidence (kind, detail, local, remote) VALUES (?, ?, ?, ?)",
            (kind, detail, local, remote),
        )

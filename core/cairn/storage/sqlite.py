"""The SQLite side of log storage: a connection as one log sees it, and the checks of a file.

:class:`Conn` resolves a log's table names (``{segments}``...) to its own tables, so one log's
SQL runs unchanged in a file of its own or in a :class:`~cairn.storage.SharedDB`.
:func:`check_header` catches a truncated or foreign file before SQLite reads it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from cairn.errors import StorageError

__all__ = ["DB_ERRORS", "Conn", "JournalMode", "SyncMode", "check_header"]

SyncMode = Literal["normal", "full"]
JournalMode = Literal["wal", "rollback"]

# What reading a damaged file can raise: SQLite's errors, and a flipped byte inside a TEXT value.
DB_ERRORS = (sqlite3.DatabaseError, UnicodeDecodeError)


class Conn:
    """A connection as one log sees it: its table names (``{segments}``...) resolved to the
    log's own tables (``segments`` in a file of its own, ``l7_segments`` in a shared one)."""

    __slots__ = ("_names", "_sql", "raw")

    def __init__(self, raw: sqlite3.Connection, prefix: str = "") -> None:
        self.raw = raw
        self._names = {n: prefix + n for n in ("meta", "head", "segments", "nodes", "evidence")}
        self._sql: dict[str, str] = {}

    def q(self, sql: str) -> str:
        out = self._sql.get(sql)
        if out is None:
            out = self._sql[sql] = sql.format_map(self._names)
        return out

    def execute(self, sql: str, args: Sequence[object] = ()) -> sqlite3.Cursor:
        return self.raw.execute(self.q(sql), args)

    def executemany(self, sql: str, args: Iterable[Sequence[object]]) -> sqlite3.Cursor:
        return self.raw.executemany(self.q(sql), args)

    def executescript(self, sql: str) -> sqlite3.Cursor:
        return self.raw.executescript(self.q(sql))

    @property
    def in_transaction(self) -> bool:
        return self.raw.in_transaction

    @property
    def total_changes(self) -> int:
        return self.raw.total_changes

    def close(self) -> None:
        self.raw.close()


def check_header(path: Path) -> None:
    """Catch a truncated or foreign file before anything is read from it."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        raise StorageError(f"{path}: not an SQLite database (bad header)")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if pages and size < pages * page_size:
        raise StorageError(
            f"{path}: file is truncated ({size} bytes, header says {pages * page_size})"
        )

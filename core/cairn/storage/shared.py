"""Many logs in one SQLite file (:class:`SharedDB`), and the protocol its logs take part by.

The file holds a ``logs`` table naming each log, and each log's own tables (``l7_segments``...).
A commit that appends to several logs is one transaction. The logs take part through
:class:`Participant`, a public protocol: at a commit each writes what it kept back
(:meth:`~Participant.write_pending`) and then hears that it committed
(:meth:`~Participant.committed`); after a rollback each forgets what it kept and cached
(:meth:`~Participant.rolled_back`). SharedDB knows nothing else of a log's storage.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from cairn.errors import StorageError
from cairn.storage.sqlite import DB_ERRORS as _DB_ERRORS
from cairn.storage.sqlite import JournalMode, SyncMode, check_header

__all__ = ["Participant", "SharedDB"]


class Participant(Protocol):
    """A log's storage inside a :class:`SharedDB`: what the shared transaction asks of it."""

    def write_pending(self) -> None:
        """Write what it kept back (one-block segments, loose nodes) into the open
        transaction; may raise SQLite's errors."""

    def committed(self) -> None:
        """The transaction (or a held one's commit) reached the file."""

    def rolled_back(self) -> None:
        """The transaction was rolled back: drop what was kept back and every cache."""

    def close(self) -> None:
        """The shared file is closing."""


class SharedDB:
    """Many logs in one SQLite file: one connection, and one transaction for a commit that
    appends to several of them (an edge writes all its streams' frames of a tick at once).

    Each log has its own tables, named by its number in the ``logs`` table. Use
    :meth:`transaction` around appends to several logs; :class:`cairn.log.Log` joins it.
    """

    def __init__(self, path: str | os.PathLike[str], *, sync: SyncMode = "normal",
                 cache_kib: int = 2048, journal: JournalMode = "wal",
                 page_size: int | None = None) -> None:
        self.path = Path(path)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        if not fresh:
            check_header(self.path)
        try:
            self.raw = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.raw.execute("PRAGMA busy_timeout=5000")
            if fresh and page_size is not None:
                self.raw.execute(f"PRAGMA page_size={int(page_size)}")
            # "rollback": a commit writes new pages once (no WAL copy), for a writer that
            # commits big transactions seldom (the edge, behind its tick journal)
            self.raw.execute(f"PRAGMA journal_mode={'WAL' if journal == 'wal' else 'PERSIST'}")
            self.raw.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
            # 2 MB of page cache for all the logs: an edge board (512 MB) writes at the end of
            # each log and reads little; the decoded-segment pool caches what proofs read
            self.raw.execute(f"PRAGMA cache_size=-{cache_kib}")
            self.raw.execute("PRAGMA journal_size_limit=4194304")
            self.raw.execute("CREATE TABLE IF NOT EXISTS logs (id INTEGER PRIMARY KEY, "
                             "name TEXT NOT NULL UNIQUE)")
        except _DB_ERRORS as exc:
            raise StorageError(f"{self.path}: not a readable Cairn database ({exc})") from exc
        self.members: list[Participant] = []
        # the members written to in the open transaction: a commit visits only these (a
        # gateway's replicas file holds thousands of logs; a live push commits one at a time)
        self.dirty: set[Participant] = set()
        self.tracked: set[int] = set()  # ids of the members that report their writes in dirty
        self.on_rollback: list[Callable[[], None]] = []  # callers' in-memory state to reload
        self.held = False  # a transaction kept open across commits (see hold)

    def prefix(self, name: str, create: bool) -> str:
        row = self.raw.execute("SELECT id FROM logs WHERE name = ?", (name,)).fetchone()
        if row is None:
            if not create:
                self.names()  # a damaged ``logs`` table raises StorageError, not "no log"
                raise FileNotFoundError(f"no log {name!r} in {self.path}")
            row = (self.raw.execute("INSERT INTO logs (name) VALUES (?)", (name,)).lastrowid,)
        elif create and self.raw.execute(
                "SELECT 1 FROM sqlite_master WHERE name = ?", (f"l{row[0]}_head",)).fetchone():
            raise FileExistsError(f"log {name!r} already exists in {self.path}")
        return f"l{row[0]}_"

    def names(self) -> list[str]:
        """The logs' names, read from the table and from its index: where a damaged file makes
        them disagree, :class:`StorageError` (never a wrong name, nor a log said missing)."""
        sql = "SELECT id, name FROM logs {} ORDER BY id"
        try:
            rows = self.raw.execute(sql.format("NOT INDEXED")).fetchall()
            indexed = self.raw.execute(
                sql.format("INDEXED BY sqlite_autoindex_logs_1")).fetchall()
        except _DB_ERRORS as exc:
            raise StorageError(f"{self.path}: the table of logs is damaged ({exc})") from exc
        if rows != indexed or not all(isinstance(name, str) for _, name in rows):
            raise StorageError(f"{self.path}: the table of logs is damaged")
        return [name for _, name in rows]

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction for everything the logs of this file do inside it."""
        raw = self.raw
        if raw.in_transaction:
            yield raw
            return
        try:
            raw.execute("BEGIN IMMEDIATE")
        except _DB_ERRORS as exc:
            raise StorageError(f"{self.path}: {exc}") from exc
        try:
            yield raw
        except BaseException:
            self._rolled_back()
            raise
        self._commit()

    def _commit(self) -> None:
        """Write what the logs kept back, COMMIT, unpin what was written (or roll back)."""
        touched = self._touched()
        try:
            for m in touched:
                m.write_pending()
            self.raw.execute("COMMIT")
        except _DB_ERRORS as exc:
            self._rolled_back()
            raise StorageError(f"{self.path}: {exc}") from exc
        self.dirty.clear()
        for m in touched:
            m.committed()

    def _touched(self) -> list[Participant]:
        """The members a commit visits: those written to, and every one that does not report
        its writes."""
        touched = list(self.dirty)
        if len(self.tracked) < len(self.members):
            touched += [m for m in self.members if id(m) not in self.tracked]
        return touched

    def hold(self) -> None:
        """Open a transaction that stays open until :meth:`release`: the appends of many
        commits join it, and reach the file together. Whoever holds it must make those
        commits durable some other way (the edge's tick journal) and redo them after a
        crash or a :meth:`rollback`."""
        if self.held:
            return
        if self.raw.in_transaction:
            raise StorageError(f"{self.path}: a transaction is already open")
        try:
            self.raw.execute("BEGIN IMMEDIATE")
        except _DB_ERRORS as exc:
            raise StorageError(f"{self.path}: {exc}") from exc
        self.held = True

    def settle(self) -> None:
        """Within a held transaction, after a commit: write what the logs kept back, and let
        the segment pool forget what it may."""
        touched = self._touched()
        try:
            for m in touched:
                m.write_pending()
        except _DB_ERRORS as exc:
            raise StorageError(f"{self.path}: {exc}") from exc
        self.dirty.clear()
        for m in touched:
            m.committed()

    def release(self) -> None:
        """Commit the held transaction (everything since :meth:`hold` reaches the file)."""
        if not self.held:
            return
        self.held = False
        self._commit()

    def rollback(self) -> None:
        """Forget the held transaction; the logs go back to what the file holds."""
        self.held = False
        self._rolled_back()

    def _rolled_back(self) -> None:
        if self.raw.in_transaction:
            self.raw.execute("ROLLBACK")
        self.dirty.clear()
        for m in self.members:
            m.rolled_back()
        for reload in list(self.on_rollback):
            try:
                reload()
            except (StorageError, *_DB_ERRORS):
                self.on_rollback.remove(reload)  # a log made in the rolled-back transaction

    def used_bytes(self) -> int:
        pages, free, size = self.raw.execute(
            "SELECT * FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()"
        ).fetchone()
        return int((pages - free) * size)

    def close(self) -> None:
        for m in list(self.members):
            m.close()
        self.raw.close()

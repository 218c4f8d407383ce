"""Damaged blocks on the edge: found while serving, remembered, and checked on demand.

A block whose data no longer matches its leaf hash (a bad sector on the SD card) cannot be
served: the replication server answers "no data" for it (and tells a Cairn gateway it is
damaged). :class:`DamageBook` is told of each one by the stream logs (``Log.on_damage``), keeps
them per stream in ``<data_dir>/damaged.json`` (so ``cairn edge status`` and the next start
see them) and hands them to the agent's status and metrics.

:func:`verify_store` is ``cairn edge verify``: it copies the store's database with SQLite's
backup (an agent may be writing it) and checks every log of the copy: every held block against
its leaf hash, then the tree and the signed head with the leaf hashes as stored.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cairn.errors import StorageError
from cairn.log import Log
from cairn.storage import SharedDB
from cairn_edge.streams import DB_NAME, StreamsError, copy_database

__all__ = ["DAMAGE_FILE", "DamageBook", "LogCheck", "read_damage", "verify_store"]

log = logging.getLogger("cairn.edge")

DAMAGE_FILE = "damaged.json"


def read_damage(data_dir: str | Path) -> dict[str, list[int]]:
    """Damaged blocks by stream, as the agent last wrote them ({} when none were found). A
    file that is not ours raises :class:`StreamsError`."""
    path = Path(data_dir) / DAMAGE_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise StreamsError(f"{path}: not readable ({exc})") from None
    if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, list)
            and all(type(i) is int and i >= 0 for i in v) for k, v in raw.items()):
        raise StreamsError(f"{path}: not a list of damaged blocks by stream")
    return {k: sorted(set(v)) for k, v in raw.items()}


class DamageBook:
    """The damaged blocks of an edge's streams, told by the logs as reads find them."""

    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / DAMAGE_FILE
        try:
            found = read_damage(data_dir)
        except StreamsError as exc:
            log.warning("%s (starting a new list)", exc)
            found = {}
        self.blocks: dict[str, set[int]] = {k: set(v) for k, v in found.items()}
        self._logs: dict[str, Log] = {}

    def watch(self, logs: Mapping[str, Log]) -> None:
        """Be told of damage found in these logs (again for a log opened anew)."""
        for name, lg in logs.items():
            if self._logs.get(name) is not lg:
                self._logs[name] = lg
                lg.on_damage = lambda _lg, index, name=name: self.add(name, index)

    def add(self, name: str, index: int) -> None:
        self.blocks.setdefault(name, set()).add(index)
        self._write()

    def current(self) -> dict[str, list[int]]:
        """Damaged blocks by stream that the logs still hold (one cleared since is gone)."""
        out = {}
        for name, blocks in list(self.blocks.items()):
            lg = self._logs.get(name)
            held = sorted(i for i in blocks if lg is None or lg.has(i))
            if held:
                out[name] = held
        return out

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(self.current(), sort_keys=True) + "\n")
            os.replace(tmp, self.path)
        except OSError as exc:  # a failing card: the list is still in memory and in /metrics
            log.warning("%s: could not write the damaged blocks: %s", self.path, exc)


@dataclass(slots=True)
class LogCheck:
    name: str
    length: int = 0
    blocks: int = 0  # held blocks checked
    damaged: list[int] = field(default_factory=list)  # held blocks whose data went bad
    error: str | None = None  # the tree, the head or the log itself is damaged

    @property
    def ok(self) -> bool:
        return not self.damaged and self.error is None


def verify_store(data_dir: str | Path) -> list[LogCheck]:
    """Check every log of an edge's store (a copy of it: the agent may be running).

    Raises :class:`StreamsError` when the store cannot be copied or opened at all."""
    src = Path(data_dir) / DB_NAME
    if not src.is_file():
        raise StreamsError(f"{src}: no such store (is data_dir right?)")
    with tempfile.TemporaryDirectory(prefix="cairn-verify-") as tmp:
        copy = Path(tmp) / DB_NAME
        copy_database(src, copy)
        try:
            shared = SharedDB(copy)
        except StorageError as exc:
            raise StreamsError(str(exc)) from None
        try:
            try:
                names = shared.names()
            except StorageError as exc:
                raise StreamsError(str(exc)) from None
            return [_check(shared, name) for name in names]
        finally:
            shared.close()


def _check(shared: SharedDB, name: str) -> LogCheck:
    out = LogCheck(name)
    try:
        lg = Log.open_in(shared, name)
    except (StorageError, FileNotFoundError) as exc:
        out.error = str(exc)
        return out
    try:
        out.length = lg.length
        out.damaged = lg.damaged_blocks()
        out.blocks = lg.verify_all(out.damaged).blocks
    except StorageError as exc:
        out.error = str(exc)
    finally:
        lg.close()
    return out

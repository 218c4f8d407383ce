"""The edge's stream logs: one signed log per stream, keys derived from the device's seed.

A stream is ``<source device>/<quantity>`` (``board-1/temperature``). Its log's key pair is
derived corestore-style from the edge device's primary seed and the stream's name, so the seed
is the only secret to back up. All the logs live in one SQLite file, ``<data_dir>/streams.db``
(:class:`cairn.storage.SharedDB`: one connection, one transaction per commit for every stream),
with the index of streams (name, unit, key) and the agent's state (the time floor, the DHT seq).

:meth:`StreamStore.commit` appends one frame per stream that has samples: the samples sorted by
time, one signature per stream per commit. Frames of a stream are time-ordered (seeking by time
relies on it): a sample older than the stream's last committed sample goes to the stream's
``late`` companion (``board-1/temperature/late``), counted, never dropped. A sample equal (same
time, same value) to one already in the stream's last frames is a redelivery (the broker sends
again what was not acknowledged when the agent stopped) and is not stored twice.
"""

from __future__ import annotations

import heapq
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cairn.crypto import derive_stream_key_pair
from cairn.errors import CairnError, StorageError
from cairn.frames import Frame, Sample, frame_at
from cairn.log import Log
from cairn.storage import SharedDB

__all__ = ["CommitResult", "StreamStore", "StreamsError"]

LATE = "late"
DB_NAME = "streams.db"
RECENT_FRAMES = 64  # frames looked back through for a redelivered sample


def _unique(samples: list[Sample]) -> list[Sample]:
    """Samples with one (time, value) each: a message delivered twice in one batch."""
    out: list[Sample] = []
    seen: set[tuple[float, object]] = set()
    for s in samples:
        k = (s.time, s.value)
        if k not in seen:
            seen.add(k)
            out.append(s)
    return out


class StreamsError(CairnError):
    """The stream store cannot be opened or written: says which file and why."""


@dataclass(slots=True)
class CommitResult:
    frames: int = 0
    samples: int = 0
    late: int = 0
    duplicates: int = 0
    streams: dict[str, int] = field(default_factory=dict)  # stream -> log length after


class StreamStore:
    def __init__(self, data_dir: str | Path, primary_seed: bytes, *, sync: str = "normal") -> None:
        if len(primary_seed) != 32:
            raise ValueError("the primary seed is 32 bytes")
        self.dir = Path(data_dir)
        self.seed = primary_seed
        self.sync = sync
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self.shared = SharedDB(self.dir / DB_NAME, sync="full" if sync == "full" else "normal")
        except StorageError as exc:
            raise StreamsError(str(exc)) from None
        self.db = self.shared.raw
        try:
            self.db.execute("CREATE TABLE IF NOT EXISTS streams (name TEXT PRIMARY KEY, "
                            "unit TEXT, key BLOB NOT NULL, created REAL NOT NULL)")
            self.db.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value)")
            rows = self.db.execute("SELECT name, unit, key FROM streams").fetchall()
        except sqlite3.DatabaseError as exc:
            raise StreamsError(f"{self.dir / DB_NAME}: {exc}") from None
        self.logs: dict[str, Log] = {}
        self.units: dict[str, str | None] = {}
        self._last: dict[str, float] = {}  # stream -> time of its last committed sample
        for name, unit, key in rows:
            lg = Log.open_in(self.shared, name)
            if lg.key != key:
                raise StreamsError(f"{name}: its log key is not the one the index says")
            self.logs[name] = lg
            self.units[name] = unit
            if lg.length:
                self._last[name] = frame_at(lg, lg.length - 1).end

    def close(self) -> None:
        self.logs.clear()
        self.shared.close()

    # -- state ---------------------------------------------------------------------------------

    def get_state(self, key: str) -> object:
        row = self.db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_state(self, key: str, value: object) -> None:
        self.db.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, value))

    # -- streams -------------------------------------------------------------------------------

    def log(self, name: str, unit: str | None = None) -> Log:
        """The log of stream ``name``, made (and indexed) the first time it is asked for, in
        the same transaction as what it is made for."""
        lg = self.logs.get(name)
        if lg is not None:
            return lg
        kp = derive_stream_key_pair(self.seed, name)
        with self.shared.transaction():
            lg = Log.create_in(self.shared, name, kp)
            self.db.execute("INSERT INTO streams (name, unit, key, created) VALUES (?,?,?,?)",
                            (name, unit, lg.key, time.time()))
        self.logs[name] = lg
        self.units[name] = unit
        return lg

    def last_time(self, name: str) -> float | None:
        return self._last.get(name)

    def commit(self, batches: Mapping[str, Iterable[Sample]]) -> CommitResult:
        """Append one frame per stream with samples (sorted by time); late samples to the
        stream's ``late`` companion. Returns what was written."""
        made = set(self.logs)
        try:
            with self.shared.transaction():  # every stream's frame of this commit, or none
                return self._commit(batches)
        except BaseException:
            for name in set(self.logs) - made:  # logs made in the failed commit are gone
                del self.logs[name]
                self.units.pop(name, None)
            self._last = {n: frame_at(lg, lg.length - 1).end
                          for n, lg in self.logs.items() if lg.length}
            raise

    def _commit(self, batches: Mapping[str, Iterable[Sample]]) -> CommitResult:
        result = CommitResult()
        late_batches: dict[str, list[Sample]] = {}
        for name, given in batches.items():
            samples = list(given)
            ordered = _unique(sorted(samples, key=lambda s: s.time))
            result.duplicates += len(samples) - len(ordered)
            if not ordered:
                continue
            last = self._last.get(name)
            if last is not None and ordered[0].time <= last:
                # at or before what is committed: a redelivered message (the broker resends
                # what we had not acknowledged when we stopped) or a late sample
                old = [s for s in ordered if s.time <= last]
                ordered = [s for s in ordered if s.time > last]
                seen = self._recent(name, old[0].time) | self._recent(f"{name}/{LATE}",
                                                                      old[0].time)
                late = [s for s in old if (s.time, s.value) not in seen]
                result.duplicates += len(old) - len(late)
                if late:
                    late_batches[f"{name}/{LATE}"] = late
                    result.late += len(late)
            if ordered:
                self._append(name, ordered, result)
        for name, samples in late_batches.items():
            self._append(name, samples, result, late=True)
        return result

    def disk_bytes(self) -> int:
        """Bytes of the streams' database in use (its free pages not counted)."""
        return self.shared.used_bytes()

    def enforce_quota(self, limit: int) -> list[tuple[str, int, int]]:
        """Clear the oldest block data (by sample time, any stream) until the logs use at most
        ``limit`` bytes; tree nodes stay, so every log still verifies. Each stream keeps its
        newest block. Returns what was cleared: (stream, start, end)."""
        cleared: list[tuple[str, int, int]] = []
        used = self.disk_bytes()
        if used <= limit:
            return cleared
        # each stream's oldest clearable run, oldest first; only the stream just cleared is
        # looked at again (not every stream for every run cleared)
        heap = [c for c in (self._oldest_run(name) for name in self.logs) if c is not None]
        heapq.heapify(heap)
        while used > limit and heap:
            _, name, start, end = heapq.heappop(heap)
            self.logs[name].clear(start, end)
            cleared.append((name, start, end))
            used = self.disk_bytes()
            nxt = self._oldest_run(name)
            if nxt is not None:
                heapq.heappush(heap, nxt)
        return cleared

    def _oldest_run(self, name: str) -> tuple[float, str, int, int] | None:
        """(time of its first held sample, name, start, end) of the run of a stream's oldest
        held blocks to clear next (a tenth of what it holds, at least one block, never its
        newest block), or None."""
        lg = self.logs[name]
        ranges = lg.held_ranges()
        if not ranges:
            return None
        first = ranges[0][0]
        if first >= lg.length - 1:
            return None  # only the newest block is left
        held = sum(e - s for s, e in ranges)
        chunk = max(1, min(held // 10, ranges[0][1] - first, lg.length - 1 - first))
        return frame_at(lg, first).start, name, first, first + chunk

    def _recent(self, name: str, since: float, most: int = RECENT_FRAMES) -> set[tuple[float,
                                                                                       object]]:
        """(time, value) of the samples in a stream's last frames that reach ``since``."""
        lg = self.logs.get(name)
        out: set[tuple[float, object]] = set()
        if lg is None:
            return out
        i = lg.length - 1
        while i >= 0 and most > 0:
            if not lg.has(i):
                break
            frame = frame_at(lg, i)
            out.update((s.time, s.value) for s in frame.samples)
            if frame.end < since and not name.endswith(f"/{LATE}"):
                break
            i -= 1
            most -= 1
        return out

    def _append(self, name: str, samples: list[Sample], result: CommitResult,
                late: bool = False) -> None:
        lg = self.log(name, samples[0].unit)
        frame = Frame(tuple(samples))
        lg.append([frame.encode()])
        if not late:
            self._last[name] = frame.end
        result.frames += 1
        result.samples += len(samples)
        result.streams[name] = lg.length

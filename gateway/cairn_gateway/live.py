"""Live push (issue 19): one dialled-in device's streams, stored as each append arrives.

:meth:`Collector.follow <cairn_gateway.collect.Collector.follow>` runs
:func:`~cairn.replication.net.follow_on` on the device's connection with a :class:`LiveDevice`:
``replicas()`` names the logs to follow (re-planned only when the device's record changed),
``stored(replica)`` stores what the replica holds past each stream's cursor. The store path is
a round's: verified blocks, exactly once, the same plausible time window (refused samples
counted and logged), a signed block that is not a frame stops that stream only. With an
:class:`Ingestor` (the collector's), the blocks of every connection that arrive within
:data:`LIVE_BATCH` seconds are stored in one transaction (``Store.ingest_many``); a stream's
first-seen time, status and unit are read once per connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cairn.errors import DecodeError
from cairn.frames import Frame
from cairn.log import Log
from cairn_gateway.schedule import Limits
from cairn_gateway.store import IngestItem, Store, StoreError

__all__ = ["LIVE_BATCH", "Ingestor", "LiveDevice"]

log = logging.getLogger(__name__)

STOPPED = 1 << 62  # a stopped stream's cursor: nothing more of it
# seconds an append waits for others to share its store transaction (1,000 connected edges
# bring about 1,000 blocks per 0.1 s: one commit instead of 1,000)
LIVE_BATCH = 0.1


def _iso(t: float) -> str:
    try:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return f"{t:g}"


@dataclass(slots=True)
class _Stream:
    id: int
    name: str
    cursor: int  # blocks below this are stored (or were, before this connection)
    first: float | None = None  # the stream's first-seen time (the plausible window)
    unit_known: bool = False
    refused: int | None = None  # samples refused for their time, as last read


class LiveDevice:
    """The streams of one device followed on one connection. ``plan()``: the (name, log key)
    pairs to collect, or None when the device's record has not changed since the last call;
    ``replica(log_key)``: the gateway's replica of that log."""

    def __init__(self, store: Store, device_id: int, limits: Limits, wall: Callable[[], float],
                 plan: Callable[[], list[tuple[str, bytes]] | None],
                 replica: Callable[[bytes], Log], ingestor: Ingestor | None = None, *,
                 floor: Callable[[bytes], int] = lambda _key: 0,
                 on_stored: Callable[[int], object] | None = None) -> None:
        self.store = store
        self.ingestor = ingestor
        self.on_stored = on_stored  # told the samples each append stored (health, metrics)
        self.floor = floor  # a log's first block retention left (the ones below are pruned)
        self.device_id = device_id
        self.limits = limits
        self.wall = wall
        self.plan = plan
        self.replica = replica
        self.streams: dict[bytes, _Stream] = {}  # by log key
        self.logs: list[Log] = []

    def replicas(self) -> list[Log]:
        """The logs to follow (asked every poll: only a new record adds streams)."""
        todo = self.plan()
        if todo is None:
            return self.logs
        for name, log_key in todo:
            if log_key not in self.streams:
                sid = self.store.stream(self.device_id, name, log_key)
                if self.store.status(sid) == "ok":
                    self.streams[log_key] = _Stream(sid, name, max(self.store.stored_prefix(sid),
                                                                   self.floor(log_key)))
        self.logs = [self.replica(k) for k in self.streams]
        return self.logs

    def stored(self, replica: Log) -> None:
        """Store the blocks the replica holds past the stream's cursor."""
        s = self.streams.get(replica.key)
        if s is None or s.cursor >= replica.length:
            return
        end = max(replica.contiguous_length, s.cursor)  # (past a pruned prefix: held from it)
        while end < replica.length and replica.has(end):
            end += 1
        if end <= s.cursor:
            return
        if s.first is None:  # the stream's status and first-seen time, once
            if self.store.status(s.id) != "ok":
                s.cursor = STOPPED
                return
            s.first = self.store.window_since(s.id, self.wall())
        now = self.wall()
        window = (s.first - self.limits.past_window, now + self.limits.future_window)
        run: list[tuple[int, int, Frame]] = []
        bad: tuple[int, DecodeError] | None = None
        for i in range(s.cursor, end):
            try:
                run.append((i, replica.fork, Frame.decode(replica.get(i))))
            except DecodeError as exc:
                bad = (i, exc)
                break
        if run:
            self._ingest(s, run, window)
        s.cursor = end
        if bad is not None:
            if self.ingestor is not None:
                self.ingestor.flush()  # the blocks before it are stored before it stops
            why = f"invalid: block {bad[0]} is not a frame ({bad[1]})"
            self.store.stop(s.id, why)
            log.error("stream %s: %s (ingest stopped)", s.name, why)
            s.cursor = STOPPED

    def _ingest(self, s: _Stream, run: list[tuple[int, int, Frame]],
                window: tuple[float, float]) -> None:
        unit = None
        if not s.unit_known and run[0][2].samples:
            unit = run[0][2].samples[0].unit
            s.unit_known = True
        if self.ingestor is not None:
            self.ingestor.add(self, s, IngestItem(s.id, run, window, unit))
            return
        before = self.store.refused(s.id) if s.refused is None else s.refused
        got = self.store.ingest(s.id, run, window)
        if self.on_stored is not None:
            self.on_stored(got)
        if unit is not None:
            self.store.set_unit(s.id, unit)
        # the count is read again only when fewer samples were stored than sent
        s.refused = before if got == sum(len(f.samples) for _i, _k, f in run) \
            else self.store.refused(s.id)
        if s.refused > before:
            log.warning("stream %s: %d samples refused for their time (outside %s .. %s)",
                        s.name, s.refused - before, _iso(window[0]), _iso(window[1]))

    def done(self, s: _Stream, item: IngestItem, refused: int | None) -> None:
        """What :class:`Ingestor` stored of one item: samples refused (None: stopped)."""
        if refused is None:
            s.cursor = STOPPED
            return
        if self.on_stored is not None:
            self.on_stored(sum(len(f.samples) for _i, _k, f in item.blocks) - refused)
        if refused:
            log.warning("stream %s: %d samples refused for their time (outside %s .. %s)",
                        s.name, refused, *(_iso(t) for t in item.window or (0.0, 0.0)))

    def failed(self, s: _Stream, item: IngestItem) -> None:
        """The store refused the batch holding this item: take its blocks again next time."""
        if s.cursor != STOPPED:
            s.cursor = min(s.cursor, item.blocks[0][0])
        if item.unit is not None:
            s.unit_known = False


class Ingestor:
    """Stores what the live connections bring, many streams' blocks in one store transaction
    (:meth:`Store.ingest_many`): an item waits at most ``window`` seconds (or until
    ``max_blocks`` wait). Each block's replica is committed before it is handed here, and a
    stream's cursor on a new connection is what the store holds: a crash (or a store error)
    before a batch is committed loses nothing, the blocks are taken from the replica again."""

    def __init__(self, store: Store, window: float = LIVE_BATCH,
                 max_blocks: int = 4096) -> None:
        self.store = store
        self.window = window
        self.max_blocks = max_blocks
        self._items: list[tuple[LiveDevice, _Stream, IngestItem]] = []
        self._blocks = 0
        self._timer: asyncio.TimerHandle | None = None
        self.batches = 0  # transactions committed (tests, the bench)

    def add(self, dev: LiveDevice, s: _Stream, item: IngestItem) -> None:
        self._items.append((dev, s, item))
        self._blocks += len(item.blocks)
        if self._blocks >= self.max_blocks or self.window <= 0:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.window, self.flush)

    def flush(self) -> None:
        """Store everything waiting, in one transaction."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items, self._items, self._blocks = self._items, [], 0
        if not items:
            return
        try:
            results = self.store.ingest_many([item for _d, _s, item in items])
        except StoreError as exc:
            log.error("live ingest of %d streams failed, taken again later: %s", len(items),
                      exc)
            for dev, s, item in items:
                dev.failed(s, item)
            return
        self.batches += 1
        for (dev, s, item), refused in zip(items, results, strict=True):
            dev.done(s, item, refused)

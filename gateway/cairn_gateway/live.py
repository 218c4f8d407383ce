"""Live push (issue 19): one dialled-in device's streams, stored as each append arrives.

:meth:`Collector.follow <cairn_gateway.collect.Collector.follow>` runs
:func:`~cairn.replication.net.follow_on` on the device's connection with a :class:`LiveDevice`:
``replicas()`` names the logs to follow (re-planned only when the device's record changed),
``stored(replica)`` stores what the replica holds past each stream's cursor. The store path is
a round's: verified blocks, one ``Store.ingest`` transaction (exactly once), the same plausible
time window (refused samples counted and logged), a signed block that is not a frame stops
that stream only. Per append it costs a few statements: a stream's first-seen time, status
and unit are read once per connection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cairn.errors import DecodeError
from cairn.frames import Frame
from cairn.log import Log
from cairn_gateway.schedule import Limits
from cairn_gateway.store import Store

__all__ = ["LiveDevice"]

log = logging.getLogger(__name__)

STOPPED = 1 << 62  # a stopped stream's cursor: nothing more of it


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
                 replica: Callable[[bytes], Log], *,
                 floor: Callable[[bytes], int] = lambda _key: 0,
                 on_stored: Callable[[int], object] | None = None) -> None:
        self.store = store
        self.on_stored = on_stored  # told the samples each append stored (health, metrics)
        self.device_id = device_id
        self.limits = limits
        self.wall = wall
        self.plan = plan
        self.replica = replica
        self.floor = floor  # a log's first block retention left (the ones below are pruned)
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
            why = f"invalid: block {bad[0]} is not a frame ({bad[1]})"
            self.store.stop(s.id, why)
            log.error("stream %s: %s (ingest stopped)", s.name, why)
            s.cursor = STOPPED

    def _ingest(self, s: _Stream, run: list[tuple[int, int, Frame]],
                window: tuple[float, float]) -> None:
        before = self.store.refused(s.id) if s.refused is None else s.refused
        got = self.store.ingest(s.id, run, window)
        if self.on_stored is not None:
            self.on_stored(got)
        if not s.unit_known and run[0][2].samples:
            self.store.set_unit(s.id, run[0][2].samples[0].unit)
            s.unit_known = True
        # the count is read again only when fewer samples were stored than sent
        s.refused = before if got == sum(len(f.samples) for _i, _k, f in run) \
            else self.store.refused(s.id)
        if s.refused > before:
            log.warning("stream %s: %d samples refused for their time (outside %s .. %s)",
                        s.name, s.refused - before, _iso(window[0]), _iso(window[1]))

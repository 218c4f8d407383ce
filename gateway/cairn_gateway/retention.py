"""Retention over everything the gateway keeps on disk: the samples (``gw.db``) and the
replicas of the edges' signed logs (``replicas.db``).

``[store] retention_days``: samples older than that are deleted, and so is the data of every
replica block whose frame ends before that time; ``[store] max_bytes``: past that many bytes
in use (both files, their free pages not counted), the oldest data of both goes first, a
tenth of the time they span at a time, until they fit (each stream keeps its newest block).

A replica keeps its tree and signatures (:meth:`cairn.log.Log.clear` drops block data only),
so the gateway still verifies every new block. A replica's **floor** (table
``cairn_pruned`` in ``replicas.db``, committed with the clear) is the first block it may
still hold: downloads start there and live pushes are stored from there, so a pruned block
is never asked for again; an on-demand window starts no earlier than the floor's time.
Stopped streams (a fork, unverifiable data) keep their replica whole: it is evidence.

After a pass that deleted something, a file whose free pages are over a quarter of it is
vacuumed (incrementally when the file allows it), so the files shrink on disk too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from cairn.errors import DecodeError
from cairn.frames import frame_at
from cairn.log import Log
from cairn.storage import SharedDB
from cairn_gateway.store.sqlite import used_bytes, vacuum

if TYPE_CHECKING:
    from cairn_gateway.collect import Collector
    from cairn_gateway.config import GatewayConfig
    from cairn_gateway.metrics import GatewayMetrics
    from cairn_gateway.store import Store

__all__ = ["Floors", "Pruned", "apply_retention", "disk_usage", "prune_replicas", "used_bytes",
           "vacuum"]

log = logging.getLogger(__name__)

BUDGET_STEPS = 20  # at most this many budget cuts a pass (each a tenth of the span)


class Floors:
    """Each replica's floor (first block it may still hold) and the time its pruned frames
    reach, in ``replicas.db`` beside the logs."""

    def __init__(self, shared: SharedDB) -> None:
        self.shared = shared
        shared.raw.execute("CREATE TABLE IF NOT EXISTS cairn_pruned (name TEXT PRIMARY KEY, "
                           "below INTEGER NOT NULL, until REAL NOT NULL)")
        self._cache: dict[str, tuple[int, float]] = {}
        self.reload()

    def reload(self) -> None:
        """Read the floors again (after a transaction that set some was rolled back)."""
        self._cache = {
            str(n): (int(b), float(u))
            for n, b, u in self.shared.raw.execute("SELECT name, below, until FROM cairn_pruned")}

    def below(self, log_key: bytes) -> int:
        """The first block of this log the gateway may still hold (0: none pruned)."""
        return self._cache.get(log_key.hex(), (0, 0.0))[0]

    def until(self, log_key: bytes) -> float:
        """The time the pruned frames of this log reach (epoch seconds; 0: none pruned)."""
        return self._cache.get(log_key.hex(), (0, 0.0))[1]

    def prune(self, lg: Log, end: int, until: float) -> int:
        """Clear blocks [floor, end) of ``lg`` and raise its floor, in one transaction;
        returns the blocks whose data was dropped."""
        name = lg.key.hex()
        start = self._cache.get(name, (0, 0.0))[0]
        if end <= start:
            return 0
        with self.shared.transaction() as db:
            dropped = lg.clear(start, end)
            db.execute("INSERT INTO cairn_pruned (name, below, until) VALUES (?, ?, ?) "
                       "ON CONFLICT (name) DO UPDATE SET below = excluded.below, "
                       "until = max(until, excluded.until)", (name, end, until))
        self._cache[name] = (end, max(until, self._cache.get(name, (0, 0.0))[1]))
        return dropped


def prune_replicas(collector: Collector, before: float) -> int:
    """Drop the data of every replica block whose frame ends before ``before`` (never a
    stream's newest block, never a stopped stream's); returns blocks dropped."""
    dropped = 0
    try:
        with collector.replicas.transaction():  # one commit for every replica's clear
            for lg in _replicas(collector):
                end, until = _aged(lg, collector.floors.below(lg.key), before)
                dropped += collector.floors.prune(lg, end, until)
    except BaseException:
        collector.floors.reload()
        raise
    return dropped


def _aged(lg: Log, floor: int, before: float) -> tuple[int, float]:
    """The first block from ``floor`` on whose frame ends at or after ``before`` (never the
    newest block), and the time the frames before it reach."""
    end, until = floor, 0.0
    while end < lg.length - 1:
        if lg.has(end):
            try:
                frame = frame_at(lg, end)
            except DecodeError:  # not a frame (the stream is stopped for it): keep it
                break
            if frame.end >= before:
                break
            until = max(until, frame.end)
        end += 1  # (a block never held, between old ones, is older too)
    return end, until


def _replicas(collector: Collector) -> list[Log]:
    """The replicas of the streams being collected (status ok) that exist in replicas.db
    (none is made here for a stream never downloaded)."""
    held = set(collector.replicas.names())
    return [collector.replica(k) for _, k in collector.store.collected_log_keys()
            if k.hex() in held]


@dataclass
class Pruned:
    """What one pass deleted."""

    samples: int = 0
    blocks: int = 0


def _prune(collector: Collector, store: Store, before: float) -> Pruned:
    return Pruned(store.prune(before), prune_replicas(collector, before))


def _oldest(collector: Collector, store: Store) -> float | None:
    """The oldest time either file still holds data of (samples, or a replica's floor)."""
    first = store.oldest_sample()
    times = [first] if first is not None else []
    for lg in _replicas(collector):
        i = collector.floors.below(lg.key)
        while i < lg.length - 1 and not lg.has(i):
            i += 1
        if i < lg.length - 1:
            try:
                times.append(frame_at(lg, i).start)
            except DecodeError:
                continue
    return min(times) if times else None


def disk_usage(collector: Collector, store: Store) -> dict[str, int]:
    """Bytes in use of each file the gateway keeps (free pages not counted)."""
    return {"store": store.used_bytes(), "replicas": used_bytes(collector.replicas.raw)}


def _disk(collector: Collector, store: Store) -> int:
    return store.used_bytes() + used_bytes(collector.replicas.raw)


def apply_retention(cfg: GatewayConfig, collector: Collector, store: Store,
                    metrics: GatewayMetrics, now: float | None = None) -> None:
    """One pass of ``[store] retention_days`` and ``max_bytes``, counted and logged."""
    if not (cfg.retention_days or cfg.max_bytes):
        return
    now = time.time() if now is None else now
    if cfg.retention_days:
        cut = now - cfg.retention_days * 86400
        got = _prune(collector, store, cut)
        _count(metrics, "retention", got)
        if got.samples or got.blocks:
            log.info("retention: deleted %d samples and the data of %d replica blocks older "
                     "than %s (%g days)", got.samples, got.blocks, _iso(cut),
                     cfg.retention_days)
    if cfg.max_bytes:
        _budget(cfg.max_bytes, collector, store, metrics, now)
    store.vacuum()
    vacuum(collector.replicas.raw)


def _budget(budget: int, collector: Collector, store: Store, metrics: GatewayMetrics,
            now: float) -> None:
    """Cut the oldest tenth of the span held until both files fit in ``budget`` bytes."""
    used = _disk(collector, store)
    if used <= budget:
        return
    total, start, cut = Pruned(), used, 0.0
    for _ in range(BUDGET_STEPS):
        oldest = _oldest(collector, store)
        if oldest is None or oldest >= now:
            break
        cut = oldest + max(1.0, (now - oldest) / 10)
        got = _prune(collector, store, cut)
        total.samples += got.samples
        total.blocks += got.blocks
        used = _disk(collector, store)
        if used <= budget:
            break
    _count(metrics, "budget", total)
    log.warning("disk budget of %d bytes reached (%d in use): deleted %d samples and the "
                "data of %d replica blocks older than %s; %d bytes in use now", budget, start,
                total.samples, total.blocks, _iso(cut), used)


def _count(metrics: GatewayMetrics, reason: str, got: Pruned) -> None:
    metrics.pruned_samples.labels(reason).inc(got.samples)
    metrics.pruned_blocks.labels(reason).inc(got.blocks)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

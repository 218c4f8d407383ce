"""Collecting from edges: find a device's record on the DHT, open its streams' keys, download
what the gateway does not hold (every block verified), and store the samples.

Replicas of the edges' logs live in one shared SQLite file (``replicas.db``), the samples in
the :class:`~cairn_gateway.store.Store`. A download resumes from what the replica holds, and
ingesting is exactly once, so a collection can be repeated or interrupted at any point.

A round (:meth:`Collector.collect_round`) takes the edges in the order of their streams'
policy priorities, syncs at most ``Schedule.concurrency`` of them at once, and leaves out an
edge that could not be reached until its backoff has passed (:mod:`cairn_gateway.schedule`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cairn.crypto import KeyPair, discovery_key
from cairn.dht.api import DHT
from cairn.errors import CairnError, DecodeError, ForkError, VerificationError
from cairn.fleet.record import DeviceRecord, RecordError, decode_record, fleet_topic
from cairn.fleet.watermark import encode_watermarks
from cairn.frames import Frame
from cairn.log import Log
from cairn.replication.net import download
from cairn.storage import SharedDB
from cairn_gateway.config import Policy
from cairn_gateway.ingest import IngestWorker
from cairn_gateway.roster import stream_owners
from cairn_gateway.schedule import Schedule
from cairn_gateway.store import Store

__all__ = ["Collector", "Device", "SyncResult"]

log = logging.getLogger(__name__)

TIMEOUT = 30.0
INGEST_RUN = 1000  # blocks stored per transaction


class _Feed:
    """Hands verified blocks to the ingest worker while a download is still going: each run of
    INGEST_RUN blocks held contiguously past where the replica stood, as soon as it is there."""

    def __init__(self, worker: IngestWorker, store: Store, stream_id: int, replica: Log) -> None:
        self.worker = worker
        self.store = store
        self.stream_id = stream_id
        self.start = self.cursor = replica.contiguous_length
        self.jobs: list[asyncio.Future[int]] = []
        self.failed = False
        self.unit_known = False

    def progress(self, replica: Log, *, last: bool = False) -> None:
        if self.worker.failed is not None:  # (not `alive`: this runs on every read, and a
            return                          # worker that exits is noticed by its pipe)
        while True:
            run = replica.held_run(self.cursor, INGEST_RUN, 1 if last else INGEST_RUN)
            if not run:
                return
            if not self.unit_known:
                self.unit_known = True
                with contextlib.suppress(DecodeError):
                    first = Frame.decode(run[0][1]).samples[0]
                    self.store.set_unit(self.stream_id, first.unit)
            fork = replica.fork
            self.jobs.append(self.worker.submit(
                self.stream_id, [(i, fork, data, digest) for i, data, digest in run]))
            self.cursor = run[-1][0] + 1

    async def finish(self, replica: Log) -> int:
        """Send what is left, wait for every run; the samples the worker stored. A run that
        failed there (a worker gone, a frame that does not decode) is left to the collector's
        own pass, which stores or reports it."""
        self.progress(replica, last=True)
        stored = 0
        for job in self.jobs:
            try:
                stored += await job
            except (RuntimeError, asyncio.CancelledError) as exc:
                self.failed = True
                log.debug("ingest worker run: %s", exc)
        return stored

    def covered(self) -> tuple[int, int]:
        """The blocks [start, end) the worker stored, all of them; (0, 0) if a run failed."""
        return (0, 0) if self.failed else (self.start, self.cursor)


@dataclass(slots=True)
class Device:
    record_key: bytes
    seq: int
    record: DeviceRecord
    streams: dict[str, bytes] = field(default_factory=dict)  # name -> log key (opened)


@dataclass(slots=True)
class SyncResult:
    stream: str
    blocks: int = 0  # blocks downloaded
    samples: int = 0  # samples newly stored
    error: str | None = None
    unreachable: bool = False  # the edge could not be reached (refused, no answer in time)


def _unreachable(exc: BaseException) -> bool:
    """A failure to reach the edge at all, as opposed to an edge that answered and then
    dropped or refused us (ConnectionError other than refused: reset, closed by the peer)."""
    if isinstance(exc, ConnectionRefusedError | TimeoutError):
        return True
    return isinstance(exc, OSError) and not isinstance(exc, ConnectionError)


def _refuse(dev: Device, taken: dict[str, str]) -> list[SyncResult]:
    """A device whose record claims stream names another enrolled device owns: refused."""
    out = []
    for name, owner in sorted(taken.items()):
        error = f"refused: stream {name!r} belongs to device {owner!r}"
        log.warning("device %s: %s", dev.record_key.hex()[:16], error)
        out.append(SyncResult(name, error=error))
    return out


class Collector:
    """Downloads and stores the fleet's streams. ``schedule``: edge order, concurrency and
    backoff for rounds; ``clock``: monotonic seconds for the backoff; ``timeout``: seconds one
    stream's download may take."""

    def __init__(self, data_dir: str | Path, key_pair: KeyPair, store: Store, *,
                 schedule: Schedule | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 timeout: float = TIMEOUT) -> None:
        self.dir = Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key_pair = key_pair
        self.store = store
        self.schedule = schedule if schedule is not None else Schedule()
        self.clock = clock
        self.timeout = timeout
        self.replicas = SharedDB(self.dir / "replicas.db")
        self._logs: dict[bytes, Log] = {}
        self.known: dict[int, tuple[Device, str]] = {}  # stream id -> where to fetch it
        self._fetched: dict[int, list[tuple[float, float]]] = {}  # windows fetched on demand
        self._seq: dict[bytes, int] = {}  # device record key -> newest record seq seen
        self.worker: IngestWorker | None = None

    def start_worker(self) -> None:
        """Store in a second process from now on (:mod:`cairn_gateway.ingest`): a long
        download is verified here while that process decodes and stores what is verified."""
        if self.worker is None or not self.worker.alive:
            self.worker = IngestWorker(self.store.path)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None
        self.replicas.close()

    # -- discovery -------------------------------------------------------------------------------

    async def devices_on(self, dht: DHT, fleet: str) -> set[bytes]:
        """Record keys announced on a fleet's topic."""
        found: set[bytes] = set()
        async with dht.lookup(fleet_topic(fleet)) as peers:
            async for p in peers:
                found.add(p.public_key)
        return found

    async def device(self, dht: DHT, record_key: bytes, min_seq: int = 0) -> Device | None:
        """A device's record, verified (the DHT checks its signature), keys opened. The seq
        of the newest record seen is the floor of the next read (a seq hint): a node holding
        an old copy (validly signed too) cannot take the gateway back to it. The first read
        of a device asks every storing node and takes the newest."""
        floor = max(min_seq, self._seq.get(record_key, 0))
        got = await dht.mutable_get(record_key, min_seq=floor,
                                    latest=record_key not in self._seq)
        if got is None:
            return None
        self._seq[record_key] = max(self._seq.get(record_key, 0), got.seq)
        try:
            rec = decode_record(got.value, self.key_pair)
        except RecordError as exc:
            log.warning("device %s: its record is not usable: %s", record_key.hex()[:16], exc)
            return None
        dev = Device(record_key, got.seq, rec)
        dev.streams = {name: key for name, key in rec.streams if key is not None}
        return dev

    # -- downloading and storing ---------------------------------------------------------------

    def replica(self, log_key: bytes) -> Log:
        lg = self._logs.get(log_key)
        if lg is None:
            name = log_key.hex()
            lg = (Log.open_in(self.replicas, name) if name in self.replicas.names()
                  else Log.replica_in(self.replicas, name, log_key))
            self._logs[log_key] = lg
        return lg

    async def sync(self, dev: Device, name: str, address: tuple[str, int], *,
                   since: float | None = None, until: float | None = None) -> SyncResult:
        """Download what is new of one stream (up to the edge's length), or only the frames
        holding samples in [since, until) (found by a time seek on the edge), and store it."""
        key = dev.streams[name]
        result = SyncResult(name)
        device_id = self.store.device(dev.record_key, None, float(dev.record.time))
        stream_id = self.store.stream(device_id, name, key)
        status = self.store.status(stream_id)
        if status != "ok":
            result.error = status  # stopped (a fork, or data its signature did not cover):
            return result          # nothing more is downloaded until a person looks
        replica = self.replica(key)
        before = sum(1 for i in range(replica.length) if replica.has(i))
        feed = None
        if self.worker is not None and self.worker.alive and since is None and until is None:
            feed = _Feed(self.worker, self.store, stream_id, replica)
        try:
            if since is not None or until is not None:
                await asyncio.wait_for(download(address[0], address[1], replica, self.key_pair,
                                                since=since, until_time=until), self.timeout)
            else:
                await asyncio.wait_for(
                    download(address[0], address[1], replica, self.key_pair, start=0,
                             on_progress=feed.progress if feed is not None else None),
                    self.timeout)
        except ForkError as exc:
            # what the worker has in hand was verified before the fork showed: it may land
            result.samples += await feed.finish(replica) if feed is not None else 0
            self.store.stop(stream_id, f"fork: {exc}")
            result.error = f"fork: {exc}"
            log.error("stream %s: %s (ingest stopped, evidence kept)", name, exc)
            return result
        except (VerificationError, DecodeError) as exc:
            # the edge sent what its signature does not cover (a tampered or damaged log):
            # nothing of it was stored; stop and say so, never repair silently
            result.samples += await feed.finish(replica) if feed is not None else 0
            self.store.stop(stream_id, f"invalid: {exc}")
            result.error = f"invalid: {exc}"
            log.error("stream %s: the edge sent unverifiable data: %s (ingest stopped)",
                      name, exc)
            return result
        except (CairnError, ConnectionError, OSError, TimeoutError) as exc:
            result.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            result.unreachable = _unreachable(exc)
        covered = (0, 0)
        if feed is not None:
            result.samples += await feed.finish(replica)
            covered = feed.covered()
        held = [i for i in range(replica.length) if replica.has(i)]
        result.blocks = len(held) - before
        if result.blocks:
            result.unreachable = False  # it answered, then stalled: not a reachability failure
        # what the store lacks: the new blocks, and any a crash left downloaded but not stored
        # (what the worker stored, every run of it, needs no second look)
        todo = self.store.missing_blocks(
            stream_id, [i for i in held if not covered[0] <= i < covered[1]])
        for k in range(0, len(todo), INGEST_RUN):
            run = [(i, replica.fork, Frame.decode(replica.get(i))) for i in todo[k:k + INGEST_RUN]]
            result.samples += self.store.ingest(stream_id, run)
            if k == 0 and run and run[0][2].samples:
                self.store.set_unit(stream_id, run[0][2].samples[0].unit)
        return result

    async def collect(self, dht: DHT, record_key: bytes,
                      policy: Callable[[str], Policy] | None = None,
                      now: float | None = None) -> list[SyncResult]:
        """What is new from one device, by each stream's policy: ``tail`` all of it,
        ``backfill`` the last ``window`` seconds of it, ``on_demand`` nothing (the stream is
        registered so an API query can fetch a window of it). Nothing while the device's edge
        waits out its backoff."""
        return await self.collect_round(dht, [record_key], policy, now)

    async def collect_round(self, dht: DHT, record_keys: Iterable[bytes],
                            policy: Callable[[str], Policy] | None = None,
                            now: float | None = None) -> list[SyncResult]:
        """One round over these devices: their records looked up (except for edges waiting
        out a backoff), then :meth:`sync_devices`."""
        devices = []
        for k in sorted(set(record_keys)):
            if not self.schedule.ready(k, self.clock()):
                continue
            dev = await self.device(dht, k)
            if dev is not None and dev.record.address is not None:
                devices.append(dev)
        return await self.sync_devices(devices, policy, now)

    async def sync_devices(self, devices: Iterable[Device],
                           policy: Callable[[str], Policy] | None = None,
                           now: float | None = None) -> list[SyncResult]:
        """Sync these devices' streams by their policies: edges highest priority first (an
        edge's priority is its streams' highest), at most ``schedule.concurrency`` edges at
        once, within an edge its streams highest priority first (one connection at a time).
        An edge that cannot be reached is left for the rest of the round and waits its
        backoff; one waiting already is skipped. Results in the order the edges were taken."""
        def policy_of(name: str) -> Policy:
            return policy(name) if policy is not None else Policy("*", "tail")

        plans: dict[bytes, tuple[Device, list[tuple[str, Policy]]]] = {}
        refused: list[SyncResult] = []
        for dev in devices:
            if not self.schedule.ready(dev.record_key, self.clock()):
                continue
            assert dev.record.address is not None, "a device without an address to sync from"
            device_id = self.store.device(dev.record_key, None, float(dev.record.time))
            taken = stream_owners(self.store.conn, device_id, dev.streams)
            if taken:  # its record claims another enrolled device's streams: nothing stored
                refused += _refuse(dev, taken)
                continue
            todo = []
            for name in sorted(dev.streams):
                stream_id = self.store.stream(device_id, name, dev.streams[name])
                self.known[stream_id] = (dev, name)
                p = policy_of(name)
                if p.mode != "on_demand":
                    todo.append((name, p))
            if todo:
                todo.sort(key=lambda np: -np[1].priority)  # stable: by name within a priority
                plans[dev.record_key] = (dev, todo)
        order = Schedule.order((k, todo[0][1].priority) for k, (_d, todo) in plans.items())
        queue = deque(order)
        results: dict[bytes, list[SyncResult]] = {}
        wall = time.time() if now is None else now

        async def worker() -> None:
            while queue:
                key = queue.popleft()
                dev, todo = plans[key]
                results[key] = await self._sync_edge(dev, todo, wall)

        async with asyncio.TaskGroup() as tg:
            for _ in range(min(self.schedule.concurrency, len(queue))):
                tg.create_task(worker())
        return refused + [r for k in order for r in results[k]]

    async def _sync_edge(self, dev: Device, todo: list[tuple[str, Policy]],
                         now: float) -> list[SyncResult]:
        assert dev.record.address is not None
        out = []
        for name, p in todo:
            since = now - p.window if p.mode == "backfill" else None
            r = await self.sync(dev, name, dev.record.address, since=since)
            out.append(r)
            if r.unreachable:
                self.schedule.failed(dev.record_key, self.clock(), r.error or "unreachable")
                return out
        self.schedule.succeeded(dev.record_key, self.clock())
        return out

    def watermarks(self) -> dict[bytes, int]:
        """For each stream collected: its log's discovery key -> blocks stored from the start."""
        out = {}
        for sid, log_key in self.store.conn.execute("SELECT id, log_key FROM streams "
                                                     "WHERE status = 'ok'"):
            n = self.store.stored_prefix(sid)
            if n:
                out[discovery_key(log_key)] = n
        return out

    async def publish_watermarks(self, dht: DHT, key_pair: KeyPair, seq: int) -> int:
        """Put the watermark record (see :mod:`cairn.fleet.watermark`); returns how many streams."""
        marks = self.watermarks()
        await dht.mutable_put(key_pair, encode_watermarks(int(time.time()), marks), seq)
        return len(marks)

    async def on_demand(self, stream_id: int, start: float, end: float) -> SyncResult | None:
        """Fetch [start, end) of a stream the store does not hold (yet), if it is known."""
        entry = self.known.get(stream_id)
        if entry is None:
            return None
        done = self._fetched.setdefault(stream_id, [])
        if any(a <= start and end <= b for a, b in done):
            return None  # fetched already, and that window was in the past then
        dev, name = entry
        assert dev.record.address is not None
        result = await self.sync(dev, name, dev.record.address, since=start, until=end)
        if result.error is None:
            done.append((start, min(end, time.time())))
        return result

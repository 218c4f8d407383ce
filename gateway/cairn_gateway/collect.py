"""Collecting from edges: find a device's record on the DHT, open its streams' keys, download
what the gateway does not hold (every block verified), and store the samples.

Replicas of the edges' logs live in one shared SQLite file (``replicas.db``), the samples in
the :class:`~cairn_gateway.store.Store`. A download resumes from what the replica holds, and
ingesting is exactly once, so a collection can be repeated or interrupted at any point.

A round (:meth:`Collector.collect_round`) takes the edges in the order of their streams'
policy priorities, syncs at most ``Schedule.concurrency`` of them at once, and leaves out an
edge that could not be reached until its backoff has passed (:mod:`cairn_gateway.schedule`).

One device never stops a round: whatever goes wrong with one device (a DHT error or timeout, a
record that does not decode, a log key listed twice, a signed block that is not a frame, a
store error, anything its sync raises) becomes that device's or that stream's status and the
round goes on. Each device has :class:`~cairn_gateway.schedule.Limits` per round: a time
budget, a sample quota, a plausible time window for its samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cairn.crypto import KeyPair, discovery_key
from cairn.dht.api import DHT
from cairn.dht.records import verify_mutable
from cairn.errors import CairnError, DecodeError, ForkError, VerificationError
from cairn.fleet.inband import InBandRecordError, decode_in_band
from cairn.fleet.record import DeviceRecord, RecordError, decode_record, fleet_topic
from cairn.fleet.watermark import encode_watermarks
from cairn.frames import Frame
from cairn.log import Log
from cairn.replication.net import (
    Connection,
    DownloadResult,
    PeerRefusedError,
    download,
    follow_on,
)
from cairn.storage import SharedDB
from cairn_gateway.config import Policy
from cairn_gateway.ingest import IngestWorker
from cairn_gateway.leases import LeaseLost
from cairn_gateway.live import Ingestor, LiveDevice
from cairn_gateway.retention import Floors
from cairn_gateway.roster import note_reach, stream_owners
from cairn_gateway.schedule import Limits, Schedule
from cairn_gateway.store import MISSING_REASONS, Store, StoreError, describe_missing

__all__ = ["Collector", "Device", "SyncResult", "one_line"]

LIVE_POLL = 1.0  # seconds: a live connection looks for streams new in the device's record
EARLY_EVERY = 5.0  # seconds: at most this often an unknown key dialling in brings a round

log = logging.getLogger(__name__)

TIMEOUT = 30.0
INGEST_RUN = 1000  # blocks stored per transaction


@dataclass(slots=True)
class _Allowance:
    """What one device may still take in this round: time (``deadline``, ``time.monotonic``)
    and samples stored (``samples``)."""

    deadline: float
    samples: int
    budget: float

    def time_left(self) -> float:
        return self.deadline - time.monotonic()


class _Feed:
    """Hands verified blocks to the ingest worker while a download is still going: each run of
    INGEST_RUN blocks held contiguously past where the replica stood, as soon as it is there.
    With an allowance, each run handed over carries a cap (what is left of the device's
    sample quota, less the caps of the runs in flight) and none is handed over when nothing
    is left: the worker stores at most the quota; the rest is the collector's own pass."""

    def __init__(self, worker: IngestWorker, store: Store, stream_id: int, replica: Log,
                 window: tuple[float, float] | None = None,
                 allow: _Allowance | None = None, floor: int = 0) -> None:
        self.worker = worker
        self.window = window
        self.allow = allow
        self.reserved = 0  # the caps of the runs in flight
        self.capped_jobs: dict[asyncio.Future[int], int] = {}  # in flight -> its cap
        self.store = store
        self.stream_id = stream_id
        start = max(replica.contiguous_length, min(floor, replica.length))
        while start < replica.length and replica.has(start):  # (past a pruned prefix)
            start += 1
        self.start = self.cursor = start
        self.jobs: list[asyncio.Future[int]] = []
        self.failed = False
        self.capped = False  # a run went with a cap: the worker may have stored a prefix
        self.unit_known = False

    def progress(self, replica: Log, *, last: bool = False) -> None:
        if self.worker.failed is not None:  # (not `alive`: this runs on every read, and a
            return                          # worker that exits is noticed by its pipe)
        self._settle()
        while True:
            cap = None
            if self.allow is not None:
                cap = self.allow.samples - self.reserved
                if cap <= 0:
                    return
            run = replica.held_run(self.cursor, INGEST_RUN, 1 if last else INGEST_RUN)
            if not run:
                return
            if not self.unit_known:
                self.unit_known = True
                with contextlib.suppress(DecodeError):
                    first = Frame.decode(run[0][1]).samples[0]
                    self.store.set_unit(self.stream_id, first.unit)
            fork = replica.fork
            job = self.worker.submit(self.stream_id,
                                     [(i, fork, data, digest) for i, data, digest in run],
                                     window=self.window, cap=cap)
            if cap is not None:
                self.reserved += cap
                self.capped = True
                self.capped_jobs[job] = cap
            self.jobs.append(job)
            self.cursor = run[-1][0] + 1

    def _settle(self) -> None:
        """Count what the runs that came back stored against the device's quota (here, not
        in a done-callback, which may run after the collector's own pass)."""
        for job in [j for j in self.capped_jobs if j.done()]:
            self.reserved -= self.capped_jobs.pop(job)
            if self.allow is not None and not job.cancelled() and job.exception() is None:
                self.allow.samples -= job.result()

    def exhausted(self, _replica: Log) -> bool:
        """The device's quota is used up: the download may stop."""
        return self.allow is not None and self.allow.samples <= 0

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
        self._settle()
        return stored

    def covered(self) -> tuple[int, int]:
        """The blocks [start, end) the worker stored, all of them; (0, 0) if a run failed or
        went with a cap (then the store says what is stored)."""
        return (0, 0) if self.failed or self.capped else (self.start, self.cursor)


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
    # the edge could not be reached (refused, no answer in time), or answered and gave
    # nothing (closed after the handshake: a gateway key it does not allow): it backs off
    unreachable: bool = False
    refused: int = 0  # samples refused for their time (outside the plausible window)
    waiting: int = 0  # blocks held but not stored: over the sample quota, for the next round
    stopped: bool = False  # the stream was stopped before (error: its status): nothing tried


def one_line(exc: BaseException) -> str:
    """One line: the error's type and message."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _iso(t: float) -> str:
    try:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return f"{t:g}"


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
                 timeout: float = TIMEOUT, limits: Limits | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        self.dir = Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key_pair = key_pair
        self.store = store
        self.schedule = schedule if schedule is not None else Schedule()
        self.clock = clock
        self.timeout = timeout
        self.limits = limits if limits is not None else Limits()
        self.wall = wall  # epoch seconds: the plausible time window's "now"
        self._round: dict[bytes, _Allowance] = {}  # record key -> what it may still take
        self.replicas = SharedDB(self.dir / "replicas.db")
        self.floors = Floors(self.replicas)  # where retention pruned each replica up to
        self._logs: dict[bytes, Log] = {}
        self._replica_names: set[str] | None = None
        self.known: dict[int, tuple[Device, str]] = {}  # stream id -> where to fetch it
        self._fetched: dict[int, list[tuple[float, float]]] = {}  # windows fetched on demand
        self._seq: dict[bytes, int] = {}  # device record key -> newest record seq seen
        self._skips: dict[bytes, int] = {}  # log key -> blocks the store held from the start
        self.worker: IngestWorker | None = None
        # edges that dial in (issue 19): the newest record read of each enrolled device, the
        # record keys whose record names a Noise key, and the devices connected now
        self.records: dict[bytes, Device] = {}
        self._noise: dict[bytes, set[bytes]] = {}  # Noise key -> record keys naming it
        self.live: dict[bytes, float] = {}  # record key -> connected since (epoch seconds)
        self.on_live: Callable[[int], object] | None = None  # told samples a live push stored
        self._reach: dict[bytes, str] = {}  # record key -> the reach state last noted
        self.early = asyncio.Event()  # set: the daemon runs its next round now
        # several gateways on one store (cairn_gateway.leases): whether this one collects a
        # device now (it holds the device's lease); one gateway holds every device
        self.holds: Callable[[bytes], bool] = lambda _key: True
        self.ingestor = Ingestor(store)  # live connections' blocks, one transaction per window
        self._early_at = -EARLY_EVERY

    def start_worker(self) -> None:
        """Store in a second process from now on (:mod:`cairn_gateway.ingest`): a long
        download is verified here while that process decodes and stores what is verified."""
        if self.worker is None or not self.worker.alive:
            self.worker = IngestWorker(self.store.target)

    def close(self) -> None:
        self.ingestor.flush()
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
        except (RecordError, CairnError) as exc:  # waits its backoff: the status says why
            self.schedule.failed(record_key, self.clock(), f"record not usable: {exc}")
            self.store.note_device(record_key, self.wall())
            return None
        dev = Device(record_key, got.seq, rec)
        dev.streams = {name: key for name, key in rec.streams if key is not None}
        return dev

    # -- downloading and storing ---------------------------------------------------------------

    def replica(self, log_key: bytes) -> Log:
        lg = self._logs.get(log_key)
        if lg is None:
            name = log_key.hex()
            if self._replica_names is None:  # (read once: a gateway holds thousands)
                self._replica_names = set(self.replicas.names())
            lg = (Log.open_in(self.replicas, name) if name in self._replica_names
                  else Log.replica_in(self.replicas, name, log_key))
            self._replica_names.add(name)
            self._logs[log_key] = lg
        return lg

    async def sync(self, dev: Device, name: str, address: tuple[str, int], *,
                   since: float | None = None, until: float | None = None) -> SyncResult:
        """Download what is new of one stream (up to the edge's length), or only the frames
        holding samples in [since, until) (found by a time seek on the edge), and store it:
        within the device's allowance for the round when one is set (:meth:`sync_devices`),
        samples outside the plausible time window refused and counted."""
        key = dev.streams[name]
        result = SyncResult(name)
        device_id = self.store.device(dev.record_key, None, float(dev.record.time))
        stream_id = self.store.stream(device_id, name, key)
        status = self.store.status(stream_id)
        if status != "ok":
            result.error = status  # stopped (a fork, or data its signature did not cover):
            result.stopped = True  # nothing more is downloaded until a person looks
            return result
        allow = self._round.get(dev.record_key)
        now = self.wall()
        first = self.store.window_since(stream_id, now)
        window = (first - self.limits.past_window, now + self.limits.future_window)
        refused_before = self.store.refused(stream_id)
        timeout = self.timeout if allow is None else max(0.0, min(self.timeout,
                                                                   allow.time_left()))
        replica = self.replica(key)
        before = sum(1 for i in range(replica.length) if replica.has(i))
        first = self._first_wanted(stream_id, key, replica)
        feed = None
        if self.worker is not None and self.worker.alive and since is None and until is None:
            feed = _Feed(self.worker, self.store, stream_id, replica, window, allow, first)
        got: DownloadResult | None = None  # a full answer: what the edge would not serve
        try:
            if since is not None or until is not None:
                await asyncio.wait_for(download(address[0], address[1], replica, self.key_pair,
                                                since=since, until_time=until), timeout)
            else:
                got = await asyncio.wait_for(
                    download(address[0], address[1], replica, self.key_pair,
                             start=first,
                             on_progress=feed.progress if feed is not None else None,
                             until=feed.exhausted if feed is not None else None),
                    timeout)
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
            result.error = one_line(exc)
            if isinstance(exc, TimeoutError) and allow is not None and allow.time_left() <= 0:
                result.error = (f"time budget of {allow.budget:g} s used up: the rest waits "
                                "for the next round")
            # not reached, or answered and then refused or closed: it backs off, unless it
            # gave blocks (it answered, then stalled: see below)
            result.unreachable = True
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
        self._ingest_held(stream_id, name, replica, todo, window, allow, result)
        if got is not None and not (feed is not None and feed.exhausted(replica)) \
                and self.store.status(stream_id) == "ok":
            # a whole answer (not one the quota cut short): its refusals are the holes
            self._mark_missing(stream_id, name, replica, got)
        self._note(stream_id, name, window, refused_before, result)
        return result

    def _first_wanted(self, stream_id: int, key: bytes, replica: Log) -> int:
        """The first block of a stream to download: past what retention pruned, and past
        what the store holds from there on when this replica lacks it (another gateway on a
        shared store collected the device, or the replica file was lost): that needs no
        second download. Known once per log and run (the store's prefix only grows); when the
        replica holds that first block, one check."""
        floor = self.floors.below(key)
        if replica.has(floor) or not self.store.conn.execute(
                "SELECT 1 FROM blocks WHERE stream_id = ? AND block = ?",
                (stream_id, floor)).fetchone():
            return floor
        skip = self._skips.get(key)
        if skip is None:
            skip = self._skips[key] = self.store.stored_prefix(stream_id)
        return max(floor, skip)

    def _note(self, stream_id: int, name: str, window: tuple[float, float],
              refused_before: int, result: SyncResult) -> None:
        """Count and log the samples refused for their time; keep the stream's problem (what
        went wrong this round without stopping it: a budget used up, a quota reached)."""
        result.refused = self.store.refused(stream_id) - refused_before
        if result.refused:
            log.warning("stream %s: %d samples refused for their time (outside %s .. %s)",
                        name, result.refused, _iso(window[0]), _iso(window[1]))
        problem = result.error if result.error is not None and not result.unreachable else None
        if result.waiting:
            problem = (f"sample quota of {self.limits.max_samples} a round reached: "
                       f"{result.waiting} blocks wait for the next round")
        if self.store.status(stream_id) == "ok":
            self.store.set_problem(stream_id, problem)

    def _ingest_held(self, stream_id: int, name: str, replica: Log, todo: list[int],
                     window: tuple[float, float], allow: _Allowance | None,
                     result: SyncResult) -> None:
        """Store these held blocks in runs, within the device's sample quota (the rest wait
        in the replica for the next round). A block that is not a frame stops the stream:
        it was signed by the device, so the device misbehaves (the blocks before it are
        stored)."""
        k = 0
        while k < len(todo):
            run: list[tuple[int, int, Frame]] = []
            taken = 0
            stop: tuple[int, DecodeError] | None = None
            for i in todo[k:k + INGEST_RUN]:
                try:
                    frame = Frame.decode(replica.get(i))
                except DecodeError as exc:
                    stop = (i, exc)
                    break
                if allow is not None and (allow.samples <= 0 or (
                        run and taken + len(frame.samples) > allow.samples)):
                    break
                run.append((i, replica.fork, frame))
                taken += len(frame.samples)
            stored = self.store.ingest(stream_id, run, window) if run else 0
            result.samples += stored
            if allow is not None:
                allow.samples -= stored
            if k == 0 and run and run[0][2].samples:
                self.store.set_unit(stream_id, run[0][2].samples[0].unit)
            k += len(run)
            if stop is not None:
                why = f"invalid: block {stop[0]} is not a frame ({stop[1]})"
                self.store.stop(stream_id, why)
                result.error = why
                log.error("stream %s: %s (ingest stopped)", name, why)
                return
            if k < len(todo) and len(run) < INGEST_RUN:
                result.waiting = len(todo) - k  # over the quota
                return

    def _mark_missing(self, stream_id: int, name: str, replica: Log,
                      got: DownloadResult) -> None:
        """Holes (issue 17 part 6): blocks the edge signed (below its length) that it would
        not serve, and that the gateway stored neither before (a block the edge cleared
        because every gateway holds it is no hole), listed on the stream with the reason the
        edge gave. The stream keeps being collected; a later full answer replaces the list."""
        refused = [i for i in got.refused if i < replica.length and not replica.has(i)]
        lacking = set(self.store.missing_blocks(stream_id, refused))
        damaged = set(got.damaged)
        runs: list[tuple[int, int, str]] = []
        for i in refused:
            if i not in lacking:
                continue
            why = "damaged" if i in damaged else "not served"
            if runs and runs[-1][1] == i and runs[-1][2] == why:
                runs[-1] = (runs[-1][0], i + 1, why)
            else:
                runs.append((i, i + 1, why))
        for a, b, why in self.store.set_missing(stream_id, runs, time.time()):
            log.warning("stream %s: missing %s: %s", name, describe_missing([(a, b, why)]),
                        MISSING_REASONS[why])

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
        out a backoff), then :meth:`sync_devices`. A lookup that fails or takes longer than
        the device's time budget makes that device wait its backoff (its status says why);
        the others go on."""
        devices = []
        for k in sorted(set(record_keys)):
            if not self.schedule.ready(k, self.clock()):
                continue
            try:
                async with asyncio.timeout(self.limits.device_budget):
                    dev = await self.device(dht, k)
            except Exception as exc:  # one device's DHT trouble is that device's
                self.schedule.failed(k, self.clock(), f"record lookup: {one_line(exc)}")
                with contextlib.suppress(Exception):  # (listed, so that its status shows)
                    self.store.note_device(k, self.wall())
                log.debug("device %s: record lookup failed", k.hex()[:16], exc_info=True)
                continue
            if dev is None:
                if k in self.live or not self.holds(k):
                    continue  # connected with its record in-band (its UDP may be blocked),
                    # or another gateway collects it (its lease)
                state = self.schedule.edges.get(k)
                why = state.error if state is not None and state.error is not None and \
                    state.error.startswith("record not usable") else \
                    "no record on the DHT: the edge has not published one (is it running, " \
                    "with [dht] bootstrap? an edge whose UDP is blocked is admitted only " \
                    "when it dials in, [replication] dial, sending its record in-band)"
                self.note_reach(k, why)
                continue
            self.bind(dev)  # (bound whoever holds its lease: a standby link is admitted)
            if k in self.live or not self.holds(k):
                continue  # connected: its appends arrive live (:meth:`follow`), no round;
                # or another gateway holds its lease
            if dev.record.address is not None:
                devices.append(dev)
            else:
                self.note_reach(k, "no address and not connected: the edge serves no "
                                "address and has not dialled in (give it [replication] "
                                "gateways = [this gateway's key])")
        return await self.sync_devices(devices, policy, now)

    def _plan(self, dev: Device, policy_of: Callable[[str], Policy]
              ) -> list[tuple[str, Policy]]:
        """Register a device's streams; those to sync this round, by priority. A record that
        lists one log key under two names is refused whole; a stream whose log key the store
        holds under another name (another device's) is left out. Both are noted as the
        device's problem."""
        device_id = self.store.device(dev.record_key, None, float(dev.record.time))
        by_key: dict[bytes, list[str]] = {}
        for name, key in dev.streams.items():
            by_key.setdefault(key, []).append(name)
        twice = sorted(repr(n)[:80] for names in by_key.values() if len(names) > 1
                       for n in names)
        if twice:  # a record no honest edge makes: none of it is collected
            self.schedule.noted(dev.record_key, "record refused: one log key under several "
                                f"stream names ({', '.join(twice)})")
            return []  # (the device is listed, with its status, in /api/devices)
        todo = []
        problems = []
        for name in sorted(dev.streams):
            try:
                stream_id = self.store.stream(device_id, name, dev.streams[name])
            except StoreError as exc:
                problems.append(f"stream {name!r} refused: {exc}")
                continue
            self.known[stream_id] = (dev, name)
            p = policy_of(name)
            if p.mode != "on_demand":
                todo.append((name, p))
        self.schedule.noted(dev.record_key, "; ".join(problems) or None)
        todo.sort(key=lambda np: -np[1].priority)  # stable: by name within a priority
        return todo

    async def sync_devices(self, devices: Iterable[Device],
                           policy: Callable[[str], Policy] | None = None,
                           now: float | None = None) -> list[SyncResult]:
        """Sync these devices' streams by their policies: edges highest priority first (an
        edge's priority is its streams' highest), at most ``schedule.concurrency`` edges at
        once, within an edge its streams highest priority first (one connection at a time).
        An edge that cannot be reached is left for the rest of the round and waits its
        backoff; one waiting already is skipped. Results in the order the edges were taken.
        Whatever goes wrong with one device is noted as its status; the others go on."""
        def policy_of(name: str) -> Policy:
            return policy(name) if policy is not None else Policy("*", "tail")

        plans: dict[bytes, tuple[Device, list[tuple[str, Policy]]]] = {}
        refused: list[SyncResult] = []
        for dev in devices:
            if not self.schedule.ready(dev.record_key, self.clock()):
                continue
            assert dev.record.address is not None, "a device without an address to sync from"
            try:
                device_id = self.store.device(dev.record_key, None, float(dev.record.time))
                taken = stream_owners(self.store.conn, device_id, dev.streams)
                if taken:  # its record claims another enrolled device's streams: nothing stored
                    claimed = _refuse(dev, taken)
                    refused += claimed
                    self.schedule.noted(dev.record_key, "; ".join(
                        r.error for r in claimed if r.error))
                    continue
                todo = self._plan(dev, policy_of)
            except Exception as exc:  # (a store error): this device's, not the round's
                self.schedule.noted(dev.record_key, f"could not register: {one_line(exc)}")
                log.debug("device %s", dev.record_key.hex()[:16], exc_info=True)
                continue
            if todo:
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
        """One edge's streams in turn, within its allowance for the round. Anything a
        stream's sync raises is that stream's error; an edge that gives nothing (not reached,
        or refused us) waits its backoff."""
        assert dev.record.address is not None
        budget = self.limits.device_budget
        allow = _Allowance(time.monotonic() + budget, self.limits.max_samples, budget)
        self._round[dev.record_key] = allow
        out = []
        try:
            for name, p in todo:
                if allow.time_left() <= 0:
                    out.append(SyncResult(name, error=f"time budget of {budget:g} s used up: "
                                                      "left for the next round"))
                    continue
                since = now - p.window if p.mode == "backfill" else None
                try:
                    r = await self.sync(dev, name, dev.record.address, since=since)
                except Exception as exc:  # a store error, a bug: this stream's, not the round's
                    r = SyncResult(name, error=one_line(exc))
                    log.warning("stream %s: sync failed: %s", name, r.error)
                    log.debug("stream %s", name, exc_info=True)
                out.append(r)
                if r.unreachable:
                    self.schedule.failed(dev.record_key, self.clock(), r.error or "unreachable")
                    if not self._reach.get(dev.record_key, "").startswith("unreachable"):
                        self.note_reach(dev.record_key, f"unreachable since "
                                        f"{_iso(self.wall())}: {r.error or 'no answer'}")
                    return out
        finally:
            del self._round[dev.record_key]
        self.schedule.succeeded(dev.record_key, self.clock())
        self.note_reach(dev.record_key, f"reachable at {dev.record.address[0]}:"
                        f"{dev.record.address[1]} (collected in rounds)")
        return out

    # -- edges that dial in: admission and live push ------------------------------------------

    def bind(self, dev: Device) -> None:
        """Remember an enrolled device's newest record and the Noise key it names (field 8 of
        the record, signed with its record key): the key it may dial in with."""
        old = self.records.get(dev.record_key)
        if old is not None and old.seq > dev.seq:
            return  # a newer one came in-band (one seq counter for the DHT's and the edge's)
        if old is not None and old.record.noise_key is not None:
            self._noise.get(old.record.noise_key, set()).discard(dev.record_key)
        self.records[dev.record_key] = dev
        if dev.record.noise_key is not None:
            self._noise.setdefault(dev.record.noise_key, set()).add(dev.record_key)

    def in_band(self, message: bytes, noise_key: bytes | None,
                enrolled: set[bytes]) -> Device:
        """A device record an edge sent on the connection it dialled
        (:mod:`cairn.fleet.inband`), checked as the DHT checks a mutable record and more: its
        key enrolled, its signature that key's, its seq not older than the record held, it
        decodes, and its field 8 is ``noise_key`` (the connection's remote key). Then bound,
        as a round's record is; else PeerRefusedError with the reason."""
        try:
            key, signed = decode_in_band(message)
        except InBandRecordError as exc:
            raise PeerRefusedError(f"in-band record refused: {exc}") from None
        if key not in enrolled:
            raise PeerRefusedError(f"in-band record refused: record key {key.hex()[:16]} is "
                                   "not enrolled")
        if not verify_mutable(key, signed):
            raise PeerRefusedError(f"in-band record refused: the signature is not record key "
                                   f"{key.hex()[:16]}'s")
        held = self.records.get(key)
        floor = max(self._seq.get(key, 0), held.seq if held is not None else 0)
        if signed.seq < floor:
            raise PeerRefusedError(f"in-band record refused: seq {signed.seq} is older than "
                                   f"the record held (seq {floor})")
        try:
            rec = decode_record(signed.value, self.key_pair)
        except (RecordError, CairnError) as exc:
            raise PeerRefusedError(f"in-band record refused: {one_line(exc)}") from None
        if noise_key is None or rec.noise_key != noise_key:
            raise PeerRefusedError("in-band record refused: its field 8 does not name the "
                                   "connection's Noise key")
        if held is not None and held.seq == signed.seq and held.record.noise_key == noise_key:
            return held  # the same record again (a reconnection): bound already
        dev = Device(key, signed.seq, rec)
        dev.streams = {name: k for name, k in rec.streams if k is not None}
        self.bind(dev)
        return self.records[key]

    def admit(self, noise_key: bytes | None, enrolled: set[bytes]) -> Device:
        """The enrolled device that dials in with this Noise key, else PeerRefusedError with
        the reason (not enrolled, or its record not read yet; or a key two records name). An
        unknown key asks for an early round (at most every ``EARLY_EVERY`` seconds): a device
        enrolled, or with a new record, since the last round is admitted when it dials again."""
        owners = {k for k in self._noise.get(noise_key or b"", set()) if k in enrolled}
        if not owners:
            now = self.clock()
            if now - self._early_at >= EARLY_EVERY:
                self._early_at = now
                self.early.set()
            raise PeerRefusedError("key not enrolled (no enrolled device's record names it)")
        if len(owners) > 1:
            raise PeerRefusedError(f"key named by {len(owners)} enrolled devices' records: "
                                   "refused for all of them")
        return self.records[owners.pop()]

    @property
    def reach(self) -> dict[bytes, str]:
        """Each device's reach as noted by this collector (record key -> state)."""
        return dict(self._reach)

    def note_reach(self, record_key: bytes, state: str) -> None:
        """A device's reach (connected, unreachable, no address...): kept in the store for
        ``cairn gateway devices list`` and logged when it changes."""
        if self._reach.get(record_key) == state:
            return
        self._reach[record_key] = state
        level = logging.INFO if state.startswith(("connected", "reachable")) else logging.WARNING
        log.log(level, "device %s: %s", record_key.hex()[:16], state)
        with contextlib.suppress(Exception):  # (a status must never stop collecting)
            note_reach(self.store.conn, record_key, state, self.wall())

    async def follow(self, dev: Device, conn: Connection,
                     policy: Callable[[str], Policy] | None = None) -> None:
        """Collect a device on a connection it dialled (whoever dialled, the gateway reads):
        its streams followed live, each append verified and stored as it arrives, the same
        store path as a round's. Returns (or raises) when the connection ends."""
        def policy_of(name: str) -> Policy:
            return policy(name) if policy is not None else Policy("*", "tail")

        key = dev.record_key
        device_id = self.store.device(key, None, float(dev.record.time))
        taken = stream_owners(self.store.conn, device_id, dev.streams)
        if taken:
            claimed = _refuse(dev, taken)
            raise PeerRefusedError("; ".join(r.error for r in claimed if r.error))
        planned: list[Device] = []
        since = self.wall()

        def plan() -> list[tuple[str, bytes]] | None:
            # a standby link (another gateway holds the device's lease) follows nothing until
            # this gateway takes the lease; a lease lost ends the link (the edge dials again)
            if not self.holds(key):
                if planned:
                    raise LeaseLost(f"device {key.hex()[:16]}: its lease is no longer this "
                                    "gateway's (another collects it)")
                return []
            current = self.records.get(key, dev)
            if planned and planned[0] is current:
                return None
            if not planned:
                self.note_reach(key, f"connected since {_iso(since)}")
            planned[:] = [current]
            return [(name, current.streams[name]) for name, _p in self._plan(current, policy_of)]

        streams = LiveDevice(self.store, device_id, self.limits, self.wall, plan, self.replica,
                             self.ingestor, floor=self.floors.below,
                             on_stored=self.on_live)

        def stored(replica: Log) -> None:
            if planned and not self.holds(key):
                raise LeaseLost(f"device {key.hex()[:16]}: its lease is no longer this "
                                "gateway's (another collects it)")
            streams.stored(replica)

        def start(lg: Log) -> int:
            # what the store holds needs no second download (another gateway may have
            # stored it; each block this gateway stores it verifies itself)
            s = streams.streams.get(lg.key)
            return max(self.floors.below(lg.key), s.cursor if s is not None else 0)

        conn.batch = self.replica_batch
        self.live[key] = since
        self.schedule.succeeded(key, self.clock())
        try:
            await follow_on(conn, streams.replicas, stored, LIVE_POLL, start=start)
        except LeaseLost as exc:
            log.info("%s: the link stays with the gateway that holds it", exc)
            raise
        except (ConnectionError, TimeoutError, OSError, CairnError) as exc:
            if planned:
                self.note_reach(key, f"disconnected since {_iso(self.wall())}: "
                                f"{one_line(exc)}")
            raise
        finally:
            if self.live.get(key) == since:
                del self.live[key]


    @contextlib.contextmanager
    def replica_batch(self) -> Iterator[None]:
        """One transaction of ``replicas.db`` around what one read of a live connection
        brings (its logs' upgrades and blocks: one commit, not one per log and message).
        Anything raised rolls it all back, except a fork: its evidence (and the frozen
        log) is committed with what was verified before it."""
        forked: ForkError | None = None
        with self.replicas.transaction():
            try:
                yield
            except ForkError as exc:
                forked = exc
        if forked is not None:
            raise forked

    def watermarks(self) -> dict[bytes, int]:
        """For each stream collected: its log's discovery key -> blocks stored from the start."""
        out = {}
        for sid, log_key in self.store.collected_log_keys():
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
        start = max(start, self.floors.until(dev.streams.get(name, b"")))  # never pruned ones
        if start >= end:
            return None
        result = await self.sync(dev, name, dev.record.address, since=start, until=end)
        if result.error is None:
            done.append((start, min(end, time.time())))
        return result

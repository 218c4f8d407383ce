"""One device never stops the gateway, without sockets: the collector's downloads are an
in-process fake edge (every block sent as a proof from the edge's real signed log and verified
into the real replica), its DHT a stand-in that answers records or fails. Each way one device
could stop a round (issue 17 part 2) is tried next to an honest device, which must be stored
in full; the misbehaving one gets a status that says what is wrong."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from random import Random
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

import cairn_gateway.collect as collect_module
from cairn.crypto import KeyPair, derive_stream_key_pair, random_key_pair
from cairn.dht.api import UnreachableError
from cairn.fleet.record import DeviceRecord, encode_record
from cairn.frames import Frame, Sample
from cairn.log import Log
from cairn.messages import Request, RequestBlock, RequestUpgrade
from cairn_gateway.api import make_app
from cairn_gateway.collect import Collector, Device, SyncResult
from cairn_gateway.config import TEMPLATE, ConfigError, GatewayConfig, parse_config
from cairn_gateway.daemon import collect_rounds, limits_of
from cairn_gateway.schedule import Backoff, Limits, Schedule
from cairn_gateway.store import Store

NOW = 1_800_000_000.0  # the gateway's wall clock in these tests
SAMPLES = 20


def frames(name: str, times: list[float], *, per_frame: int = 1) -> list[bytes]:
    return [Frame(tuple(Sample(name, "Cel", t, float(k + j))
                        for j, t in enumerate(times[k:k + per_frame]))).encode()
            for k in range(0, len(times), per_frame)]


class Edge:
    """A signed stream log and how its edge behaves when the gateway dials it."""

    def __init__(self, path: Path, n: int, name: str, blocks: list[bytes]) -> None:
        self.log = Log.create(path, derive_stream_key_pair(bytes([n]) * 32, name))
        self.log.append(blocks)
        self.mode = "serve"  # serve | refuse (closes after the handshake) | tarpit | down
        self.dials = 0


class FakeNet:
    """``cairn_gateway.collect.download`` in process: the edge on that port sends its blocks,
    each as a proof the replica verifies, or refuses, or never answers, or is not there."""

    def __init__(self) -> None:
        self.edges: dict[int, Edge] = {}

    async def download(self, host: str, port: int, replica: Log, key_pair: KeyPair, *,
                       start: int = 0, on_progress: Callable[[Log], None] | None = None,
                       until: Callable[[Log], bool] | None = None, **_: Any) -> None:
        edge = self.edges[port]
        edge.dials += 1
        await asyncio.sleep(0)
        if edge.mode == "down":
            raise ConnectionRefusedError(111, "Connection refused")
        if edge.mode == "refuse":
            raise ConnectionError("the peer closed the connection")
        if edge.mode == "tarpit":
            await asyncio.Event().wait()  # accepts and never speaks
        w = edge.log
        for i in range(start, w.length):
            if until is not None and until(replica):
                return
            if replica.has(i):
                continue
            upgrade = (RequestUpgrade(replica.length, w.length - replica.length)
                       if replica.length < w.length else None)
            hint = replica.missing_nodes(2 * i) if replica.length else 0
            replica.verify_and_apply(w.proof(Request(block=RequestBlock(i, hint),
                                                     upgrade=upgrade, manifest=True)))
            if on_progress is not None:
                on_progress(replica)


@dataclass
class Got:
    seq: int
    value: bytes


class FakeDHT:
    """Records by key; a key in ``failing`` raises the DHT's UnreachableError."""

    def __init__(self) -> None:
        self.records: dict[bytes, bytes] = {}
        self.failing: set[bytes] = set()

    async def mutable_get(self, key: bytes, min_seq: int = 0, latest: bool = True
                          ) -> Got | None:
        if key in self.failing:
            raise UnreachableError("no storing node answered")
        value = self.records.get(key)
        return None if value is None else Got(1, value)


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> FakeNet:
    fake = FakeNet()
    monkeypatch.setattr(collect_module, "download", fake.download)
    return fake


class Gateway:
    def __init__(self, tmp: Path, limits: Limits | None = None) -> None:
        self.key = random_key_pair()
        self.store = Store(tmp / "gw.db")
        self.clock = [100.0]
        self.collector = Collector(tmp / "gw", self.key, self.store,
                                   schedule=Schedule(2, Backoff(1.0, 60.0, jitter=0.0),
                                                     Random(1)),
                                   clock=lambda: self.clock[0], limits=limits,
                                   wall=lambda: NOW)

    def stored(self, name: str) -> list[float]:
        row = self.store.conn.execute("SELECT id FROM streams WHERE name = ?",
                                      (name,)).fetchone()
        return [] if row is None else [t for t, _v, _b, _f in self.store.samples(row[0], 0,
                                                                                   4e9)]

    def stream(self, name: str) -> tuple[str, int, int, str | None]:
        """status, stored_blocks, refused, problem"""
        row = self.store.conn.execute("SELECT status, stored_blocks, refused, problem FROM "
                                      "streams WHERE name = ?", (name,)).fetchone()
        assert row is not None, name
        return (row[0], row[1], row[2], row[3])

    def error(self, dev: Device | bytes) -> str | None:
        key = dev.record_key if isinstance(dev, Device) else dev
        return self.collector.schedule.status(self.clock[0])[key].error

    def close(self) -> None:
        self.collector.close()
        self.store.close()


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    g = Gateway(tmp_path)
    yield g
    g.close()


def honest(tmp: Path, net: FakeNet, n: int = 1) -> tuple[Device, Edge, str]:
    name = f"board-{n}/temperature"
    edge = Edge(tmp / f"edge{n}.db", n, name,
                frames(name, [NOW - 100 + i for i in range(SAMPLES)]))
    net.edges[1000 + n] = edge
    dev = Device(bytes([n]) * 32, 1, DeviceRecord(time=int(NOW), address=("127.0.0.1", 1000 + n)),
                 {name: edge.log.key})
    return dev, edge, name


def test_a_log_key_listed_twice_refuses_the_record_and_the_round_goes_on(
        tmp_path: Path, net: FakeNet, gw: Gateway) -> None:
    good, e1, name = honest(tmp_path, net, 1)
    rogue_log = Edge(tmp_path / "rogue.db", 9, "rogue/a", frames("rogue/a", [NOW - 5]))
    net.edges[1009] = rogue_log
    rogue = Device(b"\x09" * 32, 1, DeviceRecord(time=int(NOW), address=("127.0.0.1", 1009)),
                   {"rogue/a": rogue_log.log.key, "rogue/b": rogue_log.log.key})
    try:
        results = asyncio.run(gw.collector.sync_devices([rogue, good]))
        assert [(r.stream, r.samples, r.error) for r in results] == [(name, SAMPLES, None)]
        assert gw.error(rogue) == ("record refused: one log key under several stream names "
                                   "('rogue/a', 'rogue/b')")
        assert rogue_log.dials == 0
        names = [r[0] for r in gw.store.conn.execute("SELECT name FROM streams ORDER BY id")]
        assert names == [name]  # nothing of it registered, nothing stored
    finally:
        e1.log.close()
        rogue_log.log.close()


def test_a_log_key_of_another_device_refuses_that_stream_only(
        tmp_path: Path, net: FakeNet, gw: Gateway) -> None:
    good, e1, name = honest(tmp_path, net, 1)
    own = Edge(tmp_path / "rogue.db", 9, "rogue/a", frames("rogue/a", [NOW - 5]))
    net.edges[1009] = own
    rogue = Device(b"\x09" * 32, 1, DeviceRecord(time=int(NOW), address=("127.0.0.1", 1009)),
                   {"rogue/a": own.log.key, "rogue/c": e1.log.key})
    try:
        asyncio.run(gw.collector.sync_devices([good]))  # the honest board was there first
        results = asyncio.run(gw.collector.sync_devices([rogue, good]))
        assert [(r.stream, r.error) for r in results] == [(name, None), ("rogue/a", None)]
        err = gw.error(rogue)
        assert err is not None and err.startswith("stream 'rogue/c' refused: log key ")
        assert gw.collector.schedule.status(gw.clock[0])[rogue.record_key].reachable
        assert gw.stored(name) == [NOW - 100 + i for i in range(SAMPLES)]
        names = [r[0] for r in gw.store.conn.execute("SELECT name FROM streams ORDER BY id")]
        assert names == [name, "rogue/a"]  # nothing under the name it gave the other's key
    finally:
        e1.log.close()
        own.log.close()


def test_a_signed_block_that_is_not_a_frame_stops_that_stream_only(
        tmp_path: Path, net: FakeNet, gw: Gateway) -> None:
    good, e1, name = honest(tmp_path, net, 1)
    bad_name = "board-2/temperature"
    blocks = frames(bad_name, [NOW - 50, NOW - 49, NOW - 48])
    edge = Edge(tmp_path / "edge2.db", 2, bad_name,
                [*blocks, b"\xffnot a frame", *frames(bad_name, [NOW - 40])])
    net.edges[1002] = edge
    dev = Device(b"\x02" * 32, 1, DeviceRecord(time=int(NOW), address=("127.0.0.1", 1002)),
                 {bad_name: edge.log.key})
    try:
        results = asyncio.run(gw.collector.sync_devices([dev, good]))
        by = {r.stream: r for r in results}
        assert by[name].error is None and by[name].samples == SAMPLES
        err = by[bad_name].error
        assert err is not None and err.startswith("invalid: block 3 is not a frame")
        status, stored_blocks, _refused, _problem = gw.stream(bad_name)
        assert status.startswith("invalid: block 3 is not a frame")
        assert stored_blocks == 3 and gw.stored(bad_name) == [NOW - 50, NOW - 49, NOW - 48]
        # stopped: the next round downloads nothing more of it, the honest one goes on
        again = asyncio.run(gw.collector.sync_devices([dev, good]))
        assert {r.stream: r.error for r in again}[bad_name] == status
        assert len(gw.stored(bad_name)) == 3
    finally:
        e1.log.close()
        edge.log.close()


def test_a_dht_error_or_a_bad_record_costs_only_that_device(
        tmp_path: Path, net: FakeNet, gw: Gateway) -> None:
    good, e1, name = honest(tmp_path, net, 1)
    dht = FakeDHT()
    dht.records[good.record_key] = encode_record(
        replace(good.record, streams=list(good.streams.items())), [gw.key.public_key])
    down, garbled = b"\x07" * 32, b"\x08" * 32
    dht.failing.add(down)
    dht.records[garbled] = b"\xa1\x00\x63not a record"
    try:
        results = asyncio.run(gw.collector.collect_round(
            dht, [down, garbled, good.record_key]))  # type: ignore[arg-type]
        assert [(r.stream, r.samples, r.error) for r in results] == [(name, SAMPLES, None)]
        status = gw.collector.schedule.status(gw.clock[0])
        assert not status[down].reachable
        assert status[down].error == "record lookup: UnreachableError: no storing node answered"
        assert not status[garbled].reachable
        assert (status[garbled].error or "").startswith("record not usable: ")
        assert status[good.record_key].reachable and status[good.record_key].error is None
    finally:
        e1.log.close()


def test_an_edge_that_refuses_after_the_handshake_backs_off(
        tmp_path: Path, net: FakeNet, gw: Gateway) -> None:
    good, e1, name = honest(tmp_path, net, 1)
    dev, e2, name2 = honest(tmp_path, net, 2)
    e2.mode = "refuse"
    try:
        r = asyncio.run(gw.collector.sync_devices([dev, good]))
        assert [(x.stream, x.unreachable) for x in r] == [(name, False), (name2, True)]
        assert gw.error(dev) == "ConnectionError: the peer closed the connection"
        for _ in range(5):  # five rounds before its wait is over: not dialled again
            gw.clock[0] += 0.1
            asyncio.run(gw.collector.sync_devices([dev, good]))
        assert e2.dials == 1 and e1.dials == 6
        gw.clock[0] += 1.0
        asyncio.run(gw.collector.sync_devices([dev, good]))
        assert e2.dials == 2
        assert gw.collector.schedule.status(gw.clock[0])[dev.record_key].failures == 2
    finally:
        e1.log.close()
        e2.log.close()


def test_a_tarpit_uses_up_its_time_budget_then_backs_off(
        tmp_path: Path, net: FakeNet) -> None:
    g = Gateway(tmp_path, Limits(device_budget=0.05))
    good, e1, name = honest(tmp_path, net, 1)
    pits = []
    for n in (2, 3, 4):  # more tarpits than sync slots (2)
        dev, edge, _ = honest(tmp_path, net, n)
        edge.mode = "tarpit"
        pits.append((dev, edge))
    try:
        def policy(stream: str) -> Any:  # the tarpits first: the worst case
            from cairn_gateway.config import Policy
            return Policy("*", "tail", priority=0 if stream.startswith("board-1") else 5)

        r = asyncio.run(g.collector.sync_devices([d for d, _ in pits] + [good], policy))
        by = {x.stream: x for x in r}
        assert by[name].samples == SAMPLES and by[name].error is None
        for dev, _edge in pits:
            res = by[next(iter(dev.streams))]
            assert res.unreachable and res.error is not None
            assert res.error.startswith("time budget of 0.05 s used up")
            assert not g.collector.schedule.status(g.clock[0])[dev.record_key].reachable
        # the next round does not dial them: they wait their backoff
        asyncio.run(g.collector.sync_devices([d for d, _ in pits] + [good], policy))
        assert [e.dials for _, e in pits] == [1, 1, 1]
    finally:
        g.close()
        e1.log.close()
        for _, e in pits:
            e.log.close()


@pytest.mark.parametrize("worker", [False, True], ids=["inline", "ingest-worker"])
def test_samples_outside_the_plausible_window_are_refused_and_counted(
        tmp_path: Path, net: FakeNet, gw: Gateway, worker: bool) -> None:
    good, e1, name = honest(tmp_path, net, 1)
    rng = Random(5)
    rogue_name = "rogue/temperature"
    wild = sorted(rng.uniform(0, 4e9) for _ in range(400))  # 1970 .. 2096
    times = sorted([*wild, NOW - 30, NOW - 20])
    edge = Edge(tmp_path / "rogue.db", 9, rogue_name, frames(rogue_name, times, per_frame=40))
    net.edges[1009] = edge
    rogue = Device(b"\x09" * 32, 1, DeviceRecord(time=0, address=("127.0.0.1", 1009)),
                   {rogue_name: edge.log.key})
    lo, hi = NOW - Limits().past_window, NOW + Limits().future_window
    plausible = [t for t in times if lo <= t <= hi]
    if worker:
        gw.collector.start_worker()
    try:
        results = asyncio.run(gw.collector.sync_devices([rogue, good]))
        by = {r.stream: r for r in results}
        assert by[rogue_name].refused == len(times) - len(plausible) > 300
        assert gw.stored(rogue_name) == plausible
        status, stored_blocks, refused, _ = gw.stream(rogue_name)
        # exactly once holds: every block is ingested, the refused samples counted once
        assert (status, stored_blocks, refused) == ("ok", edge.log.length,
                                                   len(times) - len(plausible))
        sid = gw.store.conn.execute("SELECT id FROM streams WHERE name = ?",
                                    (rogue_name,)).fetchone()[0]
        assert gw.store.stored_prefix(sid) == edge.log.length
        again = asyncio.run(gw.collector.sync_devices([rogue, good]))
        assert all(r.samples == 0 and r.refused == 0 for r in again)
        assert gw.stream(rogue_name)[2] == refused
        assert gw.stored(name) == [NOW - 100 + i for i in range(SAMPLES)]

        async def ask() -> tuple[Any, str]:
            transport = httpx.ASGITransport(app=make_app(gw.store))
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
                return ((await c.get("/api/integrity")).json(),
                        (await c.get("/metrics")).text)

        integrity, metrics = asyncio.run(ask())
        row = next(x for x in integrity if x["name"] == rogue_name)
        assert (row["refused"], row["alert"]) == (refused, False)
        counted = {(s.labels["device"], s.labels["stream"]): s.value
                   for f in text_string_to_metric_families(metrics) for s in f.samples
                   if s.name == "cairn_gateway_refused_samples_total"}
        assert {v for (d, n), v in counted.items() if n == rogue_name
                and re.fullmatch("unenrolled-[0-9a-f]{12}", d)} == {refused}, metrics
    finally:
        e1.log.close()
        edge.log.close()


@pytest.mark.parametrize("worker", [False, True], ids=["inline", "ingest-worker"])
def test_the_sample_quota_leaves_the_rest_for_the_next_round(
        tmp_path: Path, net: FakeNet, worker: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collect_module, "INGEST_RUN", 4)  # runs for the worker mid-download
    g = Gateway(tmp_path, Limits(max_samples=100))
    if worker:
        g.collector.start_worker()
    name = "board-5/vibration"
    times = [NOW - 1000 + i / 10 for i in range(450)]
    edge = Edge(tmp_path / "edge5.db", 5, name, frames(name, times, per_frame=10))
    net.edges[1005] = edge
    dev = Device(b"\x05" * 32, 1, DeviceRecord(time=int(NOW), address=("127.0.0.1", 1005)),
                 {name: edge.log.key})
    try:
        per_round = []
        for _ in range(5):
            (r,) = asyncio.run(g.collector.sync_devices([dev]))
            per_round.append((r.samples, r.waiting, r.error))
        assert per_round == [(100, 35, None), (100, 25, None), (100, 15, None),
                             (100, 5, None), (50, 0, None)]
        assert g.stored(name) == times  # all of it, each sample once
        assert g.stream(name) == ("ok", 45, 0, None)
        assert g.collector.schedule.status(g.clock[0])[dev.record_key].reachable
    finally:
        g.close()
        edge.log.close()


def test_the_quota_problem_is_shown_while_blocks_wait(tmp_path: Path, net: FakeNet) -> None:
    g = Gateway(tmp_path, Limits(max_samples=10))
    dev, e1, name = honest(tmp_path, net, 1)
    try:
        asyncio.run(g.collector.sync_devices([dev]))
        problem = g.stream(name)[3]
        assert problem == "sample quota of 10 a round reached: 10 blocks wait for the next round"
        asyncio.run(g.collector.sync_devices([dev]))
        assert g.stream(name)[3] is None and len(g.stored(name)) == SAMPLES
    finally:
        g.close()
        e1.log.close()


def test_anything_one_streams_sync_raises_is_that_streams_error(
        tmp_path: Path, net: FakeNet, gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    good, e1, name = honest(tmp_path, net, 1)
    dev, e2, name2 = honest(tmp_path, net, 2)
    real = gw.store.ingest

    def ingest(stream_id: int, blocks: Any, window: Any = None) -> int:
        if gw.store.conn.execute("SELECT name FROM streams WHERE id = ?",
                                 (stream_id,)).fetchone()[0] == name2:
            raise sqlite3.OperationalError("database or disk is full")
        return real(stream_id, blocks, window)

    monkeypatch.setattr(gw.store, "ingest", ingest)
    try:
        r = asyncio.run(gw.collector.sync_devices([dev, good]))
        assert [(x.stream, x.samples, x.error) for x in r] == [
            (name, SAMPLES, None), (name2, 0, "OperationalError: database or disk is full")]
        assert gw.stored(name2) == [] and gw.stream(name2)[0] == "ok"
        monkeypatch.setattr(gw.store, "ingest", real)  # the disk has room again: caught up
        asyncio.run(gw.collector.sync_devices([dev, good]))
        assert len(gw.stored(name2)) == SAMPLES
    finally:
        e1.log.close()
        e2.log.close()


class FlakyCollector:
    """Stands in for the collector in the daemon loop: its first round raises."""

    def __init__(self) -> None:
        self.rounds = 0

    async def devices_on(self, dht: object, fleet: str) -> set[bytes]:
        return set()

    async def collect_round(self, dht: object, keys: object, policy: object) -> list[Any]:
        self.rounds += 1
        if self.rounds == 1:
            raise RuntimeError("the store went away\nsecond line")
        return []

    async def publish_watermarks(self, dht: object, key_pair: object, seq: int) -> int:
        return 0


def test_a_failed_round_is_logged_in_one_line_and_the_next_runs(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = GatewayConfig(tmp_path, tmp_path / "seed", interval=0.0)
    fake = FlakyCollector()
    store = Store(tmp_path / "gw.db")
    caplog.set_level(logging.DEBUG, logger="cairn_gateway.daemon")
    try:
        failed = asyncio.run(collect_rounds(cfg, fake, store, object(),  # type: ignore[arg-type]
                                            random_key_pair(), rounds=3))
    finally:
        store.close()
    assert failed == 1 and fake.rounds == 3
    warn = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warn] == [
        "collection round failed: RuntimeError: the store went away second line "
        "(the next one runs as usual)"]
    assert warn[0].exc_info is None  # no traceback at the default level...
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert debug and debug[0].exc_info is not None  # ...one at debug


def test_the_limits_come_from_collect_and_bad_values_are_refused(tmp_path: Path) -> None:
    cfg = parse_config(TEMPLATE, tmp_path)
    assert limits_of(cfg) == Limits()
    cfg = parse_config("[collect]\ndevice_budget = 2.5\nmax_samples_per_round = 500\n"
                       "past_window = 86400\nfuture_window = 0\n", tmp_path)
    assert limits_of(cfg) == Limits(2.5, 500, 86400.0, 0.0)
    for bad, says in [("device_budget = 0", "device_budget: 0 is not a number"),
                      ("max_samples_per_round = 0", "max_samples_per_round: 0 is not an"),
                      ("max_samples_per_round = 1.5", "max_samples_per_round: 1.5"),
                      ("past_window = -1", "past_window: -1 is not a number"),
                      ("future_window = inf", "future_window: inf is not a number"),
                      ("device_budget = \"10\"", "device_budget: '10' is not a number")]:
        with pytest.raises(ConfigError, match=says):
            parse_config(f"[collect]\n{bad}\n", tmp_path)
    with pytest.raises(ValueError, match="device budget"):
        Limits(device_budget=0)


class StoppedStreamCollector(FlakyCollector):
    async def collect_round(self, dht: object, keys: object, policy: object) -> list[Any]:
        self.rounds += 1
        return [SyncResult("rogue/x", error="invalid: block 0 is not a frame", stopped=True),
                SyncResult("board-1/t", error="time budget of 10 s used up")]


def test_a_stopped_stream_is_not_logged_again_every_round(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = GatewayConfig(tmp_path, tmp_path / "seed", interval=0.0)
    fake = StoppedStreamCollector()
    store = Store(tmp_path / "gw.db")
    try:
        assert asyncio.run(collect_rounds(cfg, fake, store, object(),  # type: ignore[arg-type]
                                          random_key_pair(), rounds=3)) == 0
    finally:
        store.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "stream board-1/t: time budget of 10 s used up"] * 3


@settings(derandomize=True, database=None, deadline=None, max_examples=150,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(times=st.lists(st.lists(st.floats(-1e10, 1e10), min_size=1, max_size=5), min_size=1,
                      max_size=12),
       lo=st.floats(-1e10, 1e10), width=st.floats(0, 2e10), twice=st.integers(0, 11))
def test_the_window_keeps_exactly_once(tmp_path_factory: pytest.TempPathFactory,
                                       times: list[list[float]], lo: float, width: float,
                                       twice: int) -> None:
    """Whatever the times and the window: every block is ingested once, each sample is
    stored or refused (never both, never twice), and a block ingested again changes nothing."""
    store = Store(tmp_path_factory.mktemp("window") / "gw.db")
    try:
        sid = store.stream(store.device(b"d" * 32, None, NOW), "d/x", b"k" * 32)
        blocks = [(i, 0, Frame(tuple(Sample("d/x", "Cel", t, 1.0) for t in ts)))
                  for i, ts in enumerate(times)]
        window = (lo, lo + width)
        stored = store.ingest(sid, blocks[:twice], window)
        stored += store.ingest(sid, blocks, window)  # the first ones a second time
        inside = [t for ts in times for t in ts if lo <= t <= lo + width]
        assert stored == len(inside)
        assert sorted(t for t, _v, _b, _f in store.samples(sid, -math.inf, math.inf)) == \
            sorted(inside)
        total = sum(len(ts) for ts in times)
        assert store.refused(sid) == total - len(inside)
        assert store.stored_prefix(sid) == len(times)
    finally:
        store.close()

"""One device never stops the gateway (issue 17 part 2), over real sockets: a DHT testnet (its
own process), the real `cairn gateway run` loop (`run_gateway`: DHT client, collector, the
HTTP API on 127.0.0.1), an honest edge serving a signed log that grows 10 samples a second,
and next to it a misbehaving device announced on the same fleet topic: a record listing one
log key twice, a correctly signed block that is not a frame, 200,000 samples dated 1970..2098,
records pointing at tarpits, DHT failures during rounds, an edge that refuses the gateway
after the handshake.

Each test ends with the gateway still running, the honest stream current (its newest sample
at most two collection intervals old, read from the API), and nothing of the misbehaving
device's stored or shown; each records a scorecard line in area "fleet"."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from cairn.crypto import KeyPair, derive_stream_key_pair, random_key_pair
from cairn.dht.api import DHT, UnreachableError
from cairn.fleet.identity import init_directory, noise_key_pair
from cairn.fleet.record import DeviceRecord, encode_record, fleet_topic
from cairn.frames import Frame, Sample
from cairn.log import Log
from cairn.replication.net import serve
from cairn_gateway.config import TEMPLATE, GatewayConfig, parse_config
from cairn_gateway.daemon import run_gateway
from cairn_gateway.roster import Roster
from cairn_gateway.store import Store
from tests.integration.edge.test_edge_dht import testnet  # noqa: F401 - a fixture
from tests.scorecard import record, scale

FLEET = "resil"
INTERVAL = 1.0  # seconds between the gateway's rounds
HONEST = "board-1/temperature"
WAIT = 60.0  # the longest any condition is waited for


class Relay:
    """A TCP relay in front of a server on 127.0.0.1 that counts the connections made."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.dials = 0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.dials += 1
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class Tarpit:
    """Accepts TCP connections and never says a word; counts them."""

    def __init__(self) -> None:
        self.accepted = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        with contextlib.suppress(ConnectionError, OSError):
            await reader.read()  # until the gateway gives up and closes
        writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@contextlib.asynccontextmanager
async def serving(logs: list[Log], allow: list[bytes] | None = None) -> AsyncIterator[int]:
    ready: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(logs, random_key_pair(), "127.0.0.1", 0, allow=allow,
                                     ready=ready.set_result, poll=0.1))
    try:
        yield (await asyncio.wait_for(ready, 10))[1]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Fleet:
    """The gateway under test, the DHT, the honest edge; the attack adds its devices."""

    def __init__(self, tmp: Path, boot: tuple[str, int], collect: str = "",
                 worker: bool = False) -> None:
        self.tmp = tmp
        gw_dir = tmp / "gw"
        seed = init_directory(gw_dir, "gateway.toml", "gateway.seed", TEMPLATE)
        self.gw_key = noise_key_pair(seed).public_key
        self.cfg: GatewayConfig = parse_config(
            f'[dht]\nbootstrap = ["{boot[0]}:{boot[1]}"]\nfleet = "{FLEET}"\n'
            f"[collect]\ninterval = {INTERVAL}\nbackoff_initial = 1.0\n"
            f"ingest_worker = {'true' if worker else 'false'}\n{collect}\n"
            '[api]\nlisten = "127.0.0.1:0"\n[replication]\nlisten = "127.0.0.1:0"\n', gw_dir)
        self.boot = boot
        self.honest = Log.create(tmp / "honest.db", derive_stream_key_pair(b"\x01" * 32, HONEST))
        self.honest_kp = random_key_pair()
        self.logs: list[Log] = [self.honest]
        self.api = ""
        self.dht: DHT | None = None

    def enroll(self, kp: KeyPair) -> None:
        """Enrol a device in the gateway's roster (these attacks come from enrolled devices
        that misbehave; unenrolled ones are never downloaded: test_reliability_fleet.py)."""
        self.cfg.data_dir.mkdir(parents=True, exist_ok=True)
        store = Store(self.cfg.data_dir / "gw.db")
        try:
            name = "honest" if kp is self.honest_kp else f"dev-{kp.public_key.hex()[:12]}"
            Roster(store.conn).enroll(kp.public_key, name, time.time())
        finally:
            store.close()

    async def publish(self, kp: KeyPair, rec: DeviceRecord, seq: int = 1) -> None:
        assert self.dht is not None
        self.enroll(kp)
        await self.dht.mutable_put(kp, encode_record(rec, [self.gw_key]), seq)
        await self.dht.announce(fleet_topic(FLEET), kp)

    async def get(self, path: str) -> Any:
        async with httpx.AsyncClient(base_url=self.api, timeout=10) as c:
            r = await c.get(path)
            r.raise_for_status()
            return r.json()

    async def honest_age(self) -> float:
        latest = {x["name"]: x for x in await self.get("/api/latest")}
        if HONEST not in latest:
            return float("inf")
        return time.time() - float(latest[HONEST]["time"])

    async def until(self, what: Callable[[], Awaitable[bool]], why: str) -> None:
        deadline = time.monotonic() + WAIT
        while not await what():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {WAIT:g} s: {why}")
            await asyncio.sleep(0.1)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[asyncio.Task[None]]:
        """The honest edge (appending, served, announced) and the gateway, running."""
        async def sensor() -> None:  # a reading every 0.1 s, stamped now
            k = 0
            while True:
                self.honest.append([Frame((Sample(HONEST, "Cel", time.time(),
                                                  20 + k % 7 / 10),)).encode()])
                k += 1
                await asyncio.sleep(0.1)

        ready: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
        async with contextlib.AsyncExitStack() as stack:
            self.dht = await stack.enter_async_context(
                DHT.start("127.0.0.1", 0, [self.boot], persistent=False))
            self.honest.append([Frame((Sample(HONEST, "Cel", time.time(), 20.0),)).encode()])
            producing = asyncio.create_task(sensor())
            port = await stack.enter_async_context(serving([self.honest]))
            await self.publish(self.honest_kp, DeviceRecord(
                time=int(time.time()), address=("127.0.0.1", port),
                streams=[(HONEST, self.honest.key)]))
            gateway = asyncio.create_task(run_gateway(self.cfg, ready=ready.set_result))
            try:
                host, api_port = await asyncio.wait_for(ready, WAIT)
                self.api = f"http://{host}:{api_port}"
                await self.until(lambda: self._current(), "the honest stream is collected")
                yield gateway
            finally:
                producing.cancel()
                gateway.cancel()
                for t in (producing, gateway):
                    with contextlib.suppress(asyncio.CancelledError):
                        await t

    async def _current(self) -> bool:
        return await self.honest_age() <= 2 * INTERVAL

    async def finish(self, gateway: asyncio.Task[None]) -> tuple[bool, float]:
        """Whether the gateway still runs, and the honest stream's age (seconds)."""
        await asyncio.sleep(0)
        running = not gateway.done()
        if not running:
            gateway.result()  # says why it stopped
        return running, await self.honest_age()

    def stored(self, not_honest: bool = True) -> dict[str, int]:
        """Samples in the gateway's store, by stream name (read after the gateway stopped)."""
        db = sqlite3.connect(self.cfg.data_dir / "gw.db")
        try:
            return dict(db.execute(
                "SELECT s.name, count(x.t) FROM streams s LEFT JOIN samples x "
                "ON x.stream_id = s.id GROUP BY s.id" + (" HAVING s.name != ?" if not_honest
                                                          else ""),
                (HONEST,) if not_honest else ()).fetchall())
        finally:
            db.close()

    def close(self) -> None:
        for lg in self.logs:
            lg.close()


def rogue_log(tmp: Path, name: str, blocks: list[bytes]) -> Log:
    lg = Log.create(tmp / f"{name.replace('/', '_')}.db",
                    derive_stream_key_pair(b"\x09" * 32, name))
    lg.append(blocks)
    return lg


def frame(name: str, t: float) -> bytes:
    return Frame((Sample(name, "Cel", t, 1.0),)).encode()


def shown(latest: list[dict[str, Any]]) -> list[str]:
    return sorted(x["name"] for x in latest if x["name"] != HONEST)


def test_a_record_listing_one_log_key_twice_is_refused(
        tmp_path: Path, testnet: tuple[str, int]) -> None:  # noqa: F811
    fleet = Fleet(tmp_path, testnet)
    lg = rogue_log(tmp_path, "rogue/a", [frame("rogue/a", time.time() - 5)])
    fleet.logs.append(lg)
    kp = random_key_pair()

    async def scenario() -> tuple[bool, float, list[str], str | None]:
        async with fleet.running() as gateway, serving([lg]) as port:
            await fleet.publish(kp, DeviceRecord(
                time=int(time.time()), address=("127.0.0.1", port),
                streams=[("rogue/a", lg.key), ("rogue/b", lg.key)]))

            async def noted() -> bool:
                return any(d["record_key"] == kp.public_key.hex() and d["error"]
                           for d in await fleet.get("/api/devices"))

            await fleet.until(noted, "the rogue device's status says what is wrong")
            error = next(d["error"] for d in await fleet.get("/api/devices")
                         if d["record_key"] == kp.public_key.hex())
            running, age = await fleet.finish(gateway)
            return running, age, shown(await fleet.get("/api/latest")), error

    try:
        running, age, others, error = asyncio.run(scenario())
        stored = fleet.stored()
    finally:
        fleet.close()
    bad = sum(stored.values()) + len(others) + (not running) + (age > 2 * INTERVAL)
    record("fleet", "record listing one log key under two stream names", 1, bad,
           "stored, shown, stale or stopped",
           detail=f"device error {error!r}; honest age {age:.1f} s")
    assert running and age <= 2 * INTERVAL
    assert error is not None and "one log key under several stream names" in error
    assert stored == {} and others == []


def test_a_signed_block_that_is_not_a_frame_stops_that_stream(
        tmp_path: Path, testnet: tuple[str, int]) -> None:  # noqa: F811
    fleet = Fleet(tmp_path, testnet)
    name = "rogue/temperature"
    lg = rogue_log(tmp_path, name, [b"\xff\x00 signed, but not a frame",
                                    frame(name, time.time() - 3), frame(name, time.time() - 2)])
    fleet.logs.append(lg)

    async def scenario() -> tuple[bool, float, list[str], str]:
        async with fleet.running() as gateway, serving([lg]) as port:
            await fleet.publish(random_key_pair(), DeviceRecord(
                time=int(time.time()), address=("127.0.0.1", port), streams=[(name, lg.key)]))

            async def stopped() -> bool:
                return any(s["name"] == name and s["alert"]
                           for s in await fleet.get("/api/integrity"))

            await fleet.until(stopped, "the stream is stopped")
            status = next(s["status"] for s in await fleet.get("/api/integrity")
                          if s["name"] == name)
            running, age = await fleet.finish(gateway)
            return running, age, shown(await fleet.get("/api/latest")), status

    try:
        running, age, others, status = asyncio.run(scenario())
        stored = fleet.stored()
    finally:
        fleet.close()
    bad = sum(stored.values()) + len(others) + (not running) + (age > 2 * INTERVAL)
    record("fleet", "correctly signed block that is not a frame", 1, bad,
           "stored, shown, stale or stopped", detail=f"stream status {status!r}")
    assert running and age <= 2 * INTERVAL
    assert status.startswith("invalid: block 0 is not a frame")
    assert stored == {name: 0} and others == []


def test_bulk_samples_dated_1970_to_2098_are_refused_and_counted(
        tmp_path: Path, testnet: tuple[str, int]) -> None:  # noqa: F811
    n = scale(200_000, 1_000_000)
    fleet = Fleet(tmp_path, testnet, collect="past_window = 86400", worker=True)
    name = "rogue/temperature"
    rng = random.Random(17)
    times = sorted(rng.uniform(0, 4_070_908_800) for _ in range(n))  # 1970 .. 2099
    lg = rogue_log(tmp_path, name, [
        Frame(tuple(Sample(name, "Cel", t, 1.0) for t in times[k:k + 1000])).encode()
        for k in range(0, n, 1000)])
    fleet.logs.append(lg)

    async def scenario() -> tuple[bool, float, float, dict[str, Any], str]:
        async with fleet.running() as gateway, serving([lg]) as port:
            await fleet.publish(random_key_pair(), DeviceRecord(
                time=0, address=("127.0.0.1", port), streams=[(name, lg.key)]))
            t0 = time.time()

            async def all_seen() -> bool:
                return any(s["name"] == name and s["stored_blocks"] == lg.length
                           for s in await fleet.get("/api/integrity"))

            await fleet.until(all_seen, "every block of the rogue's is ingested")
            row = next(s for s in await fleet.get("/api/integrity") if s["name"] == name)
            async with httpx.AsyncClient(base_url=fleet.api, timeout=10) as c:
                metrics = (await c.get("/metrics")).text
            running, age = await fleet.finish(gateway)
            return running, age, t0, row, metrics

    try:
        running, age, t0, row, metrics = asyncio.run(scenario())
        db = sqlite3.connect(fleet.cfg.data_dir / "gw.db")
        kept = [t for (t,) in db.execute(
            "SELECT x.t FROM samples x JOIN streams s ON s.id = x.stream_id "
            "WHERE s.name = ?", (name,))]
        first = db.execute("SELECT window_since FROM streams WHERE name = ?",
                           (name,)).fetchone()[0]
        db.close()
    finally:
        fleet.close()
    lo, hi = first - 86400, time.time() + 10
    outside = [t for t in kept if not lo <= t <= hi]
    plausible = [t for t in times if lo <= t <= hi]
    bad = len(outside) + (not running) + (age > 2 * INTERVAL)
    record("fleet", f"{n:,} samples dated 1970..2098 from one device", n, bad,
           "stored outside the window, stale or stopped",
           detail=f"refused {row['refused']:,}, {len(kept)} inside the window stored "
                  f"(plausible times, as for any device); honest age {age:.1f} s")
    assert running and age <= 2 * INTERVAL
    assert outside == [] and sorted(kept) == plausible
    assert row["refused"] == n - len(kept) and row["status"] == "ok"
    assert f'stream="{name}"}} {n - len(kept)}' in metrics
    assert t0 <= first  # the window counts from the gateway's clock, not the record's 1970


def test_records_pointing_at_tarpits_do_not_hold_up_the_honest_stream(
        tmp_path: Path, testnet: tuple[str, int]) -> None:  # noqa: F811
    pits_n = scale(8, 32)  # twice the sync slots, or more
    fleet = Fleet(tmp_path, testnet, collect="device_budget = 0.3")

    async def scenario() -> tuple[bool, float, float, int, list[str]]:
        pits = [Tarpit() for _ in range(pits_n)]
        try:
            async with fleet.running() as gateway:
                for pit in pits:
                    port = await pit.start()
                    name = f"pit-{port}/x"  # (a stream name is one device's)
                    fake = derive_stream_key_pair(random.Random(port).randbytes(32), name)
                    await fleet.publish(random_key_pair(), DeviceRecord(
                        time=int(time.time()), address=("127.0.0.1", port),
                        streams=[(name, fake.public_key)]))
                worst = 0.0

                async def every_pit_tried_twice() -> bool:
                    nonlocal worst
                    worst = max(worst, await fleet.honest_age())
                    return all(p.accepted >= 2 for p in pits)

                await fleet.until(every_pit_tried_twice, "each tarpit is dialled twice")
                running, age = await fleet.finish(gateway)
                return (running, age, max(worst, age), sum(p.accepted for p in pits),
                        shown(await fleet.get("/api/latest")))
        finally:
            for pit in pits:
                await pit.close()

    try:
        running, _age, worst, dials, others = asyncio.run(scenario())
        stored = fleet.stored()
    finally:
        fleet.close()
    bad = sum(stored.values()) + len(others) + (not running) + (worst > 2 * INTERVAL)
    record("fleet", f"{pits_n} records pointing at tarpits (accept, never speak)", dials, bad,
           "stored, shown, stale or stopped",
           detail=f"honest stream at most {worst:.1f} s old (interval {INTERVAL:g} s, "
                  "device_budget 0.3 s)")
    assert running and worst <= 2 * INTERVAL
    assert all(v == 0 for v in stored.values()), stored
    assert others == []


def test_dht_failures_during_rounds_do_not_stop_the_gateway(
        tmp_path: Path, testnet: tuple[str, int], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    fleet = Fleet(tmp_path, testnet)
    failing: set[bytes] = set()
    everything_fails = [False]
    calls = {"failed": 0}
    real_get = DHT.mutable_get

    async def mutable_get(self: DHT, key: bytes, min_seq: int = 0,
                          latest: bool = True) -> Any:
        if everything_fails[0] or key in failing:
            calls["failed"] += 1
            raise UnreachableError("no storing node answered (injected)")
        return await real_get(self, key, min_seq, latest)

    monkeypatch.setattr(DHT, "mutable_get", mutable_get)
    kp = random_key_pair()
    name = "rogue/temperature"
    lg = rogue_log(tmp_path, name, [frame(name, time.time() - 3)])
    fleet.logs.append(lg)

    async def scenario() -> tuple[bool, float, str | None]:
        async with fleet.running() as gateway, serving([lg]) as port:
            failing.add(kp.public_key)  # this device's record can never be read
            await fleet.publish(kp, DeviceRecord(time=int(time.time()),
                                                 address=("127.0.0.1", port),
                                                 streams=[(name, lg.key)]))
            await fleet.until(lambda: _has_error(fleet, kp.public_key), "the device's status")
            everything_fails[0] = True  # the whole DHT goes away for a while, mid-run
            seen = calls["failed"]

            async def some_rounds_failed() -> bool:
                return calls["failed"] >= seen + 3

            await fleet.until(some_rounds_failed, "lookups fail")
            everything_fails[0] = False  # and comes back: the honest stream catches up
            await fleet.until(fleet._current, "the honest stream is current again")
            error = next(d["error"] for d in await fleet.get("/api/devices")
                         if d["record_key"] == kp.public_key.hex())
            running, age = await fleet.finish(gateway)
            return running, age, error

    try:
        running, age, error = asyncio.run(scenario())
        stored = fleet.stored()
    finally:
        fleet.close()
    bad = sum(stored.values()) + (not running) + (age > 2 * INTERVAL)
    record("fleet", "DHT errors during rounds (one device's, then every lookup)",
           calls["failed"], bad, "stored, stale or stopped", detail=f"device error {error!r}")
    assert running and age <= 2 * INTERVAL
    assert error == "record lookup: UnreachableError: no storing node answered (injected)"
    assert stored == {}


async def _has_error(fleet: Fleet, key: bytes) -> bool:
    return any(d["record_key"] == key.hex() and d["error"]
               for d in await fleet.get("/api/devices"))


def test_an_edge_that_refuses_after_the_handshake_backs_off(
        tmp_path: Path, testnet: tuple[str, int]) -> None:  # noqa: F811
    fleet = Fleet(tmp_path, testnet)
    name = "board-2/temperature"
    lg = rogue_log(tmp_path, name, [frame(name, time.time() - 3)])
    fleet.logs.append(lg)
    kp = random_key_pair()
    rounds = scale(8, 30)

    async def scenario() -> tuple[bool, float, int, int, str | None]:
        # it allows some other gateway only: the handshake completes, then it closes
        async with fleet.running() as gateway, serving([lg], allow=[b"\x00" * 32]) as port, \
                serving([fleet.honest]) as honest_port:
            refuser, counter = Relay(port), Relay(honest_port)
            refuse_port, count_port = await refuser.start(), await counter.start()
            try:
                await fleet.publish(kp, DeviceRecord(time=int(time.time()),
                                                     address=("127.0.0.1", refuse_port),
                                                     streams=[(name, lg.key)]))
                await fleet.publish(fleet.honest_kp, DeviceRecord(
                    time=int(time.time()), address=("127.0.0.1", count_port),
                    streams=[(HONEST, fleet.honest.key)]), seq=2)

                async def enough_rounds() -> bool:
                    return counter.dials >= rounds and refuser.dials >= 1

                await fleet.until(enough_rounds, f"{rounds} rounds with the refusing edge")
                error = next(d["error"] for d in await fleet.get("/api/devices")
                             if d["record_key"] == kp.public_key.hex())
                running, age = await fleet.finish(gateway)
                return running, age, refuser.dials, counter.dials, error
            finally:
                await refuser.close()
                await counter.close()

    try:
        running, age, refused_dials, honest_dials, error = asyncio.run(scenario())
        stored = fleet.stored()
    finally:
        fleet.close()
    # 1 s doubling: in N rounds of 1 s it is dialled about log2(N) + 1 times, not N
    allowed = max(1, int(honest_dials).bit_length() + 1)
    bad = max(0, refused_dials - allowed) + sum(stored.values()) + (not running) \
        + (age > 2 * INTERVAL)
    record("fleet", "edge that refuses the gateway after the handshake", honest_dials, bad,
           "dials over the backoff, stored, stale or stopped",
           detail=f"dialled {refused_dials} times in {honest_dials} rounds; error {error!r}")
    assert running and age <= 2 * INTERVAL
    assert 1 <= refused_dials <= allowed < honest_dials
    assert error is not None and "closed" in error.lower()
    assert stored == {name: 0} or stored == {}

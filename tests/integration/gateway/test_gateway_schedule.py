"""Download scheduling over real sockets: edges serving signed logs on 127.0.0.1, one on a
closed port and one that accepts and never answers. The unreachable ones do not hold up the
others, are tried again on their backoff schedule (the collector's clock is a test value, so no
test waits for a backoff to pass), and the closed one is caught up when it comes back."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from random import Random

from cairn.brokers import free_port
from cairn.crypto import derive_stream_key_pair, random_key_pair
from cairn.fleet.record import DeviceRecord
from cairn.frames import Frame, Sample
from cairn.log import Log
from cairn.replication.net import serve
from cairn_gateway.collect import Collector, Device
from cairn_gateway.config import Policy
from cairn_gateway.schedule import Backoff, Schedule
from cairn_gateway.store import Store

T0 = 1_764_000_000.0
SAMPLES = 30
TIMEOUT = 1.0  # the collector's per-download timeout: what the silent edge costs a round


def edge_log(path: Path, n: int, name: str) -> Log:
    """An edge's stream log: ``SAMPLES`` one-sample frames."""
    lg = Log.create(path, derive_stream_key_pair(bytes([n]) * 32, name))
    lg.append([Frame((Sample(name, "Cel", T0 + i, n * 100 + i / 10),)).encode()
               for i in range(SAMPLES)])
    return lg


@contextlib.asynccontextmanager
async def serving(lg: Log, port: int = 0) -> AsyncIterator[int]:
    """``lg`` served over the replication protocol on 127.0.0.1; its port."""
    ready: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve([lg], random_key_pair(), "127.0.0.1", port,
                                     ready=ready.set_result))
    try:
        yield (await asyncio.wait_for(ready, 10))[1]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Silent:
    """A TCP listener that accepts and never answers; notes when each connection ends."""

    def __init__(self, on_close: Callable[[], None]) -> None:
        self.accepted = 0
        self.on_close = on_close

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        await reader.read()  # until the gateway gives up and closes
        self.on_close()
        writer.close()


def device(n: int, name: str, port: int, lg_key: bytes) -> Device:
    return Device(bytes([n]) * 32, 1, DeviceRecord(time=int(T0), address=("127.0.0.1", port)),
                  {name: lg_key})


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connections are refused)."""
    port = free_port()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    return port


def test_unreachable_edges_wait_their_backoff_and_are_caught_up(tmp_path: Path) -> None:
    names = {n: f"board-{n}/temperature" for n in (1, 2, 3, 4)}
    logs = {n: edge_log(tmp_path / f"edge{n}.db", n, names[n]) for n in (1, 2, 3)}
    store = Store(tmp_path / "gw.db")
    clock = [1000.0]
    collector = Collector(tmp_path / "gw", random_key_pair(), store,
                          schedule=Schedule(2, Backoff(1.0, 300.0), Random(42)),
                          clock=lambda: clock[0], timeout=TIMEOUT)

    def stored(n: int) -> list[object]:
        row = store.conn.execute("SELECT id FROM streams WHERE name = ?",
                                 (names[n],)).fetchone()
        return [] if row is None else [v for _t, v, _b, _f in store.samples(row[0], 0, 2e9)]

    want: dict[int, list[object]] = {n: [n * 100 + i / 10 for i in range(SAMPLES)]
                                     for n in (1, 2, 3)}
    seen_when_silent_gave_up: list[dict[int, int]] = []
    silent = Silent(lambda: seen_when_silent_gave_up.append(
        {n: len(stored(n)) for n in (1, 2)}))

    def policy(name: str) -> Policy:  # the unreachable edges first: the worst case
        return Policy("*", "tail", priority={"board-3": 9, "board-4": 8}.get(
            name.split("/")[0], 0))

    async def scenario() -> None:
        dead = closed_port()
        mute = await asyncio.start_server(silent.handle, "127.0.0.1", 0)
        mute_port = mute.sockets[0].getsockname()[1]
        async with serving(logs[1]) as p1, serving(logs[2]) as p2, mute:
            devs = [device(1, names[1], p1, logs[1].key), device(2, names[2], p2, logs[2].key),
                    device(3, names[3], dead, logs[3].key),
                    device(4, names[4], mute_port, b"\x04" * 32)]
            edge3, edge4 = devs[2].record_key, devs[3].record_key

            # round 1: two slots; the silent edge holds one for TIMEOUT, the closed port is
            # refused at once, and the other slot goes on to edges 1 and 2
            t = time.monotonic()
            first = await collector.sync_devices(devs, policy)
            assert time.monotonic() - t < TIMEOUT + 5
            assert [(r.stream, r.samples, r.unreachable) for r in first] == [
                (names[3], 0, True), (names[4], 0, True), (names[1], SAMPLES, False),
                (names[2], SAMPLES, False)]
            assert first[0].error is not None and "ConnectionRefused" in first[0].error
            assert first[1].error == "TimeoutError"
            # edges 1 and 2 were stored in full before the silent edge's try ended
            assert seen_when_silent_gave_up == [{1: SAMPLES, 2: SAMPLES}]
            status = collector.schedule.status(clock[0])
            assert not status[edge3].reachable and not status[edge4].reachable
            wait1 = status[edge3].retry_in
            assert 0.8 <= wait1 <= 1.0  # 1 s, jittered down by up to 20 %

            # before the wait is over neither is tried: the silent edge sees no connection
            clock[0] += wait1 / 2
            again = await collector.sync_devices(devs, policy)
            assert [(r.stream, r.samples) for r in again] == [(names[1], 0), (names[2], 0)]
            assert silent.accepted == 1

            # edge 3's wait is over: tried again, refused again, its wait doubles; the silent
            # edge drew a longer wait (seeded jitter) and is not tried yet
            clock[0] += collector.schedule.status(clock[0])[edge3].retry_in
            assert collector.schedule.status(clock[0])[edge4].retry_in > 0
            third = await collector.sync_devices(devs, policy)
            assert [(r.stream, r.unreachable) for r in third] == [
                (names[3], True), (names[1], False), (names[2], False)]
            assert silent.accepted == 1
            status = collector.schedule.status(clock[0])
            assert status[edge3].failures == 2 and 1.6 <= status[edge3].retry_in <= 2.0

            # edge 3 comes back on its port: at its next try it is caught up, wait reset
            async with serving(logs[3], dead):
                clock[0] += status[edge3].retry_in
                back = await collector.sync_devices(devs[:3], policy)
                assert [(r.stream, r.samples, r.error) for r in back] == [
                    (names[3], SAMPLES, None), (names[1], 0, None), (names[2], 0, None)]
            status = collector.schedule.status(clock[0])
            assert status[edge3].reachable and status[edge3].backoff == 0.0
            assert (status[edge4].reachable, status[edge4].failures) == (False, 1)

    try:
        asyncio.run(scenario())
        for n in (1, 2, 3):
            assert stored(n) == want[n]  # every edge's samples, each stored once
    finally:
        collector.close()
        store.close()
        for lg in logs.values():
            lg.close()

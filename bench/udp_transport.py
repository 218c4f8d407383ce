"""Round trip of a 64-byte UDP ping-pong on 127.0.0.1: which transport the DHT should use.

    python bench/udp_transport.py [--round-trips N] [--rounds R] [--json]

Measures, on the stock asyncio loop and on uvloop (when installed):

1. a plain :class:`asyncio.DatagramProtocol` on both ends: the echo answers inside
   ``datagram_received``; the pinger awaits a future its protocol completes. On the stock loop
   its transport reads 64 KiB per datagram, as :mod:`cairn.dht.aio` sets it
   (:data:`~cairn.dht.aio.READ_SIZE`), and again with asyncio's default of 256 KiB;
2. ``asyncio-dgram`` on both ends (the library the design card names): an echo task looping on
   ``await recv()`` / ``await send()``, the pinger doing ``await send()`` then ``await recv()``;
   as shipped (256 KiB reads on the stock loop) and with 64 KiB reads;
3. for information, a DHT PING between two Cairn nodes through :mod:`cairn.dht.aio` (encode,
   decode, id check, RTT bookkeeping: what a hop of a DHT query costs on top of the transport).

Both sockets are unconnected and addressed per datagram, as a DHT node's are. Each case runs N
round trips (default 20,000) split into R rounds (default 4) interleaved across cases, so drift
of a noisy machine spreads over all of them; each round starts with 500 unmeasured round trips.
Prints the median, p99 and mean round trip per case and the ratio to the plain protocol on the
stock loop. A missing optional package (uvloop, asyncio-dgram) skips its cases with a note.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
try:
    import cairn  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT / "core"))

from cairn.dht.aio import READ_SIZE, UDPNode  # noqa: E402
from cairn.dht.events import RequestDone  # noqa: E402

PAYLOAD = bytes(range(64))
WARMUP = 500
HOST = "127.0.0.1"


def _optional(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


# -- the cases ----------------------------------------------------------------------------------


class _Echo(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)


class _Pinger(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiter: asyncio.Future[bytes] | None = None

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(data)


def _read_size(transport: Any, size: int | None) -> None:
    """Set how much asyncio's own transport reads per datagram (uvloop's has no such knob)."""
    if size is not None and hasattr(transport, "max_size"):
        transport.max_size = size


def protocol_case(read_size: int | None) -> Callable[[int], Awaitable[list[int]]]:
    async def run(n: int) -> list[int]:
        return await _protocol_rtts(n, read_size)

    return run


async def _protocol_rtts(n: int, read_size: int | None) -> list[int]:
    loop = asyncio.get_running_loop()
    server, _ = await loop.create_datagram_endpoint(_Echo, local_addr=(HOST, 0))
    client, pinger = await loop.create_datagram_endpoint(_Pinger, local_addr=(HOST, 0))
    _read_size(server, read_size)
    _read_size(client, read_size)
    to = server.get_extra_info("sockname")[:2]
    rtts: list[int] = []
    try:
        for i in range(WARMUP + n):
            pinger.waiter = loop.create_future()
            t0 = time.perf_counter_ns()
            client.sendto(PAYLOAD, to)
            await pinger.waiter
            if i >= WARMUP:
                rtts.append(time.perf_counter_ns() - t0)
    finally:
        client.close()
        server.close()
    return rtts


def dgram_case(dgram: ModuleType,
               read_size: int | None) -> Callable[[int], Awaitable[list[int]]]:
    async def run(n: int) -> list[int]:
        server = await dgram.bind((HOST, 0))
        client = await dgram.bind((HOST, 0))
        _read_size(server._transport, read_size)
        _read_size(client._transport, read_size)
        to = server.sockname[:2]

        async def echo() -> None:
            while True:
                data, addr = await server.recv()
                await server.send(data, addr)

        rtts: list[int] = []
        try:
            async with asyncio.TaskGroup() as tg:
                echo_task = tg.create_task(echo())
                for i in range(WARMUP + n):
                    t0 = time.perf_counter_ns()
                    await client.send(PAYLOAD, to)
                    await client.recv()
                    if i >= WARMUP:
                        rtts.append(time.perf_counter_ns() - t0)
                echo_task.cancel()
        finally:
            client.close()
            server.close()
        return rtts

    return run


async def dht_ping_case(n: int) -> list[int]:
    async with UDPNode.open(persistent=True) as a, UDPNode.open(persistent=True) as b:
        to = b.server_address
        rtts: list[int] = []
        for i in range(WARMUP + n):
            t0 = time.perf_counter_ns()
            done: RequestDone = await a.wait_request(a.core.ping(to, a.now()))
            if done.reply is None:
                raise RuntimeError(f"a DHT ping on loopback failed: {done.error}")
            if i >= WARMUP:
                rtts.append(time.perf_counter_ns() - t0)
    return rtts


# -- running and reporting ------------------------------------------------------------------------


@dataclass
class Row:
    transport: str
    loop: str
    round_trips: int
    median_us: float
    p99_us: float
    mean_us: float
    ratio: float = 1.0  # median of the baseline / this median: above 1 is faster


def _p99(sorted_ns: list[int]) -> int:
    return sorted_ns[min(len(sorted_ns) - 1, math.ceil(0.99 * len(sorted_ns)) - 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--round-trips", type=int, default=20_000, help="per case (default 20,000)")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds (default 4)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args()

    uvloop = _optional("uvloop")
    dgram = _optional("asyncio_dgram")
    notes: list[str] = []
    loops: list[tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]] = [
        ("asyncio", None)]
    if uvloop is not None:
        loops.append(("uvloop", uvloop.new_event_loop))
    else:
        notes.append("uvloop is not installed: its cases are skipped (pip install uvloop)")
    transports: list[tuple[str, Callable[[int], Awaitable[list[int]]]]] = [
        ("DatagramProtocol", protocol_case(READ_SIZE)),
        ("DatagramProtocol, 256 KiB reads", protocol_case(None))]
    if dgram is not None:
        transports.append(("asyncio-dgram", dgram_case(dgram, None)))
        transports.append(("asyncio-dgram, 64 KiB reads", dgram_case(dgram, READ_SIZE)))
    else:
        notes.append("asyncio-dgram is not installed: its cases are skipped; it lost to the "
                     "plain protocol in docs/decisions/0003-dht-transport.md "
                     "(pip install asyncio-dgram to measure it again)")
    transports.append(("DHT ping (cairn.dht.aio)", dht_ping_case))

    per_round = max(1, args.round_trips // args.rounds)
    samples: dict[tuple[str, str], list[int]] = {}
    for _ in range(args.rounds):
        for loop_name, factory in loops:
            for name, case in transports:
                if loop_name != "asyncio" and "KiB reads" in name:
                    continue  # uvloop's transport reads into its own buffer
                with asyncio.Runner(loop_factory=factory) as runner:
                    samples.setdefault((name, loop_name), []).extend(
                        runner.run(case(per_round)))  # type: ignore[arg-type]

    rows: list[Row] = []
    for (name, loop_name), ns in samples.items():
        ns.sort()
        rows.append(Row(name, loop_name, len(ns), statistics.median(ns) / 1000,
                        _p99(ns) / 1000, statistics.fmean(ns) / 1000))
    order = {name: i for i, (name, _) in enumerate(transports)}
    rows.sort(key=lambda r: (order[r.transport], r.loop != "asyncio"))
    base = next(r for r in rows if r.transport == "DatagramProtocol" and r.loop == "asyncio")
    for r in rows:
        r.ratio = base.median_us / r.median_us

    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return
    print(f"# UDP round trip, {len(PAYLOAD)}-byte datagrams on {HOST}; "
          f"{dt.date.today().isoformat()}, Python {platform.python_version()}, "
          f"{platform.machine()}, uvloop {getattr(uvloop, '__version__', '-')}, "
          f"asyncio-dgram {_version('asyncio-dgram')}")
    header = ("transport", "loop", "round trips", "median µs", "p99 µs", "mean µs",
              "vs protocol/asyncio")
    table = [header] + [
        (r.transport, r.loop, f"{r.round_trips:,}", f"{r.median_us:.1f}", f"{r.p99_us:.1f}",
         f"{r.mean_us:.1f}", f"{r.ratio:.2f}x") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(c.ljust(w) if j < 2 else c.rjust(w)
                        for j, (c, w) in enumerate(zip(row, widths, strict=True))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for note in notes:
        print(f"note: {note}")


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return "-"


if __name__ == "__main__":
    main()

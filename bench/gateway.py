"""Benchmark of the gateway.

    python bench/gateway.py [--markdown] [--blocks N]

1. store ingest: 24 h of 1 Hz samples for 10 streams (864,000 samples in one-sample frames, as
   an edge makes them at 1 Hz), stored through `Store.ingest` in runs of 1,000 blocks, with the
   minute and hour rollups kept at ingest; samples/s. Not the end-to-end figure of issue 8
   (download and verification from an edge come with the downloader): info only.
2. rollup query: 24 h x 1 min buckets for the 10 streams (14,400 buckets), warm, median of 5;
   target <= 10 ms.
3. from one edge over 127.0.0.1: an edge's stream log of N frames (default 100,000, one sample
   each: a 1 Hz sensor for 28 h) served by another process; a fresh gateway downloads it all,
   verifies every block and stores the samples; verified samples stored per second, end to end
   (target >= 100,000/s; JS hypercore replicates about 7,500 blocks/s on these machines). The
   gateway runs as `cairn gateway run` does: its ingest worker (a second process that decodes
   and stores while the download verifies) started before the clock starts. The same without
   the worker (everything in one process) is printed as info.
4. on demand: one hour (3,600 frames) from the middle of a log the gateway has never read,
   found by a time seek on the edge, downloaded, verified and stored; ms end to end (TCP
   connect, Noise handshake, seek, download, store), median of 5 fresh gateways; target
   <= 150 ms.
5. live refresh: 100 devices' records on a 100-node DHT (`cairn dht testnet` in another
   process); the gateway refreshes each device's latest readings (mutable get with the seq it
   knows as the hint, the record's signature checked, the record decoded and the stream keys
   opened), 5 rounds; p99 per device (target <= 2 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench_table import Row, print_tables
from cairn.crypto import derive_stream_key_pair, random_key_pair
from cairn.fleet.record import DeviceRecord
from cairn.frames import Frame, Sample
from cairn.log import Log
from cairn_gateway.collect import Collector, Device
from cairn_gateway.store import Store

NAME = "board-1/temperature"
SERVE = [sys.executable, str(Path(__file__).with_name("replication.py")), "--serve-worker"]


@contextlib.contextmanager
def serving(path: Path) -> Iterator[int]:
    """An edge's log served by another process (bench/replication.py's worker); its port."""
    with subprocess.Popen([*SERVE, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as server:
        assert server.stdout is not None and server.stdin is not None
        yield int(json.loads(server.stdout.readline())["port"])
        with contextlib.suppress(OSError):
            server.stdin.write("quit\n")
            server.stdin.close()
            server.stdout.read()  # its last line (memory used), so it never writes to a closed pipe


def edge_log(path: Path, n: int, per_frame: int = 1) -> bytes:
    """An edge's stream log of n frames of ``per_frame`` samples (a 1 Hz sensor: one a second
    from T0, one sample a frame); its key."""
    with Log.create(path, derive_stream_key_pair(b"\x07" * 32, NAME)) as lg:
        for start in range(0, n, 10_000):
            lg.append([Frame(tuple(Sample(NAME, "Cel", T0 + i + j / per_frame,
                                          20.0 + (i % 50) / 10) for j in range(per_frame)))
                       .encode() for i in range(start, min(n, start + 10_000))])
        return lg.key


async def collect(tmp: Path, key: bytes, port: int, label: str, since: float | None = None,
                  until: float | None = None, worker: bool = True) -> tuple[float, int]:
    store = Store(tmp / f"{label}.db")
    collector = Collector(tmp / label, random_key_pair(), store)
    if worker:
        collector.start_worker()  # as `cairn gateway run` does when it starts
    dev = Device(b"r" * 32, 1, DeviceRecord(time=int(T0), address=("127.0.0.1", port)),
                 {NAME: key})
    try:
        t = time.perf_counter()
        r = await collector.sync(dev, NAME, ("127.0.0.1", port), since=since, until=until)
        seconds = time.perf_counter() - t
        if r.error:
            raise RuntimeError(r.error)
        return seconds, r.samples
    finally:
        collector.close()
        store.close()

T0 = 1_764_000_000.0


def live_refresh(devices: int = 100, rounds: int = 5) -> list[float]:
    """Per-device refresh latencies (ms) against a 100-node testnet in another process."""
    from cairn.brokers import free_port

    port = free_port()
    net = subprocess.Popen([sys.executable, "-m", "cairn.cli", "dht", "testnet", "--nodes",
                            "100", "--port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert net.stdout is not None
        for line in net.stdout:
            if line.startswith("testnet ready"):
                break
        return asyncio.run(_refresh(port, devices, rounds))
    finally:
        net.terminate()
        net.wait(30)
        if net.stdout is not None:
            net.stdout.close()


async def _refresh(port: int, devices: int, rounds: int) -> list[float]:
    from cairn.crypto import key_pair
    from cairn.dht.api import DHT
    from cairn.fleet.record import LatestReading, decode_record, encode_record

    gw = random_key_pair()
    keys = [key_pair(bytes([i % 256, i // 256]) * 16) for i in range(devices)]
    async with DHT.start("127.0.0.1", 0, [("127.0.0.1", port)], persistent=False) as dht:
        for i, kp in enumerate(keys):
            rec = DeviceRecord(time=int(T0), address=("10.0.0.1", 49800),
                               streams=[(f"board-{i}/t{k}", bytes([k]) * 32)
                                        for k in range(5)],
                               readings=[LatestReading(f"board-{i}/t{k}", T0, 20.0 + k)
                                         for k in range(5)])
            await dht.mutable_put(kp, encode_record(rec, [gw.public_key]), 1)
        times = []
        for _ in range(rounds):
            for kp in keys:
                t = time.perf_counter()
                got = await dht.mutable_get(kp.public_key, min_seq=1, latest=False)
                assert got is not None
                decode_record(got.value, gw)
                times.append((time.perf_counter() - t) * 1e3)
        return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--blocks", type=int, default=100_000)
    args = ap.parse_args(argv)
    print("# python bench/gateway.py")
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%S%z')}")
    with tempfile.TemporaryDirectory(prefix="cairn-bench-gw-") as d:
        s = Store(Path(d) / "gw.db")
        dev = s.device(b"d" * 32, "board", T0)
        sids = [s.stream(dev, f"board/t{i}", bytes([i]) * 32, "Cel") for i in range(10)]
        n = 0
        t = time.perf_counter()
        for sid in sids:
            for start in range(0, 86_400, 1000):
                blocks = [(i, 0, Frame((Sample("board/t", "Cel", T0 + i, float(i % 100)),)))
                          for i in range(start, min(86_400, start + 1000))]
                n += s.ingest(sid, blocks)
        rate = n / (time.perf_counter() - t)
        times = []
        for _ in range(6):
            t = time.perf_counter()
            buckets = sum(len(s.series(sid, T0, T0 + 86_400, 60).bucket) for sid in sids)
            times.append((time.perf_counter() - t) * 1e3)
        assert buckets == 14_400
        q = statistics.median(times[1:])
        s.close()

        key = edge_log(Path(d) / "edge.db", args.blocks)
        with serving(Path(d) / "edge.db") as port:
            full_s, full_n = asyncio.run(collect(Path(d), key, port, "full"))
            assert full_n == args.blocks, full_n
            one_s, one_n = asyncio.run(collect(Path(d), key, port, "one", worker=False))
            assert one_n == args.blocks, one_n
            mid = T0 + args.blocks // 2
            hours = []
            for k in range(5):
                secs, n = asyncio.run(collect(Path(d), key, port, f"hour{k}", since=mid,
                                              until=mid + 3600))
                assert n >= 3600, n
                hours.append(secs * 1e3)
        full_rate = full_n / full_s
        one_rate = one_n / one_s
        hour = statistics.median(hours)
        key10 = edge_log(Path(d) / "edge10.db", args.blocks // 10, per_frame=10)
        with serving(Path(d) / "edge10.db") as port:
            ten_s, ten_n = asyncio.run(collect(Path(d), key10, port, "ten"))
            assert ten_n == args.blocks, ten_n
        ten_rate = ten_n / ten_s
        live = sorted(live_refresh())
        live_p99 = live[int(0.99 * len(live)) - 1]
    rows = [
        Row("store ingest, 10 streams x 24 h at 1 Hz (no network, no verification)",
            "samples/s", rate, None, None, "info", "-"),
        Row("rollup query, 24 h x 1 min, 10 streams (warm, median of 5)", "ms", q, None, None,
            "<= 10 ms", "PASS" if q <= 10 else "MISS"),
        Row(f"verified samples stored from one edge ({args.blocks:,} one-sample frames, "
            "TCP)", "samples/s", full_rate, None, None, ">= 100,000",
            "PASS" if full_rate >= 100_000 else "MISS"),
        Row("  the same in one process ([collect] ingest_worker = false)", "samples/s",
            one_rate, None, None, "info", "-"),
        Row(f"  the same samples in {args.blocks // 10:,} frames of 10 (a 10 Hz sensor)",
            "samples/s", ten_rate, None, None, "info", "-"),
        Row("on demand: 1 h of 1 Hz from a log never read (seek, download, verify, store)",
            "ms", hour, None, None, "<= 150 ms", "PASS" if hour <= 150 else "MISS"),
        Row("live refresh, 100 devices on a 100-node DHT: p99 per device", "ms", live_p99,
            None, None, "<= 2 ms", "PASS" if live_p99 <= 2 else "MISS"),
        Row("  the same, median", "ms", statistics.median(live), None, None, "info", "-"),
    ]
    print_tables(rows, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of live push (issue 19 items 1 and 3): edges that dial the gateway and push appends.

    python bench/live.py [--seconds S] [--edges N,N,...] [--markdown]

1. sample to `/api/latest`, p99: one edge, 10 streams, one frame per stream per second (the
   sample's time is the moment it is appended to the edge's log). A client polls the gateway's
   `GET /api/latest` every 10 ms; each time a stream's latest time changes, (time seen - sample
   time) is one measure. With live push (the edge dialled in, appends announced and pulled as
   they happen; target <= 250 ms) beside today's path (the gateway dials the edge every 0.5 s,
   a round each time) in the same run. (The edge's own MQTT -> commit delay, `[logs]
   commit_interval`, comes before this and is the same for both paths.)
2. connected edges: N simulated edges in a second process, each dialled in with 10 streams at
   1 Hz; over S seconds the gateway process's CPU share, RSS, RSS per connection (above the
   gateway with none), and sample time -> stored (the moment /api/latest can show it) p99.
   Targets for 1,000 edges: CPU <= 0.5 core, p99 <= 1 s. The gateway holds the edges'
   replicas already (it collected them before), as after its first day. N goes as far as
   this machine allows (the edges' process must keep its 1 Hz: its lag is reported).
Each edge's ticks are jittered (1 s +- 0.25 s) so that its appends do not lock in phase with
the 0.5 s rounds (which made the rounds' figure anything from 75 to 260 ms run to run).

No JS anchor: JS has no gateway; the anchor of live push is the 0.5 s round beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_table import Row, print_tables
from cairn.crypto import KeyPair, Manifest, derive_stream_key_pair, manifest_hash, random_key_pair
from cairn.fleet.record import DeviceRecord
from cairn.frames import Frame, Sample
from cairn.log import Log
from cairn.replication.net import serve
from cairn.storage import SharedDB
from cairn_edge.dialer import Dialer
from cairn_gateway.collect import Collector, Device
from cairn_gateway.listener import EdgeListener, ListenerLimits
from cairn_gateway.roster import Roster
from cairn_gateway.store import Store

STREAMS = 10
EDGE_POLL = 0.05  # the edge's own (cairn_edge.dialer.POLL)
GATEWAY_SEED = b"\x42" * 32


def edge_keys(i: int) -> tuple[KeyPair, bytes, list[tuple[str, KeyPair]]]:
    seed = hashlib.sha256(f"bench-edge-{i}".encode()).digest()
    streams = [(f"e{i}/s{j}", derive_stream_key_pair(seed, f"e{i}/s{j}"))
               for j in range(STREAMS)]
    return (derive_stream_key_pair(seed, "noise"),
            derive_stream_key_pair(seed, "record").public_key, streams)


def gateway_key() -> KeyPair:
    return derive_stream_key_pair(GATEWAY_SEED, "noise")


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# -- the gateway process -----------------------------------------------------------------------

async def gateway_worker(n: int, mode: str, directory: Path) -> None:
    """Enrol edges 0..n-1, listen (live) or run 0.5 s rounds (rounds: the edges' address on
    stdin), answer /api/latest; on "go S" measure S seconds and print the figures."""
    from cairn_gateway.api import make_app
    from cairn_gateway.serve import ApiLimits, serve_api

    store = Store(directory / "gw.db")
    collector = Collector(directory / "gw", gateway_key(), store)
    roster = Roster(store.conn)
    devices = []
    for i in range(n):
        noise, record_key, streams = edge_keys(i)
        roster.enroll(record_key, f"edge-{i}", time.time())
        keys = {name: manifest_hash(Manifest(kp.public_key)) for name, kp in streams}
        dev = Device(record_key, 1, DeviceRecord(
            int(time.time()), streams=list(keys.items()), noise_key=noise.public_key), keys)
        collector.bind(dev)
        devices.append(dev)
        for k in keys.values():  # a gateway that collected these edges before: replicas exist
            collector.replica(k)
    lat: list[float] = []
    ingest = store.ingest

    def timed(stream_id: int, blocks: Any, window: Any = None) -> int:
        blocks = list(blocks)
        got = ingest(stream_id, blocks, window)
        now = time.time()
        lat.extend(now - f.samples[-1].time for _i, _f, f in blocks if f.samples)
        return got

    ingest_many = getattr(store, "ingest_many", None)

    def timed_many(items: Any) -> list[int | None]:
        assert ingest_many is not None
        got: list[int | None] = ingest_many(items)
        now = time.time()
        lat.extend(now - f.samples[-1].time for item in items for _i, _f, f in item.blocks
                   if f.samples)
        return got

    store.ingest = timed  # type: ignore[method-assign]
    if ingest_many is not None:
        store.ingest_many = timed_many  # type: ignore[method-assign]
    if os.environ.get("CAIRN_BENCH_PROFILE"):
        import cProfile

        prof = cProfile.Profile()
        prof.enable()

    listener = EdgeListener(collector, gateway_key(), roster.enrolled_keys,
                            limits=ListenerLimits(max_connections=n + 100, per_source=n + 100))
    app = make_app(store)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with asyncio.TaskGroup() as tg:
        api_at: asyncio.Future[tuple[str, int]] = loop.create_future()
        tg.create_task(serve_api(app, "127.0.0.1", 0, ApiLimits(64, 10.0, 16384),
                                 ready=api_at.set_result))
        edges_at: asyncio.Future[tuple[str, int]] = loop.create_future()
        if mode == "live":
            tg.create_task(listener.run("127.0.0.1", 0, ready=edges_at.set_result))
        else:
            edges_at.set_result(("", 0))
        idle_rss = rss()
        print(json.dumps({"api": (await api_at)[1], "port": (await edges_at)[1]}), flush=True)
        rounds = None
        if mode == "rounds":
            addr = json.loads(await reader.readline())
            for dev in devices:
                dev.record.address = (addr["host"], addr["port"])

            async def every() -> None:
                while True:
                    t = time.monotonic()
                    await collector.sync_devices(list(devices))
                    await asyncio.sleep(max(0.0, 0.5 - (time.monotonic() - t)))

            rounds = tg.create_task(every())
        line = (await reader.readline()).decode().split()
        seconds = float(line[1])
        if mode == "live":  # every edge connected, then what they held meanwhile stored
            deadline = time.monotonic() + 300
            while len(collector.live) < n and time.monotonic() < deadline:  # noqa: ASYNC110 - a bench
                await asyncio.sleep(0.2)
        await asyncio.sleep(5.0)
        lat.clear()  # the window starts
        def batches() -> int:  # (store transactions of live ingest)
            ingestor = getattr(collector, "ingestor", None)
            return ingestor.batches if ingestor is not None else -1

        c0, t0, b0 = cpu(), time.monotonic(), batches()
        await asyncio.sleep(seconds)
        c1, t1 = cpu(), time.monotonic()
        if os.environ.get("CAIRN_BENCH_PROFILE"):
            prof.disable()
            prof.dump_stats(os.environ["CAIRN_BENCH_PROFILE"])
        lat.sort()
        print(json.dumps({
            "cpu": (c1 - c0) / (t1 - t0), "rss": rss(), "idle_rss": idle_rss,
            "connected": len(collector.live), "stored": len(lat), "seconds": t1 - t0,
            "batches": batches() - b0,
            "p50": lat[len(lat) // 2] if lat else None,
            "p99": lat[int(len(lat) * 0.99)] if lat else None}), flush=True)
        await reader.readline()  # "stop"
        if rounds is not None:
            rounds.cancel()
        raise SystemExit(0)


# -- the edges' process ------------------------------------------------------------------------

async def edges_worker(lo: int, hi: int, n: int, mode: str, port: int, directory: Path,
                       poll: float, procs: int) -> None:
    """Edges lo..hi-1 (of n) with their logs, appending one frame a stream a second; dialling
    the gateway (live; each connection looks for appends every ``poll`` s) or serving on one
    port (rounds). Prints the worst lag of its 1 Hz ticks."""
    db = SharedDB(directory / f"edges-{lo}.db")
    edges = []
    names: dict[int, str] = {}
    for i in range(lo, hi):
        noise, _rk, streams = edge_keys(i)
        logs = [Log.create_in(db, name, kp) for name, kp in streams]
        edges.append((noise, logs))
        names.update({id(lg): name for lg, (name, _kp) in zip(logs, streams, strict=True)})
    lag = 0.0
    async with asyncio.TaskGroup() as tg:
        if mode == "live":
            for i, (noise, logs) in enumerate(edges, lo):
                d = Dialer(noise, [gateway_key().public_key], logs,
                           dial=[("127.0.0.1", port)])
                d.poll = poll
                d.rng.seed(i)

                async def dial(d: Dialer = d, i: int = i) -> None:
                    await asyncio.sleep((i - lo) * 0.01 * procs)  # 100 dials a second in all
                    await d.run()

                tg.create_task(dial())
        else:
            at: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
            tg.create_task(serve([lg for _n, logs in edges for lg in logs], random_key_pair(),
                                 "127.0.0.1", 0, ready=at.set_result))
            host, p = await at
            print(json.dumps({"host": host, "port": p}), flush=True)

        async def tick(i: int, logs: list[Log]) -> None:
            nonlocal lag
            rng = random.Random(i)
            await asyncio.sleep(i / max(1, n))  # staggered over the second
            nxt = time.monotonic()
            while True:
                lag = max(lag, time.monotonic() - nxt)  # how late this tick is
                now = time.time()
                for lg in logs:
                    lg.append([Frame((Sample(names[id(lg)], "Cel", now, 20.0),)).encode()])
                nxt += 1.0 + rng.uniform(-0.25, 0.25)
                await asyncio.sleep(max(0.0, nxt - time.monotonic()))

        for i, (_noise, logs) in enumerate(edges, lo):
            tg.create_task(tick(i, logs))

        async def report() -> None:
            nonlocal lag
            while True:
                c0, t0 = cpu(), time.monotonic()
                await asyncio.sleep(5)
                print(json.dumps({"lag": lag, "cpu": (cpu() - c0) / (time.monotonic() - t0)}),
                      flush=True)
                lag = 0.0

        tg.create_task(report())


# -- the driver --------------------------------------------------------------------------------

def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def poll_api(port: int, seconds: float) -> list[float]:
    import httpx

    seen: dict[str, float] = {}
    out: list[float] = []
    end = time.monotonic() + seconds
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
        while time.monotonic() < end:
            now = time.time()
            for x in c.get("/api/latest").json():
                t = x["time"]
                if seen.get(x["name"]) not in (None, t):
                    out.append(now - t)
                seen[x["name"]] = t
            time.sleep(0.01)
    return out


def run(n: int, mode: str, seconds: float, api_poll: bool, procs: int = 1,
        poll: float = EDGE_POLL) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cairn-bench-live-") as d:
        gdir, edir = Path(d) / "gw", Path(d) / "edges"
        gdir.mkdir()
        edir.mkdir()
        gw = spawn("--gateway-worker", str(n), mode, str(gdir))
        assert gw.stdout is not None and gw.stdin is not None
        ports = json.loads(gw.stdout.readline())
        procs = max(1, min(procs, n))
        eds = [spawn("--edges-worker", str(n * k // procs), str(n * (k + 1) // procs), str(n),
                     mode, str(ports["port"]), str(edir), str(poll), str(procs))
               for k in range(procs)]
        try:
            if mode == "rounds":
                assert eds[0].stdout is not None
                gw.stdin.write(eds[0].stdout.readline())
                gw.stdin.flush()
            time.sleep(3.0)  # (the gateway waits for every edge before its window)
            gw.stdin.write(f"go {seconds}\n")
            gw.stdin.flush()
            api = poll_api(ports["api"], seconds) if api_poll else []
            res: dict[str, Any] = json.loads(gw.stdout.readline())
            gw.stdin.write("stop\n")
            gw.stdin.flush()
            lags, cpus = [], []
            for ed in eds:
                assert ed.stdout is not None
                edge = json.loads(ed.stdout.readline())
                lags.append(edge["lag"])
                cpus.append(edge["cpu"])
            res["edge_lag"], res["edge_cpu"] = max(lags), sum(cpus)
            api.sort()
            res["api_p99"] = api[int(len(api) * 0.99)] if api else None
            res["api_p50"] = statistics.median(api) if api else None
            return res
        finally:
            for p in (*eds, gw):
                p.kill()
                p.wait()
                for f in (p.stdin, p.stdout):
                    if f is not None:
                        with contextlib.suppress(Exception):
                            f.close()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--gateway-worker":
        asyncio.run(gateway_worker(int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--edges-worker":
        a = sys.argv
        asyncio.run(edges_worker(int(a[2]), int(a[3]), int(a[4]), a[5], int(a[6]), Path(a[7]),
                                 float(a[8]), int(a[9])))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--edges", default="100,300,1000")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--edge-procs", type=int, default=0,
                    help="processes the simulated edges are spread over (0: one per 250)")
    ap.add_argument("--edge-poll", type=float, default=EDGE_POLL,
                    help="seconds between a simulated edge's looks for appends")
    ap.add_argument("--fleet-only", action="store_true",
                    help="only the connected-edges figures (not the one-edge latency)")
    args = ap.parse_args()
    rows = floor_rows()
    if not args.fleet_only:
        rows += latency_rows(args.seconds)
    for n in [int(x) for x in args.edges.split(",")]:
        procs = args.edge_procs or max(1, -(-n // 250))
        r = run(n, "live", args.seconds, False, procs, args.edge_poll)
        print(json.dumps({"edges": n, "procs": procs, **r}), file=sys.stderr, flush=True)
        rows += fleet_rows(n, r)
    print(f"bench/live.py: {os.cpu_count()} CPUs, {args.seconds:g} s windows, "
          f"edge poll {args.edge_poll:g} s")
    print_tables(rows, args.markdown)


def floor_rows() -> list[Row]:
    """What one Ed25519 signature check costs here (libsodium through PyNaCl, what a replica
    runs once per upgrade) and what 10,000 of them a second (1,000 edges x 10 streams at 1 Hz,
    one upgrade per append) take; and one store transaction of 1,000 streams' blocks."""
    from cairn.crypto import sign, verify
    from cairn_gateway.store import IngestItem

    kp = derive_stream_key_pair(b"\x07" * 32, "floor")
    message = hashlib.sha256(b"tree").digest() + b"\x00" * 24
    assert kp.secret_key is not None
    sig = sign(message, kp.secret_key)
    n = 2000
    t0 = time.process_time()
    for _ in range(n):
        verify(message, sig, kp.public_key)
    us = (time.process_time() - t0) / n * 1e6
    with tempfile.TemporaryDirectory(prefix="cairn-bench-floor-") as d:
        store = Store(Path(d) / "gw.db")
        dev = store.device(b"d" * 32, "d", time.time())
        sids = [store.stream(dev, f"s{i}", i.to_bytes(32, "big")) for i in range(1000)]
        now = time.time()
        took = []
        for b in range(5):
            items = [IngestItem(sid, [(b, 0, Frame((Sample(f"s{sid}", "Cel", now + b, 1.0),)))])
                     for sid in sids]
            t0 = time.process_time()
            store.ingest_many(items)
            took.append((time.process_time() - t0) / len(items) * 1e6)
        store.close()
    return [
        Row("Ed25519 verify (one per upgrade)", "us", us, None, None, "info", ""),
        Row("  10,000 verifies/s (1,000 edges x 10 streams)", "cores x1000", us * 10, None,
            None, "the floor at 1 Hz", ""),
        Row("store: one block of 1,000 streams in one transaction", "us/block",
            statistics.median(took), None, None, "info", ""),
    ]


def latency_rows(seconds: float) -> list[Row]:
    rows = []
    live = run(1, "live", seconds, True)
    rounds = run(1, "rounds", seconds, True)
    ms = 1000.0
    lp, rp = live["api_p99"], rounds["api_p99"]
    rows.append(Row("sample to /api/latest p99, live push", "ms", lp * ms if lp else None,
                    rp * ms if rp else None, (rp / lp) if lp and rp else None, "<= 250 ms",
                    "PASS" if lp is not None and lp <= 0.25 else "FAIL"))
    rows.append(Row("  (JS column: today's 0.5 s rounds)", "ms", None, None, None, "", ""))
    rows.append(Row("sample to /api/latest p50, live push", "ms",
                    live["api_p50"] * ms if live["api_p50"] else None,
                    rounds["api_p50"] * ms if rounds["api_p50"] else None, None, "info", ""))
    return rows


def fleet_rows(n: int, r: dict[str, Any]) -> list[Row]:
    ms = 1000.0
    rows = []
    per = (r["rss"] - r["idle_rss"]) / max(1, r["connected"])
    rows.append(Row(f"{n} edges: connected", "edges", r["connected"], None, None,
                    f"= {n}", "PASS" if r["connected"] == n else "FAIL"))
    rows.append(Row(f"{n} edges: gateway CPU", "cores x1000", r["cpu"] * 1000, None, None,
                    "<= 500 at 1,000", "PASS" if r["cpu"] <= 0.5 else "FAIL"))
    rows.append(Row(f"{n} edges: gateway RSS", "MB", r["rss"] / 1e6, None, None, "info",
                    ""))
    rows.append(Row(f"{n} edges: RSS per connection", "kB", per / 1e3, None, None, "info",
                    ""))
    p99 = r["p99"]
    rows.append(Row(f"{n} edges: gateway CPU per block stored", "us",
                    r["cpu"] * r["seconds"] / max(1, r["stored"]) * 1e6, None, None,
                    "<= 50 for 0.5 core", ""))
    rows.append(Row(f"{n} edges: blocks stored per second", "blocks/s", r["stored"] / r["seconds"],
                    None, None, f"= {n * STREAMS:,} appended", ""))
    rows.append(Row(f"{n} edges: sample to stored p50", "ms",
                    r["p50"] * ms if r["p50"] is not None else None, None, None, "info", ""))
    rows.append(Row(f"{n} edges: sample to stored p99", "ms",
                    p99 * ms if p99 is not None else None, None, None, "<= 1,000 ms",
                    "PASS" if p99 is not None and p99 <= 1.0 else "FAIL"))
    rows.append(Row(f"{n} edges: edges' 1 Hz tick lag (worst)", "ms",
                    r["edge_lag"] * ms, None, None, "info (sim keeps up?)", ""))
    rows.append(Row(f"{n} edges: the edges' process CPU", "cores x1000",
                    r["edge_cpu"] * 1000, None, None, "info", ""))
    return rows


if __name__ == "__main__":
    main()

"""Benchmark of the store's two engines, SQLite and PostgreSQL, side by side in one run.

    python bench/store.py [--markdown] [--fast] [--repeat N] [--blocks N] [--devices D]

The PostgreSQL server is a throwaway cluster (:class:`cairn_gateway.pgcluster.PostgresCluster`)
on this machine, with its durable defaults: ``fsync`` on, ``synchronous_commit`` on, every
commit flushed to disk before it returns. ``--fast`` turns fsync and full-page writes off
(what only a power cut needs). SQLite is the store as the gateway opens it: WAL,
``synchronous=NORMAL`` (a commit is not flushed; a power cut may lose the last ones, never
corrupt the file).

1. verified samples stored per second from one edge: an edge's stream log of ``--blocks``
   one-sample frames (a 1 Hz sensor), served over 127.0.0.1 by another process; a gateway
   process (the gateway's real path: ``Collector.sync`` downloads and verifies every block,
   its ingest worker decodes the frames and stores them through ``Store.ingest``) stores it
   all into a fresh store: SQLite vs PostgreSQL, the same data.
2. several gateways on one PostgreSQL: ``--devices`` edges (one stream each, ``--blocks``
   frames), collected by three gateway processes at once, each its own third of the devices
   (the partition is static here: as leases would assign them, without the lease logic),
   against one gateway process collecting all of them on PostgreSQL, and on SQLite. Samples
   stored per second together (first start to last end). CPU seconds of each side are read
   from /proc (the gateways with their ingest workers, the PostgreSQL server's processes, the
   edges) and give, per sample, what a machine with a core per gateway would reach.
3. rollup queries, ``Store.series`` (what ``/api/rollups`` answers with): 24 h x 1 min over
   10 streams (the store filled through ``Store.ingest`` with 10 x 86,400 one-sample frames,
   the rollups kept at ingest; its rate is a row too) and 30 days x 1 h over 1,000 streams
   (720,000 hour rows written straight into ``rollup_hour`` through the store's connection:
   ingest of 720,000 samples would only make the same rows slower). p50 and p99 over
   ``--queries`` passes, warm.

The runs of each measure are interleaved (run k of every measure before run k + 1 of any), so
no engine gets the machine's quieter minutes. This machine's other load moves the rates: the
CPU seconds per sample move much less.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_table import Row, print_tables
from cairn.crypto import derive_stream_key_pair, random_key_pair
from cairn.frames import Frame, Sample
from cairn.log import Log
from cairn_gateway.store import Store

T0 = 1_764_000_000.0
NAME = "board/temperature"
HERE = Path(__file__).resolve()
SERVE = [sys.executable, str(HERE.with_name("replication.py")), "--serve-worker"]
TICK = os.sysconf("SC_CLK_TCK")

# -- CPU of process trees, from /proc ------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and of its children it has reaped)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = text[text.rfind(")") + 2:].split()
    return int(f[1]), sum(int(x) for x in f[11:15]) / TICK  # utime stime cutime cstime


def cpu_tree(root: int) -> float:
    """CPU seconds of a process and all its descendants, live or reaped (a child that exited
    and was waited for is in its parent's cutime / cstime)."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            got = _stat(int(entry.name))
            if got is not None:
                parent[int(entry.name)], cpu[int(entry.name)] = got
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo += [p for p, pp in parent.items() if pp == pid]
    return total


def tree(root: int) -> list[int]:
    """A process and its live descendants."""
    parent: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            got = _stat(int(entry.name))
            if got is not None:
                parent[int(entry.name)] = got[0]
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += [p for p, pp in parent.items() if pp == pid]
    return out


CGROUP_CPU = Path("/sys/fs/cgroup/cpu")  # the cgroup v1 cpu controller (what this host has)


@contextlib.contextmanager
def cpu_limit(name: str, cores: float | None) -> Iterator[Callable[[int], None]]:
    """A cgroup of its own holding at most ``cores`` of CPU (cgroup v1 CFS quota), as a
    function that moves a process and its descendants into it; None: no limit (the function
    does nothing). Removed at the end (its processes must have exited)."""
    if cores is None:
        yield lambda pid: None
        return
    if not (CGROUP_CPU / "cpu.cfs_quota_us").exists():
        raise SystemExit(f"--gateway-cpu needs the cgroup v1 cpu controller at {CGROUP_CPU}")
    group = CGROUP_CPU / name
    group.mkdir()
    try:
        period = int((group / "cpu.cfs_period_us").read_text())
        (group / "cpu.cfs_quota_us").write_text(str(int(cores * period)))

        def move(pid: int) -> None:
            for p in tree(pid):
                with contextlib.suppress(OSError):  # (a process that just exited)
                    (group / "cgroup.procs").write_text(str(p))

        yield move
    finally:
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:  # processes still leaving
                time.sleep(0.1)


# -- the edges -----------------------------------------------------------------------------------


def edge_log(path: Path, device: int, n: int) -> bytes:
    """Device ``device``'s stream log of n one-sample frames, one a second from T0; its key."""
    seed = device.to_bytes(4, "big") * 8
    with Log.create(path, derive_stream_key_pair(seed, NAME)) as lg:
        for start in range(0, n, 10_000):
            lg.append([Frame((Sample(NAME, "Cel", T0 + i, 20.0 + (i % 50) / 10),)).encode()
                       for i in range(start, min(n, start + 10_000))])
        return lg.key


@dataclass
class Edge:
    record_key: bytes
    log_key: bytes
    port: int
    pid: int


@contextlib.contextmanager
def edges(tmp: Path, count: int, blocks: int) -> Iterator[list[Edge]]:
    """``count`` edges, each its own process serving its one log (bench/replication.py's
    worker)."""
    with contextlib.ExitStack() as stack:
        out = []
        for d in range(count):
            key = edge_log(tmp / f"edge{d}.db", d, blocks)
            proc = stack.enter_context(subprocess.Popen(
                [*SERVE, str(tmp / f"edge{d}.db")], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, text=True))
            stack.callback(_quit_edge, proc)
            assert proc.stdout is not None
            port = int(json.loads(proc.stdout.readline())["port"])
            out.append(Edge(d.to_bytes(4, "big") * 8, key, port, proc.pid))
        yield out


def _quit_edge(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    with contextlib.suppress(OSError):
        proc.stdin.write("quit\n")
        proc.stdin.close()
        proc.stdout.read()  # its last line, so it never writes to a closed pipe


# -- a gateway process ---------------------------------------------------------------------------


async def _gateway(spec: dict[str, Any]) -> None:
    """One gateway process: the real collect path (download, verify, the ingest worker
    storing) of its devices, all at once, after "go" on stdin."""
    from cairn.fleet.record import DeviceRecord
    from cairn_gateway.collect import Collector, Device

    store = Store(spec["target"])
    collector = Collector(Path(spec["dir"]), random_key_pair(), store, timeout=3600.0)
    collector.start_worker()  # as `cairn gateway run` does when it starts
    devs = [(Device(bytes.fromhex(rk), 1, DeviceRecord(time=int(T0),
                                                       address=("127.0.0.1", port)),
                    {NAME: bytes.fromhex(key)}), port) for rk, key, port in spec["devices"]]
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    start = time.time()
    results = await asyncio.gather(*(collector.sync(dev, NAME, ("127.0.0.1", port))
                                     for dev, port in devs))
    end = time.time()
    collector.close()  # (its worker is joined: its CPU is this process's children's)
    print(json.dumps({"start": start, "end": end, "samples": sum(r.samples for r in results),
                      "errors": [r.error for r in results if r.error]}), flush=True)
    sys.stdin.readline()
    store.close()


@dataclass
class Run:
    samples: int
    seconds: float
    gateway_cpu: float
    server_cpu: float
    edge_cpu: float

    @property
    def rate(self) -> float:
        return self.samples / self.seconds


def collect(tmp: Path, label: str, target: Callable[[str], str], groups: list[list[Edge]],
            server_pid: int | None, all_edges: list[Edge], blocks: int,
            gateway_cpu: float | None = None) -> Run:
    """One gateway process per group of edges, started together on fresh stores (``target``
    makes one: the same database for all the groups of a run); with ``gateway_cpu``, each
    gateway (with its ingest worker) in a cgroup of its own holding that many cores, as if
    each ran on a machine of its own."""
    where = target(label)
    procs = []
    with contextlib.ExitStack() as stack:
        for g, group in enumerate(groups):
            spec = {"target": where, "dir": str(tmp / f"{label}-gw{g}"),
                    "devices": [(e.record_key.hex(), e.log_key.hex(), e.port) for e in group]}
            move = stack.enter_context(cpu_limit(f"cairn-bench-{os.getpid()}-{label}-{g}",
                                                 gateway_cpu))
            p = stack.enter_context(subprocess.Popen(
                [sys.executable, str(HERE), "--gateway", json.dumps(spec)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
            move(p.pid)
            procs.append((p, move))
        for p, move in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if not line:
                raise SystemExit(f"{label}: a gateway process failed to start")
            move(p.pid)  # (its ingest worker, started meanwhile, too)
        procs_only = [p for p, _ in procs]

        def cpu() -> tuple[float, float, float]:
            return (sum(cpu_tree(p.pid) for p in procs_only),
                    cpu_tree(server_pid) if server_pid is not None else 0.0,
                    sum(cpu_tree(e.pid) for e in all_edges))

        before = cpu()
        for p in procs_only:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        done = []
        for p in procs_only:
            assert p.stdout is not None
            line = p.stdout.readline()
            if not line:
                raise SystemExit(f"{label}: a gateway process died")
            done.append(json.loads(line))
        after = cpu()
        for p in procs_only:
            assert p.stdin is not None
            p.stdin.write("quit\n")
            p.stdin.close()
            p.wait(120)
            assert p.stdout is not None
            p.stdout.close()
    errors = [e for d in done for e in d["errors"]]
    if errors:
        raise SystemExit(f"{label}: {errors[0]}")
    samples = sum(int(d["samples"]) for d in done)
    expected = sum(len(group) for group in groups) * blocks
    if samples != expected:
        raise SystemExit(f"{label}: {samples:,} samples stored of {expected:,}")
    seconds = max(d["end"] for d in done) - min(d["start"] for d in done)
    return Run(samples, seconds, after[0] - before[0], after[1] - before[1],
               after[2] - before[2])


# -- rollup queries ------------------------------------------------------------------------------


def fill_day(store: Store, streams: int = 10, run: int = 1000) -> tuple[list[int], float]:
    """10 streams x 24 h of 1 Hz one-sample frames through Store.ingest, in runs of 1,000
    blocks (what the collector's own pass does); the stream ids and the samples/s."""
    dev = store.device(b"d" * 32, "board", T0)
    sids = [store.stream(dev, f"board/t{i}", bytes([i]) * 32, "Cel") for i in range(streams)]
    n = 0
    t = time.perf_counter()
    for sid in sids:
        for start in range(0, 86_400, run):
            n += store.ingest(sid, [
                (i, 0, Frame((Sample("board/t", "Cel", T0 + i, float(i % 100)),)))
                for i in range(start, min(86_400, start + run))])
    rate = n / (time.perf_counter() - t)
    assert n == streams * 86_400, n
    return sids, rate


def fill_month(store: Store, streams: int = 1000, hours: int = 720) -> list[int]:
    """``streams`` streams with 30 days of hour rollups each, written straight into
    ``rollup_hour`` through the store's connection (a transaction per 100 streams)."""
    dev = store.device(b"m" * 32, "fleet", T0)
    sids = [store.stream(dev, f"fleet/s{i}", (b"month" + i.to_bytes(4, "big")).ljust(32, b"-"),
                         "Cel") for i in range(streams)]
    h0 = int(T0) // 3600 * 3600
    for k in range(0, streams, 100):
        with store.conn.transaction():
            store.conn.executemany(
                "INSERT INTO rollup_hour (stream_id, bucket, n, total, lo, hi) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(sid, h0 + 3600 * h, 3600, 3600 * 20.0 + h, 19.0, 21.0 + h % 7)
                 for sid in sids[k:k + 100] for h in range(hours)])
    if store.engine == "postgresql":  # what autovacuum does after a load: fair to both plans
        store.conn.execute("VACUUM ANALYZE rollup_hour")
    return sids


def query_pass(store: Store, sids: list[int], start: float, end: float, step: int,
               buckets: int, per_call: list[float]) -> float:
    """ms for one Store.series per stream; each call's ms goes to ``per_call``."""
    got = 0
    t0 = time.perf_counter()
    for sid in sids:
        t = time.perf_counter()
        got += len(store.series(sid, start, end, step).bucket)
        per_call.append((time.perf_counter() - t) * 1e3)
    ms = (time.perf_counter() - t0) * 1e3
    assert got == buckets, (got, buckets)
    return ms


@dataclass
class Queries:
    day: list[float] = field(default_factory=list)  # ms a pass over the 10 streams
    month: list[float] = field(default_factory=list)  # ms a pass over the 1,000 streams
    month_call: list[float] = field(default_factory=list)  # ms a stream
    day_call: list[float] = field(default_factory=list)
    ingest_rate: float = 0.0


def queries(store: Store, passes: int) -> Queries:
    q = Queries()
    day, q.ingest_rate = fill_day(store)
    month = fill_month(store)
    h0 = int(T0) // 3600 * 3600
    for k in range(passes + 1):  # the first pass warms the caches: not counted
        day_ms = query_pass(store, day, T0, T0 + 86_400, 60, 14_400, q.day_call if k else [])
        month_ms = query_pass(store, month, h0, h0 + 720 * 3600, 3600, 720_000,
                              q.month_call if k else [])
        if k:
            q.day.append(day_ms)
            q.month.append(month_ms)
    return q


def p(values: list[float], share: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(share * len(s)))]


# -- the run -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--fast", action="store_true",
                    help="PostgreSQL without fsync and full-page writes (durable by default)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each ingest measure")
    ap.add_argument("--blocks", type=int, default=50_000, help="frames per edge")
    ap.add_argument("--devices", type=int, default=6, help="edges for the gateways' measure")
    ap.add_argument("--queries", type=int, default=20, help="passes of each rollup query")
    ap.add_argument("--gateway-cpu", type=float, default=None, metavar="CORES",
                    help="each gateway process (with its ingest worker) limited to CORES of "
                         "CPU in a cgroup of its own, as if on a machine of its own (root, "
                         "cgroup v1); the server and the edges are not limited")
    ap.add_argument("--gateway", help=argparse.SUPPRESS)  # a gateway process of a run
    args = ap.parse_args(argv)
    if args.gateway:
        asyncio.run(_gateway(json.loads(args.gateway)))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # (the cluster is removed)
    import psycopg

    from cairn_gateway.pgcluster import PostgresCluster

    print(f"# python bench/store.py --blocks {args.blocks} --devices {args.devices} "
          f"--repeat {args.repeat} --queries {args.queries}" + (" --fast" if args.fast else "")
          + (f" --gateway-cpu {args.gateway_cpu:g}" if args.gateway_cpu else ""))
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%S%z')}  {platform.machine()}, "
          f"{os.cpu_count()} cores, python {platform.python_version()}, load average "
          f"{os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="cairn-bench-store-") as d, \
            PostgresCluster(fast=args.fast) as pg:
        tmp = Path(d)
        with psycopg.connect(pg.url()) as c:
            row = c.execute("SHOW server_version").fetchone()
            server = str(row[0]) if row else "?"
        print(f"# PostgreSQL {server}, fsync {'off (--fast)' if args.fast else 'on'}",
              file=sys.stderr)
        n_db = iter(range(1_000_000))

        def pg_db(label: str) -> str:
            return pg.create_database(f"{label.replace('-', '_')}_{next(n_db)}")

        def sqlite_db(label: str) -> str:
            return str(tmp / f"{label}-{next(n_db)}.db")

        server_pid = pg.proc.pid if pg.proc is not None else None
        runs: dict[str, list[Run]] = {}
        with edges(tmp, args.devices, args.blocks) as fleet:
            one = [[fleet[0]]]
            thirds = [fleet[g::3] for g in range(3)]
            plan = [("one edge, SQLite", sqlite_db, one),
                    ("one edge, PostgreSQL", pg_db, one),
                    ("1 gateway, SQLite", sqlite_db, [fleet]),
                    ("1 gateway, PostgreSQL", pg_db, [fleet]),
                    ("3 gateways, PostgreSQL", pg_db, thirds)]
            for k in range(args.repeat):
                for m, (label, target, groups) in enumerate(plan):  # fresh replicas and store
                    r = collect(tmp, f"m{m}-run{k}", target, groups, server_pid, fleet,
                                args.blocks, args.gateway_cpu)
                    runs.setdefault(label, []).append(r)
                    print(f"  {label}: {r.samples:,} samples in {r.seconds:.2f} s, "
                          f"CPU gateway {r.gateway_cpu:.2f} s, server {r.server_cpu:.2f} s, "
                          f"edges {r.edge_cpu:.2f} s", file=sys.stderr)
        sq = Store(tmp / "queries.db")
        try:
            q_sqlite = queries(sq, args.queries)
        finally:
            sq.close()
        ps = Store(pg.create_database("queries"))
        try:
            q_pg = queries(ps, args.queries)
        finally:
            ps.close()
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")
    print_tables(table(runs, q_sqlite, q_pg, args), args.markdown)
    return 0


def best(runs: list[Run]) -> Run:
    """The median run by rate."""
    return sorted(runs, key=lambda r: r.rate)[len(runs) // 2]


def table(runs: dict[str, list[Run]], q_sqlite: Queries, q_pg: Queries,
          args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    e_sq, e_pg = best(runs["one edge, SQLite"]), best(runs["one edge, PostgreSQL"])
    rows += [
        Row(f"verified samples stored from one edge ({args.blocks:,} frames, TCP): SQLite",
            "samples/s", e_sq.rate, None, None, "info", "-"),
        Row("  the same: PostgreSQL (COPY)", "samples/s", e_pg.rate, None,
            e_pg.rate / e_sq.rate, "ratio to SQLite", "-"),
    ]
    g_sq, g_pg, g3 = (best(runs[k]) for k in ("1 gateway, SQLite", "1 gateway, PostgreSQL",
                                              "3 gateways, PostgreSQL"))
    n = args.devices
    rows += [
        Row(f"{n} edges x {args.blocks:,} frames, 1 gateway on SQLite", "samples/s", g_sq.rate,
            None, None, "info", "-"),
        Row("  1 gateway on PostgreSQL", "samples/s", g_pg.rate, None,
            g_pg.rate / g_sq.rate, "ratio to SQLite", "-"),
        Row("  3 gateways on one PostgreSQL, a third of the edges each"
            + (f" (each gateway {args.gateway_cpu:g} cores)" if args.gateway_cpu else ""),
            "samples/s",
            g3.rate, None, g3.rate / g_pg.rate, ">= 2x 1 gateway",
            "PASS" if g3.rate >= 2 * g_pg.rate else
            "MISS" + ("" if args.gateway_cpu else f" ({os.cpu_count()} cores)")),
    ]
    for label, r in (("1 gateway on SQLite", g_sq), ("1 gateway on PostgreSQL", g_pg),
                     ("3 gateways on PostgreSQL", g3)):
        busy = (r.gateway_cpu + r.server_cpu + r.edge_cpu) / r.seconds
        rows.append(Row(f"  CPU per sample: {label}'s gateway processes", "us",
                        r.gateway_cpu / r.samples * 1e6, None, None,
                        f"server {r.server_cpu / r.samples * 1e6:.1f}, edges "
                        f"{r.edge_cpu / r.samples * 1e6:.1f}; {busy:.2f} cores busy", "-"))
    gw_us = g3.gateway_cpu / g3.samples * 1e6  # CPU a sample costs its gateway
    srv_us = g3.server_cpu / g3.samples * 1e6
    per_gateway = 1e6 / gw_us  # one gateway alone on one core (its worker shares it)
    rows += [
        Row("  a core per gateway: 3 gateways (gateway CPU the bound)", "samples/s",
            3 * per_gateway, None, None, f"server needs {3 * per_gateway * srv_us / 1e6:.2f}"
            " cores", "-"),
    ]
    rows += [
        Row("store ingest, 10 streams x 24 h at 1 Hz (Store.ingest, no network): SQLite",
            "samples/s", q_sqlite.ingest_rate, None, None, "info", "-"),
        Row("  the same: PostgreSQL", "samples/s", q_pg.ingest_rate, None,
            q_pg.ingest_rate / q_sqlite.ingest_rate, "ratio to SQLite", "-"),
    ]
    for label, attr, call in (("24 h x 1 min, 10 streams", "day", "day_call"),
                              ("30 days x 1 h, 1,000 streams", "month", "month_call")):
        a, b = getattr(q_sqlite, attr), getattr(q_pg, attr)
        rows += [
            Row(f"rollup query {label}: SQLite p50", "ms", statistics.median(a), None, None,
                "info", "-"),
            Row("  SQLite p99", "ms", p(a, 0.99), None, None, "info", "-"),
            Row("  PostgreSQL p50", "ms", statistics.median(b), None,
                statistics.median(a) / statistics.median(b), "ratio: SQLite / PG", "-"),
            Row("  PostgreSQL p99", "ms", p(b, 0.99), None, p(a, 0.99) / p(b, 0.99),
                "ratio: SQLite / PG", "-"),
            Row("  one stream's query, p50: SQLite (then PostgreSQL)", "ms",
                statistics.median(getattr(q_sqlite, call)), None, None,
                f"PostgreSQL {statistics.median(getattr(q_pg, call)):.2f} ms", "-"),
        ]
    return rows


if __name__ == "__main__":
    sys.exit(main())

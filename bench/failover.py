"""Benchmark of failover among gateways sharing one PostgreSQL store: how soon a gateway's
devices are collected again after it is killed.

    python bench/failover.py [--leases 3,6] [--runs 5] [--edges 3] [--markdown]

For each lease period (``[store] lease_seconds``): a throwaway PostgreSQL server, a loopback
DHT testnet, three ``cairn gateway run`` processes on one database and N edges (``cairn edge
run``, embedded broker, dialled in to all three gateways), each board publishing a reading
every 0.2 s. Each run waits a random (seeded) part of a lease period, so that the kill falls
anywhere between two heartbeats, then kills (SIGKILL) the gateway holding the most leases and
measures the time
from the kill to the moment every one of its devices has a sample timed after the kill stored
(through another gateway), polling the store every 50 ms; then restarts it and waits until the
fleet is split again among the three. p50 and max over the runs, beside the lease period.

What the time is made of: the dead gateway's leases expire one lease period after its last
renewal (renewed every third of it, so 2/3 to 1 period after the kill), the survivors wake
just after that expiry and claim them, and their standby links (or the next round, every 1 s)
start reading from where the store stands; then the edge's next commit (0.3 s) is pulled.
No JS anchor: JS has no gateway; the anchor is the lease period beside each figure.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench_table import Row, print_tables
from cairn.brokers import free_port
from cairn_gateway.leases import holders
from cairn_gateway.pgcluster import PostgresCluster
from cairn_gateway.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests' process helpers
from tests.integration.edge.test_edge_mqtt import EdgeProcess
from tests.integration.gateway.test_gateway_collect import enroll
from tests.integration.gateway.test_reliability_leases import (
    GatewayProcess,
    Publisher,
    _record_key,
    newest,
    wait_for,
)


@contextlib.contextmanager
def testnet() -> Iterator[tuple[str, int]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cairn.cli", "dht", "testnet", "--nodes",
                             "8", "--port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("testnet ready"):
                break
        yield ("127.0.0.1", port)
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()


def runs_for(pg: PostgresCluster, dht: tuple[str, int], root: Path, lease: float, runs: int,
             edges_n: int) -> tuple[list[float], list[float]]:
    """Seconds from each kill to the victim's leases taken, and to its devices stored
    again."""
    url = pg.create_database(f"failover_{int(lease * 10)}")
    gws = [GatewayProcess(root / f"gw{i}", url, dht, lease) for i in range(3)]
    ports = [free_port() for _ in range(edges_n)]
    edges = [EdgeProcess(root / f"edge{i}", None, gateways=[g.id for g in gws],  # type: ignore[arg-type]
                         dht=dht, embedded=ports[i]) for i in range(edges_n)]
    names = [f"board-{i}" for i in range(edges_n)]
    started: list[Any] = []
    pubs: list[Publisher] = []
    store = Store(url)
    out: list[float] = []
    taken: list[float] = []
    try:
        for edge, name in zip(edges, names, strict=True):
            enroll(gws[0].config, edge, name)
        for g in gws:
            g.start()
            started.append(g)
        for edge in edges:
            edge.start()
            started.append(edge)
        pubs = [Publisher(n, p) for n, p in zip(names, ports, strict=True)]

        def split() -> bool:
            held = holders(store.conn)
            fresh = newest(store)
            return (len(set(held.values())) == 3 and len(held) == edges_n
                    and all(fresh.get(n, 0) > time.time() - 2 for n in names))

        rng = random.Random(int(lease * 1000))
        for run in range(runs):
            wait_for("the fleet split among three gateways", split, 180)
            # the kill at a moment independent of the heartbeats (the fleet splits right
            # after one; killing then would always be just after a renewal: the worst case)
            time.sleep(rng.uniform(0, lease))
            held = holders(store.conn)
            victim = max(gws, key=lambda g: sum(1 for h in held.values() if h == g.id))
            orphans = [n for n, e in zip(names, edges, strict=True)
                       if held.get(_record_key(e)) == victim.id]
            keys = [_record_key(e) for n, e in zip(names, edges, strict=True) if n in orphans]
            killed = time.time()
            victim.kill()
            took: float | None = None
            while not all(newest(store).get(n, 0) > killed for n in orphans):
                if took is None and all(holders(store.conn).get(k, victim.id) != victim.id
                                        for k in keys):
                    took = time.time() - killed
                time.sleep(0.05)
                if time.time() - killed > 120:
                    raise SystemExit(f"lease {lease:g} s, run {run}: never collected again")
            out.append(time.time() - killed)
            taken.append(took if took is not None else out[-1])
            print(f"lease {lease:g} s, run {run + 1}: {len(orphans)} device(s) collected again "
                  f"{out[-1]:.2f} s after the kill", file=sys.stderr, flush=True)
            victim.start()  # back, for the next run
    finally:
        for p in pubs:
            with contextlib.suppress(Exception):
                p.stop()
        for p in reversed(started):
            with contextlib.suppress(Exception):
                p.stop()
        store.close()
    return taken, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--leases", default="3,6", help="lease periods in seconds, comma-separated")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--edges", type=int, default=3)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="cairn-bench-failover-") as d, \
            PostgresCluster(fast=True) as pg, testnet() as dht:
        for lease in (float(x) for x in args.leases.split(",")):
            taken, got = runs_for(pg, dht, Path(d) / f"lease{lease:g}", lease, args.runs,
                                  args.edges)
            ms = lease * 1000
            for what, xs, bound in (("leases taken over", taken, ms),
                                    ("samples stored again", got, ms + 1000)):
                for stat, v in (("p50", statistics.median(xs)), ("max", max(xs))):
                    rows.append(Row(f"kill -9 to {what}, {stat} (lease {lease:g} s, "
                                    f"{len(xs)} runs)", "ms", v * 1000, None, None,
                                    f"<= {bound:,.0f}", "met" if v * 1000 <= bound else "missed"))
    print_tables(rows, args.markdown)


if __name__ == "__main__":
    main()

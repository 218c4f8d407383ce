"""PostgreSQL's ``Store.ingest`` against an earlier version of the engine, in the same run.

    python bench/store_ingest_ab.py [--against REV] [--rounds N] [--streams N] [--fast]
        [--markdown]

``gateway/cairn_gateway/store/postgres.py`` as it was at git revision REV (default ``main``) is
loaded beside this tree's, and both store 59 runs of 1,000 one-sample frames into one stream
through ``Store.ingest`` (what the collector's own pass and the ingest worker do), or with
``--streams N`` 19 minutes of N streams at 1 Hz through ``Store.ingest_many``, a minute of every
stream a transaction (what live push does), each on a fresh database of one throwaway cluster
(durable unless ``--fast``), interleaved, ``--rounds`` times each (median).
Client CPU is this process's; server CPU is every PostgreSQL process's, from /proc. The
figures of decision 0014 were taken ``--against 173c51e`` (before the ingest changes).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from bench_table import Row, print_tables
from cairn.frames import Frame, Sample
from cairn_gateway.pgcluster import PostgresCluster
from cairn_gateway.store import IngestItem
from cairn_gateway.store import postgres as this_engine
from store import cpu_tree

ROOT = Path(__file__).resolve().parent.parent
ENGINE = "gateway/cairn_gateway/store/postgres.py"
T0 = 1_764_000_000.0
RUNS = 60  # transactions of one stream a round (the first makes the partition: not timed)
MINUTES = 20  # transactions of many streams a round (likewise)


def engine_at(rev: str, where: Path) -> ModuleType:
    """The PostgreSQL engine module as it was at ``rev``."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{ENGINE}"], check=True,
                            capture_output=True, text=True).stdout
    path = where / "engine_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("engine_at_rev", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def frame(t: float) -> Frame:
    return Frame((Sample("b/t", "Cel", t, float(int(t) % 100)),))


def one(engine: ModuleType, url: str, server_pid: int, streams: int
        ) -> tuple[float, float, float]:
    """(samples/s, client us/sample, server us/sample) of one round: one stream in runs of
    1,000 blocks through ``ingest``, or (``streams`` > 1) a minute of every stream at 1 Hz a
    transaction through ``ingest_many``, as live push stores."""
    store = engine.PostgresStore(url)
    try:
        dev = store.device(b"d" * 32, "b", T0)
        sids = [store.stream(dev, f"b/t{j}", j.to_bytes(4, "big") * 8, "Cel")
                for j in range(streams)]
        if streams == 1:
            txs: list[list[IngestItem]] = [
                [IngestItem(sids[0], [(i, 0, frame(T0 + i)) for i in range(k, k + 1000)])]
                for k in range(0, RUNS * 1000, 1000)]
        else:
            txs = [[IngestItem(sid, [(i, 0, frame(T0 + i)) for i in range(k, k + 60)])
                    for sid in sids] for k in range(0, MINUTES * 60, 60)]
        store.ingest_many(txs[0])  # (the month's partition made)
        cpu, wall, server = time.process_time(), time.perf_counter(), cpu_tree(server_pid)
        for tx in txs[1:]:
            if streams == 1:
                store.ingest(tx[0].stream_id, tx[0].blocks)
            else:
                store.ingest_many(tx)
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        server = cpu_tree(server_pid) - server
    finally:
        store.close()
    n = sum(len(item.blocks) for tx in txs[1:] for item in tx)
    return n / wall, cpu / n * 1e6, server / n * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", default="main", help="git revision of the earlier engine")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--streams", type=int, default=1,
                    help="1: Store.ingest of runs of 1,000 blocks; more: ingest_many of a "
                         "minute of every stream a transaction")
    ap.add_argument("--fast", action="store_true", help="PostgreSQL without fsync")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    print(f"# python bench/store_ingest_ab.py --against {args.against} --rounds {args.rounds} "
          f"--streams {args.streams}" + (" --fast" if args.fast else ""))
    what = ("Store.ingest, runs of 1,000 one-sample frames" if args.streams == 1 else
            f"Store.ingest_many, a minute of {args.streams:,} streams at 1 Hz a transaction")
    got: dict[str, list[tuple[float, float, float]]] = {"before": [], "this tree": []}
    with tempfile.TemporaryDirectory(prefix="cairn-bench-ab-") as d, \
            PostgresCluster(fast=args.fast) as pg:
        engines = {"before": engine_at(args.against, Path(d)), "this tree": this_engine}
        assert pg.proc is not None
        for k in range(args.rounds):
            for m, (label, engine) in enumerate(engines.items()):
                got[label].append(one(engine, pg.create_database(f"ab_{k}_{m}"), pg.proc.pid,
                                      args.streams))
    rows = []
    for label, rounds in got.items():
        rate, client, server = (statistics.median(r[i] for r in rounds) for i in range(3))
        base = statistics.median(r[0] for r in got["before"])
        rows += [Row(f"{what}: {label} "
                     f"(fsync {'off' if args.fast else 'on'})", "samples/s", rate, None,
                     rate / base, "ratio to before", "-"),
                 Row(f"  CPU per sample, {label}: client (then server)", "ns", client * 1e3,
                     None, None, f"server {server * 1e3:,.0f} ns", "-")]
    print_tables(rows, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

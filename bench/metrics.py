"""What the gateway's /metrics and its retention pass cost with many streams: one scrape
(``GatewayMetrics.exposition``: every stream's latest value and last-sample time, read from the
store), a retention pass with nothing to prune (it runs every 5 minutes and reads each
replica's floor frame), one that prunes half of every replica's blocks (their data is small
beside the tree nodes here: the freed pages stay in the file under a quarter of it), and one
that prunes a tenth more (past a quarter free: one VACUUM, then incremental), with the
replicas file's size.

No JS anchor: hypercore has no retention across a fleet's logs and no Prometheus exposition.
The replicas are written here as the gateway's collector would hold them (one SharedDB, a log
per stream named by its key), without the network.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench_table import Row, print_tables

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cairn.crypto import derive_stream_key_pair, random_key_pair  # noqa: E402
from cairn.frames import Frame, Sample  # noqa: E402
from cairn.log import Log  # noqa: E402
from cairn_gateway.collect import Collector  # noqa: E402
from cairn_gateway.config import GatewayConfig  # noqa: E402
from cairn_gateway.metrics import GatewayMetrics  # noqa: E402
from cairn_gateway.retention import apply_retention, disk_usage  # noqa: E402
from cairn_gateway.roster import Roster  # noqa: E402
from cairn_gateway.store import Store  # noqa: E402

T0 = 1_764_000_000.0


def build(tmp: Path, devices: int, per_device: int, blocks: int) -> tuple[Store, Collector]:
    store = Store(tmp / "gw.db")
    collector = Collector(tmp / "gw", random_key_pair(), store)
    roster = Roster(store.conn)
    for d in range(devices):
        record_key = d.to_bytes(32, "big")
        roster.enroll(record_key, f"board-{d}", T0)
        dev = store.device(record_key, None, T0)
        for s in range(per_device):
            name = f"board-{d}/s{s}"
            kp = derive_stream_key_pair(record_key, name)
            frames = [Frame(tuple(Sample(name, "Cel", T0 + i * 60 + k, 20.0 + k)
                                  for k in range(10))) for i in range(blocks)]
            lg = Log.create_in(collector.replicas, kp.public_key.hex(), kp)
            lg.append([f.encode() for f in frames])
            sid = store.stream(dev, name, kp.public_key, "Cel")
            store.ingest(sid, [(i, 0, f) for i, f in enumerate(frames)])
    collector.replicas.raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return store, collector


def timed(fn: object, repeat: int) -> float:
    """Milliseconds of the best of ``repeat`` calls."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t)
    return best * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--streams-per-device", type=int, default=10)
    ap.add_argument("--blocks", type=int, default=60, help="frames of 10 samples per stream")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    n = args.devices * args.streams_per_device
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        store, collector = build(tmp, args.devices, args.streams_per_device, args.blocks)
        try:
            now = T0 + args.blocks * 60
            metrics = GatewayMetrics(store, disk=lambda: disk_usage(collector, store))
            scrape = timed(metrics.exposition, 5)
            size = len(metrics.exposition())
            nothing = GatewayConfig(tmp, tmp / "key", retention_days=3650)
            idle = timed(lambda: apply_retention(nothing, collector, store, metrics, now=now), 3)
            replicas = tmp / "gw" / "replicas.db"
            before = replicas.stat().st_size
            half = GatewayConfig(tmp, tmp / "key", retention_days=args.blocks * 30 / 86400)
            prune = timed(lambda: apply_retention(half, collector, store, metrics, now=now), 1)
            after = replicas.stat().st_size
            tenth = GatewayConfig(tmp, tmp / "key", retention_days=args.blocks * 24 / 86400)
            again = timed(lambda: apply_retention(tenth, collector, store, metrics, now=now), 1)
            last = replicas.stat().st_size
        finally:
            collector.close()
            store.close()
    rows = [
        Row(f"/metrics scrape, {n:,} streams", "ms", scrape, None, None, "-", "-"),
        Row("/metrics body", "KiB", size / 1024, None, None, "-", "-"),
        Row(f"retention pass, nothing to prune, {n:,} streams", "ms", idle, None, None,
            "every 5 min", "-"),
        Row("pass 1: prune half of every replica's blocks", "ms", prune, None, None, "-", "-"),
        Row("pass 2: a tenth more (free pages past 25%: VACUUM)", "ms", again, None, None,
            "-", "-"),
        Row("replicas.db before", "KiB", before / 1024, None, None, "-", "-"),
        Row("replicas.db after pass 1 (pages freed, file kept)", "KiB", after / 1024, None,
            None, "-", "-"),
        Row("replicas.db after pass 2", "KiB", last / 1024, None, None, "smaller",
            "ok" if last < before else "NOT SMALLER"),
    ]
    print_tables(rows, args.markdown)


if __name__ == "__main__":
    main()

"""``cairn gateway store migrate``: rows moved per second from an SQLite store into PostgreSQL
(a throwaway cluster, :mod:`cairn_gateway.pgcluster`, fast settings), by chunk size, beside
its floor: the same samples in ONE binary ``COPY`` with no checks, no progress and no resume.
Also the time of a second run on a finished target (the source's fingerprint and the
verification alone).

    .venv/bin/python bench/store_migrate.py [--samples 500000] [--streams 20]

No timed assertion anywhere: this prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import tempfile
import time
from pathlib import Path

from cairn.frames import Frame, Sample
from cairn_gateway.pgcluster import PostgresCluster
from cairn_gateway.store import IngestItem, SQLiteStore
from cairn_gateway.store.migrate import migrate
from cairn_gateway.store.postgres import PostgresStore

T0 = 1_764_000_000.0
PER_BLOCK = 10


def build(path: Path, samples: int, streams: int) -> int:
    """A store of ``streams`` number streams, ``samples`` samples in all (blocks of 10, one
    second apart), through the store's own ingest."""
    store = SQLiteStore(path)
    try:
        dev = store.device(b"b" * 32, "bench", T0)
        ids = [store.stream(dev, f"bench/s{i}", i.to_bytes(32, "big"), "Cel")
               for i in range(streams)]
        blocks = samples // (streams * PER_BLOCK)
        for start in range(0, blocks, 200):
            items = []
            for sid in ids:
                frames = [(b, 0, Frame(tuple(Sample(f"bench/s{sid}", "Cel",
                                                    T0 + (b * PER_BLOCK + k) * 1.0,
                                                    20.0 + (b + k) % 50 / 4)
                                             for k in range(PER_BLOCK))))
                          for b in range(start, min(start + 200, blocks))]
                items.append(IngestItem(sid, frames))
            store.ingest_many(items)
        return int(store.conn.execute("SELECT count(*) FROM samples").fetchone()[0])
    finally:
        store.close()


def raw_copy(path: Path, url: str) -> float:
    """Seconds for one binary COPY of every sample (the floor: no chunks, no checks)."""
    import psycopg

    store = PostgresStore(url)  # the schema
    try:
        with contextlib.closing(sqlite3.connect(path)) as src:
            store._ensure_months(src.execute("SELECT min(t), max(t) FROM samples").fetchone())
            rows = src.execute("SELECT stream_id, t, value, text, block, fork, k, kind "
                               "FROM samples ORDER BY stream_id, t, block, k")
            began = time.perf_counter()
            with psycopg.connect(url) as pg, pg.cursor() as c, c.copy(
                    "COPY samples (stream_id, t, value, text, block, fork, k, kind) FROM STDIN "
                    "(FORMAT BINARY)") as cp:
                cp.set_types(["int8", "float8", "float8", "text", "int8", "int8", "int8",
                              "int2"])
                for r in rows:
                    cp.write_row(r)
            return time.perf_counter() - began
    finally:
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=500_000)
    ap.add_argument("--streams", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, PostgresCluster(fast=True) as pg:
        db = Path(tmp) / "gw.db"
        began = time.perf_counter()
        n = build(db, args.samples, args.streams)
        print(f"built a store of {n:,} samples ({args.streams} streams) in "
              f"{time.perf_counter() - began:.1f} s")
        rows: list[tuple[str, float, float]] = []
        seconds = raw_copy(db, pg.create_database("floor"))
        rows.append(("one raw COPY of the samples (floor)", n / seconds, seconds))
        for chunk in (1_000, 10_000, 100_000):
            url = pg.create_database(f"chunk_{chunk}")
            report = migrate(db, url, chunk=chunk)
            assert report.ok, report.differ
            total = sum(c.source for c in report.counts)
            rows.append((f"store migrate, --chunk {chunk:,} (all tables, verified)",
                         total / report.seconds, report.seconds))
            if chunk == 10_000:
                again = migrate(db, url)
                rows.append(("store migrate again on the finished target (verify only)",
                             total / again.seconds, again.seconds))
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'rows/s':>12}  {'seconds':>8}")
    print(f"{'-' * width}  {'-' * 12}  {'-' * 8}")
    for name, rate, secs in rows:
        print(f"{name:<{width}}  {rate:>12,.0f}  {secs:>8.2f}")


if __name__ == "__main__":
    main()

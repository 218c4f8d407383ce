"""The PostgreSQL store's size and intake, measured on a real server, and the capacity figures
docs/postgresql.md derives from them.

Measured (on a throwaway cluster, :class:`cairn_gateway.pgcluster.PostgresCluster`, durable
settings unless ``--fast``):

1. **the store's ingest path**: ``--streams`` streams (10 a device) at 1 Hz for ``--seconds``
   seconds, one-sample frames as an edge makes them at 1 Hz, stored through
   ``PostgresStore.ingest_many`` (COPY into scratch tables, block claims, rollups, the sample
   rows) one minute of the whole fleet per transaction; samples/s. The frames are made in this
   process, which shares the machine's cores with the server.
2. **bytes on disk** after ``VACUUM ANALYZE``: per table (heap with its free-space and
   visibility maps, and its indexes), per sample: the month's samples partition, ``blocks`` (one
   row a block: at 1 Hz one a sample), the minute and hour rollups (per stream and bucket);
3. **one COPY stream**: the month's sample rows, read back with ``COPY ... TO STDOUT (FORMAT
   BINARY)`` (shifted one month on) and written into ``samples`` by one ``COPY ... FROM STDIN``
   on one connection: rows/s the server takes, and WAL bytes per row.

Derived (printed beside, marked ``derived``): a month's partition for 1,000 devices x 10 streams
x 1 Hz, what one device costs a year, how many devices one server of ``--disk-tb`` TB holds for a
year (by disk, and by intake at the measured ingest rate), and for fleets of 1,000 to 100,000
devices how many servers (Citus workers) that takes.

    .venv/bin/python bench/pg_sizes.py [--streams 1000] [--seconds 1200] [--disk-tb 8]
        [--fast] [--markdown]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import struct
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cairn.frames import Frame, Sample  # noqa: E402
from cairn_gateway.pgcluster import PostgresCluster  # noqa: E402
from cairn_gateway.store import IngestItem, Store  # noqa: E402

T0 = datetime(2026, 11, 1, tzinfo=UTC).timestamp()  # a 30-day month
MONTH = 30 * 86400  # seconds in that month: the copy is shifted by it into December
PARTITION = "samples_y2026m11"
NEXT = "samples_y2026m12"
STREAMS_PER_DEVICE = 10
HZ = 1.0
FLEETS = (1_000, 10_000, 100_000)


@dataclass
class Line:
    measure: str
    value: float
    unit: str
    how: str  # "measured" or "derived"


def fmt(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:,.1f}"
    return f"{v:,.2f}"


def table(lines: list[Line], markdown: bool) -> str:
    if markdown:
        out = ["| measure | value | unit | |", "|---|--:|---|---|"]
        out += [f"| {x.measure} | {fmt(x.value)} | {x.unit} | {x.how} |" for x in lines]
        return "\n".join(out)
    w = max(len(x.measure) for x in lines)
    v = max(len(fmt(x.value)) for x in lines)
    u = max(len(x.unit) for x in lines)
    return "\n".join(f"{x.measure.ljust(w)}  {fmt(x.value).rjust(v)}  {x.unit.ljust(u)}  {x.how}"
                     for x in lines)


def fill(store: Store, streams: int, seconds: int, seed: int) -> tuple[int, float]:
    """``streams`` streams at 1 Hz for ``seconds`` through the store's ingest path, a minute of
    the whole fleet per transaction; (samples stored, seconds taken by ingest_many)."""
    rng = random.Random(seed)
    sids: list[int] = []
    for d in range(math.ceil(streams / STREAMS_PER_DEVICE)):
        did = store.device(rng.randbytes(32), f"board-{d}", T0)
        for s in range(STREAMS_PER_DEVICE):
            if len(sids) < streams:
                sids.append(store.stream(did, f"board-{d}/s{s}", rng.randbytes(32), "Cel"))
    level = {sid: rng.uniform(-10, 30) for sid in sids}
    stored, spent = 0, 0.0
    for start in range(0, seconds, 60):
        stop = min(seconds, start + 60)
        items = []
        for sid in sids:
            blocks = []
            for i in range(start, stop):
                level[sid] += rng.gauss(0, 0.05)
                t = T0 + i + rng.random() * 0.01  # a board's clock: not whole seconds
                blocks.append((i, 0, Frame((Sample("t", "Cel", t, round(level[sid], 2)),))))
            items.append(IngestItem(sid, blocks, None, "Cel"))
        began = time.perf_counter()
        store.ingest_many(items)
        spent += time.perf_counter() - began
        stored += len(sids) * (stop - start)
    return stored, spent


def sizes(conn: object, name: str) -> tuple[int, int, int]:
    """(rows, table bytes, index bytes) of one table."""
    row = conn.execute(  # type: ignore[attr-defined]
        f"SELECT (SELECT count(*) FROM {name}), pg_table_size('{name}'), "
        f"pg_indexes_size('{name}')").fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def columnar(conn: object, segment: int = 1000) -> float:
    """Bytes a sample of the month's samples laid out as a columnstore lays them out: per
    stream, in time order, segments of ``segment`` rows, each column apart (times as
    delta-of-delta microseconds, values XORed with the one before, block indexes as deltas),
    each column of a segment compressed with zlib. A rough stand-in for TimescaleDB's
    compression (which uses codecs made for each type), not a measure of it."""
    rows = conn.execute(  # type: ignore[attr-defined]
        f"SELECT stream_id, t, value, block FROM {PARTITION} "
        "ORDER BY stream_id, t").fetchall()
    by_stream: dict[int, list[tuple[int, float, float, int]]] = {}
    for r in rows:
        by_stream.setdefault(r[0], []).append(r)
    segments = [its[i:i + segment] for its in by_stream.values()
                for i in range(0, len(its), segment)]
    total = 0
    for seg in segments:
        us = [round(r[1] * 1e6) for r in seg]
        dd = [us[0]] + [b - a for a, b in pairwise(us)]
        dd = [dd[0]] + [b - a for a, b in pairwise(dd)]
        bits = [struct.unpack("<q", struct.pack("<d", r[2]))[0] for r in seg]
        xored = [bits[0]] + [a ^ b for a, b in pairwise(bits)]
        blocks = [seg[0][3]] + [b[3] - a[3] for a, b in pairwise(seg)]
        for col in (dd, xored, blocks):
            total += len(zlib.compress(struct.pack(f"<{len(col)}q", *col), 9))
        total += 16  # the segment's stream id and row count
    return total / len(rows)


def copy_rate(url: str) -> tuple[int, float, int]:
    """The month's sample rows copied one month on by one COPY stream: (rows, seconds, WAL
    bytes)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        buf = bytearray()
        with c.cursor() as cur, cur.copy(
                f"COPY (SELECT stream_id, t + {MONTH}, value, text, block, fork, k, kind "
                f"FROM {PARTITION}) TO STDOUT (FORMAT BINARY)") as cp:
            for chunk in cp:
                buf += chunk
        start = float(T0 + MONTH)
        c.execute(f"CREATE TABLE {NEXT} PARTITION OF samples "
                  f"FOR VALUES FROM ({start!r}) TO ({start + 31 * 86400!r})")
        lsn0 = c.execute("SELECT pg_current_wal_lsn()").fetchone()
        began = time.perf_counter()
        with c.cursor() as cur, c.transaction(), cur.copy(
                "COPY samples (stream_id, t, value, text, block, fork, k, kind) "
                "FROM STDIN (FORMAT BINARY)") as cp:
            view = memoryview(buf)
            for i in range(0, len(view), 1 << 20):
                cp.write(view[i:i + (1 << 20)])
        spent = time.perf_counter() - began
        row = c.execute("SELECT pg_current_wal_lsn() - %s::pg_lsn, (SELECT count(*) FROM "
                        f"{NEXT})", (str(lsn0[0]) if lsn0 else "0/0",)).fetchone()
        assert row is not None
        return int(row[1]), spent, int(row[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=1000, help="streams (10 a device)")
    ap.add_argument("--seconds", type=int, default=1200, help="seconds of 1 Hz per stream")
    ap.add_argument("--disk-tb", type=float, default=8.0,
                    help="usable disk of one database server, TB (10^12 bytes)")
    ap.add_argument("--fast", action="store_true",
                    help="fsync and full_page_writes off (default: durable settings)")
    ap.add_argument("--seed", type=int, default=22)
    ap.add_argument("--markdown", action="store_true", help="print the tables in Markdown too")
    args = ap.parse_args(argv)

    with PostgresCluster(fast=args.fast) as pg:
        url = pg.create_database("sizes")
        store = Store(url)
        try:
            stored, spent = fill(store, args.streams, args.seconds, args.seed)
            conn = store.conn
            conn.execute("VACUUM ANALYZE")
            got = {name: sizes(conn, name) for name in
                   (PARTITION, "blocks", "rollup_minute", "rollup_hour")}
            used = store.used_bytes()
            packed_columns = columnar(conn)
            conn.execute(f"REINDEX TABLE {PARTITION}")
            packed = sizes(conn, PARTITION)[2]
        finally:
            store.close()
        rows, copy_s, wal = copy_rate(url)
        version = _server_version(url)
    with tempfile.TemporaryDirectory(prefix="cairn-sizes-") as tmp:
        lite = Store(Path(tmp) / "gw.db")
        try:
            lite_stored, lite_spent = fill(lite, args.streams, args.seconds, args.seed)
            lite_used = lite.used_bytes()
        finally:
            lite.close()

    n, tb, ib = got[PARTITION]
    per_sample = (tb + ib) / n
    bn, btb, bib = got["blocks"]
    per_block = (btb + bib) / bn
    mn, mtb, mib = got["rollup_minute"]
    per_minute_row = (mtb + mib) / mn
    hn, htb, hib = got["rollup_hour"]
    per_hour_row = (htb + hib) / hn
    ingest_rate = stored / spent
    copy_per_s = rows / copy_s

    measured = [
        Line(f"store ingest path, {args.streams} streams x {args.seconds} s at 1 Hz "
             "(one-sample frames)", ingest_rate, "samples/s", "measured"),
        Line("one COPY stream into samples (binary, one connection)", copy_per_s, "rows/s",
             "measured"),
        Line("  WAL written by that COPY", wal / rows, "B/row", "measured"),
        Line(f"samples partition ({n:,} rows): table", tb / n, "B/sample", "measured"),
        Line("  its primary key index", ib / n, "B/sample", "measured"),
        Line("  table + index", per_sample, "B/sample", "measured"),
        Line(f"blocks ({bn:,} rows, one a sample at 1 Hz): table + index", per_block, "B/block",
             "measured"),
        Line(f"rollup_minute ({mn:,} rows): table + index", per_minute_row, "B/row", "measured"),
        Line(f"rollup_hour ({hn:,} rows): table + index", per_hour_row, "B/row", "measured"),
        Line("  its primary key index rebuilt (REINDEX) once the month is closed", packed / n,
             "B/sample", "measured"),
        Line("  its rows as columns per stream, zlib (a stand-in for a columnstore)",
             packed_columns, "B/sample", "measured"),
        Line("whole database (every table and index) per sample", used / stored, "B/sample",
             "measured"),
        Line("the same data in SQLite (gw.db, pages in use) per sample", lite_used / lite_stored,
             "B/sample", "measured"),
        Line("SQLite store ingest path, the same data", lite_stored / lite_spent, "samples/s",
             "measured"),
    ]

    streams_1k = 1000 * STREAMS_PER_DEVICE
    month_samples = streams_1k * HZ * MONTH
    month_partition = month_samples * per_sample
    month_all = (month_samples * (per_sample + per_block)  # a block a sample at 1 Hz
                 + streams_1k * (MONTH / 60) * per_minute_row
                 + streams_1k * (MONTH / 3600) * per_hour_row)
    device_year = month_all / 1000 * 365 / 30
    # retention_days = 30: a month of samples and minute rollups, a year of hour rollups (the
    # minute rows' size) and of blocks (retention keeps them)
    year = 365 * 86400
    kept = STREAMS_PER_DEVICE * (MONTH * HZ * per_sample + MONTH / 60 * per_minute_row
                                 + year / 3600 * per_minute_row + year * HZ * per_block)
    disk = args.disk_tb * 1e12
    by_disk = disk / device_year
    by_ingest = ingest_rate / (STREAMS_PER_DEVICE * HZ)
    by_copy = copy_per_s / (STREAMS_PER_DEVICE * HZ)
    per_server = min(by_disk, by_ingest)
    derived = [
        Line("1,000 devices x 10 streams x 1 Hz: samples a month (30 days)", month_samples / 1e9,
             "billion", "derived"),
        Line("  that month's samples partition (table + index)", month_partition / 1e12, "TB",
             "derived"),
        Line("  the month with its blocks and rollups", month_all / 1e12, "TB", "derived"),
        Line("one device (10 streams at 1 Hz) for a year", device_year / 1e9, "GB", "derived"),
        Line(f"devices one server holds for a year, by disk ({args.disk_tb:g} TB)", by_disk,
             "devices", "derived"),
        Line("one device for a year with retention_days = 30 (blocks and hour rollups kept)",
             kept / 1e9, "GB", "derived"),
        Line(f"  devices one server holds so ({args.disk_tb:g} TB)", disk / kept, "devices",
             "derived"),
        Line("devices one server takes, by the ingest path's rate", by_ingest, "devices",
             "derived"),
        Line("devices one server takes, by one COPY stream's rate", by_copy, "devices",
             "derived"),
    ]
    fleets = []
    for fleet in FLEETS:
        need = math.ceil(fleet / per_server)
        fleet_tb = fleet * device_year / 1e12
        fleets.append(Line(f"fleet of {fleet:,} devices for a year: {fleet_tb:,.0f} TB, "
                           f"{fleet * STREAMS_PER_DEVICE * HZ:,.0f} samples/s: servers",
                           need, "servers", "derived"))

    load = os.getloadavg()
    print(f"PostgreSQL {version}, {'fast (fsync off)' if args.fast else 'durable (fsync on)'}; "
          f"{os.cpu_count()} cores shared with the client; load average {load[0]:.1f} at the end")
    print()
    print(table(measured, False))
    print()
    print(table(derived + fleets, False))
    if args.markdown:
        print()
        print(table(measured, True))
        print()
        print(table(derived + fleets, True))
    return 0


def _server_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as c:
        row = c.execute("SHOW server_version").fetchone()
        return str(row[0]).split()[0] if row else "?"


if __name__ == "__main__":
    raise SystemExit(main())

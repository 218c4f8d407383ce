"""Benchmark of the gateway (what exists of it: the sample store).

    python bench/gateway.py [--markdown]

1. store ingest: 24 h of 1 Hz samples for 10 streams (864,000 samples in one-sample frames, as
   an edge makes them at 1 Hz), stored through `Store.ingest` in runs of 1,000 blocks, with the
   minute and hour rollups kept at ingest; samples/s. Not the end-to-end figure of issue 8
   (download and verification from an edge come with the downloader): info only.
2. rollup query: 24 h x 1 min buckets for the 10 streams (14,400 buckets), warm, median of 5;
   target <= 10 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_table import Row, render, render_markdown
from cairn.frames import Frame, Sample
from cairn_gateway.store import Store

T0 = 1_764_000_000.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--markdown", action="store_true")
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
    rows = [
        Row("store ingest, 10 streams x 24 h at 1 Hz (no network, no verification)",
            "samples/s", rate, None, None, "info", "-"),
        Row("rollup query, 24 h x 1 min, 10 streams (warm, median of 5)", "ms", q, None, None,
            "<= 10 ms", "PASS" if q <= 10 else "MISS"),
    ]
    print(render(rows))
    if args.markdown:
        print()
        print(render_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

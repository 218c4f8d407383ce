"""Benchmark of the signed log against JS hypercore 11, both measured in the same run.

    python bench/log.py [--blocks N] [--single-blocks M] [--json]

Runs Cairn's :class:`cairn.log.Log` and JS ``hypercore`` (``node bench/js/log_anchor.js``, with
the npm packages in ``tests/interop/node_modules``) on the same workload: N blocks (default
100,000) of 100 bytes of seeded data, the same bytes on both sides. Prints a table of

1. appends, one awaited durable call per block (the first M blocks, default 20,000);
2. appends in batches of 1,000;
3. a sequential read of every block (after reopening);
4. a fresh replica verifying 1,000 consecutive blocks from the middle with their proofs
   (decode + verify + store; the proofs are made beforehand);
5. bytes on disk per block after closing (SQLite file with its -wal/-shm; JS's whole directory);

with the ratio (Cairn/JS for rates, JS/Cairn for sizes: above 1 means Cairn is better), the
target from the issue and a verdict. Absolute numbers on these machines are noisy; the ratio is
what to compare. The exit code is 0 whether or not a target is met.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
try:
    import cairn  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT / "core"))

from bench_table import Row, render  # noqa: E402
from cairn.crypto import key_pair  # noqa: E402
from cairn.log import Log  # noqa: E402
from cairn.messages import (  # noqa: E402
    Request,
    RequestBlock,
    RequestUpgrade,
    decode_data,
    encode_data,
)
from cairn.storage import SyncMode  # noqa: E402

JS_SCRIPT = ROOT / "bench" / "js" / "log_anchor.js"
INTEROP = ROOT / "tests" / "interop"
BATCH = 1000
VERIFY_TARGET = 50_000.0


def make_blocks(n: int, size: int, seed: int) -> list[bytes]:
    """Block i = bytes [i*size, (i+1)*size) of SHA-256(seed u64le || k u64le), k = 0, 1, ...

    log_anchor.js makes the same bytes.
    """
    total = n * size
    prefix = seed.to_bytes(8, "little")
    sha = hashlib.sha256
    stream = b"".join(sha(prefix + k.to_bytes(8, "little")).digest()
                      for k in range((total + 31) // 32))
    return [stream[i * size:(i + 1) * size] for i in range(n)]


def sqlite_bytes(path: Path) -> int:
    """The log file plus its -wal and -shm, if they are still there."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"))
               if p.exists())


def seed32(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


# -- Cairn -----------------------------------------------------------------------------------------


def cairn_single(path: Path, blocks: list[bytes], sync: SyncMode) -> tuple[float, int]:
    """(entries/s, bytes on disk) for one append call (one signature, one commit) per block."""
    log = Log.create(path, key_pair(seed32(f"single-{sync}")), sync=sync)
    append = log.append
    t = time.perf_counter()
    for b in blocks:
        append([b])
    elapsed = time.perf_counter() - t
    log.close()
    return len(blocks) / elapsed, sqlite_bytes(path)


def cairn_batched(path: Path, blocks: list[bytes]) -> tuple[float, int]:
    log = Log.create(path, key_pair(seed32("batched")))
    t = time.perf_counter()
    for i in range(0, len(blocks), BATCH):
        log.append(blocks[i:i + BATCH])
    elapsed = time.perf_counter() - t
    log.close()
    return len(blocks) / elapsed, sqlite_bytes(path)


def cairn_get(path: Path, n: int, size: int) -> float:
    with Log.open(path) as log:
        get = log.get
        t = time.perf_counter()
        for i in range(n):
            if len(get(i)) != size:
                raise RuntimeError(f"block {i} has the wrong size")
        elapsed = time.perf_counter() - t
    return n / elapsed


def cairn_verify(writer_path: Path, tmp: Path, count: int) -> tuple[float, float]:
    """Blocks/s for a fresh replica verifying ``count`` consecutive blocks from the middle.

    The proofs (with the ``nodes`` hint the replica would send) are made on a dry-run replica.
    Two replicas in the same state then time decode_data(encode_data(p)) and verification:
    one with the whole range in one transaction (``verify_and_apply_many``, the target row),
    one with a transaction per proof (``verify_and_apply``, for information).
    """
    with Log.open(writer_path) as writer:
        n = writer.length
        first = n // 2 - count // 2
        upgrade = writer.proof(Request(id=1, block=RequestBlock(0, 0),
                                       upgrade=RequestUpgrade(0, n), manifest=True))
        dry = Log.replica(tmp / "replica-dry.db", writer.key)
        rep = Log.replica(tmp / "replica.db", writer.key)
        each = Log.replica(tmp / "replica-each.db", writer.key)
        try:
            for lg in (dry, rep, each):
                lg.verify_and_apply(upgrade)
            wires: list[bytes] = []
            for i in range(first, first + count):
                p = writer.proof(Request(id=2, block=RequestBlock(i, dry.missing_nodes(2 * i))))
                dry.verify_and_apply(p)
                wires.append(encode_data(p))
            t = time.perf_counter()
            rep.verify_and_apply_many(decode_data(w) for w in wires)
            range_elapsed = time.perf_counter() - t
            apply = each.verify_and_apply
            t = time.perf_counter()
            for w in wires:
                apply(decode_data(w))
            each_elapsed = time.perf_counter() - t
            for lg in (rep, each):
                if not all(lg.has(i) for i in range(first, first + count)):
                    raise RuntimeError("the replica did not store every verified block")
        finally:
            dry.close()
            rep.close()
            each.close()
    return count / range_elapsed, count / each_elapsed


def run_cairn(tmp: Path, blocks: list[bytes], single_n: int, size: int,
              verify_range: int) -> dict[str, float]:
    res: dict[str, float] = {}
    res["single_rate"], res["single_disk"] = cairn_single(
        tmp / "single.db", blocks[:single_n], "normal")
    res["single_full_rate"], res["single_full_disk"] = cairn_single(
        tmp / "single-full.db", blocks[:single_n], "full")
    batched = tmp / "batched.db"
    res["batch_rate"], res["batch_disk"] = cairn_batched(batched, blocks)
    res["get_rate"] = cairn_get(batched, len(blocks), size)
    if verify_range and len(blocks) >= verify_range:
        res["verify_rate"], res["verify_each_rate"] = cairn_verify(batched, tmp, verify_range)
    return res


# -- JS --------------------------------------------------------------------------------------------


def node_version() -> str | None:
    try:
        out = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def run_js(tmp: Path, n: int, single_n: int, size: int, seed: int,
           verify_range: int) -> dict[str, Any]:
    cmd = ["node", str(JS_SCRIPT), str(tmp), str(n), str(single_n), str(size), str(seed),
           str(verify_range)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=INTEROP, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# -- the table -------------------------------------------------------------------------------------


def rate_row(measure: str, unit: str, cairn: float | None, js: float | None,
             need: float | None) -> Row:
    """A rate (higher is better): ratio Cairn/JS, met when the ratio is at least ``need``."""
    ratio = cairn / js if cairn is not None and js else None
    if need is None:
        return Row(measure, unit, cairn, js, ratio, "info", "-")
    target = f">= {need:g}x JS" if need != 1 else ">= JS"
    verdict = "n/a" if ratio is None else ("PASS" if ratio >= need else "MISS")
    return Row(measure, unit, cairn, js, ratio, target, verdict)


def size_row(measure: str, cairn: float | None, js: float | None, need: bool) -> Row:
    """A size (lower is better): ratio JS/Cairn, met when Cairn is no bigger than JS."""
    ratio = js / cairn if cairn and js is not None else None
    if not need:
        return Row(measure, "B/block", cairn, js, ratio, "info", "-")
    verdict = "n/a" if ratio is None else ("PASS" if ratio >= 1 else "MISS")
    return Row(measure, "B/block", cairn, js, ratio, "<= JS", verdict)


def build_rows(c: dict[str, float], js: dict[str, Any] | None, n: int, single_n: int,
               verify_range: int) -> list[Row]:
    def j(key: str) -> float | None:
        v = js.get(key) if js else None
        return float(v) if isinstance(v, (int, float)) else None

    rows = [
        rate_row(f"append, 1 awaited call/block ({single_n:,} blocks)", "entries/s",
                 c["single_rate"], j("single_rate"), 2),
        rate_row(f"  same, Cairn sync=full ({single_n:,} blocks)", "entries/s",
                 c["single_full_rate"], j("single_rate"), None),
        rate_row(f"append, batches of {BATCH:,} ({n:,} blocks)", "entries/s",
                 c["batch_rate"], j("batch_rate"), 2),
        rate_row(f"sequential get ({n:,} blocks)", "entries/s", c["get_rate"], j("get_rate"), 1),
    ]
    if "verify_rate" in c:
        v = c["verify_rate"]
        jv = j("verify_rate")
        rows.append(Row(f"verify {verify_range:,}-block range with proofs", "blocks/s", v, jv,
                        v / jv if jv else None, f">= {VERIFY_TARGET:,.0f}/s",
                        "PASS" if v >= VERIFY_TARGET else "MISS"))
        ve = c["verify_each_rate"]
        rows.append(Row("  same, one transaction per proof", "blocks/s", ve, jv,
                        ve / jv if jv else None, "info", "-"))
    js_batch_disk = j("batch_disk")
    js_single_disk = j("single_disk")
    rows += [
        size_row(f"disk, batched log ({n:,} blocks)", c["batch_disk"] / n,
                 js_batch_disk / n if js_batch_disk is not None else None, True),
        size_row(f"disk, one-by-one log ({single_n:,} blocks)", c["single_disk"] / single_n,
                 js_single_disk / single_n if js_single_disk is not None else None, False),
    ]
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--blocks", type=int, default=100_000, help="blocks in the batched log")
    ap.add_argument("--single-blocks", type=int, default=20_000,
                    help="blocks appended one call at a time (JS takes ~4 s per 20,000)")
    ap.add_argument("--block-size", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--verify-range", type=int, default=1000,
                    help="consecutive blocks a fresh replica verifies (0 to skip)")
    ap.add_argument("--no-js", action="store_true", help="measure Cairn only")
    ap.add_argument("--dir", type=Path, default=None,
                    help="where to make the temporary directories (default: the system's)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead")
    args = ap.parse_args(argv)
    n, single_n, size = args.blocks, min(args.single_blocks, args.blocks), args.block_size
    if n < 1 or single_n < 1 or size < 1:
        ap.error("--blocks, --single-blocks and --block-size must be positive")

    node = None if args.no_js else node_version()
    meta: dict[str, Any] = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "blocks": n, "single_blocks": single_n, "block_size": size, "seed": args.seed,
        "batch": BATCH, "verify_range": args.verify_range,
        "python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "node": node,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
    }
    if not args.json:
        print(f"# {meta['command']}")
        print(f"# {meta['date']}  {meta['machine']}")
        print(f"# N={n:,} blocks of {size} B (seed {args.seed}), single appends: {single_n:,}, "
              f"batch {BATCH:,}, verify range {args.verify_range:,}")
        print(f"# python {meta['python']}, sqlite {meta['sqlite']}, node {node or 'not run'}",
              end="", flush=True)

    blocks = make_blocks(n, size, args.seed)
    with tempfile.TemporaryDirectory(prefix="cairn-bench-", dir=args.dir) as d:
        tmp = Path(d)
        (tmp / "cairn").mkdir()
        (tmp / "js").mkdir()
        cairn_res = run_cairn(tmp / "cairn", blocks, single_n, size, args.verify_range)
        js_res = None
        if node is not None:
            js_res = run_js(tmp / "js", n, single_n, size, args.seed, args.verify_range)
            meta["hypercore"] = js_res.get("hypercore")
    if not args.json:
        print(f", hypercore {meta.get('hypercore') or 'not run'}")
        print()

    rows = build_rows(cairn_res, js_res, n, single_n, args.verify_range)
    if args.json:
        json.dump({**meta, "rows": [asdict(r) for r in rows], "cairn": cairn_res, "js": js_res},
                  sys.stdout, indent=2)
        print()
        return 0
    print(render(rows))
    missed = [r.measure.strip() for r in rows if r.verdict == "MISS"]
    print()
    if missed:
        print(f"verdict: {len(missed)} target(s) MISSED: " + "; ".join(missed))
    else:
        print("verdict: every target met")
    return 0


if __name__ == "__main__":
    sys.exit(main())

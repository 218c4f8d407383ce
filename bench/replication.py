"""Benchmark of replication: JS hypercore <-> JS hypercore, Cairn <-> Cairn and the mixed pairs,
all in the same run, over TCP on 127.0.0.1.

    python bench/replication.py [--blocks 100000] [--window 1000] [--no-pair] [--json]

The workload is N blocks (default 100,000) of 100 bytes of seeded data, the same bytes on every
writer (block i = bytes [100 i, 100 i + 100) of SHA-256(seed u64le || k u64le), k = 0, 1, ...).
For the time window a second Cairn log holds N Cairn frames, block i =
``Frame([Sample("t", "Cel", T0 + i, float(i))]).encode()`` (20 to 26 bytes).

Every pair is two processes: the writers serve from their own process (JS:
``node bench/js/replication_anchor.js serve``; Cairn: this script in ``--serve-worker`` mode,
:func:`cairn.replication.net.serve`) and every reader is fresh (an empty replica or core). The
readers are ``node bench/js/replication_anchor.js read`` for JS and
:func:`cairn.replication.net.download` in this process for Cairn. A time is from before the TCP
connect to the last block verified and stored; every download is checked afterwards against the
data (SHA-256 of the blocks).

Measures:

1. full download (blocks/s): JS <- JS, Cairn <- Cairn, Cairn <- JS writer, JS <- Cairn writer;
2. a sparse window of 1,000 blocks from the middle, [N/2 - 500, N/2 + 500), by index (ms);
3. the same window by time (Cairn: ``download(since=, until_time=)``, the server seeks and proves
   both ends; JS has no time seek, so its figure is the window by index from 2).

The measures compared with the JS anchor run in turns, run k of each before run k + 1 of any
(JS <- JS, JS <- Cairn, Cairn <- JS; likewise their windows), so that no pair gets the machine's
quieter minutes: timed one pair after the other, the order alone moved JS <- Cairn between 0.82x
and 1.28x of JS <- JS on the same machine (decision 0005).

The ratio column is how many times better the Cairn side is (rates: Cairn / JS; times: JS /
Cairn). Absolute numbers on these machines are noisy; the ratio within one run is what to compare.
The exit code is 0 whether or not a target is met, 1 if a measurement failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import inspect
import json
import os
import platform
import resource
import select
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
try:
    import cairn  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT / "core"))

from bench_table import Row, print_tables  # noqa: E402
from cairn.crypto import key_pair, random_key_pair  # noqa: E402
from cairn.frames import Frame, Sample  # noqa: E402
from cairn.log import Log  # noqa: E402
from cairn.replication.net import DownloadResult, download, serve  # noqa: E402

JS_SCRIPT = ROOT / "bench" / "js" / "replication_anchor.js"
INTEROP = ROOT / "tests" / "interop"
BATCH = 1000
T0 = 1_700_000_000.0  # time of frame 0 (seconds); frame i is at T0 + i
HOST = "127.0.0.1"
START_TIMEOUT = 120.0  # a writer building its log and starting to serve
FULL_TIMEOUT = 600.0  # one full download
WINDOW_TIMEOUT = 120.0  # one window download

FULL_NEED = 10.0  # Cairn <- Cairn full download >= 10x JS <- JS
WINDOW_NEED = 10.0  # window time <= 1/10 of JS's
MIXED_NEED = 1.0  # each mixed pair no slower than JS <- JS

HAS_TIME_WINDOW = {"since", "until_time"} <= set(inspect.signature(download).parameters)


# -- data ------------------------------------------------------------------------------------------


def make_blocks(n: int, size: int, seed: int) -> list[bytes]:
    """Block i = bytes [i*size, (i+1)*size) of SHA-256(seed u64le || k u64le), k = 0, 1, ...

    replication_anchor.js (and bench/log.py) make the same bytes.
    """
    total = n * size
    prefix = seed.to_bytes(8, "little")
    sha = hashlib.sha256
    stream = b"".join(sha(prefix + k.to_bytes(8, "little")).digest()
                      for k in range((total + 31) // 32))
    return [stream[i * size:(i + 1) * size] for i in range(n)]


def make_frames(n: int) -> list[bytes]:
    return [Frame((Sample("t", "Cel", T0 + i, float(i)),)).encode() for i in range(n)]


def seed32(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def digest(blocks: Iterator[bytes] | list[bytes]) -> str:
    h = hashlib.sha256()
    for b in blocks:
        h.update(b)
    return h.hexdigest()


def build_log(path: Path, label: str, blocks: list[bytes]) -> bytes:
    """A Cairn writer log with these blocks (appended in batches); its key."""
    with Log.create(path, key_pair(seed32(label))) as lg:
        for i in range(0, len(blocks), BATCH):
            lg.append(blocks[i:i + BATCH])
        return lg.key


# -- processes -------------------------------------------------------------------------------------


class BenchError(RuntimeError):
    """A measurement could not be made (a crash, a timeout, wrong data)."""


def read_json_line(proc: subprocess.Popen[str], timeout: float, what: str) -> dict[str, Any]:
    """The next line of ``proc``'s stdout as a JSON object, within ``timeout`` seconds."""
    out = proc.stdout
    assert out is not None
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"{what}: no answer within {timeout:.0f} s")
        ready, _, _ = select.select([out], [], [], left)
        if not ready:
            continue
        line = out.readline()
        if not line:
            err = proc.stderr.read() if proc.stderr is not None else ""
            raise BenchError(f"{what} exited ({proc.poll()}) before answering:\n{err[-4000:]}")
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue  # a library's stray log line
        if isinstance(value, dict):
            return value


@contextlib.contextmanager
def server_process(cmd: list[str], what: str, cwd: Path | None = None
                   ) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Start a serving process, yield (its first JSON line, a dict that receives its last one)."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    final: dict[str, Any] = {}
    try:
        info = read_json_line(proc, START_TIMEOUT, what)
        yield info, final
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.write("quit\n")
            proc.stdin.close()
        with contextlib.suppress(BenchError):
            final.update(read_json_line(proc, 10, what))
    finally:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()


def node_version() -> str | None:
    try:
        out = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True,
                             timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def run_node(args: list[str], timeout: float, what: str) -> dict[str, Any]:
    cmd = ["node", str(JS_SCRIPT), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=INTEROP, check=False,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{what}: timed out after {timeout:.0f} s ({shlex.join(cmd)})") from exc
    if proc.returncode != 0:
        raise BenchError(f"{what}: {shlex.join(cmd)} failed ({proc.returncode}):\n"
                         f"{proc.stderr[-4000:]}")
    for line in reversed(proc.stdout.splitlines()):
        with contextlib.suppress(json.JSONDecodeError):
            value = json.loads(line)
            if isinstance(value, dict):
                return value
    raise BenchError(f"{what}: no JSON in the output of {shlex.join(cmd)}")


# -- the Cairn server worker -----------------------------------------------------------------------


async def _serve_worker(paths: list[str]) -> None:
    logs = [Log.open(p) for p in paths]

    def ready(addr: tuple[str, int]) -> None:
        print(json.dumps({"port": addr[1], "keys": [lg.key.hex() for lg in logs]}), flush=True)

    task = asyncio.create_task(serve(logs, random_key_pair(), HOST, 0, ready=ready))
    stop = asyncio.create_task(asyncio.to_thread(sys.stdin.readline))  # a line or EOF: stop
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # serve() ended on its own: say why
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for lg in logs:
            lg.close()
    print(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}),
          flush=True)


# -- measurements ----------------------------------------------------------------------------------


@dataclass
class Measure:
    seconds: float
    blocks: int
    maxrss_kb: int | None = None

    @property
    def rate(self) -> float:
        return self.blocks / self.seconds


def cairn_download(replica_path: Path, key: bytes, port: int, expected: str,
                   start: int, end: int, timeout: float, *,
                   since: float | None = None, until_time: float | None = None) -> Measure:
    """A fresh replica downloads [start, end) (or the time window) from a server on ``port``."""

    async def go() -> DownloadResult:
        async with asyncio.timeout(timeout):
            if since is not None:
                return await download(HOST, port, replica, random_key_pair(), since=since,
                                      until_time=until_time)
            return await download(HOST, port, replica, random_key_pair(), start=start, end=end)

    replica = Log.replica(replica_path, key)
    try:
        try:
            res = asyncio.run(go())
        except TimeoutError as exc:
            raise BenchError(f"download of [{start}, {end}) timed out after {timeout:.0f} s"
                             ) from exc
        if not all(replica.has(i) for i in range(start, end)):
            missing = sum(not replica.has(i) for i in range(start, end))
            raise BenchError(f"replica lacks {missing} blocks of [{start}, {end})")
        got = digest(replica.get(i) for i in range(start, end))
        if got != expected:
            raise BenchError(f"replica's blocks [{start}, {end}) differ from the writer's")
        held = sum(1 for i in range(replica.length) if replica.has(i))
    finally:
        replica.close()
    # blocks held, not res.blocks: a time seek stores the frames it proves with its answer
    return Measure(res.seconds, held)


def js_download(tmp: Path, name: str, key: bytes, port: int, expected: str,
                start: int, end: int, timeout: float) -> Measure:
    out = run_node(["read", str(tmp / name), HOST, str(port), key.hex(), str(start), str(end)],
                   timeout, f"JS read {name}")
    if out.get("sha256") != expected:
        raise BenchError(f"JS reader {name}: blocks [{start}, {end}) differ from the writer's")
    return Measure(float(out["seconds"]), int(out["blocks"]), out.get("maxrss_kb"))


# -- the table -------------------------------------------------------------------------------------


def rate_row(measure: str, cairn: Measure | None, js: Measure | None, need: float | None,
             target: str = "") -> Row:
    """Blocks/s (higher is better): ratio Cairn / JS."""
    c = cairn.rate if cairn else None
    j = js.rate if js else None
    ratio = c / j if c is not None and j else None
    if need is None:
        return Row(measure, "blocks/s", c, j, ratio, "info", "-")
    verdict = "n/a" if ratio is None else ("PASS" if ratio >= need else "MISS")
    return Row(measure, "blocks/s", c, j, ratio, target or f">= {need:g}x JS", verdict)


def time_row(measure: str, cairn: Measure | None, js: Measure | None, need: float | None,
             target: str = "") -> Row:
    """Milliseconds (lower is better): ratio JS / Cairn."""
    c = cairn.seconds * 1000 if cairn else None
    j = js.seconds * 1000 if js else None
    ratio = j / c if c and j is not None else None
    if need is None:
        return Row(measure, "ms", c, j, ratio, "info", "-")
    verdict = "n/a" if ratio is None else ("PASS" if ratio >= need else "MISS")
    return Row(measure, "ms", c, j, ratio, target or f"<= 1/{need:g} JS", verdict)


# -- the run ---------------------------------------------------------------------------------------


class Runner:
    """Runs measurements one after another; a failure is recorded and the rest go on."""

    def __init__(self, quiet: bool, repeat: int) -> None:
        self.results: dict[str, Measure] = {}
        self.runs: dict[str, list[float]] = {}  # seconds of every repeat
        self.errors: dict[str, str] = {}
        self.quiet = quiet
        self.repeat = repeat

    def run(self, name: str, fn: Callable[[int], Measure]) -> None:
        """``fn(k)`` makes measurement k (fresh reader each time); keeps the median by time."""
        if not self.quiet:
            print(f"  {name} ...", end="", flush=True, file=sys.stderr)
        try:
            ms = sorted((fn(k) for k in range(self.repeat)), key=lambda m: m.seconds)
            self.runs[name] = [m.seconds for m in ms]
            m = self.results[name] = ms[len(ms) // 2]
        except Exception as exc:  # recorded, reported: exit code 1
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            if not self.quiet:
                print(" FAILED", file=sys.stderr)
                traceback.print_exc(file=sys.stderr)
            return
        if not self.quiet:
            every = ", ".join(f"{x * 1000:,.1f}" for x in self.runs[name])
            print(f" {m.blocks:,} blocks in {m.seconds * 1000:,.1f} ms "
                  f"({m.rate:,.0f} blocks/s; runs: {every} ms)", file=sys.stderr)

    def interleaved(self, named: list[tuple[str, Callable[[int], Measure]]]) -> None:
        """Measures to compare with each other, run in turns (run k of each, then run k + 1),
        so none of them gets the quieter minutes of the machine; the median of each."""
        done: dict[str, list[Measure]] = {name: [] for name, _ in named}
        for k in range(self.repeat):
            for name, fn in named:
                if name in self.errors:
                    continue
                try:
                    done[name].append(fn(k))
                except Exception as exc:  # recorded, reported: exit code 1
                    self.errors[name] = f"{type(exc).__name__}: {exc}"
                    if not self.quiet:
                        print(f"  {name} FAILED", file=sys.stderr)
                        traceback.print_exc(file=sys.stderr)
        for name, ms in done.items():
            if name in self.errors or not ms:
                continue
            ms.sort(key=lambda m: m.seconds)
            self.runs[name] = [m.seconds for m in ms]
            m = self.results[name] = ms[len(ms) // 2]
            if not self.quiet:
                every = ", ".join(f"{x * 1000:,.1f}" for x in self.runs[name])
                print(f"  {name}: {m.blocks:,} blocks in {m.seconds * 1000:,.1f} ms "
                      f"({m.rate:,.0f} blocks/s; runs: {every} ms)", file=sys.stderr)

    def get(self, name: str) -> Measure | None:
        return self.results.get(name)


def measure_all(tmp: Path, n: int, size: int, seed: int, window: int, pair: bool,
                node: str | None, runner: Runner, meta: dict[str, Any]) -> None:
    say: IO[str] | None = None if runner.quiet else sys.stderr
    blocks = make_blocks(n, size, seed)
    lo = max(0, n // 2 - window // 2)
    hi = min(n, lo + window)
    full_hash = digest(blocks)
    window_hash = digest(blocks[lo:hi])
    frames = make_frames(n)
    frames_window_hash = digest(frames[lo:hi])
    meta["window"] = [lo, hi]
    meta["frame_bytes"] = [min(map(len, frames)), max(map(len, frames))]

    cairn_path = tmp / "cairn-writer.db"
    frames_path = tmp / "cairn-frames.db"
    t = time.perf_counter()
    cairn_key = build_log(cairn_path, "replication-blocks", blocks)
    frames_key = build_log(frames_path, "replication-frames", frames)
    meta["cairn_build_s"] = time.perf_counter() - t
    del frames

    worker = [sys.executable, str(Path(__file__).resolve()), "--serve-worker", str(cairn_path),
              str(frames_path)]
    with contextlib.ExitStack() as stack:
        cairn_info, cairn_final = stack.enter_context(server_process(worker, "Cairn server"))
        cport = int(cairn_info["port"])
        js_info: dict[str, Any] | None = None
        js_final: dict[str, Any] = {}
        if node is not None:
            js_cmd = ["node", str(JS_SCRIPT), "serve", str(tmp / "js-writer"), str(n), str(size),
                      str(seed), seed32("replication-js").hex()]
            js_info, js_final = stack.enter_context(server_process(js_cmd, "JS server", INTEROP))
            meta["hypercore"] = js_info.get("hypercore")
        if say:
            print(f"# writers serving: Cairn on port {cport}"
                  + (f", JS on port {js_info['port']}" if js_info else ""), file=say)

        runner.run("cairn<-cairn full", lambda k: cairn_download(
            tmp / f"r-full-{k}.db", cairn_key, cport, full_hash, 0, n, FULL_TIMEOUT))
        runner.run("cairn<-cairn window", lambda k: cairn_download(
            tmp / f"r-window-{k}.db", cairn_key, cport, window_hash, lo, hi, WINDOW_TIMEOUT))
        if HAS_TIME_WINDOW:
            runner.run("cairn<-cairn time window", lambda k: cairn_download(
                tmp / f"r-time-{k}.db", frames_key, cport, frames_window_hash, lo, hi,
                WINDOW_TIMEOUT, since=T0 + lo, until_time=T0 + hi))
        else:
            runner.run("cairn<-cairn time window", lambda k: cairn_download(
                tmp / f"r-time-{k}.db", frames_key, cport, frames_window_hash, lo, hi,
                WINDOW_TIMEOUT))

        if js_info is not None:
            # the pairs the anchor is compared with, in turns: JS <- JS, JS <- Cairn, Cairn <- JS
            jport = int(js_info["port"])
            jkey = bytes.fromhex(str(js_info["key"]))
            runner.interleaved([
                ("js<-js full", lambda k: js_download(
                    tmp, f"js-full-{k}", jkey, jport, full_hash, 0, n, FULL_TIMEOUT)),
                ("js<-cairn full", lambda k: js_download(
                    tmp, f"js-cairn-full-{k}", cairn_key, cport, full_hash, 0, n, FULL_TIMEOUT)),
                ("cairn<-js full", lambda k: cairn_download(
                    tmp / f"r-js-full-{k}.db", jkey, jport, full_hash, 0, n, FULL_TIMEOUT)),
            ])
            runner.interleaved([
                ("js<-js window", lambda k: js_download(
                    tmp, f"js-window-{k}", jkey, jport, window_hash, lo, hi, WINDOW_TIMEOUT)),
                ("js<-cairn window", lambda k: js_download(
                    tmp, f"js-cairn-window-{k}", cairn_key, cport, window_hash, lo, hi,
                    WINDOW_TIMEOUT)),
                ("cairn<-js window", lambda k: cairn_download(
                    tmp / f"r-js-window-{k}.db", jkey, jport, window_hash, lo, hi,
                    WINDOW_TIMEOUT)),
            ])
    meta["cairn_server_maxrss_kb"] = cairn_final.get("maxrss_kb")
    meta["js_server_maxrss_kb"] = js_final.get("maxrss_kb")

    if node is not None and pair:
        def js_pair(k: int) -> Measure:
            out = run_node(["pair", str(tmp / f"js-pair-{k}"), str(n), str(size), str(seed)],
                           FULL_TIMEOUT, "JS pair")
            if out.get("sha256") != full_hash:
                raise BenchError("JS pair: the reader's blocks differ from the data")
            return Measure(float(out["seconds"]), int(out["blocks"]), out.get("maxrss_kb"))
        runner.run("js<-js full, one process", js_pair)


def build_rows(r: Runner, n: int, window: int) -> list[Row]:
    js_full = r.get("js<-js full")
    js_window = r.get("js<-js window")
    time_how = ("by time (since/until_time)" if HAS_TIME_WINDOW
                else "by index (time seek pending)")
    rows = [
        rate_row(f"full download, {n:,} blocks: Cairn <- Cairn vs JS <- JS",
                 r.get("cairn<-cairn full"), js_full, FULL_NEED),
        time_row(f"sparse {window:,}-block window from the middle, by index",
                 r.get("cairn<-cairn window"), js_window, WINDOW_NEED),
        time_row(f"same window, Cairn {time_how}; JS by index (no time seek)",
                 r.get("cairn<-cairn time window"), js_window, WINDOW_NEED),
        rate_row("full download: Cairn <- JS writer (vs JS <- JS)",
                 r.get("cairn<-js full"), js_full, MIXED_NEED, ">= JS<-JS"),
        rate_row("full download: JS <- Cairn writer (vs JS <- JS)",
                 r.get("js<-cairn full"), js_full, MIXED_NEED, ">= JS<-JS"),
        time_row("window: Cairn <- JS writer (vs JS <- JS)",
                 r.get("cairn<-js window"), js_window, None),
        time_row("window: JS <- Cairn writer (vs JS <- JS)",
                 r.get("js<-cairn window"), js_window, None),
    ]
    if r.get("js<-js full, one process") is not None:
        rows.append(rate_row("full download: JS <- JS in one process (anchor set-up)",
                             r.get("cairn<-cairn full"), r.get("js<-js full, one process"),
                             None))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--blocks", type=int, default=100_000, help="blocks in each writer's log")
    ap.add_argument("--block-size", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--window", type=int, default=1000, help="blocks in the sparse window")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs of each measure, each with a fresh reader; the median is shown")
    ap.add_argument("--no-js", action="store_true", help="measure Cairn only")
    ap.add_argument("--no-pair", action="store_true",
                    help="skip the extra JS run with both cores in one process")
    ap.add_argument("--dir", type=Path, default=None,
                    help="where to make the temporary directory (default: the system's)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown too")
    ap.add_argument("--serve-worker", nargs="+", metavar="PATH", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_worker:
        asyncio.run(_serve_worker(args.serve_worker))
        return 0
    n, size, window = args.blocks, args.block_size, min(args.window, args.blocks)
    if n < 2 or size < 1 or window < 1 or args.repeat < 1:
        ap.error("--blocks must be at least 2; --block-size, --window, --repeat positive")

    node = None if args.no_js else node_version()
    meta: dict[str, Any] = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "blocks": n, "block_size": size, "seed": args.seed, "window_blocks": window,
        "repeat": args.repeat,
        "time_window": "since/until_time" if HAS_TIME_WINDOW else "by index (time seek pending)",
        "python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "node": node,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
    }
    runner = Runner(quiet=args.json, repeat=args.repeat)
    if not args.json:
        print(f"# {meta['command']}")
        print(f"# {meta['date']}  {meta['machine']}")
        print(f"# N={n:,} blocks of {size} B (seed {args.seed}), window {window:,} blocks, "
              f"median of {args.repeat} run(s) each; "
              f"python {meta['python']}, sqlite {meta['sqlite']}, node {node or 'not run'}",
              flush=True)
    crashed: str | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="cairn-bench-repl-", dir=args.dir) as d:
            measure_all(Path(d), n, size, args.seed, window, not args.no_pair, node, runner, meta)
    except Exception as exc:  # a writer failed to start: exit 1
        crashed = f"{type(exc).__name__}: {exc}"
        if not args.json:
            traceback.print_exc(file=sys.stderr)

    rows = build_rows(runner, n, window)
    if args.json:
        json.dump({**meta, "rows": [asdict(r) for r in rows],
                   "measures": {k: {**asdict(m), "rate": m.rate, "runs_s": runner.runs[k]}
                                for k, m in runner.results.items()},
                   "errors": runner.errors, "crashed": crashed}, sys.stdout, indent=2)
        print()
    else:
        print(f"# hypercore {meta.get('hypercore') or 'not run'}; Cairn frames "
              f"{meta.get('frame_bytes', '?')} B; window {meta.get('window', '?')}")
        print()
        print_tables(rows, args.markdown)
        missed = [r.measure for r in rows if r.verdict == "MISS"]
        print()
        print(f"verdict: {len(missed)} target(s) MISSED: " + "; ".join(missed) if missed
              else "verdict: every target met" if not runner.errors and not crashed
              else "verdict: incomplete")
        for name, err in runner.errors.items():
            print(f"error: {name}: {err}")
        if crashed:
            print(f"error: {crashed}")
    return 1 if runner.errors or crashed else 0


if __name__ == "__main__":
    sys.exit(main())

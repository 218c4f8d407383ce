"""Benchmark of UDX (cairn.udx) beside JS udx-native, in the same run, on 127.0.0.1.

    python bench/udx.py [--mib 16] [--blocks 20000] [--block-size 100] [--repeat 3]
                        [--loop auto|asyncio|uvloop] [--markdown]

1. Raw stream throughput (MB/s): ``--mib`` MiB through one stream and END, checksummed.
   JS -> JS (the anchor: two udx-native sockets in one node process), Cairn -> Cairn (two
   UDXSockets in one Python process), Cairn -> JS and JS -> Cairn (one process each side).
2. Replication over UDX (blocks/s): a log of ``--blocks`` blocks of ``--block-size`` bytes,
   downloaded in full by a fresh reader over secret-stream on a UDX stream.
   JS <- JS (anchor: writer and reader in one node process, as replication_anchor.js pair;
   and in two node processes, as JS <- Cairn is: the target's comparison), Cairn <- Cairn
   (writer and reader in one Python process), JS <- Cairn (Cairn writer here, JS reader in
   node). Beside them the
   same over TCP: JS <- JS (``bench/js/replication_anchor.js pair``) and Cairn <- Cairn
   (:func:`cairn.replication.net.serve` / ``download`` in one process).

The Cairn side runs on uvloop when it is installed (``--loop auto``, as the ``cairn dht``
commands do), else on asyncio's loop; the table's title line says which.
Measures compared with each other run in turns (run k of each before run k + 1 of any) and the
median is kept. The ratio is Cairn / JS (higher is better). Absolute numbers on a shared machine
are noisy: compare the ratios of one run. The exit code is 1 if a measurement failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib
import json
import random
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar, cast

from bench_table import Row, print_tables
from cairn.crypto import key_pair, random_key_pair
from cairn.log import Log
from cairn.replication.net import _Link, download, serve
from cairn.udx import UDXReader, UDXSocket, UDXWriter, open_udx_connection

ROOT = Path(__file__).resolve().parent.parent
INTEROP = ROOT / "tests" / "interop"
PEER = INTEROP / "js" / "udx_peer.js"
ANCHOR = ROOT / "bench" / "js" / "replication_anchor.js"
MIB = 1 << 20


T = TypeVar("T")


class BenchError(RuntimeError):
    pass


def loop_runner(choice: str) -> tuple[str, Callable[[Coroutine[Any, Any, T]], T]]:
    """The event loop the Cairn side runs on: uvloop when asked for or (auto) installed."""
    if choice != "asyncio":
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            return "uvloop", cast(Callable[[Coroutine[Any, Any, T]], T], uvloop.run)
    return "asyncio", asyncio.run


# -- raw streams ---------------------------------------------------------------------------


async def _cairn_pair(data: bytes) -> float:
    async with await UDXSocket.bind() as a, await UDXSocket.bind() as b:
        t = time.perf_counter()
        _, wa = await open_udx_connection(a, 1, 2, b.address)
        rb, wb = await open_udx_connection(b, 2, 1, a.address)
        wa.write(data)
        wa.close()
        h, size = hashlib.sha256(), 0
        while chunk := await rb.read(1 << 16):
            h.update(chunk)
            size += len(chunk)
        seconds = time.perf_counter() - t
        wb.close()
        await wa.stream.wait_closed()
    if size != len(data) or h.digest() != hashlib.sha256(data).digest():
        raise BenchError("Cairn -> Cairn: the bytes differ")
    return seconds


Body = Callable[[UDXReader, UDXWriter], Coroutine[Any, Any, Any]]


async def _with_js(args: list[str], local: int, remote: int, body: Body) -> dict[str, Any]:
    """Run ``node udx_peer.js *args``; our stream exists before JS connects (a packet that
    finds no stream is dropped and costs a 1 s timeout), ``body`` runs once JS is connected."""
    proc = await asyncio.create_subprocess_exec(
        "node", str(PEER), *args, cwd=INTEROP, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        async with asyncio.timeout(300):
            port = json.loads(await proc.stdout.readline())["port"]
            async with await UDXSocket.bind() as socket:
                reader, writer = await open_udx_connection(socket, local, remote,
                                                           ("127.0.0.1", port))
                proc.stdin.write(json.dumps({"port": socket.address[1]}).encode() + b"\n")
                await proc.stdin.drain()
                await proc.stdout.readline()  # {"connected": true}: our packets find a stream
                mine = await body(reader, writer)
                line = await proc.stdout.readline()
        if not line:
            raise BenchError(f"node {args[0]}: {(await proc.stderr.read()).decode()[-2000:]}")
        out = cast(dict[str, Any], json.loads(line))
        out["mine"] = mine
        return out
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def _cairn_to_js(data: bytes) -> float:
    async def body(reader: UDXReader, writer: UDXWriter) -> float:
        t = time.perf_counter()
        writer.write(data)
        writer.close()
        await writer.wait_closed()  # JS acked the END: it has every byte
        seconds = time.perf_counter() - t
        await reader.read()
        return seconds

    out = await _with_js(["sink", "7", "9"], 9, 7, body)
    if out["sha256"] != hashlib.sha256(data).hexdigest():
        raise BenchError("Cairn -> JS: the bytes differ")
    return float(out["mine"])


async def _js_to_cairn(size: int) -> float:
    async def body(reader: UDXReader, writer: UDXWriter) -> tuple[float, str]:
        t = time.perf_counter()
        h = hashlib.sha256()
        while chunk := await reader.read(1 << 16):
            h.update(chunk)
        seconds = time.perf_counter() - t
        writer.close()
        await writer.stream.wait_closed()
        return seconds, h.hexdigest()

    out = await _with_js(["source", "3", "4", str(size)], 4, 3, body)
    seconds, digest = out["mine"]
    if digest != out["sha256"]:
        raise BenchError("JS -> Cairn: the bytes differ")
    return float(seconds)


def _node_json(args: list[str], cwd: Path, timeout: float) -> dict[str, Any]:
    done = subprocess.run(["node", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        raise BenchError(f"node {args[:2]}: {done.stderr[-2000:]}")
    return cast(dict[str, Any], json.loads(done.stdout.strip().splitlines()[-1]))


# -- replication ---------------------------------------------------------------------------


def _blocks(n: int, size: int) -> list[bytes]:
    rng = random.Random(7)
    return [rng.randbytes(size) for _ in range(n)]


async def _serve(log: Log, reader: UDXReader, writer: UDXWriter) -> None:
    link = _Link(cast(asyncio.StreamReader, reader), cast(asyncio.StreamWriter, writer),
                 random_key_pair(), False, 20.0, 8 << 20)
    await link.handshake()
    assert link.replicator is not None
    link.replicator.add_log(log)
    with contextlib.suppress(ConnectionError):
        await link.run()


async def _cairn_udx_download(log: Log, replica: Log, n: int) -> float:
    async with await UDXSocket.bind() as a, await UDXSocket.bind() as b:
        t = time.perf_counter()
        # both streams exist before the first packet flies
        server_side = await open_udx_connection(a, 1, 2, b.address)
        reader, writer = await open_udx_connection(b, 2, 1, a.address)
        server = asyncio.create_task(_serve(log, *server_side))
        link = _Link(cast(asyncio.StreamReader, reader), cast(asyncio.StreamWriter, writer),
                     random_key_pair(), True, 20.0, 8 << 20)
        await link.handshake()
        assert link.replicator is not None
        session = link.replicator.open(replica)
        wanted = False

        def done() -> bool:
            nonlocal wanted
            if session.synced and not wanted:
                session.want(0, n)
                wanted = True
            return wanted and session.pending == 0 and replica.length >= n

        await link.run(done)
        seconds = time.perf_counter() - t
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await server
    return seconds


async def _cairn_tcp_download(log: Log, replica: Log) -> float:
    ready: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve([log], random_key_pair(), "127.0.0.1", 0,
                                       ready=ready.set_result))
    host, port = await ready
    t = time.perf_counter()
    await download(host, port, replica, random_key_pair())
    seconds = time.perf_counter() - t
    server.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await server
    return seconds


async def _js_from_cairn_udx(log: Log, n: int) -> tuple[float, str]:
    serving: list[asyncio.Task[None]] = []

    async def body(reader: UDXReader, writer: UDXWriter) -> None:
        serving.append(asyncio.create_task(_serve(log, reader, writer)))

    try:
        out = await _with_js(["hypercore-read", "11", "12", log.key.hex(), str(n)], 12, 11,
                             body)
    finally:
        for task in serving:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task
    return float(out["seconds"]), str(out["sha256"])


async def _js_from_js_udx(n: int, size: int) -> float:
    """JS writer and JS reader in two node processes over UDX (as JS <- Cairn is)."""
    writer = await asyncio.create_subprocess_exec(
        "node", str(PEER), "hypercore-serve", "12", "11", str(n), str(size), cwd=INTEROP,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    procs = [writer]
    try:
        async with asyncio.timeout(600):
            assert writer.stdin is not None and writer.stdout is not None
            first = json.loads(await writer.stdout.readline())
            reader = await asyncio.create_subprocess_exec(
                "node", str(PEER), "hypercore-read", "11", "12", first["key"], str(n),
                cwd=INTEROP, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            procs.append(reader)
            assert reader.stdin is not None and reader.stdout is not None
            assert reader.stderr is not None
            reader_port = json.loads(await reader.stdout.readline())["port"]
            # the writer's stream first: the reader's first packet must find it
            writer.stdin.write(json.dumps({"port": reader_port}).encode() + b"\n")
            await writer.stdin.drain()
            await writer.stdout.readline()  # connected
            reader.stdin.write(json.dumps({"port": first["port"]}).encode() + b"\n")
            await reader.stdin.drain()
            await reader.stdout.readline()  # connected
            line = await reader.stdout.readline()
            if not line:
                raise BenchError(f"JS reader: {(await reader.stderr.read()).decode()[-2000:]}")
            writer.stdin.close()
            return float(json.loads(line)["seconds"])
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


def _check_replica(replica: Log, blocks: list[bytes], what: str) -> None:
    if replica.length != len(blocks) or any(replica.get(i) != b for i, b in enumerate(blocks)):
        raise BenchError(f"{what}: the replica differs from the writer")


# -- the run -------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> tuple[list[Row], int]:
    loop_name, run = loop_runner(args.loop)
    print(f"Cairn side on {loop_name}", file=sys.stderr)
    runs: dict[str, list[float]] = {}
    failed: list[str] = []
    size = args.mib * MIB
    data = random.Random(1).randbytes(size)
    n, bsize = args.blocks, args.block_size
    blocks = _blocks(n, bsize)
    tmp = Path(tempfile.mkdtemp(prefix="cairn-bench-udx-"))
    log = Log.create(tmp / "writer.db", key_pair(b"\x42" * 32))
    for i in range(0, n, 1000):
        log.append(blocks[i:i + 1000])
    expected = hashlib.sha256(b"".join(blocks)).hexdigest()
    counter = iter(range(1_000_000))

    def fresh(what: str) -> Log:
        return Log.replica(tmp / f"{what}-{next(counter)}.db", log.key)

    def cairn_cairn_udx() -> float:
        replica = fresh("udx")
        seconds = run(_cairn_udx_download(log, replica, n))
        _check_replica(replica, blocks, "Cairn <- Cairn over UDX")
        replica.close()
        return seconds

    def cairn_cairn_tcp() -> float:
        replica = fresh("tcp")
        seconds = run(_cairn_tcp_download(log, replica))
        _check_replica(replica, blocks, "Cairn <- Cairn over TCP")
        replica.close()
        return seconds

    def js_cairn_udx() -> float:
        seconds, digest = run(_js_from_cairn_udx(log, n))
        if digest != expected:
            raise BenchError("JS <- Cairn over UDX: the blocks differ")
        return seconds

    def js_js_udx() -> float:
        return float(_node_json([str(PEER), "hypercore-pair", str(n), str(bsize)], INTEROP,
                                600)["seconds"])

    def js_js_udx_two() -> float:
        return asyncio.run(_js_from_js_udx(n, bsize))

    def js_js_tcp() -> float:
        with tempfile.TemporaryDirectory() as d:
            return float(_node_json([str(ANCHOR), "pair", d, str(n), str(bsize), "1"], ROOT,
                                    600)["seconds"])

    named: list[tuple[str, Callable[[], float]]] = [
        ("stream JS -> JS", lambda: float(_node_json([str(PEER), "pair", str(size)], INTEROP,
                                                      300)["seconds"])),
        ("stream Cairn -> Cairn", lambda: run(_cairn_pair(data))),
        ("stream Cairn -> JS", lambda: run(_cairn_to_js(data))),
        ("stream JS -> Cairn", lambda: run(_js_to_cairn(size))),
        ("replication JS <- JS udx", js_js_udx),
        ("replication JS <- JS udx, 2 processes", js_js_udx_two),
        ("replication Cairn <- Cairn udx", cairn_cairn_udx),
        ("replication JS <- Cairn udx", js_cairn_udx),
        ("replication JS <- JS tcp", js_js_tcp),
        ("replication Cairn <- Cairn tcp", cairn_cairn_tcp),
    ]
    for k in range(args.repeat):
        for name, fn in named:
            if name in failed:
                continue
            try:
                runs.setdefault(name, []).append(fn())
            except Exception:
                failed.append(name)
                traceback.print_exc(file=sys.stderr)
            if not args.quiet and name in runs and len(runs[name]) == k + 1:
                print(f"  {name}: {runs[name][-1] * 1000:,.0f} ms", file=sys.stderr)
    log.close()

    def median(name: str) -> float | None:
        xs = sorted(runs.get(name, []))
        return xs[len(xs) // 2] if xs and name not in failed else None

    def mbps(name: str) -> float | None:
        s = median(name)
        return None if s is None else size / s / 1e6

    def bps(name: str) -> float | None:
        s = median(name)
        return None if s is None else n / s

    def row(measure: str, unit: str, cairn: float | None, js: float | None,
            need: float | None) -> Row:
        ratio = cairn / js if cairn is not None and js else None
        if need is None:
            return Row(measure, unit, cairn, js, ratio, "info", "-")
        verdict = "n/a" if ratio is None else ("PASS" if ratio >= need else "MISS")
        return Row(measure, unit, cairn, js, ratio, f">= {need:g}x JS", verdict)

    js_stream = mbps("stream JS -> JS")
    js_udx = bps("replication JS <- JS udx")
    rows = [
        row("stream Cairn -> Cairn vs JS -> JS", "MB/s", mbps("stream Cairn -> Cairn"),
            js_stream, None),
        row("stream Cairn -> JS vs JS -> JS", "MB/s", mbps("stream Cairn -> JS"), js_stream,
            None),
        row("stream JS -> Cairn vs JS -> JS", "MB/s", mbps("stream JS -> Cairn"), js_stream,
            None),
        row("replication over UDX, Cairn <- Cairn vs JS <- JS", "blocks/s",
            bps("replication Cairn <- Cairn udx"), js_udx, 1.0),
        row("replication over UDX, JS <- Cairn vs JS <- JS (one node process)", "blocks/s",
            bps("replication JS <- Cairn udx"), js_udx, None),
        row("replication over UDX, JS <- Cairn vs JS <- JS (two processes each)", "blocks/s",
            bps("replication JS <- Cairn udx"), bps("replication JS <- JS udx, 2 processes"),
            1.0),
        row("replication over TCP, Cairn <- Cairn vs JS <- JS", "blocks/s",
            bps("replication Cairn <- Cairn tcp"), bps("replication JS <- JS tcp"), None),
    ]
    return rows, 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=16, help="MiB per raw stream run (default 16)")
    ap.add_argument("--blocks", type=int, default=20_000, help="blocks in the log (20,000)")
    ap.add_argument("--block-size", type=int, default=100, help="bytes a block (100)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each, median kept (3)")
    ap.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                    help="the Cairn side's event loop (auto: uvloop when installed)")
    ap.add_argument("--markdown", action="store_true", help="print the table in Markdown too")
    ap.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = ap.parse_args(argv)
    rows, code = measure(args)
    print(f"UDX bench: {args.mib} MiB streams, {args.blocks:,} blocks of {args.block_size} B, "
          f"median of {args.repeat}, Cairn side on {loop_runner(args.loop)[0]}")
    print_tables(rows, args.markdown)
    return code


if __name__ == "__main__":
    sys.exit(main())

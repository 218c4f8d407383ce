"""Benchmark of UDX (cairn.udx) beside JS udx-native, in the same run, on 127.0.0.1.

    python bench/udx.py [--mib 16] [--blocks 20000] [--block-size 100] [--repeat 3]
                        [--loop auto|asyncio|uvloop] [--markdown]

Every UDX comparison runs its two ends in two processes, Cairn's as JS's: a sender or server
in one, a receiver or reader in the other (``--peer`` runs this script as Cairn's other end,
as ``tests/interop/js/udx_peer.js`` is JS's), so neither side shares a CPU with its peer's
event loop where the other does not.

1. Raw stream throughput (MB/s): ``--mib`` MiB through one stream and END, checksummed, timed
   by the sender until its END is acked. JS -> JS (the anchor: udx_peer.js ``source`` and
   ``sink``), Cairn -> Cairn, Cairn -> JS and JS -> Cairn.
2. Replication over UDX (blocks/s): a log of ``--blocks`` blocks of ``--block-size`` bytes,
   downloaded in full by a fresh reader over secret-stream on a UDX stream, timed by the reader
   from its connect to the last block read back and hashed (as udx_peer.js
   ``hypercore-read``). JS <- JS (the anchor: ``hypercore-serve`` and ``hypercore-read``),
   Cairn <- Cairn and JS <- Cairn (the Cairn server here). Beside them, for information, the
   same over TCP in one process each: JS <- JS (``bench/js/replication_anchor.js pair``) and
   Cairn <- Cairn (:func:`cairn.replication.net.serve` / ``download``).

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
import os
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


Body = Callable[[UDXReader, UDXWriter], Coroutine[Any, Any, Any]]


def js_peer(*args: str) -> list[str]:
    """argv of JS's end (udx_peer.js, run in tests/interop)."""
    return ["node", str(PEER), *args]


def cairn_peer(loop: str, *args: str) -> list[str]:
    """argv of Cairn's end: this script with ``--peer`` (the same modes as udx_peer.js)."""
    return [sys.executable, str(Path(__file__).resolve()), "--loop", loop, "--peer", *args]


async def _with_peer(argv: list[str], local: int, remote: int, body: Body) -> dict[str, Any]:
    """Run the other end ``argv`` (JS's or Cairn's peer); our stream exists before it connects
    (a packet that finds no stream is dropped and costs a 1 s timeout), ``body`` runs once it
    is connected."""
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=INTEROP, stdin=asyncio.subprocess.PIPE,
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
            raise BenchError(f"{argv[-5:]}: {(await proc.stderr.read()).decode()[-2000:]}")
        out = cast(dict[str, Any], json.loads(line))
        out["mine"] = mine
        return out
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def _cairn_to(peer: list[str], data: bytes) -> float:
    """Cairn sends ``data`` to the sink ``peer`` (``[..., "sink", "7", "9"]``)."""
    async def body(reader: UDXReader, writer: UDXWriter) -> float:
        t = time.perf_counter()
        writer.write(data)
        writer.close()
        await writer.wait_closed()  # JS acked the END: it has every byte
        seconds = time.perf_counter() - t
        await reader.read()
        return seconds

    out = await _with_peer(peer, 9, 7, body)
    if out["sha256"] != hashlib.sha256(data).hexdigest():
        raise BenchError(f"Cairn -> {peer[0]}: the bytes differ")
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

    out = await _with_peer(js_peer("source", "3", "4", str(size)), 4, 3, body)
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


async def _read_from_cairn_udx(reader_argv: list[str], log: Log) -> tuple[float, str]:
    """The Cairn server here, the reader ``reader_argv`` (``hypercore-read`` of either)."""
    serving: list[asyncio.Task[None]] = []

    async def body(reader: UDXReader, writer: UDXWriter) -> None:
        serving.append(asyncio.create_task(_serve(log, reader, writer)))

    try:
        out = await _with_peer(reader_argv, 12, 11, body)
    finally:
        for task in serving:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task
    return float(out["seconds"]), str(out["sha256"])


async def _two_ends(first: list[str], second: Callable[[dict[str, Any]], list[str]], *,
                    first_result: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two peers (udx_peer.js modes) connected to each other: ``first`` (a sink, a server)
    connects before ``second`` (a source, a reader) so that the second's first packet finds its
    stream; ``second`` makes its argv from the first's first line (a writer's key). Returns
    the first's first line (with its result line's keys when ``first_result``) and the
    second's result line."""
    def spawn(argv: list[str]) -> Coroutine[Any, Any, asyncio.subprocess.Process]:
        return asyncio.create_subprocess_exec(
            *argv, cwd=INTEROP, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)

    procs: list[asyncio.subprocess.Process] = []

    async def line(proc: asyncio.subprocess.Process) -> dict[str, Any]:
        assert proc.stdout is not None and proc.stderr is not None
        got = await proc.stdout.readline()
        if not got:
            raise BenchError(f"{proc}: {(await proc.stderr.read()).decode()[-2000:]}")
        return cast(dict[str, Any], json.loads(got))

    async def tell(proc: asyncio.subprocess.Process, port: int) -> None:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"port": port}).encode() + b"\n")
        await proc.stdin.drain()
        await line(proc)  # {"connected": true}

    try:
        async with asyncio.timeout(600):
            procs.append(await spawn(first))
            head = await line(procs[0])
            procs.append(await spawn(second(head)))
            port = (await line(procs[1]))["port"]
            await tell(procs[0], port)
            await tell(procs[1], head["port"])
            result = await line(procs[1])
            if first_result:
                head.update(await line(procs[0]))
            assert procs[0].stdin is not None
            procs[0].stdin.close()  # (a server serves until its stdin ends)
            return head, result
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def _js_from_js_udx(n: int, size: int) -> float:
    """JS writer and JS reader in two node processes over UDX (as JS <- Cairn is)."""
    _, out = await _two_ends(
        js_peer("hypercore-serve", "12", "11", str(n), str(size)),
        lambda head: js_peer("hypercore-read", "11", "12", head["key"], str(n)))
    return float(out["seconds"])


async def _js_to_js(size: int) -> float:
    """JS source and JS sink in two node processes (the raw stream anchor)."""
    sink, source = await _two_ends(js_peer("sink", "7", "9"),
                                   lambda _: js_peer("source", "9", "7", str(size)),
                                   first_result=True)
    if sink.get("sha256") != source.get("sha256") or sink.get("bytes") != size:
        raise BenchError("JS -> JS: the bytes differ")
    return float(source["seconds"])


def _check_replica(replica: Log, blocks: list[bytes], what: str) -> None:
    if replica.length != len(blocks) or any(replica.get(i) != b for i, b in enumerate(blocks)):
        raise BenchError(f"{what}: the replica differs from the writer")


# -- Cairn's other end (``--peer``), as udx_peer.js is JS's -----------------------------------


def _say(value: object) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


async def _peer_connected(socket: UDXSocket, local: int, remote: int
                          ) -> tuple[UDXReader, UDXWriter]:
    """udx_peer.js's ``connected``: say our port, read the other's, connect, say so."""
    _say({"port": socket.address[1]})
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    pair = await open_udx_connection(socket, local, remote,
                                     ("127.0.0.1", int(json.loads(line)["port"])))
    _say({"connected": True})
    return pair


async def _peer_sink(local: int, remote: int) -> None:
    """Read until the peer ends, end too; say {"bytes", "sha256", "seconds"}."""
    async with await UDXSocket.bind() as socket:
        reader, writer = await _peer_connected(socket, local, remote)
        t = time.perf_counter()
        h, size = hashlib.sha256(), 0
        while chunk := await reader.read(1 << 16):
            h.update(chunk)
            size += len(chunk)
        writer.close()
        await writer.stream.wait_closed()
        _say({"bytes": size, "sha256": h.hexdigest(), "seconds": time.perf_counter() - t})


async def _peer_read(local: int, remote: int, key: bytes, n: int) -> None:
    """A fresh replica of ``key`` downloads blocks [0, n) over secret-stream on the stream,
    then reads them back and hashes them (as udx_peer.js ``hypercore-read``); says
    {"blocks", "seconds", "length", "sha256"}."""
    with tempfile.TemporaryDirectory(prefix="cairn-bench-udx-peer-") as tmp:
        replica = Log.replica(Path(tmp) / "replica.db", key)
        async with await UDXSocket.bind() as socket:
            reader, writer = await _peer_connected(socket, local, remote)
            t = time.perf_counter()
            link = _Link(cast(asyncio.StreamReader, reader),
                         cast(asyncio.StreamWriter, writer), random_key_pair(), True, 20.0,
                         8 << 20)
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
            h = hashlib.sha256()
            for i in range(n):
                h.update(replica.get(i))
            seconds = time.perf_counter() - t
            writer.stream.destroy()
        _say({"blocks": n, "seconds": seconds, "length": replica.length,
              "sha256": h.hexdigest()})
        replica.close()


def peer(args: list[str], loop: str) -> int:
    """``--peer sink L R`` or ``--peer hypercore-read L R KEYHEX N``."""
    _, run = loop_runner(loop)
    mode, local, remote = args[0], int(args[1]), int(args[2])
    if mode == "sink":
        run(_peer_sink(local, remote))
    elif mode == "hypercore-read":
        run(_peer_read(local, remote, bytes.fromhex(args[3]), int(args[4])))
    else:
        raise SystemExit(f"--peer: unknown mode {mode!r} (sink, hypercore-read)")
    return 0


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

    def cairn_cairn_tcp() -> float:
        replica = fresh("tcp")
        seconds = run(_cairn_tcp_download(log, replica))
        _check_replica(replica, blocks, "Cairn <- Cairn over TCP")
        replica.close()
        return seconds

    def reader_from_cairn(reader: list[str], what: str) -> float:
        seconds, digest = run(_read_from_cairn_udx(reader, log))
        if digest != expected:
            raise BenchError(f"{what} over UDX: the blocks differ")
        return seconds

    def js_js_tcp() -> float:
        with tempfile.TemporaryDirectory() as d:
            return float(_node_json([str(ANCHOR), "pair", d, str(n), str(bsize), "1"], ROOT,
                                    600)["seconds"])

    read = ("hypercore-read", "11", "12", log.key.hex(), str(n))
    named: list[tuple[str, Callable[[], float]]] = [
        ("stream JS -> JS", lambda: asyncio.run(_js_to_js(size))),
        ("stream Cairn -> Cairn", lambda: run(_cairn_to(cairn_peer(args.loop, "sink", "7", "9"),
                                                        data))),
        ("stream Cairn -> JS", lambda: run(_cairn_to(js_peer("sink", "7", "9"), data))),
        ("stream JS -> Cairn", lambda: run(_js_to_cairn(size))),
        ("replication JS <- JS udx", lambda: asyncio.run(_js_from_js_udx(n, bsize))),
        ("replication Cairn <- Cairn udx",
         lambda: reader_from_cairn(cairn_peer(args.loop, *read), "Cairn <- Cairn")),
        ("replication JS <- Cairn udx", lambda: reader_from_cairn(js_peer(*read), "JS <- Cairn")),
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
        row("replication over UDX, JS <- Cairn vs JS <- JS", "blocks/s",
            bps("replication JS <- Cairn udx"), js_udx, 1.0),
        row("replication over TCP, Cairn <- Cairn vs JS <- JS (one process each)", "blocks/s",
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
    ap.add_argument("--peer", nargs="+", metavar="MODE",
                    help="run as Cairn's other end (sink L R | hypercore-read L R KEY N), "
                         "as the benchmark does itself")
    args = ap.parse_args(argv)
    if args.peer:
        return peer(args.peer, args.loop)
    rows, code = measure(args)
    print(f"UDX bench: {args.mib} MiB streams, {args.blocks:,} blocks of {args.block_size} B, "
          f"median of {args.repeat}, two processes a measure, Cairn on "
          f"{loop_runner(args.loop)[0]}, load average {os.getloadavg()[0]:.1f}")
    print_tables(rows, args.markdown)
    return code


if __name__ == "__main__":
    sys.exit(main())

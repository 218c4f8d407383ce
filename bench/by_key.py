"""Replication over a connection by key (hyperdht connect, then the UDX data phase), Cairn <-
Cairn beside JS <- JS, in the same run, on 127.0.0.1.

    python bench/by_key.py [--blocks 20000] [--block-size 100] [--repeat 3] [--markdown]

Each side: a 4-node DHT testnet, a server on a key pair whose log of ``--blocks`` blocks of
``--block-size`` bytes is served on each connection, and a client that connects by the server's
key and downloads every block into a fresh replica over secret-stream on the UDX stream (keyed
by the IK). Cairn <- Cairn runs in this process (uvloop when installed, as the ``cairn``
commands), JS <- JS in one node process (``bench/js/by_key_anchor.js``: npm hyperdht and
hypercore). Reported: blocks a second from the connection's open to the last block stored, and
the connect time (from the start of the connect to the open data stream). Runs alternate; the
median is kept. Decision 0012 has the same replication on a bare UDX stream (``bench/udx.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "core"))

from bench_table import Row, print_tables  # noqa: E402
from cairn.crypto import key_pair  # noqa: E402
from cairn.dht.api import DHT  # noqa: E402
from cairn.hyperdht import connect_by_key, open_data_stream, serve_by_key  # noqa: E402
from cairn.log import Log  # noqa: E402
from cairn.replication.net import read_on, serve_on  # noqa: E402

INTEROP = ROOT / "tests" / "interop"
ANCHOR = ROOT / "bench" / "js" / "by_key_anchor.js"


async def cairn_run(log: Log, replica: Log, n: int) -> tuple[float, float]:
    """(connect seconds, download seconds) of one Cairn <- Cairn connection by key."""
    rng = random.Random(1)
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            DHT.start("127.0.0.1", 0, [], persistent=True, rng=random.Random(rng.random())))
        nodes = [first]
        for _ in range(3):
            nodes.append(await stack.enter_async_context(DHT.start(
                "127.0.0.1", 0, [first.address], persistent=True,
                rng=random.Random(rng.random()))))
        await asyncio.gather(*(d.ready() for d in nodes))
        server_dht, client_dht = [await stack.enter_async_context(DHT.start(
            "127.0.0.1", 0, [first.address], persistent=False,
            rng=random.Random(rng.random()))) for _ in range(2)]
        await server_dht.ready()
        await client_dht.ready()
        keys = key_pair(b"\x51" * 32)
        server = await stack.enter_async_context(serve_by_key(
            server_dht.node, keys, public_address=server_dht.node.server_address))
        await asyncio.wait_for(server.wait_announced(), 20)

        async def serve() -> None:
            est = await server.accept()
            conn = await open_data_stream(server_dht.node, est, keys, handshake_timeout=20)
            try:
                with contextlib.suppress(ConnectionError, TimeoutError):
                    await serve_on(conn, [log])
            finally:
                await conn.close()

        serving = asyncio.create_task(serve())
        t0 = time.perf_counter()
        _, conn = await connect_by_key(client_dht.node, keys.public_key,
                                       key_pair(b"\x52" * 32), timeout=20)
        t1 = time.perf_counter()
        try:
            got = await read_on(conn, replica)
        finally:
            t2 = time.perf_counter()
            await conn.close()
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
        if got.length != n or replica.contiguous_length != n:
            raise RuntimeError(f"Cairn <- Cairn: {replica.contiguous_length} of {n} blocks")
        return t1 - t0, t2 - t1


def js_run(n: int, size: int) -> tuple[float, float]:
    out = subprocess.run(["node", str(ANCHOR), str(n), str(size)], cwd=INTEROP, check=True,
                         capture_output=True, text=True, timeout=600,
                         env={"NODE_PATH": str(INTEROP / "node_modules"), "PATH": "/usr/bin:/bin:"
                              + str(Path(sys.executable).parent)})
    got = json.loads(out.stdout.strip().splitlines()[-1])
    if got["blocks"] != n:
        raise RuntimeError(f"JS <- JS: {got['blocks']} of {n} blocks")
    return got["connect_ms"] / 1000, got["seconds"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=int, default=20_000)
    ap.add_argument("--block-size", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    runner: Callable[[Coroutine[Any, Any, tuple[float, float]]], tuple[float, float]]
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        runner = uvloop.run
        loop = "uvloop"
    except ImportError:
        runner = asyncio.run
        loop = "asyncio"
    n, size = args.blocks, args.block_size
    tmp = Path(tempfile.mkdtemp(prefix="cairn-bench-bykey-"))
    log = Log.create(tmp / "w.db", key_pair(b"\x42" * 32))
    for i in range(0, n, 1000):
        log.append([(str(j).encode() + bytes(size))[:size] for j in range(i, min(n, i + 1000))])
    cairn: list[tuple[float, float]] = []
    js: list[tuple[float, float]] = []
    for k in range(args.repeat):
        js.append(js_run(n, size))
        replica = Log.replica(tmp / f"r{k}.db", log.key)
        try:
            cairn.append(runner(cairn_run(log, replica, n)))
        finally:
            replica.close()
        print(f"run {k + 1}: Cairn {cairn[-1][1]:.2f} s, JS {js[-1][1]:.2f} s", file=sys.stderr)
    log.close()

    def median(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2]

    c_rate, j_rate = n / median([c[1] for c in cairn]), n / median([j[1] for j in js])
    c_conn, j_conn = median([c[0] for c in cairn]) * 1000, median([j[0] for j in js]) * 1000
    print(f"# python bench/by_key.py --blocks {n} --block-size {size} --repeat {args.repeat}; "
          f"Cairn on {loop}, 127.0.0.1, 4-node testnets")
    rows = [
        Row("replication over a by-key UDX stream, Cairn <- Cairn vs JS <- JS", "blocks/s",
            c_rate, j_rate, c_rate / j_rate, "info", "-"),
        Row("connect by key to the open data stream (same runs)", "ms", c_conn, j_conn,
            c_conn / j_conn, "info", "-"),
    ]
    print_tables(rows, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Connection set-up by key: Cairn client to Cairn server beside JS hyperdht to JS hyperdht.

    python bench/hyperdht_connect.py [--nodes 10] [--connects 100] [--seed 1] [--json] [--no-js]

Both run on 127.0.0.1 (not the NAT lab: that is the natlab helper's, nat.md section 6), one after
the other, each on a testnet of N nodes: `bench/js/hyperdht_connect_anchor.js` (a JS server and a
JS client, `dht.connect(key)`) and this script's Cairn run (a Cairn server with `serve_by_key`, a
Cairn client with `handshake_by_key`). Every connect uses a fresh client key.

Every peer here is 127.0.0.1, one host: the per-host rate limits of relays (20 relays/s) and
servers (10 handshakes/s) would throttle a run of back-to-back connects, so both are raised for
the timed run (`--default-limits` keeps them: then the figure shows the limits, not the path).

What is timed: from the start of the connect to the completed IK, i.e. FIND_PEER, PEER_HANDSHAKE
relayed through the node holding the record, and both IK messages (JS: until its router has the
REPLY). JS's time until its encrypted stream is open (UDX included) is printed beside it; Cairn's
data phase runs on `cairn.udx`, not in this branch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "core"))

from cairn.crypto import key_pair  # noqa: E402
from cairn.dht.api import DHT  # noqa: E402
from cairn.hyperdht import RateLimit, Router, handshake_by_key, serve_by_key  # noqa: E402


def stats(xs: list[float]) -> dict[str, float]:
    s = sorted(xs)
    if not s:
        return {"median_ms": float("nan"), "p99_ms": float("nan"), "n": 0}
    return {"median_ms": s[len(s) // 2], "p99_ms": s[min(len(s) - 1, int(0.99 * len(s)))],
            "n": len(s)}


def unlimited() -> RateLimit:
    return RateLimit(per_host=1e6, burst=1e6, total=1e6)


async def cairn_run(nodes: int, connects: int, seed: int, limits: bool) -> dict[str, Any]:
    rng = random.Random(seed)
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            DHT.start("127.0.0.1", 0, [], persistent=True, rng=random.Random(rng.random())))
        net = [first]
        for _ in range(nodes - 1):
            net.append(await stack.enter_async_context(DHT.start(
                "127.0.0.1", 0, [first.address], persistent=True,
                rng=random.Random(rng.random()))))
        await asyncio.gather(*(d.ready() for d in net))
        server_dht = await stack.enter_async_context(
            DHT.start("127.0.0.1", 0, [first.address], persistent=False))
        client_dht = await stack.enter_async_context(
            DHT.start("127.0.0.1", 0, [first.address], persistent=False))
        await asyncio.gather(server_dht.ready(), client_dht.ready())
        if not limits:
            for d in (*net, server_dht, client_dht):
                router = d.node.handler.router
                assert isinstance(router, Router)
                router.limit = unlimited()
        server_keys = key_pair(bytes([1]) * 32)
        times: list[float] = []
        ok = 0
        async with serve_by_key(server_dht.node, server_keys,
                                public_address=server_dht.node.server_address,
                                limit=None if limits else unlimited()) as server:
            await server.wait_announced()
            for _ in range(connects):
                keys = key_pair(rng.randbytes(32))
                start = time.perf_counter()
                try:
                    await handshake_by_key(client_dht.node, server_keys.public_key, keys,
                                           timeout=10)
                except Exception as exc:
                    print(f"cairn connect failed: {exc}", file=sys.stderr)
                    continue
                times.append((time.perf_counter() - start) * 1000)
                ok += 1
                with contextlib.suppress(asyncio.QueueEmpty):
                    server._queue.get_nowait()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"handshake_ms": stats(times), "ok": ok, "max_rss_mib": rss}


def js_run(nodes: int, connects: int) -> dict[str, Any]:
    out = subprocess.run(
        ["node", str(ROOT / "bench" / "js" / "hyperdht_connect_anchor.js"), str(nodes),
         str(connects)], capture_output=True, text=True, timeout=600, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--connects", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-js", action="store_true")
    ap.add_argument("--default-limits", action="store_true")
    args = ap.parse_args()
    js = None if args.no_js else js_run(args.nodes, args.connects)
    cairn = asyncio.run(cairn_run(args.nodes, args.connects, args.seed,
                                  args.default_limits))
    if args.json:
        print(json.dumps({"cairn": cairn, "js": js}, indent=2))
        return
    print(f"connection set-up by key, 127.0.0.1, {args.nodes}-node testnet, "
          f"{args.connects} connects")
    print(f"{'who':<34} {'p50 ms':>8} {'p99 ms':>8} {'ok':>5}")
    c = cairn["handshake_ms"]
    print(f"{'Cairn -> Cairn, to IK done':<34} {c['median_ms']:>8.2f} {c['p99_ms']:>8.2f} "
          f"{cairn['ok']:>5}")
    if js is not None:
        h, o = js["handshake_ms"], js["open_ms"]
        print(f"{'JS -> JS, to IK done (anchor)':<34} {h['median_ms']:>8.2f} "
              f"{h['p99_ms']:>8.2f} {js['ok']:>5}")
        print(f"{'JS -> JS, to stream open':<34} {o['median_ms']:>8.2f} {o['p99_ms']:>8.2f} "
              f"{js['ok']:>5}")
        print(f"ratio Cairn / JS (p50, to IK done): {c['median_ms'] / h['median_ms']:.2f}")


if __name__ == "__main__":
    main()

"""DHT benchmark: Cairn and JS hyperdht on the same loopback testbed, in the same run.

    python bench/dht.py [--nodes 100,300] [--ops 200] [--seed 1] [--json] [--no-js]

For each network size N, two child processes run one after the other: `bench/js/dht_anchor.js`
(N hyperdht nodes in one node process) and this script as `--worker` (N Cairn nodes in one Python
process, uvloop when installed). Each starts its network on 127.0.0.1, lets it settle, then runs
`--ops` operations of each kind from random nodes: find_node (with recall against the true 20
closest ids), mutable put (64 bytes), mutable get with `latest` (every storing node on the way
asked), mutable get of the latest value by its seq (stops at the first verified answer with that
seq), announce, lookup (until the announcer is found); then kills 30% of the nodes without
warning and runs find_node and get again, 10 at a time. It reports median and p99 latency,
requests sent per operation, successes, and the RSS of the whole network's process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "core"))

from cairn.crypto import KeyPair, key_pair  # noqa: E402
from cairn.dht.api import DHT  # noqa: E402
from cairn.dht.records import hash32  # noqa: E402

TARGETS: dict[tuple[str, int], tuple[str, float]] = {
    # (measure, N) -> (statistic, bound in ms)
    ("find_node", 300): ("p99_ms", 6.0),
    ("mutable_get", 100): ("median_ms", 0.9),
    ("mutable_get", 300): ("median_ms", 0.9),
    ("mutable_put", 100): ("p99_ms", 10.0),
    ("mutable_put", 300): ("p99_ms", 10.0),
    ("mutable_get_churn", 100): ("p99_ms", 15.0),
    ("mutable_get_churn", 300): ("p99_ms", 15.0),
    ("find_node_churn", 100): ("p99_ms", 1000.0),
    ("find_node_churn", 300): ("p99_ms", 1000.0),
}
GET_P99 = 2.0  # mutable get of the latest value: p99 bound too
RSS_300 = 60.0  # MiB for 300 nodes in one process


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1048576


def stats(xs: list[float]) -> dict[str, float]:
    s = sorted(xs)
    return {"median_ms": s[len(s) // 2], "p99_ms": s[min(len(s) - 1, int(0.99 * len(s)))],
            "n": len(s)}


async def worker(n: int, ops: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            DHT.start("127.0.0.1", 0, [], persistent=True, rng=random.Random(rng.random())))
        await first.ready()
        boot = [first.address]
        nodes: list[DHT] = [first]
        stacks: list[contextlib.AsyncExitStack] = []
        while len(nodes) < n:
            batch = []
            for _ in range(min(25, n - len(nodes))):
                s = contextlib.AsyncExitStack()
                await stack.enter_async_context(s)
                d = await s.enter_async_context(
                    DHT.start("127.0.0.1", 0, boot, persistent=True,
                              rng=random.Random(rng.random())))
                batch.append(d)
                stacks.append(s)
            await asyncio.gather(*(d.ready() for d in batch))
            nodes.extend(batch)
        for i in range(0, len(nodes), 25):  # settle, as a refresh would (25 at a time)
            await asyncio.gather(*(d.find_node(d.id) for d in nodes[i : i + 25]))
        alive = list(nodes)
        def requests() -> int:
            return sum(d.node.core.stats["requests"] for d in alive)

        out: dict[str, Any] = {"nodes": n, "ops": ops, "measures": []}
        keys: list[KeyPair] = [key_pair(rng.randbytes(32)) for _ in range(ops)]
        topics = [hash32(k.public_key) for k in keys]
        value = bytes([7]) * 64

        async def measure(name: str, fn: Callable[[DHT, int], Awaitable[bool]],
                          parallel: int = 1, extra: dict[str, float] | None = None) -> None:
            times: list[float] = []
            ok = 0
            before = requests()

            async def one(i: int) -> None:
                nonlocal ok
                node = rng.choice(alive)
                t = time.perf_counter()
                try:
                    good = await fn(node, i)
                except Exception:
                    good = False
                times.append((time.perf_counter() - t) * 1000)
                ok += good

            for i in range(0, ops, parallel):
                await asyncio.gather(*(one(j) for j in range(i, min(ops, i + parallel))))
            m = {"name": name, **stats(times), "msgs": (requests() - before) / ops, "ok": ok}
            m.update(extra or {})
            out["measures"].append(m)

        recall: list[float] = []

        async def find(node: DHT, i: int) -> bool:
            target = rng.randbytes(32)
            found = await node.find_node(target)
            t = int.from_bytes(target, "big")
            truth = {d.id for d in sorted(alive, key=lambda d: int.from_bytes(d.id, "big") ^ t)
                     [:20]}
            ids = [nid for _, nid in found][:20]
            recall.append(sum(1 for x in ids if x in truth) / max(1, min(20, len(truth))))
            return bool(found)

        async def put(node: DHT, i: int) -> bool:
            await node.mutable_put(keys[i], value, 1)
            return True

        async def get_latest(node: DHT, i: int) -> bool:
            rec = await node.mutable_get(keys[i].public_key, latest=True)
            return rec is not None and rec.seq == 1

        async def get(node: DHT, i: int) -> bool:
            rec = await node.mutable_get(keys[i].public_key, min_seq=1, latest=False)
            return rec is not None and rec.seq == 1 and rec.value == value

        async def announce(node: DHT, i: int) -> bool:
            await node.announce(topics[i], keys[i])
            return True

        async def lookup(node: DHT, i: int) -> bool:
            async with node.lookup(topics[i]) as peers:
                async for p in peers:
                    if p.public_key == keys[i].public_key:
                        return True
            return False

        await measure("find_node", find)
        out["measures"][-1]["recall"] = sum(recall) / len(recall)
        await measure("mutable_put", put)
        await measure("mutable_get_latest", get_latest)
        await measure("mutable_get", get)
        await measure("announce", announce)
        await measure("lookup", lookup)
        out["rss_mib"] = rss_mib()
        victims = rng.sample(nodes[1:], int(0.3 * n))
        for v in victims:
            alive.remove(v)
        for s, d in zip(stacks, nodes[1:], strict=True):
            if d in victims:
                await s.aclose()  # sockets closed without a word to anyone
        recall.clear()
        await measure("find_node_churn", find, parallel=10)
        out["measures"][-1]["recall"] = sum(recall) / len(recall)
        await measure("mutable_get_churn", get, parallel=10)
        return out


def run_js(n: int, ops: int, seed: int) -> dict[str, Any] | None:
    script = ROOT / "bench" / "js" / "dht_anchor.js"
    proc = subprocess.run(["node", str(script), str(n), str(ops), str(seed)],
                          capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        print(f"JS anchor failed: {proc.stderr[-2000:]}", file=sys.stderr)
        return None
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return data


def run_cairn(n: int, ops: int, seed: int) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(Path(__file__)), "--worker", str(n),
                           "--ops", str(ops), "--seed", str(seed)],
                          capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"Cairn worker failed:\n{proc.stderr[-4000:]}")
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return data


def verdict(name: str, n: int, m: dict[str, float]) -> str:
    checks = []
    t = TARGETS.get((name, n))
    if t is not None:
        checks.append((t[0], m[t[0]] <= t[1], f"{t[0][:-3]} <= {t[1]:g} ms"))
    if name == "mutable_get":
        checks.append(("p99_ms", m["p99_ms"] <= GET_P99, f"p99 <= {GET_P99:g} ms"))
        checks.append(("ok", m["ok"] == m["n"], "fresh 100%"))
    if not checks:
        return "-"
    return ("PASS " if all(c[1] for c in checks) else "MISS ") + ", ".join(c[2] for c in checks)


def table(results: list[tuple[int, dict[str, Any], dict[str, Any] | None]]) -> str:
    lines = []
    head = (f"{'N':>4}  {'measure':<19} {'Cairn med/p99 ms':>17} {'JS med/p99 ms':>17} "
            f"{'msgs C/JS':>11} {'ok C/JS':>9}  target")
    lines.append(head)
    lines.append("-" * len(head))
    for n, c, j in results:
        jm = {m["name"]: m for m in j["measures"]} if j else {}
        for m in c["measures"]:
            o = jm.get(m["name"])
            js = f"{o['median_ms']:.2f}/{o['p99_ms']:.2f}" if o else "-"
            msgs = f"{m['msgs']:.0f}/{o['msgs']:.0f}" if o else f"{m['msgs']:.0f}/-"
            ok = f"{m['ok']}/{o['ok']}" if o else f"{m['ok']}/-"
            name = m["name"] + (f" r={m['recall']:.3f}" if "recall" in m else "")
            lines.append(f"{n:>4}  {name:<19} {m['median_ms']:>8.2f}/{m['p99_ms']:<8.2f} "
                         f"{js:>17} {msgs:>11} {ok:>9}  {verdict(m['name'], n, m)}")
        rss_target = f"PASS <= {RSS_300:g} MiB" if c["rss_mib"] <= RSS_300 else (
            f"MISS <= {RSS_300:g} MiB")
        lines.append(f"{n:>4}  {'RSS of the network':<19} {c['rss_mib']:>12.1f} MiB "
                     f"{(j or {}).get('rss_mib', float('nan')):>12.1f} MiB "
                     f"{'':>21}  {rss_target if n == 300 else '-'}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", default="100,300")
    ap.add_argument("--ops", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-js", action="store_true")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        try:
            import uvloop
        except ImportError:
            result = asyncio.run(worker(args.worker, args.ops, args.seed))
        else:
            result = uvloop.run(worker(args.worker, args.ops, args.seed))
        print(json.dumps(result))
        return
    results = []
    for n in (int(x) for x in args.nodes.split(",")):
        js = None if args.no_js else run_js(n, args.ops, args.seed)
        results.append((n, run_cairn(n, args.ops, args.seed), js))
    if args.json:
        print(json.dumps([{"n": n, "cairn": c, "js": j} for n, c, j in results]))
        return
    print(f"# python bench/dht.py {' '.join(sys.argv[1:])}")
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%S%z')}  {platform.machine()}, {os.cpu_count()} CPUs,"
          f" python {platform.python_version()}, node "
          f"{subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()}")
    print(f"# {args.ops} operations per measure from random nodes; churn = 30% killed, 10 at once")
    print()
    print(table(results))


if __name__ == "__main__":
    main()

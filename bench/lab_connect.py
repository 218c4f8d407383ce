"""Connection set-up by key in the NAT lab (tests/lab): p50 / p99, by the kind of NAT the
client is behind. Issue 19's figure "connection set-up by key, Cairn client to Cairn server vs
JS hyperdht to JS hyperdht, in the lab".

    sudo .venv/bin/python bench/lab_connect.py [--connections 50] [--markdown]

Needs root (network namespaces), `ip`, `nft`, node and tests/interop/node_modules. One lab, one
JS testnet of 4 dht-rpc nodes on the public side for both columns:

- JS -> JS (the anchor): a JS hyperdht server on the public side; a JS client behind the home
  NAT (endpoint-independent) and one behind the carrier NAT (symmetric) each bootstrap once,
  then connect --connections times one after the other, each timed from ``connect()`` to its
  socket's ``handshake`` event, and closed.
- Cairn -> Cairn: a Cairn hyperdht server (:func:`cairn.hyperdht.serve_by_key` on a Cairn DHT
  node, its public address given) on the public side; a Cairn client behind each NAT (a Cairn
  DHT node) bootstraps once, then connects as often, each timed from the start of
  :func:`cairn.hyperdht.handshake_by_key` (FIND_PEER, PEER_HANDSHAKE relayed by the JS nodes
  holding the announce) to the completed Noise IK, with a fresh client key each time (JS's
  ``handshake`` event comes at the same point: IK done, its UDX stream connected locally,
  no packet on it yet). The
  server's handshake rate limit (10 a second per client host) is lifted for the run: behind a
  NAT every connect comes from one address, and the figure is the path, not the limit.

Both clients dial a server on the public side, which works behind both NATs without
holepunching; rows for two NATs (holepunching) are another function's.
The Cairn ends run as this script (``--cairn-server``, ``--cairn-client``) inside the lab.

The holepunch rows (``punch_rows``, alone with ``--punch-only``): server and client behind two
home NATs (endpoint-independent, with the lab's TTL guard), every connection punched, timed to
the echo of "ping": Cairn client -> Cairn server vs JS client -> JS server, in one lab, on one
JS testnet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.interop.harness import INTEROP_DIR  # noqa: E402
from tests.lab import PUBLIC_IP, Lab, lab_unavailable  # noqa: E402
from tests.lab.test_lab_hyperdht import js_server, js_testnet, node  # noqa: E402

from bench_table import Row, print_tables  # noqa: E402

KINDS = {"eim": "home NAT (EIM)", "sym": "carrier NAT (symmetric)"}
SERVER_SEED = "44" * 32  # the Cairn server's key pair
CONNECT_TIMEOUT = 10.0  # as the JS client's


def p99(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.99 * (len(s) - 1)))]


def _bootstrap(text: str) -> list[tuple[str, int]]:
    out = []
    for item in text.split(","):
        host, port = item.rsplit(":", 1)
        out.append((host, int(port)))
    return out


def _say(value: object) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


async def _cairn_server(bootstrap: str, seed: str) -> None:
    """On the public side: serve by key until killed; say {"ready", "publicKey"}."""
    from cairn.crypto import key_pair
    from cairn.dht.api import DHT
    from cairn.hyperdht import RateLimit, serve_by_key

    keys = key_pair(bytes.fromhex(seed))
    unlimited = RateLimit(per_host=1e6, burst=1e6, total=1e6)
    async with DHT.start(PUBLIC_IP, 0, _bootstrap(bootstrap), persistent=False) as dht:
        await dht.ready()
        async with serve_by_key(dht.node, keys, public_address=dht.address,
                                limit=unlimited) as server:
            await server.wait_announced()
            _say({"ready": True, "publicKey": keys.public_key.hex(),
                  "announced": len(server.announce_nodes)})
            while True:  # the connections are timed on the client: take them, drop them
                await server.accept()


async def _cairn_client(bootstrap: str, key: str, n: int, seed: int) -> None:
    """Behind a NAT: bootstrap once, then ``n`` handshakes by key one after the other; say
    {"ms": [...], "failed": n, "errors": [...]}."""
    from cairn.crypto import key_pair
    from cairn.dht.api import DHT
    from cairn.hyperdht import handshake_by_key

    rng = random.Random(seed)
    ms: list[float] = []
    errors: list[str] = []
    async with DHT.start("0.0.0.0", 0, _bootstrap(bootstrap), persistent=False) as dht:
        await dht.ready()
        for _ in range(n):
            start = time.perf_counter()
            try:
                await handshake_by_key(dht.node, bytes.fromhex(key),
                                       key_pair(rng.randbytes(32)), timeout=CONNECT_TIMEOUT)
            except Exception as exc:  # counted as a failure, named in the output
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            ms.append((time.perf_counter() - start) * 1000)
    _say({"ms": ms, "failed": len(errors), "errors": errors[:5]})


Times = dict[str, tuple[list[float], int]]


def js_connect(lab: Lab, node_path: Path, bootstrap: str, d: Path, connections: int) -> Times:
    """Set-up times (ms) and failures of a JS client behind each NAT to a public JS server."""
    _, key = js_server(lab, node_path, INTEROP_DIR, bootstrap, d / "server.log")
    out: Times = {}
    for kind in KINDS:
        client = lab.spawn(lab.sites[kind].host_ns, node(
            node_path, INTEROP_DIR, "bench", bootstrap, key, str(connections)),
            log=d / f"js-client-{kind}.log")
        got = client.until(lambda x: isinstance(x, dict), 30.0 + connections * 10.0)
        out[kind] = ([float(x) for x in got["ms"]], int(got["failed"]))
    return out


def cairn_connect(lab: Lab, bootstrap: str, d: Path, connections: int) -> Times:
    """Set-up times (ms) and failures of a Cairn client behind each NAT to a public Cairn
    server, on the same testnet."""
    me = str(Path(__file__).resolve())
    server = lab.spawn(lab.public, lab.python(me, "--cairn-server", bootstrap, SERVER_SEED),
                       log=d / "cairn-server.log")
    key = str(server.until(lambda x: isinstance(x, dict) and bool(x.get("ready")),
                           60.0)["publicKey"])
    out: Times = {}
    for k, kind in enumerate(KINDS):
        client = lab.spawn(lab.sites[kind].host_ns,
                           lab.python(me, "--cairn-client", bootstrap, key, str(connections),
                                      str(k)),
                           log=d / f"cairn-client-{kind}.log")
        got = client.until(lambda x: isinstance(x, dict),
                           60.0 + connections * CONNECT_TIMEOUT)
        if got["errors"]:
            print(f"Cairn behind {KINDS[kind]}: {got['failed']} failed, e.g. "
                  f"{got['errors'][0]}", file=sys.stderr)
        out[kind] = ([float(x) for x in got["ms"]], int(got["failed"]))
    return out


def rows(js: Times, cairn: Times) -> list[Row]:
    out = []
    for kind, name in KINDS.items():
        c_ms, c_failed = cairn.get(kind, ([], 0))
        j_ms, j_failed = js.get(kind, ([], 0))
        note = (f"Cairn {len(c_ms)} of {len(c_ms) + c_failed}, "
                f"JS {len(j_ms)} of {len(j_ms) + j_failed} connected")
        for label, fn in (("p50", statistics.median), ("p99", p99)):
            c = fn(c_ms) if c_ms else None
            j = fn(j_ms) if j_ms else None
            ratio = c / j if c is not None and j else None
            out.append(Row(f"set-up by key, client behind the {name}, {label}", "ms", c, j,
                           ratio, "info", note))
    return out


def punch_connect(connections: int, default_limits: bool = False
                  ) -> dict[str, tuple[list[float], int, list[str]]]:
    """Set-up by key between two home NATs (a lab with a second endpoint-independent router and
    the TTL guard, nat.md 6): the server behind "eim", the client behind "eim2", so every
    connection is a holepunch. On one JS testnet on the public side, in turns: JS client -> JS
    server, then Cairn client -> Cairn server; each connection timed from its start to the echo
    of "ping" over the punched path (handshake, NAT samples, rounds, probes, secret-stream).
    The Cairn server's per-host handshake limit (10/s, burst 20) is raised unless
    ``default_limits``: back-to-back connects from one host would time the limit."""
    from tests.lab.test_lab_punch import SEED, cairn_server

    node_path = shutil.which("node")
    if node_path is None:
        raise SystemExit("node is not on PATH (Node.js 20 or newer)")
    out: dict[str, tuple[list[float], int, list[str]]] = {}
    with tempfile.TemporaryDirectory(prefix="cairn-lab-bench-") as tmp, \
            Lab(kinds=("eim", "eim2"), ttl_guard=True) as lab:
        d = Path(tmp)
        n = Path(node_path)
        bootstrap = js_testnet(lab, n, INTEROP_DIR, d / "testnet.log")
        client_ns = lab.sites["eim2"].host_ns
        server_ns = lab.sites["eim"].host_ns
        js_srv = lab.spawn(server_ns, node(n, INTEROP_DIR, "server", bootstrap, SEED),
                           log=d / "js-server.log")
        ready = js_srv.until(lambda x: isinstance(x, dict) and bool(x.get("ready")), 30.0)
        client = lab.spawn(client_ns, node(n, INTEROP_DIR, "echobench", bootstrap,
                                           str(ready["publicKey"]), str(connections)),
                           log=d / "js-client.log")
        got = client.until(lambda x: isinstance(x, dict), 30.0 + connections * 16.0)
        out["js"] = ([float(x) for x in got["ms"]], int(got["failed"]),
                     [str(e) for e in got.get("errors", [])])
        js_srv.proc.terminate()
        _, key = cairn_server(lab, "eim", bootstrap, d / "cairn-server.log",
                              *(() if default_limits else ("--raise-limits",)))
        client = lab.spawn(client_ns, lab.python("-m", "tests.lab.punch", "bench", bootstrap,
                                                 key, str(connections)),
                           log=d / "cairn-client.log")
        got = client.until(lambda x: isinstance(x, dict), 30.0 + connections * 16.0)
        out["cairn"] = ([float(x) for x in got["ms"]], int(got["failed"]),
                        [str(e) for e in got.get("errors", [])])
    return out


def punch_rows(connections: int, default_limits: bool = False) -> list[Row]:
    got = punch_connect(connections, default_limits)
    (cairn, cfail, cerr), (js, jfail, jerr) = got["cairn"], got["js"]
    verdict = (f"Cairn {len(cairn)} of {len(cairn) + cfail}, JS {len(js)} of {len(js) + jfail} "
               "connected")
    if cerr or jerr:
        verdict += f" (errors: Cairn {cerr[:2]}, JS {jerr[:2]})"
    rows = []
    for name, pick in (("p50", statistics.median), ("p99", p99)):
        c = pick(cairn) if cairn else None
        j = pick(js) if js else None
        rows.append(Row(f"set-up by key to echo, two home NATs (holepunch), {name}", "ms", c, j,
                        c / j if c is not None and j else None, "info", verdict))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--punch-only", action="store_true",
                   help="only the two-home-NAT (holepunch) rows")
    p.add_argument("--default-limits", action="store_true",
                   help="keep the Cairn server's per-host handshake limit (10/s, burst 20)")
    p.add_argument("--cairn-server", nargs=2, metavar=("BOOTSTRAP", "SEED"),
                   help=argparse.SUPPRESS)
    p.add_argument("--cairn-client", nargs=4, metavar=("BOOTSTRAP", "KEY", "N", "SEED"),
                   help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.cairn_server:
        asyncio.run(_cairn_server(*a.cairn_server))
        return
    if a.cairn_client:
        boot, key, n, seed = a.cairn_client
        asyncio.run(_cairn_client(boot, key, int(n), int(seed)))
        return
    why = lab_unavailable()
    if why is not None:
        raise SystemExit(f"the NAT lab needs {why}")
    if a.punch_only:
        print_tables(punch_rows(a.connections, a.default_limits), a.markdown)
        return
    node_path = shutil.which("node")
    if node_path is None:
        raise SystemExit("node is not on PATH (Node.js 20 or newer)")
    with tempfile.TemporaryDirectory(prefix="cairn-lab-bench-") as tmp, Lab() as lab:
        d = Path(tmp)
        bootstrap = js_testnet(lab, Path(node_path), INTEROP_DIR, d / "testnet.log")
        js = js_connect(lab, Path(node_path), bootstrap, d, a.connections)
        cairn = cairn_connect(lab, bootstrap, d, a.connections)
    print(f"connection set-up by key in the NAT lab, {a.connections} connections a client, "
          "one after the other, to the completed IK (JS: its 'handshake' event, the UDX "
          "stream connected locally); lower is better")
    print_tables(rows(js, cairn) + punch_rows(a.connections, a.default_limits), a.markdown)


if __name__ == "__main__":
    main()

"""Connection set-up by key in the NAT lab (tests/lab): p50 / p99, by the kind of NAT the
client is behind. Issue 19's figure "connection set-up by key, Cairn client to Cairn server vs
JS hyperdht to JS hyperdht, in the lab".

    sudo .venv/bin/python bench/lab_connect.py [--connections 50] [--markdown]

Needs root (network namespaces), `ip`, `nft`, node and tests/interop/node_modules. A JS testnet
of 4 dht-rpc nodes and a JS hyperdht server run on the lab's public side; a JS client behind the
home NAT (endpoint-independent) and one behind the carrier NAT (symmetric) each bootstrap once,
then connect --connections times one after the other, each timed from ``connect()`` to the
completed Noise handshake, and closed. The Cairn column waits for Cairn's hyperdht client and
server (issue 19 item 2): until then it prints "-".

The holepunch rows (``punch_rows``, alone with ``--punch-only``): server and client behind two
home NATs (endpoint-independent, with the lab's TTL guard), every connection punched, timed to
the echo of "ping": Cairn client -> Cairn server vs JS client -> JS server, in one lab, on one
JS testnet.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.interop.harness import INTEROP_DIR  # noqa: E402
from tests.lab import Lab, lab_unavailable  # noqa: E402
from tests.lab.test_lab_hyperdht import js_server, js_testnet, node  # noqa: E402

from bench_table import Row, print_tables  # noqa: E402


def p99(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.99 * (len(s) - 1)))]


def js_connect(connections: int) -> dict[str, tuple[list[float], int]]:
    """Set-up times (ms) and failures of a JS client behind each NAT to a public JS server."""
    node_path = shutil.which("node")
    if node_path is None:
        raise SystemExit("node is not on PATH (Node.js 20 or newer)")
    out: dict[str, tuple[list[float], int]] = {}
    with tempfile.TemporaryDirectory(prefix="cairn-lab-bench-") as tmp, Lab() as lab:
        d = Path(tmp)
        n = Path(node_path)
        bootstrap = js_testnet(lab, n, INTEROP_DIR, d / "testnet.log")
        _, key = js_server(lab, n, INTEROP_DIR, bootstrap, d / "server.log")
        for kind in ("eim", "sym"):
            client = lab.spawn(lab.sites[kind].host_ns, node(
                n, INTEROP_DIR, "bench", bootstrap, key, str(connections)),
                log=d / f"client-{kind}.log")
            got = client.until(lambda x: isinstance(x, dict), 30.0 + connections * 10.0)
            out[kind] = ([float(x) for x in got["ms"]], int(got["failed"]))
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
    a = p.parse_args()
    why = lab_unavailable()
    if why is not None:
        raise SystemExit(f"the NAT lab needs {why}")
    if a.punch_only:
        print_tables(punch_rows(a.connections, a.default_limits), a.markdown)
        return
    js = js_connect(a.connections)
    names = {"eim": "home NAT (EIM)", "sym": "carrier NAT (symmetric)"}
    rows = []
    for kind, (ms, failed) in js.items():
        verdict = f"{len(ms)} of {len(ms) + failed} connected; Cairn: not yet (issue 19 item 2)"
        rows.append(Row(f"set-up by key, {names[kind]}, p50", "ms", None,
                        statistics.median(ms) if ms else None, None, "-", verdict))
        rows.append(Row(f"set-up by key, {names[kind]}, p99", "ms", None,
                        p99(ms) if ms else None, None, "-", verdict))
    rows += punch_rows(a.connections, a.default_limits)
    print_tables(rows, a.markdown)


if __name__ == "__main__":
    main()

"""The JS oracle in the NAT lab: a JS hyperdht server on the public side, a JS client behind
each router, a JS testnet of dht-rpc bootstrap nodes on the public side (npm hyperdht from
tests/interop/node_modules). What the lab shows here is what Cairn's own hyperdht client and
server must match (nat.md section 6): behind a home NAT and behind a carrier NAT the client
connects to a public server by its key; behind a firewall that drops UDP it cannot (hence
Cairn's TCP fallback)."""

from __future__ import annotations

from pathlib import Path

from tests.lab import PUBLIC_IP, Lab, Running

JS = Path(__file__).resolve().parent / "js" / "hyperdht_lab.js"
SEED = "11" * 32  # the JS server's key pair (a fixed seed: the same key every run)
TESTNET_SIZE = 4


def node(node_path: Path, interop_dir: Path, *args: str) -> list[str]:
    """argv of the lab's JS oracle, finding the npm packages in tests/interop."""
    return ["env", f"NODE_PATH={interop_dir / 'node_modules'}", str(node_path), str(JS), *args]


def js_testnet(lab: Lab, node_path: Path, interop_dir: Path, log: Path) -> str:
    """A JS testnet on the public host; returns its bootstrap (comma-separated HOST:PORT)."""
    net = lab.spawn(lab.public, node(node_path, interop_dir, "testnet", str(TESTNET_SIZE),
                                     PUBLIC_IP), log=log)
    return ",".join(net.line(30.0)["bootstrap"])


def js_server(lab: Lab, node_path: Path, interop_dir: Path, bootstrap: str, log: Path
              ) -> tuple[Running, str]:
    srv = lab.spawn(lab.public, node(node_path, interop_dir, "server", bootstrap, SEED),
                    log=log)
    ready = srv.until(lambda x: isinstance(x, dict) and bool(x.get("ready")), 30.0)
    return srv, str(ready["publicKey"])


def js_client(lab: Lab, node_path: Path, interop_dir: Path, kind: str, bootstrap: str,
              key: str, ms: int, log: Path) -> dict[str, object]:
    client = lab.spawn(lab.sites[kind].host_ns,
                       node(node_path, interop_dir, "client", bootstrap, key, str(ms)), log=log)
    result: dict[str, object] = client.until(lambda x: isinstance(x, dict), ms / 1000 + 15)
    return result


def test_a_js_client_behind_each_nat_connects_to_a_js_server_by_key(
        lab: Lab, node_path: Path, interop_dir: Path, tmp_path: Path) -> None:
    bootstrap = js_testnet(lab, node_path, interop_dir, tmp_path / "testnet.log")
    _, key = js_server(lab, node_path, interop_dir, bootstrap, tmp_path / "server.log")
    for kind in ("eim", "sym"):
        got = js_client(lab, node_path, interop_dir, kind, bootstrap, key, 20_000,
                        tmp_path / f"client-{kind}.log")
        assert got.get("ok") and got.get("echo") == "echo:ping", (kind, got)


def test_a_js_client_behind_the_udp_dropping_firewall_cannot_connect_by_key(
        lab: Lab, node_path: Path, interop_dir: Path, tmp_path: Path) -> None:
    bootstrap = js_testnet(lab, node_path, interop_dir, tmp_path / "testnet.log")
    _, key = js_server(lab, node_path, interop_dir, bootstrap, tmp_path / "server.log")
    got = js_client(lab, node_path, interop_dir, "fw", bootstrap, key, 8_000,
                    tmp_path / "client-fw.log")
    assert got.get("ok") is False, got

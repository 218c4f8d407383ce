"""Holepunching in the NAT lab (nat.md sections 3 and 6): two home routers (endpoint-independent
Linux NATs) whose public sides drop packets with a TTL below 16 (``Lab(ttl_guard=True)``: the
first probe of a punch has TTL 5 and must not reach the far NAT). The DHT runs on the public
side; the server sits behind one router, the client behind the other; neither can be reached
unsolicited, so they connect by key only by punching, then echo bytes over UDX on the punched
path. Cairn to Cairn, JS to Cairn and Cairn to JS; a symmetric NAT fails fast with a reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import missing
from tests.lab import KINDS, PUBLIC_IP, Lab, Running, lab_unavailable
from tests.lab.test_lab_hyperdht import js_testnet, node

SEED = "33" * 32
PUNCH = ("-m", "tests.lab.punch")


@pytest.fixture
def punch_lab() -> Iterator[Lab]:
    """A lab with a second home router and the TTL guard on every router."""
    why = lab_unavailable()
    if why is not None:
        missing(f"the NAT lab: {why}", "run `make test` as root (it installs iproute2 and "
                "nftables with apt-get)")
    with Lab(kinds=(*KINDS, "eim2"), ttl_guard=True) as built:
        yield built


def cairn_testnet(lab: Lab, log: Path, n: int = 5) -> str:
    net = lab.spawn(lab.public, lab.python(*PUNCH, "testnet", str(n), PUBLIC_IP), log=log)
    return ",".join(net.line(30.0)["bootstrap"])


def cairn_server(lab: Lab, kind: str, bootstrap: str, log: Path, *extra: str
                 ) -> tuple[Running, str]:
    srv = lab.spawn(lab.sites[kind].host_ns,
                    lab.python(*PUNCH, "server", bootstrap, SEED, *extra), log=log)
    ready = srv.until(lambda x: isinstance(x, dict) and bool(x.get("ready")), 30.0)
    return srv, str(ready["publicKey"])


def cairn_client(lab: Lab, kind: str, bootstrap: str, key: str, ms: int,
                 log: Path) -> dict[str, object]:
    client = lab.spawn(lab.sites[kind].host_ns,
                       lab.python(*PUNCH, "client", bootstrap, key, str(ms)), log=log)
    got: dict[str, object] = client.until(lambda x: isinstance(x, dict), ms / 1000 + 30)
    return got


def test_cairn_client_punches_to_a_cairn_server_across_two_home_nats(
        punch_lab: Lab, tmp_path: Path) -> None:
    lab = punch_lab
    bootstrap = cairn_testnet(lab, tmp_path / "testnet.log")
    srv, key = cairn_server(lab, "eim", bootstrap, tmp_path / "server.log")
    got = cairn_client(lab, "eim2", bootstrap, key, 20_000, tmp_path / "client.log")
    assert got.get("ok") and got.get("echo") == "echo:ping", got
    assert got.get("punched") and got.get("firewall") == 2, got  # CONSISTENT
    # the path is the server's router, not a relay
    assert str(got["path"]).startswith(lab.sites["eim"].public_ip + ":"), got
    conn = srv.until(lambda x: isinstance(x, dict) and "connection" in x, 10.0)
    assert conn.get("punched") is True, conn


def test_cairn_client_behind_a_symmetric_nat_fails_fast_with_a_reason(
        punch_lab: Lab, tmp_path: Path) -> None:
    lab = punch_lab
    bootstrap = cairn_testnet(lab, tmp_path / "testnet.log")
    _, key = cairn_server(lab, "eim", bootstrap, tmp_path / "server.log")
    got = cairn_client(lab, "sym", bootstrap, key, 20_000, tmp_path / "client.log")
    assert got.get("ok") is False, got
    assert "symmetric NAT" in str(got.get("error")), got


def test_a_js_client_punches_to_a_cairn_server_across_two_home_nats(
        punch_lab: Lab, node_path: Path, interop_dir: Path, tmp_path: Path) -> None:
    lab = punch_lab
    bootstrap = js_testnet(lab, node_path, interop_dir, tmp_path / "testnet.log")
    srv, key = cairn_server(lab, "eim", bootstrap, tmp_path / "server.log")
    client = lab.spawn(lab.sites["eim2"].host_ns,
                       node(node_path, interop_dir, "client", bootstrap, key, "20000"),
                       log=tmp_path / "client.log")
    got = client.until(lambda x: isinstance(x, dict), 50.0)
    assert got.get("ok") and got.get("echo") == "echo:ping", got
    conn = srv.until(lambda x: isinstance(x, dict) and "connection" in x, 10.0)
    assert conn.get("punched") is True, conn


def test_cairn_client_punches_to_a_js_server_across_two_home_nats(
        punch_lab: Lab, node_path: Path, interop_dir: Path, tmp_path: Path) -> None:
    lab = punch_lab
    bootstrap = js_testnet(lab, node_path, interop_dir, tmp_path / "testnet.log")
    srv = lab.spawn(lab.sites["eim"].host_ns,
                    node(node_path, interop_dir, "server", bootstrap, SEED),
                    log=tmp_path / "server.log")
    ready = srv.until(lambda x: isinstance(x, dict) and bool(x.get("ready")), 30.0)
    got = cairn_client(lab, "eim2", bootstrap, str(ready["publicKey"]), 20_000,
                       tmp_path / "client.log")
    assert got.get("ok") and got.get("echo") == "echo:ping", got
    assert str(got["path"]).startswith(lab.sites["eim"].public_ip + ":"), got


def test_a_js_client_behind_a_symmetric_nat_is_refused_random_punching_at_once(
        punch_lab: Lab, node_path: Path, interop_dir: Path, tmp_path: Path) -> None:
    """hyperdht would answer a client behind a symmetric NAT with random punching (1,750 probes
    over 35 s); a Cairn server answers ABORTED and the JS client fails within seconds."""
    lab = punch_lab
    bootstrap = js_testnet(lab, node_path, interop_dir, tmp_path / "testnet.log")
    _, key = cairn_server(lab, "eim", bootstrap, tmp_path / "server.log")
    client = lab.spawn(lab.sites["sym"].host_ns,
                       node(node_path, interop_dir, "client", bootstrap, key, "30000"),
                       log=tmp_path / "client.log")
    got = client.until(lambda x: isinstance(x, dict), 50.0)
    # seen: HOLEPUNCH_ABORTED in 0.4 s (a timeout would say "no echo within 30000 ms")
    assert got.get("ok") is False, got
    assert got.get("error") in ("HOLEPUNCH_ABORTED", "REMOTE_ABORTED",
                                "REMOTE_NOT_HOLEPUNCHABLE"), got

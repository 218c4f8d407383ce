"""`cairn dht put|get|announce|lookup` against a remote bootstrap node: a testnet in the lab's
public namespace (10.0.0.1), the commands run in another namespace joined to it by a veth pair
(the home router's, 10.0.0.11) and from the host behind that router's NAT (192.168.1.2).

Before the client commands listened on every interface they bound to 127.0.0.1, and from any
other host they failed with "no DHT node answered"."""

from __future__ import annotations

import json

import pytest

from cairn_demo.processes import cairn_command
from tests.lab import PUBLIC_IP, Lab

SEED = "07" * 32
PUBLIC_KEY = "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c"
TOPIC = "51e75abe65a0e4fea882a9ed2aa67b4ca1e35cfb92f36d77c40448482ce011f9"


@pytest.mark.parametrize("where", ["router", "behind NAT"])
def test_every_dht_command_works_against_a_remote_bootstrap(lab: Lab, where: str) -> None:
    net = lab.spawn(lab.public, cairn_command("dht", "testnet", "--nodes", "5",
                                              "--host", PUBLIC_IP, "--port", "0"))
    ready = net.until(lambda line: str(line).startswith("testnet ready"), timeout=30.0)
    bootstrap = str(ready).rsplit(" ", 1)[1]
    assert bootstrap.startswith(f"{PUBLIC_IP}:")
    site = lab.site("eim")
    ns = site.router_ns if where == "router" else site.host_ns

    def cairn(*args: str) -> str:
        done = lab.run(ns, cairn_command("dht", *args, "--bootstrap", bootstrap),
                       check=False, timeout=60.0)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    put = cairn("put", "--seed", SEED, "--seq", "1", '{"t":21.5}')
    assert f"public key: {PUBLIC_KEY}" in put
    got = json.loads(cairn("get", PUBLIC_KEY, "--json"))
    assert got == {"seq": 1, "value": b'{"t":21.5}'.hex()}
    assert f"public key: {PUBLIC_KEY}" in cairn("announce", "--seed", SEED, TOPIC)
    assert PUBLIC_KEY in cairn("lookup", TOPIC).split()

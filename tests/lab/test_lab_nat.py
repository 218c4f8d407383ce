"""The NAT lab itself: each router does what its kind of NAT does, before anything of Cairn's
runs in it (tests/lab/test_lab_hyperdht.py and test_lab_fleet.py rely on this)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.lab import (
    KINDS,
    PUBLIC_IP,
    Lab,
    LabError,
    Running,
    clean_leftovers,
    lab_unavailable,
)

PROBE = ("-m", "tests.lab.probe")


def serve(lab: Lab, ns: str, ports: int = 1) -> tuple[Running, list[int]]:
    """TCP and UDP echo-the-source-address servers in `ns` (for 60 s at most)."""
    srv = lab.spawn(ns, lab.python(*PROBE, "serve", "--ports", str(ports), "--seconds", "60"))
    return srv, list(srv.line(10.0)["ports"])


def send(lab: Lab, ns: str, proto: str, to: list[str], *, sport: int = 0,
         timeout: float = 1.0) -> list[str | None]:
    """What each destination saw as our address (None: nothing came back)."""
    argv = [*PROBE, "send", proto, "--sport", str(sport), "--timeout", str(timeout)]
    for dest in to:
        argv += ["--to", dest]
    out = lab.run(ns, lab.python(*argv), timeout=5 + timeout * len(to) * 2)
    seen: list[str | None] = json.loads(out.stdout)["seen"]
    return seen


@pytest.mark.parametrize("kind", KINDS)
def test_tcp_from_behind_each_router_reaches_the_public_side_from_its_address(
        lab: Lab, kind: str) -> None:
    _, [port] = serve(lab, lab.public)
    site = lab.sites[kind]
    [seen] = send(lab, site.host_ns, "tcp", [f"{PUBLIC_IP}:{port}"])
    assert seen is not None, f"TCP from behind the {kind} router did not get through"
    assert seen.split(":")[0] == site.public_ip  # masqueraded: the private address never shows


@pytest.mark.parametrize("kind", KINDS)
def test_nothing_from_outside_reaches_a_host_behind_a_router(lab: Lab, kind: str) -> None:
    site = lab.sites[kind]
    _, [port] = serve(lab, site.host_ns)
    # the public side has a route to the LAN (a neighbour could): only the router's filter
    # stands in the way; and nothing listens on the router's own public address
    for dest in (f"{site.host_ip}:{port}", f"{site.public_ip}:{port}"):
        assert send(lab, lab.public, "tcp", [dest], timeout=0.5) == [None], dest
        assert send(lab, lab.public, "udp", [dest], timeout=0.5) == [None], dest


def test_the_firewall_drops_udp_and_the_nats_pass_it(lab: Lab) -> None:
    _, [port] = serve(lab, lab.public)
    seen = {k: send(lab, s.host_ns, "udp", [f"{PUBLIC_IP}:{port}"], timeout=0.5)
            for k, s in lab.sites.items()}
    assert seen["fw"] == [None]
    for kind in ("eim", "sym"):
        [got] = seen[kind]
        assert got is not None and got.startswith(lab.sites[kind].public_ip + ":"), kind


def test_the_home_router_keeps_one_public_port_for_every_destination(lab: Lab) -> None:
    _, ports = serve(lab, lab.public, ports=3)
    seen = send(lab, lab.sites["eim"].host_ns, "udp", [f"{PUBLIC_IP}:{p}" for p in ports],
                sport=40000)
    # endpoint-independent and port-preserving: one mapping, the host's own port
    assert seen == [f"{lab.sites['eim'].public_ip}:40000"] * 3


def test_the_carrier_nat_takes_a_new_public_port_for_every_destination(lab: Lab) -> None:
    _, ports = serve(lab, lab.public, ports=3)
    seen = send(lab, lab.sites["sym"].host_ns, "udp", [f"{PUBLIC_IP}:{p}" for p in ports],
                sport=40000)
    assert None not in seen
    public = {s.split(":")[0] for s in seen if s}
    assigned = [s.split(":")[1] for s in seen if s]
    assert public == {lab.sites["sym"].public_ip}
    # fully random: three destinations, three mappings (two equal by chance: 1 in ~28,000;
    # all three: never seen), and not the host's port
    assert len(set(assigned)) >= 2 and "40000" not in assigned, seen
    # the router's conntrack shows the three mappings
    mapped = [e for e in lab.conntrack("sym") if "udp" in e and "sport=40000" in e]
    assert len(mapped) in (0, 3)  # 0: conntrack-tools not installed


@pytest.mark.parametrize("kind", ["eim", "fw"])
def test_a_cut_path_passes_nothing_until_it_is_restored(lab: Lab, kind: str) -> None:
    _, [port] = serve(lab, lab.public)
    site = lab.sites[kind]
    with lab.outage(kind):
        assert send(lab, site.host_ns, "tcp", [f"{PUBLIC_IP}:{port}"], timeout=0.5) == [None]
        # only that router's path: the others still pass
        assert send(lab, lab.sites["sym"].host_ns, "tcp", [f"{PUBLIC_IP}:{port}"]) != [None]
    [seen] = send(lab, site.host_ns, "tcp", [f"{PUBLIC_IP}:{port}"])
    assert seen is not None and seen.startswith(site.public_ip + ":")


def test_a_path_down_for_a_while_comes_back_by_itself(lab: Lab) -> None:
    _, [port] = serve(lab, lab.public)
    lab.down_for("eim", 0.5)
    assert send(lab, lab.sites["eim"].host_ns, "tcp", [f"{PUBLIC_IP}:{port}"]) != [None]


def test_a_site_the_lab_does_not_have_is_a_clear_error(lab: Lab) -> None:
    with pytest.raises(LabError, match="no site 'cgnat' in the lab"):
        lab.cut("cgnat")


def test_without_root_the_lab_says_what_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    why = lab_unavailable()
    assert why is not None and why.startswith("root")
    with pytest.raises(LabError, match="the NAT lab needs root"):
        Lab().__enter__()


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10,
                         check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_a_failing_test_leaves_no_namespace_and_no_process(lab: Lab) -> None:
    # (the fixture's lab is only there for its requirement check)
    inner = Lab()
    started: list[Running] = []

    def failing() -> None:
        with inner:
            started.append(inner.spawn(inner.sites["sym"].host_ns, ["sleep", "600"]))
            assert inner.public in _namespaces()
            raise RuntimeError("the test failed")

    with pytest.raises(RuntimeError, match="the test failed"):
        failing()
    assert started[0].proc.poll() is not None
    assert not {ns for ns in _namespaces() if ns.startswith(inner.prefix)}


def test_the_namespaces_of_a_killed_run_are_removed_by_the_next(lab: Lab) -> None:
    assert lab_unavailable() is None
    dead = subprocess.Popen(["true"])
    dead.wait(10)
    name = f"cairnlab-{dead.pid}-0-pub"
    if os.path.exists(f"/proc/{dead.pid}"):  # the pid was taken again already
        pytest.skip("the dead run's pid is in use again")
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        assert name in clean_leftovers()
        assert name not in _namespaces()
        assert lab.public in _namespaces()  # a live run's lab is left alone
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, timeout=10,
                       capture_output=True)

"""Whole DHTs on the fake network (no sockets), seeded: churn, loss, stale replays, colluders."""

from __future__ import annotations

import pytest

from cairn.crypto import KeyPair, key_pair
from cairn.dht.events import QueryDone
from cairn.dht.hyper import (
    HyperHandler,
    start_announce,
    start_immutable_get,
    start_immutable_put,
    start_lookup,
    start_mutable_get,
    start_mutable_put,
)
from cairn.dht.node import Answer, IncomingRequest
from cairn.dht.records import HyperCommand, MutableRecord, encode_mutable_record, hash32
from cairn.testing import DHTSwarm, SwarmNode


@pytest.fixture(scope="module")
def big() -> DHTSwarm:
    """500 nodes, bootstrapped, with 1-20 ms one-way delays."""
    sw = DHTSwarm(500, seed=3, min_delay=0.001, max_delay=0.02)
    sw.bootstrap_all()
    return sw


def put(sw: DHTSwarm, sn: SwarmNode, kp: KeyPair, value: bytes, seq: int) -> QueryDone:
    qid, _ = start_mutable_put(sn.node, kp, value, seq, sw.now)
    return sw.run_query(sn, qid)


def test_small_network_does_everything() -> None:
    sw = DHTSwarm(40, seed=1)
    sw.bootstrap_all()
    assert all(len(s.node.table) >= 10 for s in sw.nodes)
    kp = key_pair(bytes([5]) * 32)
    a, b = sw.nodes[3], sw.nodes[-1]
    assert put(sw, a, kp, b"hello", 1).commits >= 10
    qid, res = start_mutable_get(b.node, kp.public_key, sw.now, min_seq=1)
    sw.run_query(b, qid)
    assert res.record is not None and res.record.value == b"hello"
    qid, target = start_immutable_put(a.node, b"immutable", sw.now)
    assert sw.run_query(a, qid).commits >= 10
    qid, ires = start_immutable_get(b.node, target, sw.now)
    sw.run_query(b, qid)
    assert ires.value == b"immutable"
    topic = hash32(b"fleet")
    assert sw.run_query(a, start_announce(a.node, topic, kp, sw.now)).commits >= 10
    qid, lres = start_lookup(b.node, topic, sw.now)
    sw.run_query(b, qid)
    assert kp.public_key in lres.peers
    # a lower seq is refused by every storing node; the stored value stays
    assert put(sw, a, kp, b"older", 0).commits == 0
    qid, res = start_mutable_get(b.node, kp.public_key, sw.now, latest=True)
    sw.run_query(b, qid)
    assert res.record is not None and res.record.value == b"hello"


def test_reads_survive_30_percent_churn_and_20_percent_loss(big: DHTSwarm) -> None:
    sw = big
    rng = sw.rng.fork("churn")
    keys = [key_pair(rng.randbytes(32)) for _ in range(30)]
    topics = [rng.randbytes(32) for _ in range(10)]
    for i, kp in enumerate(keys):
        assert put(sw, rng.choice(sw.nodes), kp, b"v%d" % i, 1).commits > 0
    for topic, kp in zip(topics, keys, strict=False):
        sn = rng.choice(sw.nodes)
        assert sw.run_query(sn, start_announce(sn.node, topic, kp, sw.now)).commits > 0
    for victim in rng.sample(sw.nodes[1:], 150):
        sw.kill(victim)
    sw.net.loss = 0.2
    alive = [s for s in sw.nodes if s.alive]
    gets = 0
    for _ in range(200):
        reader, i = rng.choice(alive), rng.randrange(len(keys))
        qid, res = start_mutable_get(reader.node, keys[i].public_key, sw.now, min_seq=1)
        sw.run_query(reader, qid, timeout=30)
        gets += res.record is not None and res.record.value == b"v%d" % i
    lookups = 0
    for _ in range(100):
        reader, j = rng.choice(alive), rng.randrange(len(topics))
        qid, lres = start_lookup(reader.node, topics[j], sw.now)
        sw.run_query(reader, qid, timeout=30)
        lookups += keys[j].public_key in lres.peers
    finds = 0
    for _ in range(100):
        reader = rng.choice(alive)
        done = sw.run_query(reader, reader.node.find_node(rng.randbytes(32), sw.now), 60)
        finds += len(done.closest) >= 10
    assert gets >= 198, f"{gets}/200 gets"
    assert lookups >= 99, f"{lookups}/100 lookups"
    assert finds >= 99, f"{finds}/100 find_node"
    sw.net.loss = 0.0


def test_latest_value_wins_over_stale_replays() -> None:
    """Every storing node but one is made to hold the older record: `latest` still finds it."""
    sw = DHTSwarm(120, seed=7)
    sw.bootstrap_all()
    kp = key_pair(bytes([8]) * 32)
    target = hash32(kp.public_key)
    writer = sw.nodes[5]
    put(sw, writer, kp, b"old", 1)
    stale = None
    for sn in sw.nodes:
        got = sn.handler.mutables.get(target, sw.now)
        if got is not None:
            stale = got
    assert stale is not None
    put(sw, writer, kp, b"new", 2)
    holders = [sn for sn in sw.nodes if sn.handler.mutables.get(target, sw.now) is not None]
    assert len(holders) >= 10
    for sn in holders[1:]:  # the replay: the old, validly signed record is back on them
        sn.handler.mutables.remove(target)
        assert sn.handler.mutables.put(target, stale, "203.0.113.9", sw.now)
    rng = sw.rng.fork("readers")
    for _ in range(100):
        reader = rng.choice(sw.nodes)
        qid, res = start_mutable_get(reader.node, kp.public_key, sw.now, latest=True)
        sw.run_query(reader, qid)
        assert res.record is not None and res.record.value == b"new", reader.server
        # and a reader who knows the seq it needs stops at the first fresh answer
        qid, res = start_mutable_get(reader.node, kp.public_key, sw.now, min_seq=2)
        sw.run_query(reader, qid)
        assert res.record is not None and res.record.seq == 2


class Colluder(HyperHandler):
    """Acknowledges puts and stores nothing; answers gets with forged or stale records."""

    def __init__(self, inner: HyperHandler, forged: bytes) -> None:
        self.__dict__.update(inner.__dict__)
        self.forged = forged
        self.lies = 0

    def on_request(self, req: IncomingRequest, now: float) -> Answer | None:
        if req.command in (HyperCommand.MUTABLE_PUT, HyperCommand.MUTABLE_GET):
            self.lies += 1
            return Answer(self.forged if req.command == HyperCommand.MUTABLE_GET else None)
        return super().on_request(req, now)


def test_eight_colluders_next_to_a_key_do_not_stop_reads() -> None:
    sw = DHTSwarm(200, seed=11)
    sw.bootstrap_all()
    kp = key_pair(bytes([9]) * 32)
    t = int.from_bytes(hash32(kp.public_key), "big")
    closest = sorted(sw.nodes[1:], key=lambda s: int.from_bytes(s.node.id, "big") ^ t)[:8]
    forged = encode_mutable_record(MutableRecord(99, b"forged", bytes(64)))
    for sn in closest:
        sn.handler = Colluder(sn.handler, forged)
        sn.node.handler = sn.handler
    honest = [s for s in sw.nodes if s not in closest]
    assert put(sw, honest[0], kp, b"true value", 3).commits >= 5
    rng = sw.rng.fork("colluders")
    ok = 0
    for _ in range(100):
        reader = rng.choice(honest)
        qid, res = start_mutable_get(reader.node, kp.public_key, sw.now)
        sw.run_query(reader, qid)
        ok += res.record is not None and res.record.value == b"true value"
    assert ok >= 95, f"{ok}/100 reads past 8 colluders"
    assert sum(sn.handler.lies for sn in closest) > 100  # type: ignore[attr-defined]


def test_adaptive_nodes_become_persistent_only_when_reachable() -> None:
    from cairn.dht.events import Bootstrapped

    sw = DHTSwarm(30, seed=13)
    sw.bootstrap_all()
    open_node = sw.add_node(adaptive=True)
    natted = sw.add_node(adaptive=True)
    for other in sw.nodes:  # nobody can reach the NATed node's server socket
        if other is not natted:
            sw.net.partition(natted.server, other.server)
            sw.net.partition(natted.server, other.client)
    for sn in (open_node, natted):
        assert sn.node.ephemeral
        sn.node.bootstrap(sw.now)
        sw.touch(sn)
    sw.run_for(10.0)
    [opened] = [e for e in open_node.events if isinstance(e, Bootstrapped)]
    [closed] = [e for e in natted.events if isinstance(e, Bootstrapped)]
    assert opened.persistent and not open_node.node.ephemeral
    assert not closed.persistent and natted.node.ephemeral
    # only the reachable one is routed to: it shows up in other nodes' tables after a refresh
    for sn in sw.nodes[:10]:
        sw.run_query(sn, sn.node.find_node(open_node.node.id, sw.now))
    assert any(open_node.node.id in {n.id for n in sn.node.table} for sn in sw.nodes[:10])
    assert not any(natted.node.id in {n.id for n in sn.node.table} for sn in sw.nodes)


def test_a_closest_set_holds_at_most_two_nodes_of_one_host() -> None:
    """Ids are H(ip, port): one host with many ports gets two places in a FIND_NODE reply's
    closest set, and loopback (a local testnet) is not capped."""
    from cairn.dht.messages import node_id
    from cairn.dht.routing import NodeInfo, RoutingTable

    target = bytes(32)
    table = RoutingTable(bytes([0xFF]) * 32, k=200)  # rows big enough for all
    one_host = [("203.0.113.7", p) for p in range(2000, 2040)]
    others = [(f"198.51.100.{i}", 4000) for i in range(1, 30)]
    loop = [("127.0.0.1", p) for p in range(5000, 5010)]
    for addr in one_host + others + loop:
        table.add(NodeInfo(node_id(addr), addr, 0.0))
    got = table.closest(target, 20)
    hosts = [n.addr[0] for n in got]
    assert len(got) == 20
    assert hosts.count("203.0.113.7") == 2
    t = int.from_bytes(target, "big")
    everyone = sorted(table, key=lambda n: n.int_id ^ t)
    wanted = []
    per: dict[str, int] = {}
    for n in everyone:
        h = n.addr[0]
        if h == "203.0.113.7":
            if per.get(h, 0) == 2:
                continue
            per[h] = per.get(h, 0) + 1
        wanted.append(n)
    assert got == wanted[:20]
    testnet = RoutingTable(bytes([0xFF]) * 32, k=200)
    for p in range(5000, 5040):
        testnet.add(NodeInfo(node_id(("127.0.0.1", p)), ("127.0.0.1", p), 0.0))
    assert len(testnet.closest(target, 20)) == 20  # loopback is not capped

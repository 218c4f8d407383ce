"""DHT attacks, in simulation and seeded (issue #10): Sybils next to a key, an eclipse flood of
fake contacts, stale record replays, storage exhaustion from many addresses, amplification.

Every attacker (tests/reliability/dht_attackers.py) builds its datagrams with Cairn's own
encoders and injects them into the FakeNetwork of a DHTSwarm, on fake time. Each test records
its figures on the scorecard (tests/scorecard.py) and asserts the same bound.
"""

from __future__ import annotations

from collections import defaultdict

from cairn.crypto import KeyPair, key_pair, sign
from cairn.dht.hyper import (
    start_announce,
    start_immutable_get,
    start_immutable_put,
    start_lookup,
    start_mutable_get,
    start_mutable_put,
    start_unannounce,
)
from cairn.dht.messages import Address, Command, Request, Response, decode, encode_ipv4, node_id
from cairn.dht.node import SERVER
from cairn.dht.records import (
    MAX_VALUE_SIZE,
    NS_ANNOUNCE,
    Announce,
    HyperCommand,
    MutableRecord,
    Peer,
    announce_signable,
    decode_mutable_record,
    encode_announce,
    encode_mutable_put,
    encode_mutable_record,
    encode_peer,
    hash32,
    sign_mutable,
)
from cairn.encoding import encode_uint
from cairn.testing import SwarmNode
from tests.reliability.dht_attackers import (
    AttackedSwarm,
    FakeContacts,
    Prober,
    Sybils,
    address_id,
    ground_addresses,
    request_bytes,
)
from tests.scorecard import record, scale


def swarm(n: int, seed: int, **kw: float) -> AttackedSwarm:
    sw = AttackedSwarm(n, seed=seed, **kw)
    sw.bootstrap_all()
    return sw


def put(sw: AttackedSwarm, sn: SwarmNode, kp: KeyPair, value: bytes, seq: int) -> int:
    qid, _ = start_mutable_put(sn.node, kp, value, seq, sw.now)
    return sw.run_query(sn, qid).commits


def get(sw: AttackedSwarm, sn: SwarmNode, kp: KeyPair, **kw: object) -> MutableRecord | None:
    qid, res = start_mutable_get(sn.node, kp.public_key, sw.now, **kw)  # type: ignore[arg-type]
    sw.run_query(sn, qid)
    return res.record


def holders(sw: AttackedSwarm, target: bytes) -> list[SwarmNode]:
    return [s for s in sw.nodes if s.handler.mutables.get(target, sw.now) is not None]


def stored_seq(sn: SwarmNode, target: bytes, now: float) -> int:
    raw = sn.handler.mutables.get(target, now)
    return -1 if raw is None else decode_mutable_record(raw).seq


# -- 1. Sybils next to a key ----------------------------------------------------------------------


def sybil_attack(sybils: int, seed: int) -> dict[str, int]:
    """``sybils`` ground addresses on ONE host (ports 1024-65535), closer to the key than any
    honest node; they join, swallow puts and answer gets with forged and stale records."""
    sw = swarm(scale(150, 400), seed)
    rng = sw.rng.fork("sybil")
    kp = key_pair(rng.randbytes(32))
    target = hash32(kp.public_key)
    writer = sw.nodes[7]
    assert put(sw, writer, kp, b"v1", 1) > 0
    stale = encode_mutable_record(MutableRecord(1, b"v1", sign_mutable(1, b"v1",
                                                                        kp.secret_key or b"")))
    mallory = key_pair(rng.randbytes(32))
    lies = [
        stale,  # validly signed, but old
        encode_mutable_record(MutableRecord(1000, b"forged", rng.randbytes(64))),
        encode_mutable_record(MutableRecord(1000, b"forged", sign_mutable(
            1000, b"forged", mallory.secret_key or b""))),  # signed by another key
        rng.randbytes(40),  # not a record at all
    ]
    addrs = ground_addresses(target, sybils, ["203.0.113.7"], range(1024, 65536))
    attack = Sybils(addrs, lies, rng.fork("lies"))
    sw.net.claim(addrs, attack)
    t = int.from_bytes(target, "big")
    near = sorted(sw.nodes, key=lambda s: int.from_bytes(s.node.id, "big") ^ t)
    closest_honest = int.from_bytes(near[0].node.id, "big") ^ t
    ahead = sum(int.from_bytes(address_id(a), "big") ^ t < closest_honest for a in addrs)
    attack.join(sw.net, [s.server for s in near[:40]], sw.now)
    sw.run_for(1.0)
    commits = put(sw, writer, kp, b"v2", 2)
    honest_holders = sum(stored_seq(s, target, sw.now) == 2 for s in sw.nodes)
    readers = [sw.rng.fork("readers").choice(sw.nodes) for _ in range(scale(30, 150))]
    plain = [get(sw, s, kp) for s in readers]  # the default: every holder on the way, newest
    hinted = [get(sw, s, kp, min_seq=2, latest=False) for s in readers]  # a seq hint
    first = [get(sw, s, kp, latest=False) for s in readers]  # no hint: the first verified one
    every = plain + hinted + first
    return {
        "readers": len(readers), "ahead": ahead, "commits": commits,
        "swallowed": attack.puts_swallowed, "honest_holders": honest_holders,
        "plain_ok": sum(r is not None and r.value == b"v2" for r in plain),
        "hinted_ok": sum(r is not None and r.value == b"v2" for r in hinted),
        "first_stale": sum(r is not None and r.value == b"v1" for r in first),
        "forged_taken": sum(r is not None and r.value == b"forged" for r in every),
        "lies": attack.lies_told,
    }


def check_sybils(sybils: int, seed: int) -> None:
    m = sybil_attack(sybils, seed)
    n = m["readers"]
    detail = (f"{m['ahead']} sybils closer than every honest node; put: {m['commits']} commits, "
              f"{m['swallowed']} swallowed by sybils, {m['honest_holders']} honest holders; "
              f"{m['lies']} forged/stale answers; gets with latest=False and no seq hint "
              f"(documented as open to replays): {m['first_stale']}/{n} took the stale v1")
    bad_plain = n - m["plain_ok"]
    bad_hinted = n - m["hinted_ok"]
    record("dht", f"sybil: {sybils} ids on one host next to a key, get (default)", n, bad_plain,
           "reads without the honest value", detail=detail)
    record("dht", f"sybil: {sybils} ids on one host next to a key, get with a seq hint", n,
           bad_hinted, "reads without the honest value", detail=detail)
    record("dht", f"sybil: {sybils} ids on one host next to a key, forged records", m["lies"],
           m["forged_taken"], "forged records accepted")
    assert m["forged_taken"] == 0, detail
    # the put reached honest nodes: a host holds at most two places in a query's closest set
    assert m["honest_holders"] > 0, detail
    assert bad_plain == 0 and bad_hinted == 0, detail


def test_sybils_fewer_than_k_next_to_a_key() -> None:
    """10 ids on one host closer to the key than every honest node (fewer than k = 20)."""
    check_sybils(10, 31)


def test_sybils_k_next_to_a_key() -> None:
    """20 ids on one host, ports ground until they are the 20 closest to the key: they would
    be a query's whole closest set, but a query keeps at most two of one host (PER_HOST)."""
    check_sybils(20, 32)


# -- 2. Eclipse: a flood of fake contacts -------------------------------------------------------


def test_eclipse_flood_of_fake_contacts() -> None:
    """Fake contacts (valid ids, and they answer every ping) flood three nodes whose routing
    tables are full and 70 s old (so every full row may swap its oldest entry): unsolicited
    PINGs and FIND_NODEs with ids, and DOWN_HINTs naming the honest entries. The honest entries
    keep answering; at least 90% of them must still be in the table afterwards."""
    sw = swarm(scale(200, 500), 41, loss=0.02)
    sw.run_for(70.0)
    victims = sw.nodes[5:8]
    before = {v.index: {n.id: n.addr for n in v.node.table} for v in victims}
    flood = scale(3000, 30000)
    rng = sw.rng.fork("eclipse")
    fakes = [(f"198.18.{i // 250}.{i % 250 + 1}", rng.randrange(1024, 65536))
             for i in range(flood)]
    contacts = FakeContacts(fakes)
    sw.net.claim(fakes, contacts)
    steps = 240  # 120 s of fake time, one batch every 0.5 s
    per_step = -(-flood // steps)
    for step in range(steps):
        for j, fake in enumerate(fakes[step * per_step:(step + 1) * per_step]):
            v = victims[j % len(victims)]
            fid = address_id(fake)
            sw.net.send(fake, v.server, request_bytes(rng.randrange(0x10000), v.server,
                                                      Command.PING, internal=True, id=fid),
                        sw.now)
            sw.net.send(fake, v.server, request_bytes(
                rng.randrange(0x10000), v.server, Command.FIND_NODE, internal=True, id=fid,
                target=v.node.id), sw.now)
            victim_ids = list(before[v.index].values())
            hinted = victim_ids[rng.randrange(len(victim_ids))]
            sw.net.send(fake, v.server, request_bytes(
                rng.randrange(0x10000), v.server, Command.DOWN_HINT, internal=True,
                value=encode_ipv4(hinted)), sw.now)
        sw.run_for(0.5)
    total = lost = fake_entries = table = 0
    for v in victims:
        after = {n.id: n.addr for n in v.node.table}
        total += len(before[v.index])
        lost += sum(after.get(i) != a for i, a in before[v.index].items())
        fake_entries += sum(a[0].startswith("198.18.") for a in after.values())
        table += len(after)
    lost_pct = round(100 * lost / total, 2)
    detail = (f"{total} honest entries in 3 tables before, {lost} lost; after: {table} entries, "
              f"{fake_entries} of them fake; 2% loss; {contacts.answered} pings to fakes")
    record("dht", f"eclipse: flood of {flood} fake contacts", total, lost_pct,
           "% honest entries lost", allowed=10, detail=detail)
    assert lost_pct <= 10, detail


# -- 3. Stale record replays --------------------------------------------------------------------


def test_stale_record_replays() -> None:
    """Older signed records (seq 1 and 2) are replayed, with a valid token, to every node,
    after seq 3 was put; and a captured ANNOUNCE is replayed after its peer unannounced."""
    sw = swarm(scale(100, 300), 51)
    rng = sw.rng.fork("replay")
    kp = key_pair(rng.randbytes(32))
    target = hash32(kp.public_key)
    writer = sw.nodes[9]
    secret = kp.secret_key or b""
    old = [encode_mutable_put(kp.public_key, MutableRecord(s, b"v%d" % s,
                                                           sign_mutable(s, b"v%d" % s, secret)))
           for s in (1, 2)]
    for seq in (1, 2, 3):
        assert put(sw, writer, kp, b"v%d" % seq, seq) > 0
        sw.run_for(1.0)
    newest = {s.index for s in sw.nodes if stored_seq(s, target, sw.now) == 3}
    assert len(newest) >= 10
    prober = Prober()
    me = ("203.0.113.50", 7000)
    sw.net.claim([me], prober)
    tid = 0
    for sn in sw.nodes:  # a token for our host from each node: a real round trip
        tid += 1
        sw.net.send(me, sn.server, request_bytes(tid, sn.server, HyperCommand.MUTABLE_GET,
                                                 target=target, value=encode_uint(0)), sw.now)
    sw.run_for(0.1)
    tokens = {}
    for dg, _, msg in prober.inbox:
        if isinstance(msg, Response) and msg.token is not None:
            tokens[dg.src] = msg.token
    prober.inbox.clear()
    replays = 0
    for sn in sw.nodes:
        for data in old:
            tid += 1
            replays += 1
            sw.net.send(me, sn.server, request_bytes(
                tid, sn.server, HyperCommand.MUTABLE_PUT, token=tokens[sn.server],
                target=target, value=data), sw.now)
    sw.run_for(0.1)
    accepted_over_newer = sum(
        1 for dg, _, msg in prober.inbox
        if isinstance(msg, Response) and msg.error == 0 and
        next(s.index for s in sw.nodes if s.server == dg.src) in newest)
    refused = sum(1 for _, _, m in prober.inbox if isinstance(m, Response) and m.error == 17)
    still_newest = sum(stored_seq(sw.nodes[i], target, sw.now) == 3 for i in newest)
    readers = [rng.choice(sw.nodes) for _ in range(scale(40, 200))]
    latest_bad = sum((r := get(sw, s, kp)) is None or r.seq != 3 for s in readers)
    plain_bad = sum((r := get(sw, s, kp, min_seq=3, latest=False)) is None or r.seq != 3
                    for s in readers)  # a first answer with the seq hint a reader keeps
    unhinted = sum((r := get(sw, s, kp, latest=False)) is None or r.seq != 3 for s in readers)
    detail = (f"{replays} replays of seq 1-2 to {len(sw.nodes)} nodes, {len(newest)} held seq 3: "
              f"{refused} refused SEQ_TOO_LOW, {accepted_over_newer} accepted over seq 3, "
              f"{still_newest} still hold seq 3; first-answer gets without a seq hint "
              f"(documented as open to replays) not seq 3: {unhinted}")
    record("dht", "stale replay: seq 1-2 put over seq 3", 2 * len(newest),
           accepted_over_newer + len(newest) - still_newest, "stale records stored", detail=detail)
    record("dht", "stale replay: gets (default) after replays", len(readers), latest_bad,
           "reads not newest", detail=detail)
    record("dht", "stale replay: gets with a seq hint after replays", len(readers), plain_bad,
           "reads not newest", detail=detail)

    # the announce replay: capture the writer's ANNOUNCE datagrams off the wire
    topic = hash32(b"replayed topic")
    captured: list[tuple[Address, bytes]] = []

    def sniff(src: Address, dst: Address, data: bytes, now: float) -> None:
        if src == writer.server and data[0] == 0x03:
            msg = decode(data)
            if isinstance(msg, Request) and msg.command == HyperCommand.ANNOUNCE \
                    and not msg.internal:
                captured.append((dst, data))

    sw.net.observers.append(sniff)
    assert sw.run_query(writer, start_announce(writer.node, topic, kp, sw.now)).commits > 0
    sw.net.observers.remove(sniff)
    assert sw.run_query(writer, start_unannounce(writer.node, topic, kp, sw.now)).commits > 0
    for dst, data in captured:  # from our own host: the token was issued to the writer's
        sw.net.send(me, dst, data, sw.now)
    sw.run_for(20.0)  # then spoofed from the writer's own address, once its tokens expired
    for dst, data in captured:
        sw.net.send(writer.server, dst, data, sw.now)
    sw.run_for(0.1)
    resurrected = sum(bool(s.handler.announces.get(topic, sw.now)) for s in sw.nodes)
    seen = 0
    for s in readers[:10]:
        qid, res = start_lookup(s.node, topic, sw.now)
        sw.run_query(s, qid)
        seen += kp.public_key in res.peers
    record("dht", "stale replay: captured ANNOUNCE after unannounce", 2 * len(captured),
           resurrected, "nodes storing it again",
           detail=f"{seen}/10 lookups saw the withdrawn peer")
    assert accepted_over_newer == 0 and still_newest == len(newest), detail
    assert latest_bad == 0, detail
    assert plain_bad == 0, detail
    assert resurrected == 0 and seen == 0


# -- 4. Storage exhaustion from many addresses --------------------------------------------------


def _token(sw: AttackedSwarm, prober: Prober, me: Address, to: Address, command: int,
           target: bytes) -> bytes:
    """A write token for ``me`` from ``to``: ask once (a real round trip) and read the reply."""
    value = encode_uint(0) if command == HyperCommand.MUTABLE_GET else None
    sw.net.send(me, to, request_bytes(1, to, command, target=target, value=value), sw.now)
    sw.run_for(0.01)
    toks = [m.token for m in prober.responses(me) if m.token is not None]
    assert toks, "no token came back"
    return toks[-1]


def test_storage_exhaustion_from_many_addresses() -> None:
    """Hosts each put as many 1,000-byte immutable records as they can (1,100 tried each) at one
    node that holds honest records. The stores keep at most 32,768 records and 32 MiB, at most
    1,024 from one host; the least recently written go first (decision 0004 #6), so once more
    than that has been written the honest records are gone from that node, and only from it:
    the network still reads them from the other holders."""
    sw = swarm(24, 61)
    rng = sw.rng.fork("exhaust")
    writer = sw.nodes[3]
    kp = key_pair(rng.randbytes(32))
    assert put(sw, writer, kp, b"honest", 1) > 0
    qid, itarget = start_immutable_put(writer.node, b"honest immutable", sw.now)
    assert sw.run_query(writer, qid).commits > 0
    mtarget = hash32(kp.public_key)
    victim = next(s for s in sw.nodes[1:] if s is not writer
                  and s.handler.mutables.get(mtarget, sw.now) is not None
                  and s.handler.immutables.get(itarget, sw.now) is not None)
    store = victim.handler.immutables
    hosts = scale(40, 64)
    tries = 1100
    prober = Prober()
    accepted: dict[str, int] = defaultdict(int)
    peak_count = peak_bytes = 0
    last_key = b""
    for h in range(hosts):
        me = (f"198.51.{100 + h // 250}.{h % 250 + 1}", 9000)
        sw.net.claim([me], prober)
        token = _token(sw, prober, me, victim.server, HyperCommand.IMMUTABLE_GET, itarget)
        prober.inbox.clear()
        for i in range(tries):
            value = rng.randbytes(MAX_VALUE_SIZE)
            sw.net.send(me, victim.server, request_bytes(
                i, victim.server, HyperCommand.IMMUTABLE_PUT, token=token,
                target=hash32(value), value=value), sw.now)
            last_key = hash32(value)
        sw.run_for(0.05)
        accepted[me[0]] = sum(1 for m in prober.responses(me) if m.error == 0)
        prober.inbox.clear()
        peak_count = max(peak_count, len(store))
        peak_bytes = max(peak_bytes, store.size)
    # one host with 1,030 mutable records (one key each): the per-host cap of the mutable store
    me = ("198.51.100.250", 9001)
    sw.net.claim([me], prober)
    for i in range(1030):
        k = key_pair(rng.randbytes(32))
        t = hash32(k.public_key)
        token = _token(sw, prober, me, victim.server, HyperCommand.MUTABLE_GET, t)
        prober.inbox.clear()
        rec = MutableRecord(1, b"x", sign_mutable(1, b"x", k.secret_key or b""))
        sw.net.send(me, victim.server, request_bytes(
            i, victim.server, HyperCommand.MUTABLE_PUT, token=token, target=t,
            value=encode_mutable_put(k.public_key, rec)), sw.now)
        sw.run_for(0.01)
        accepted["mutable " + me[0]] += sum(1 for m in prober.responses(me) if m.error == 0)
        prober.inbox.clear()
    cap = store.per_source
    over_cap = max(accepted.values()) - cap
    over_count = max(0, peak_count - store.max_count)
    over_bytes = max(0, peak_bytes - store.max_bytes)
    written = sum(v for k, v in accepted.items() if not k.startswith("mutable"))
    # what the policy guarantees: the newest writes stay, the oldest (the honest one) went
    honest_gone_here = store.get(itarget, sw.now) is None
    newest_kept = store.get(last_key, sw.now) is not None
    readers = [rng.choice([s for s in sw.nodes if s is not victim]) for _ in range(20)]
    bad_reads = 0
    for s in readers:
        qid, res = start_immutable_get(s.node, itarget, sw.now)
        sw.run_query(s, qid)
        bad_reads += res.value != b"honest immutable"
        r = get(sw, s, kp, min_seq=1)
        bad_reads += r is None or r.value != b"honest"
    detail = (f"{written} immutable records accepted from {hosts} hosts ({tries} tried each); "
              f"peak {peak_count} records, {peak_bytes:,} bytes (bounds {store.max_count}, "
              f"{store.max_bytes:,}); most from one host {max(accepted.values())} (cap {cap}); "
              f"honest immutable evicted at the flooded node: {honest_gone_here}")
    record("dht", f"storage flood: {hosts * tries} puts from {hosts} hosts at one node",
           hosts * tries, over_count + over_bytes, "records/bytes over the bound", detail=detail)
    record("dht", "storage flood: puts per host past the per-host cap", hosts + 1,
           max(0, over_cap), "records over 1,024", detail=detail)
    record("dht", "storage flood: honest records read from the other holders", 2 * len(readers),
           bad_reads, "reads failed", detail=detail)
    assert over_count == 0 and over_bytes == 0, detail
    assert over_cap <= 0, detail
    assert newest_kept and honest_gone_here == (written + 1 > store.max_bytes //
                                                (32 + MAX_VALUE_SIZE)), detail
    assert bad_reads == 0, detail


def test_announce_flood_on_a_topic() -> None:
    """One host announces 20 keys of its own (validly signed, tokens from real round trips) on
    an honest device's topic at every node that stores it. A lookup reply carries the 20 newest
    announces of a topic, and a node keeps the 64 newest: is the honest device still found?"""
    sw = swarm(60, 71)
    rng = sw.rng.fork("topic")
    device = key_pair(rng.randbytes(32))
    topic = hash32(b"fleet topic")
    writer = sw.nodes[4]
    assert sw.run_query(writer, start_announce(writer.node, topic, device, sw.now)).commits > 0
    storing = [s for s in sw.nodes if s.handler.announces.get(topic, sw.now)]
    fakes = [key_pair(rng.randbytes(32)) for _ in range(scale(20, 64))]
    prober = Prober()
    me = ("203.0.113.66", 7100)
    sw.net.claim([me], prober)
    sent = 0
    for s in storing:
        token = _token(sw, prober, me, s.server, HyperCommand.LOOKUP, topic)
        prober.inbox.clear()
        for i, f in enumerate(fakes):
            peer = Peer(f.public_key, (("203.0.113.66", 7100 + i),))
            sig = sign(announce_signable(NS_ANNOUNCE, topic, s.node.id, token, Announce(peer)),
                       f.secret_key or b"")
            sw.net.send(me, s.server, request_bytes(
                i, s.server, HyperCommand.ANNOUNCE, token=token, target=topic,
                value=encode_announce(Announce(peer, None, sig))), sw.now)
            sent += 1
        sw.run_for(0.01)
    readers = [rng.choice(sw.nodes) for _ in range(scale(20, 100))]
    missed = 0
    for s in readers:
        qid, res = start_lookup(s.node, topic, sw.now)
        sw.run_query(s, qid)
        missed += device.public_key not in res.peers
    still_stored = sum(
        encode_peer(Peer(device.public_key)) in s.handler.announces.get(topic, sw.now, 64)
        for s in storing)
    detail = (f"{sent} announces of {len(fakes)} attacker keys from one host to the "
              f"{len(storing)} nodes storing the topic; the honest announce is still stored on "
              f"{still_stored}; lookups without the honest device: {missed}/{len(readers)}")
    record("dht", f"announce flood: {len(fakes)} fake peers on a topic", len(readers), missed,
           "lookups missing the honest peer", detail=detail)
    assert missed == 0, detail


# -- 5. Amplification -----------------------------------------------------------------------------


COMMANDS: list[tuple[str, int, bool]] = [
    ("ping", Command.PING, True),
    ("ping_nat", Command.PING_NAT, True),
    ("find_node", Command.FIND_NODE, True),
    ("down_hint", Command.DOWN_HINT, True),
    ("delayed_ping", Command.DELAYED_PING, True),
    ("unknown internal", 9, True),
    ("peer_handshake", HyperCommand.PEER_HANDSHAKE, False),
    ("peer_holepunch", HyperCommand.PEER_HOLEPUNCH, False),
    ("find_peer", HyperCommand.FIND_PEER, False),
    ("lookup", HyperCommand.LOOKUP, False),
    ("announce", HyperCommand.ANNOUNCE, False),
    ("unannounce", HyperCommand.UNANNOUNCE, False),
    ("mutable_put", HyperCommand.MUTABLE_PUT, False),
    ("mutable_get", HyperCommand.MUTABLE_GET, False),
    ("immutable_put", HyperCommand.IMMUTABLE_PUT, False),
    ("immutable_get", HyperCommand.IMMUTABLE_GET, False),
    ("plugin", HyperCommand.PLUGIN, False),
    ("unknown", 200, False),
]


def test_amplification_per_message_type() -> None:
    """Every command, from hosts the node never heard from (no round trip, no token of its):
    with and without an id, a target (the stored mutable and immutable keys, a topic with 64
    announces, a random one), a bogus token, and values (none, empty, the smallest meaningful
    one). The node holds the largest answers it can give: 1,000-byte records, a full topic, a
    full routing table. Reply bytes over request bytes must stay <= 3x for every type."""
    sw = swarm(80, 81)
    rng = sw.rng.fork("amp")
    v = sw.nodes[2]
    now = sw.now
    kp = key_pair(rng.randbytes(32))
    big = rng.randbytes(MAX_VALUE_SIZE)
    mtarget = hash32(kp.public_key)
    v.handler.mutables.put(mtarget, encode_mutable_record(
        MutableRecord(2**40, big, sign_mutable(2**40, big, kp.secret_key or b""))), "1.1.1.1", now)
    itarget = hash32(big)
    v.handler.immutables.put(itarget, big, "1.1.1.1", now)
    topic = hash32(b"amplified topic")
    for i in range(64):
        pk = rng.randbytes(32)
        relays = tuple((f"10.0.0.{j}", 40000 + j) for j in range(3))
        v.handler.announces.add(topic, pk, encode_peer(Peer(pk, relays)), f"1.1.{i}.1", now)
    in_table = next(iter(v.node.table)).addr
    special: dict[int, list[bytes]] = {
        Command.PING_NAT: [(9001).to_bytes(2, "little")],
        Command.DOWN_HINT: [encode_ipv4(in_table)],
        Command.DELAYED_PING: [(0).to_bytes(4, "little"), (50).to_bytes(4, "little")],
    }
    hyper_values: dict[int, list[bytes]] = {HyperCommand.MUTABLE_GET: [encode_uint(0)]}
    caused: list[tuple[Address, int]] = []
    orig = v.node.receive_datagram

    def tap(data: bytes, addr: Address, now: float, socket: int = SERVER) -> None:
        start = len(v.node._outbox)  # what this one datagram made the node send
        orig(data, addr, now, socket)
        caused.extend((dst, len(d)) for d, dst, _ in v.node._outbox[start:])

    v.node.receive_datagram = tap  # type: ignore[method-assign]
    replies: list[tuple[Address, Address, int]] = []

    def watch(src: Address, dst: Address, data: bytes, now: float) -> None:
        if src in (v.server, v.client) and dst[0].startswith("100."):
            replies.append((src, dst, len(data)))

    sw.net.observers.append(watch)
    prober = Prober()
    worst: dict[str, tuple[float, int, int]] = {}
    worst_third: dict[str, float] = defaultdict(float)
    trials: dict[str, int] = defaultdict(int)
    host = 0
    for name, command, internal in COMMANDS:
        values: list[bytes | None] = [None, b"", *(special.get(command, []) if internal
                                                  else hyper_values.get(command, []))]
        for with_id in (False, True):
            for target in (None, mtarget, itarget, topic, rng.randbytes(32)):
                for token in (None, rng.randbytes(32)):
                    for value in values:
                        host += 1
                        me = (f"100.64.{host // 250}.{host % 250 + 1}", 9000)
                        sw.net.claim([me, (me[0], 9001)], prober)
                        data = request_bytes(rng.randrange(0x10000), v.server, command,
                                             internal=internal,
                                             id=node_id(me) if with_id else None, token=token,
                                             target=target, value=value)
                        replies.clear()
                        caused.clear()
                        sw.net.send(me, v.server, data, sw.now)
                        sw.run_for(0.1)
                        back = sum(n for _, dst, n in replies if dst[0] == me[0])
                        third = sum(n for dst, n in caused if dst[0] != me[0])
                        ratio = back / len(data)
                        trials[name] += 1
                        worst_third[name] = max(worst_third[name], third / len(data))
                        if name not in worst or ratio > worst[name][0]:
                            worst[name] = (ratio, len(data), back)
    sw.net.observers.remove(watch)
    assert me[0] not in v.node._verified
    failed = []
    for name, _, _ in COMMANDS:
        ratio, size, back = worst[name]
        record("dht", f"amplification: {name}", trials[name], round(ratio, 2),
               "x reply/request", allowed=3,
               detail=f"worst: {size}-byte request, {back} bytes back; "
                      f"requests it made the node send to third parties: at most "
                      f"{worst_third[name]:.2f}x")
        if ratio > 3:
            failed.append((name, ratio, size, back))
    assert not failed, failed

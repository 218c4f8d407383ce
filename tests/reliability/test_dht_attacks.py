"""DHT attacks, in simulation and seeded (issue #10): Sybils next to a key, an eclipse flood of
fake contacts, stale record replays, storage exhaustion from many addresses, amplification.

Every attacker (tests/reliability/dht_attackers.py) builds its datagrams with Cairn's own
encoders and injects them into the FakeNetwork of a DHTSwarm, on fake time. Each test records
its figures on the scorecard (tests/scorecard.py) and asserts the same bound.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from cairn.crypto import KeyPair, key_pair, sign
from cairn.dht.hyper import start_lookup, start_mutable_get, start_mutable_put
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
from cairn.dht.hyper import start_announce, start_immutable_get, start_immutable_put, start_unannounce
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
    latest = sum((r := get(sw, s, kp, latest=True)) is not None and r.value == b"v2"
                 for s in readers)
    fresh = sum((r := get(sw, s, kp, min_seq=2)) is not None and r.value == b"v2"
                for s in readers)
    plain = [get(sw, s, kp) for s in readers]
    return {
        "readers": len(readers), "ahead": ahead, "commits": commits,
        "swallowed": attack.puts_swallowed, "honest_holders": honest_holders,
        "latest_ok": latest, "fresh_ok": fresh,
        "plain_new": sum(r is not None and r.value == b"v2" for r in plain),
        "plain_stale": sum(r is not None and r.value == b"v1" for r in plain),
        "forged_taken": sum(r is not None and r.value == b"forged" for r in plain),
        "lies": attack.lies_told,
    }


def check_sybils(sybils: int, seed: int) -> None:
    m = sybil_attack(sybils, seed)
    n = m["readers"]
    detail = (f"{m['ahead']} sybils closer than every honest node; put: {m['commits']} commits, "
              f"{m['swallowed']} swallowed by sybils, {m['honest_holders']} honest holders; "
              f"{m['lies']} forged/stale answers; plain gets: {m['plain_new']} new, "
              f"{m['plain_stale']} stale (v1)")
    bad_latest = n - m["latest_ok"]
    bad_fresh = n - m["fresh_ok"]
    record("dht", f"sybil: {sybils} ids next to a key, get latest", n, bad_latest,
           "reads without the honest value", detail=detail)
    record("dht", f"sybil: {sybils} ids next to a key, get min_seq", n, bad_fresh,
           "reads without the honest value", detail=detail)
    record("dht", f"sybil: {sybils} ids next to a key, forged records", m["lies"],
           m["forged_taken"], "forged records accepted")
    assert m["forged_taken"] == 0, detail
    assert bad_latest == 0 and bad_fresh == 0, detail


def test_sybils_fewer_than_k_next_to_a_key() -> None:
    check_sybils(10, 31)


def test_sybils_k_next_to_a_key() -> None:
    check_sybils(20, 32)

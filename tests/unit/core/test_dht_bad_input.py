"""Hostile datagrams against one DHT node core (no sockets): it never crashes, stores nothing it
should not, stays within its bounds and never amplifies traffic to an unproven address."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from cairn.crypto import key_pair, sign
from cairn.dht.hyper import HyperError, HyperHandler
from cairn.dht.messages import (
    Command,
    ErrorCode,
    Request,
    Response,
    decode,
    encode_request,
    encode_response,
    encode_response_within,
    node_id,
)
from cairn.dht.node import DHTNode
from cairn.dht.records import (
    MAX_VALUE_SIZE,
    NS_ANNOUNCE,
    Announce,
    HyperCommand,
    MutableRecord,
    Peer,
    announce_signable,
    encode_announce,
    encode_mutable_put,
    encode_mutable_record,
    hash32,
    sign_mutable,
)
from cairn.encoding import encode_uint

ME = ("127.0.0.1", 40000)
PEER = ("127.0.0.2", 40001)


def make_node(per_source: int = 1024, max_records: int = 32768) -> tuple[DHTNode, HyperHandler]:
    holder: list[DHTNode] = []
    handler = HyperHandler(lambda: holder[0], per_source=per_source, max_records=max_records)
    node = DHTNode(rng=random.Random(1), now=0.0, address=ME, persistent=True, handler=handler)
    holder.append(node)
    node.bootstrapped = True
    rng = random.Random(2)
    for i in range(60):  # a full-ish routing table, so closer-node lists are long
        addr = (f"127.0.{rng.randrange(1, 250)}.{i + 1}", 30000 + i)
        node.receive_datagram(encode_request(Request(i, ME, Command.PING, True, node_id(addr))),
                              addr, 0.0)
    node.datagrams_to_send()
    return node, handler


def replies(node: DHTNode) -> list[Response]:
    out = []
    for data, _, _ in node.datagrams_to_send():
        msg = decode(data)
        assert isinstance(msg, Response)
        out.append(msg)
    return out


def ask(
    node: DHTNode, req: Request, src: tuple[str, int] = PEER, now: float = 1.0
) -> list[Response]:
    node.receive_datagram(encode_request(req), src, now)
    return replies(node)


@settings(max_examples=400)
@given(st.binary(max_size=600))
def test_random_datagrams_never_raise(data: bytes) -> None:
    node, _ = make_node()
    node.receive_datagram(data, PEER, 1.0)
    node.handle_timer(2.0)
    for out, to, _ in node.datagrams_to_send():
        assert to[0] == PEER[0] and len(out) <= 3 * max(len(data), 1)


valid_requests = st.builds(
    Request,
    st.integers(0, 0xFFFF),
    st.just(ME),
    st.integers(0, 12),
    st.booleans(),
    st.none() | st.just(node_id(PEER)) | st.binary(min_size=32, max_size=32),
    st.none() | st.binary(min_size=32, max_size=32),
    st.none() | st.binary(min_size=32, max_size=32),
    st.none() | st.binary(max_size=200),
)


@settings(max_examples=400)
@given(valid_requests, st.data())
def test_mutated_requests_never_raise_and_never_amplify(req: Request, data: st.DataObject) -> None:
    node, handler = make_node()
    kp = key_pair(bytes([3]) * 32)
    value = bytes(MAX_VALUE_SIZE)
    rec = MutableRecord(1, value, sign_mutable(1, value, kp.secret_key or b""))
    handler.mutables.put(hash32(kp.public_key), encode_mutable_record(rec), "127.9.9.9", 0.0)
    wire = bytearray(encode_request(req))
    for _ in range(data.draw(st.integers(0, 3))):
        pos = data.draw(st.integers(0, len(wire) - 1))
        wire[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(2, len(wire)))
    datagram = bytes(wire[:cut])
    node.receive_datagram(datagram, PEER, 1.0)
    for out, _to, _ in node.datagrams_to_send():
        assert len(out) <= 3 * len(datagram), (len(out), len(datagram))


responses = st.builds(
    Response,
    st.integers(0, 0xFFFF),
    st.just(PEER),
    st.none() | st.binary(min_size=32, max_size=32),
    st.none() | st.binary(min_size=32, max_size=32),
    st.lists(st.tuples(st.just("127.0.3.4"), st.integers(1, 0xFFFF)), max_size=30).map(tuple),
    st.integers(0, 300),
    st.none() | st.binary(max_size=1100),
)


@settings(max_examples=400)
@given(responses, st.integers(0, 700))
def test_a_response_shrunk_to_a_budget_fits_or_is_not_sent(resp: Response, budget: int) -> None:
    data = encode_response_within(resp, budget)
    full = encode_response(resp)
    if len(full) <= budget:
        assert data == full  # nothing taken away when it fits
        return
    if data is None:  # not even the bare answer (tid, address, error) fits
        assert len(encode_response(Response(resp.tid, resp.to, error=resp.error))) > budget
        return
    assert len(data) <= budget
    got = decode(data)
    assert isinstance(got, Response)
    assert (got.tid, got.to, got.error) == (resp.tid, resp.to, resp.error)
    assert got.value in (None, resp.value)
    assert got.token in (None, resp.token)
    assert resp.closer_nodes[: len(got.closer_nodes)] == got.closer_nodes  # the closest kept


def test_an_unproven_address_gets_at_most_three_times_what_it_sent() -> None:
    node, handler = make_node()
    kp = key_pair(bytes([4]) * 32)
    value = bytes(MAX_VALUE_SIZE)
    rec = MutableRecord(5, value, sign_mutable(5, value, kp.secret_key or b""))
    target = hash32(kp.public_key)
    handler.mutables.put(target, encode_mutable_record(rec), "127.9.9.9", 0.0)
    small = Request(1, ME, HyperCommand.MUTABLE_GET, False, None, None, target, encode_uint(0))
    [resp] = ask(node, small)
    assert resp.value is None and resp.token is not None  # withheld, but a token to come back
    size = len(encode_request(small))
    assert len(encode_request(small)) * 3 >= 10 + 32 + 32
    # with that token the address is proven: the value comes
    proven = Request(2, ME, HyperCommand.MUTABLE_GET, False, None, resp.token, target,
                     encode_uint(0))
    [resp2] = ask(node, proven)
    assert resp2.value == encode_mutable_record(rec)
    # a padded request from another unproven address gets the value at once
    other = ("127.0.0.3", 5000)
    node.receive_datagram(encode_request(small) + bytes(400 - size), other, 1.0)
    [resp3] = replies(node)
    assert resp3.value == encode_mutable_record(rec)


def put_request(
    node: DHTNode, kp_seed: int, seq: int, value: bytes, *, src: tuple[str, int] = PEER,
    forge: bool = False, wrong_target: bool = False,
) -> Request:
    kp = key_pair(bytes([kp_seed]) * 32)
    sig = sign_mutable(seq, value, kp.secret_key or b"")
    if forge:
        sig = bytes(64)
    body = encode_mutable_put(kp.public_key, MutableRecord(seq, value, sig))
    target = hash32(b"other" if wrong_target else kp.public_key)
    return Request(7, ME, HyperCommand.MUTABLE_PUT, False, None, node.token(src[0]), target, body)


def test_forged_records_wrong_keys_and_rollbacks_are_refused() -> None:
    node, handler = make_node()
    target = hash32(key_pair(bytes([6]) * 32).public_key)
    assert ask(node, put_request(node, 6, 1, b"x", forge=True)) == []  # bad signature: silence
    assert ask(node, put_request(node, 6, 1, b"x", wrong_target=True)) == []
    assert handler.mutables.get(target, 1.0) is None
    [ok] = ask(node, put_request(node, 6, 5, b"five"))
    assert ok.error == 0 and handler.mutables.get(target, 1.0) is not None
    [low] = ask(node, put_request(node, 6, 4, b"four"))
    assert low.error == HyperError.SEQ_TOO_LOW
    [reuse] = ask(node, put_request(node, 6, 5, b"FIVE"))
    assert reuse.error == HyperError.SEQ_REUSED
    [big] = ask(node, put_request(node, 6, 6, bytes(MAX_VALUE_SIZE + 1)))
    assert big.error == HyperError.VALUE_TOO_LARGE
    # a put with a token this node never issued: refused with INVALID_TOKEN and a fresh token
    bad = put_request(node, 6, 7, b"seven")
    bad = Request(bad.tid, bad.to, bad.command, False, None, bytes(32), bad.target, bad.value)
    [tok] = ask(node, bad)
    assert tok.error == ErrorCode.INVALID_TOKEN and tok.token is not None
    # and a token issued to another host is not valid here either
    other = ("127.0.0.77", 1)
    stolen = put_request(node, 6, 7, b"seven", src=other)
    [tok2] = ask(node, stolen)
    assert tok2.error == ErrorCode.INVALID_TOKEN
    stored = handler.mutables.get(target, 1.0)
    assert stored is not None and b"five" in stored


def test_one_address_cannot_fill_the_stores() -> None:
    node, handler = make_node(per_source=50, max_records=200)
    refused = 0
    for i in range(120):
        [r] = ask(node, put_request(node, 10 + i, 1, b"spam"))
        refused += r.error == HyperError.QUOTA_EXCEEDED
    assert len(handler.mutables) == 50 and refused == 70
    # other hosts still get their records in, up to the global bound
    for h in range(20):
        src = (f"127.0.5.{h + 1}", 7000)
        for i in range(20):
            ask(node, put_request(node, (h * 20 + i) % 250 + 1, 2, b"ok", src=src), src=src)
    assert len(handler.mutables) <= 200


def test_announce_signatures_are_checked() -> None:
    node, handler = make_node()
    kp = key_pair(bytes([12]) * 32)
    topic = hash32(b"fleet")
    token = node.token(PEER[0])
    ann = Announce(Peer(kp.public_key, (("127.0.0.9", 1),)))
    sig = sign(announce_signable(NS_ANNOUNCE, topic, node.id, token, ann), kp.secret_key or b"")
    forged = encode_announce(Announce(ann.peer, None, bytes(64)))
    assert ask(node, Request(1, ME, HyperCommand.ANNOUNCE, False, None, token, topic, forged)) == []
    other_node_sig = sign(announce_signable(NS_ANNOUNCE, topic, bytes(32), token, ann),
                          kp.secret_key or b"")
    replayed = encode_announce(Announce(ann.peer, None, other_node_sig))
    assert ask(node, Request(2, ME, HyperCommand.ANNOUNCE, False, None, token, topic,
                             replayed)) == []
    assert handler.announces.get(topic, 1.0) == []
    good = encode_announce(Announce(ann.peer, None, sig))
    [r] = ask(node, Request(3, ME, HyperCommand.ANNOUNCE, False, None, token, topic, good))
    assert r.error == 0 and len(handler.announces.get(topic, 1.0)) == 1


def test_one_host_cannot_crowd_a_topic() -> None:
    """A host announcing many keys on a topic pushes out its own records, not an honest
    device's, and a lookup reply holds every host's newest record before anyone's second."""
    from cairn.dht.records import AnnounceStore

    store = AnnounceStore(max_records=10_000, per_topic=8, max_age=1200, per_source=1024)
    topic = b"t" * 32
    assert store.add(topic, b"honest".ljust(32, b"\0"), b"honest-record", "198.51.100.1", 0.0)
    for k in range(100):  # a flood from one host, all newer than the honest announce
        store.add(topic, k.to_bytes(32, "big"), b"fake-%d" % k, "203.0.113.9", 1.0 + k)
    reply = store.get(topic, 200.0, limit=3)
    assert b"honest-record" in reply and len(reply) == 3
    assert reply[0] == b"honest-record" or reply[1] == b"honest-record"
    full = store.get(topic, 200.0, limit=20)
    assert len(full) == 8 and full.count(b"honest-record") == 1  # the topic's cap holds
    assert b"fake-99" in full and b"fake-0" not in full  # the flood's oldest went first


def test_a_silent_third_party_behind_a_relay_does_not_cost_us_the_relay() -> None:
    """A PEER_HANDSHAKE the relay forwards to a server whose firewall drops it silently (as
    hyperdht's does) times out: with ``blame=False`` the relay stays in the table and is not
    taken for dead (a client behind a NAT knowing one node lost the whole DHT so)."""
    node, _ = make_node()
    relay = next(n.addr for n in node.table.closest(node.id, 1))
    for blame in (False, True):
        node.request(relay, 0, 1.0, target=bytes(32), value=b"hs", blame=blame)
        now = 1.0
        while (at := node.get_timer()) is not None and at < 60.0:
            now = at
            node.handle_timer(now)
            node.datagrams_to_send()
        kept = node._table_node(relay) is not None and not node._is_dead(relay)
        assert kept is not blame

"""hyperdht connect without sockets: codecs (round trips, fuzzed), Noise IK, the server core,
the router's relaying, and a whole connect through a simulated DHT."""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cairn.crypto import key_pair
from cairn.dht.events import QueryReply, RequestDone
from cairn.dht.hyper import start_announce
from cairn.dht.messages import Request, decode
from cairn.dht.node import DHTNode, IncomingRequest
from cairn.dht.records import HyperCommand, decode_peer, hash32
from cairn.errors import DecodeError, LocalError
from cairn.hyperdht.client import BadReplyError, ClientCore, HolepunchUnavailableError
from cairn.hyperdht.events import Established, HandshakeRefused
from cairn.hyperdht.messages import (
    Firewall,
    Handshake,
    Holepunch,
    HolepunchInfo,
    HolepunchPayload,
    Mode,
    NoiseError,
    NoisePayload,
    RelayThrough,
    UdxInfo,
    close_holepunch_payload,
    decode_handshake,
    decode_holepunch,
    decode_holepunch_payload,
    decode_noise_payload,
    encode_handshake,
    encode_holepunch,
    encode_holepunch_payload,
    encode_noise_payload,
    seal_holepunch_payload,
)
from cairn.hyperdht.noise_ik import IKHandshake
from cairn.hyperdht.router import RateLimit, Router
from cairn.hyperdht.server import RETRY_WINDOW, ServerCore
from cairn.replication.noise import HandshakeError
from cairn.testing import DHTSwarm

ipv4 = st.tuples(st.ip_addresses(v=4).map(str), st.integers(0, 0xFFFF))
addrs = st.lists(ipv4, max_size=5).map(tuple)
key32 = st.binary(min_size=32, max_size=32)


@given(st.integers(0, 4), st.binary(max_size=200), st.none() | ipv4, st.none() | ipv4)
def test_handshake_round_trip(mode: int, noise: bytes, peer: object, relay: object) -> None:
    m = Handshake(mode, noise, peer, relay)  # type: ignore[arg-type]
    assert decode_handshake(encode_handshake(m)) == m


@given(st.integers(0, 4), st.integers(0, 2**32), st.binary(max_size=200), st.none() | ipv4)
def test_holepunch_round_trip(mode: int, id_: int, payload: bytes, peer: object) -> None:
    m = Holepunch(mode, id_, payload, peer)  # type: ignore[arg-type]
    assert decode_holepunch(encode_holepunch(m)) == m


@given(
    st.integers(0, 3), st.integers(0, 3),
    st.none() | st.builds(HolepunchInfo, st.integers(0, 2**16),
                          st.lists(st.tuples(ipv4, ipv4), max_size=3).map(tuple)),
    addrs,
    st.none() | st.builds(UdxInfo, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
                          st.booleans()),
    st.none() | st.just(1),
    st.none() | st.builds(RelayThrough, key32, key32),
    st.none() | addrs,
)
def test_noise_payload_round_trip(error: int, firewall: int, hp: HolepunchInfo | None,
                                  a4: tuple[tuple[str, int], ...], udx: UdxInfo | None,
                                  ss: int | None, rt: RelayThrough | None,
                                  ra: tuple[tuple[str, int], ...] | None) -> None:
    m = NoisePayload(1, error, firewall, hp, a4, (("::1", 80),), udx, ss, rt, ra)
    assert decode_noise_payload(encode_noise_payload(m)) == m


@given(st.booleans(), st.booleans(), st.integers(0, 3), st.integers(0, 3), st.integers(0, 99),
       st.none() | addrs, st.none() | ipv4, st.none() | key32, st.none() | key32)
def test_holepunch_payload_round_trip(connected: bool, punching: bool, error: int, fw: int,
                                      rnd: int, a: tuple[tuple[str, int], ...] | None,
                                      remote: tuple[str, int] | None, tok: bytes | None,
                                      rtok: bytes | None) -> None:
    m = HolepunchPayload(error, fw, rnd, connected, punching, a, remote, tok, rtok)
    assert decode_holepunch_payload(encode_holepunch_payload(m)) == m
    secret = bytes(range(32))
    sealed = seal_holepunch_payload(m, secret, bytes(24))
    assert close_holepunch_payload(sealed, secret) == m
    with pytest.raises(DecodeError):
        close_holepunch_payload(sealed, bytes(32))
    with pytest.raises(DecodeError):
        close_holepunch_payload(sealed[:-1] + bytes([sealed[-1] ^ 1]), secret)


@given(st.binary(max_size=300))
def test_decoders_raise_only_decode_error(data: bytes) -> None:
    for decoder in (decode_handshake, decode_holepunch, decode_noise_payload,
                    decode_holepunch_payload):
        with contextlib.suppress(DecodeError):
            decoder(data)
    with contextlib.suppress(DecodeError):
        close_holepunch_payload(data, bytes(32))


def test_noise_payload_other_version_decodes_to_version_only() -> None:
    assert decode_noise_payload(b"\x02garbage") == NoisePayload(version=2)


# -- Noise IK ---------------------------------------------------------------------------------


def ik_pair(seed: int = 1) -> tuple[IKHandshake, IKHandshake]:
    rng = random.Random(seed)
    server_keys = key_pair(bytes([seed]) * 32)
    client = IKHandshake(True, key_pair(bytes([seed + 1]) * 32), rng,
                         remote_public_key=server_keys.public_key)
    return client, IKHandshake(False, server_keys, rng)


def test_ik_round_trip_and_sizes() -> None:
    client, server = ik_pair()
    client.send(b"hello")
    m1 = client.data_to_send()
    assert len(m1) == 96 + 5
    server.receive_data(m1)
    assert server.next_event() is not None
    assert server.peer_static_key == client.static.public_key
    server.send(b"")
    m2 = server.data_to_send()
    assert len(m2) == 48
    client.receive_data(m2)
    assert client.next_event() is not None and client.complete and server.complete
    assert client.handshake_hash == server.handshake_hash
    assert client.tx_key == server.rx_key and client.rx_key == server.tx_key
    assert client.holepunch_secret == server.holepunch_secret


def test_ik_to_the_wrong_key_fails_and_turns_are_checked() -> None:
    client, _ = ik_pair(1)
    _, other = ik_pair(5)
    client.send(b"")
    with pytest.raises(HandshakeError):
        other.receive_data(client.data_to_send())
    with pytest.raises(LocalError):
        client.send(b"")
    with pytest.raises(LocalError):
        IKHandshake(True, key_pair(bytes(32)), random.Random(1))
    c2, s2 = ik_pair(7)
    with pytest.raises(HandshakeError):
        s2.receive_data(b"\x00" * 40)
    c2.send(b"")
    s2.receive_data(c2.data_to_send())
    s2.send(b"")
    m2 = bytearray(s2.data_to_send())
    m2[-1] ^= 1
    with pytest.raises(HandshakeError):
        c2.receive_data(bytes(m2))


# -- the server core ----------------------------------------------------------------------------

CLIENT = ("10.0.0.7", 4000)


def server_core(**kw: object) -> ServerCore:
    return ServerCore(key_pair(bytes([40]) * 32), random.Random(2), **kw)  # type: ignore[arg-type]


def test_server_accepts_retries_and_refuses() -> None:
    core = server_core()
    client = ClientCore(key_pair(bytes([41]) * 32), core.key_pair.public_key, random.Random(3))
    reply = core.on_handshake(client.noise, CLIENT, 0.0)
    assert reply is not None
    event = core.next_event()
    assert isinstance(event, Established) and event.remote_public_key == client.key_pair.public_key
    # a retry within the window: the same reply, no second connection
    assert core.on_handshake(client.noise, CLIENT, 1.0) == reply
    assert core.next_event() is None
    # a replay after it: refused
    assert core.on_handshake(client.noise, CLIENT, RETRY_WINDOW + 1) is None
    refused = core.next_event()
    assert isinstance(refused, HandshakeRefused) and "replayed" in refused.reason
    # the client takes the reply relayed (peerAddress set): neither side OPEN -> no punching
    relayed = encode_handshake(Handshake(Mode.REPLY, reply, ("10.0.0.9", 5000)))
    with pytest.raises(HolepunchUnavailableError):
        client.on_reply(relayed, ("10.0.0.1", 49737))


def test_server_open_and_firewall() -> None:
    seen: list[bytes] = []

    def firewall(key: bytes, payload: NoisePayload, addr: tuple[str, int]) -> bool:
        seen.append(key)
        return key == key_pair(bytes([51]) * 32).public_key

    core = server_core(firewall=firewall, public_address=("93.184.216.34", 49737))
    bad = ClientCore(key_pair(bytes([51]) * 32), core.key_pair.public_key, random.Random(4))
    assert core.on_handshake(bad.noise, CLIENT, 0.0) is None
    assert core.stats["refused"] == 1
    good = ClientCore(key_pair(bytes([52]) * 32), core.key_pair.public_key, random.Random(5))
    reply = core.on_handshake(good.noise, CLIENT, 0.0)
    assert reply is not None
    est = good.on_reply(encode_handshake(Handshake(Mode.REPLY, reply, ("93.184.216.34", 1))),
                        ("10.0.0.1", 49737))
    assert est.remote_payload.firewall == Firewall.OPEN
    assert est.remote_address == ("93.184.216.34", 49737)
    with pytest.raises(LocalError):
        good.on_reply(encode_handshake(Handshake(Mode.REPLY, reply)), ("10.0.0.1", 49737))


def test_server_answers_abort_without_udx_and_version_mismatch() -> None:
    core = server_core()
    for payload, error in ((NoisePayload(), NoiseError.ABORTED),
                           (NoisePayload(version=2), NoiseError.VERSION_MISMATCH)):
        ik = IKHandshake(True, key_pair(bytes([60]) * 32), random.Random(error),
                         remote_public_key=core.key_pair.public_key)
        body = encode_noise_payload(payload) if payload.version == 1 else b"\x02"
        ik.send(body)
        reply = core.on_handshake(ik.data_to_send(), CLIENT, 0.0)
        assert reply is not None
        ik.receive_data(reply)
        got = ik.next_event()
        assert got is not None
        assert decode_noise_payload(got.payload).error == error  # type: ignore[union-attr]
    assert core.next_event() is None  # no connection for either


def test_client_rejects_bad_replies() -> None:
    core = server_core()
    client = ClientCore(key_pair(bytes([70]) * 32), core.key_pair.public_key, random.Random(6))
    relay = ("10.0.0.1", 49737)
    for value in (None, b"\xff\xff", encode_handshake(Handshake(Mode.FROM_SERVER, b"x" * 60)),
                  encode_handshake(Handshake(Mode.REPLY, b"\x01" * 60))):
        with pytest.raises(BadReplyError):
            client.on_reply(value, relay)


def test_a_forged_reply_does_not_spoil_the_next_one() -> None:
    core = server_core()
    client = ClientCore(key_pair(bytes([71]) * 32), core.key_pair.public_key, random.Random(7),
                        public_address=("93.184.216.35", 1))
    reply = core.on_handshake(client.noise, CLIENT, 0.0)
    assert reply is not None
    forged = bytearray(reply)
    forged[40] ^= 1
    relay = ("10.0.0.1", 49737)
    with pytest.raises(BadReplyError):
        client.on_reply(encode_handshake(Handshake(Mode.REPLY, bytes(forged))), relay)
    with pytest.raises(BadReplyError):  # the real ephemeral key, a forged tag
        client.on_reply(encode_handshake(Handshake(Mode.REPLY, reply[:32] + bytes(16))), relay)
    est = client.on_reply(encode_handshake(Handshake(Mode.REPLY, reply)), relay)
    assert est.remote_public_key == core.key_pair.public_key


def test_rate_limit() -> None:
    limit = RateLimit(per_host=1.0, burst=2.0, total=3.0)
    assert [limit.allow("a", 0.0) for _ in range(3)] == [True, True, False]
    assert limit.allow("b", 0.0) is True
    assert limit.allow("c", 0.0) is False  # the node's bucket is empty
    assert limit.allow("a", 2.0) is True


# -- the router, on a sans-I/O node -----------------------------------------------------------


def relay_node() -> DHTNode:
    return DHTNode(rng=random.Random(8), now=0.0, address=("10.0.0.1", 49737), persistent=True)


def test_router_relays_handshake_only_to_its_forward_and_back_to_its_client() -> None:
    node, router = relay_node(), Router()
    target = hash32(b"k" * 32)
    server = ("10.0.0.2", 5000)
    router.set_forward(target, b"k" * 32 + b"\x00", server, 0.0)
    assert router.find_peer(target, 0.0) == b"k" * 32 + b"\x00"
    client = ("10.0.0.3", 6000)
    req = IncomingRequest(HyperCommand.PEER_HANDSHAKE, target,
                          encode_handshake(Handshake(Mode.FROM_CLIENT, b"n" * 96,
                                                     None, ("6.6.6.6", 1))),
                          False, None, client, None, 77, 0)
    assert router.on_connect_request(req, node, 0.0).silent
    [(data, to, _)] = node.datagrams_to_send()
    assert to == server  # never the relayAddress the client named
    msg = decode(data)
    assert isinstance(msg, Request) and msg.tid == 77
    assert msg.value is not None
    assert decode_handshake(msg.value) == Handshake(Mode.FROM_RELAY, b"n" * 96, client)
    # FROM_SERVER naming another address: dropped; the right one goes to the client
    answer = encode_handshake(Handshake(Mode.FROM_SERVER, b"r" * 48, ("9.9.9.9", 9)))
    router.on_connect_request(IncomingRequest(HyperCommand.PEER_HANDSHAKE, target, answer,
                                              False, None, server, None, 77, 0), node, 0.1)
    assert node.datagrams_to_send() == []
    router.on_connect_request(req, node, 0.2)
    node.datagrams_to_send()
    answer = encode_handshake(Handshake(Mode.FROM_SERVER, b"r" * 48, client))
    router.on_connect_request(IncomingRequest(HyperCommand.PEER_HANDSHAKE, target, answer,
                                              False, None, server, None, 77, 0), node, 0.3)
    [(data, to, _)] = node.datagrams_to_send()
    assert to == client
    # and only once: a second FROM_SERVER for that tid finds nothing pending
    router.on_connect_request(IncomingRequest(HyperCommand.PEER_HANDSHAKE, target, answer,
                                              False, None, server, None, 77, 0), node, 0.4)
    assert node.datagrams_to_send() == []


# -- a whole connect on a simulated DHT ---------------------------------------------------------


def with_routers(sw: DHTSwarm) -> None:
    for sn in sw.nodes:
        sn.handler.router = Router()


def test_connect_through_a_simulated_dht() -> None:
    sw = DHTSwarm(12, seed=3)
    with_routers(sw)
    sw.bootstrap_all()
    server_sn = sw.add_node(persistent=False)
    client_sn = sw.add_node(persistent=False)
    for sn in (server_sn, client_sn):
        sn.handler.router = Router()
        sw.run_query(sn, sn.node.bootstrap(sw.now))
    keys = key_pair(bytes([80]) * 32)
    core = ServerCore(keys, random.Random(9))
    assert isinstance(server_sn.handler.router, Router)
    server_sn.handler.router.serve(hash32(keys.public_key), core)
    done = sw.run_query(server_sn, start_announce(server_sn.node, hash32(keys.public_key),
                                                  keys, sw.now))
    assert done.commits > 0
    client = ClientCore(key_pair(bytes([81]) * 32), keys.public_key, random.Random(10),
                        public_address=client_sn.server)
    qid = client_sn.node.query(client.target, HyperCommand.FIND_PEER, None, sw.now,
                               emit_replies=True)
    sw.run_query(client_sn, qid)
    holders = [e.reply.from_addr for e in client_sn.events
               if isinstance(e, QueryReply) and e.query == qid and e.reply.value
               and decode_peer(e.reply.value).public_key == keys.public_key]
    assert holders
    handle = client_sn.node.request(holders[0], HyperCommand.PEER_HANDSHAKE, sw.now,
                                    target=client.target, value=client.request_value)
    sw.touch(client_sn)
    sw.run_until(lambda: any(isinstance(e, RequestDone) and e.handle == handle
                             for e in client_sn.events), 10)
    [done_req] = [e for e in client_sn.events if isinstance(e, RequestDone)
                  and e.handle == handle]
    assert done_req.reply is not None
    est = client.on_reply(done_req.reply.value, holders[0])
    accepted = core.next_event()
    assert isinstance(accepted, Established)
    assert accepted.remote_public_key == client.key_pair.public_key
    assert accepted.remote_address == client_sn.client  # as the relay saw it
    assert est.handshake_hash == accepted.handshake_hash




def answered(events: Sequence[object], handle: int) -> bool:
    return any(isinstance(e, RequestDone) and e.handle == handle for e in events)


def test_connects_survive_packet_loss() -> None:
    """10% loss on every datagram: retransmitted handshakes are relayed again and answered from
    the server's retry cache (one connection each), and clients try the next record holder."""
    sw = DHTSwarm(16, seed=7, loss=0.1)
    with_routers(sw)
    sw.bootstrap_all()
    server_sn = sw.add_node(persistent=False)
    client_sn = sw.add_node(persistent=False)
    for sn in (server_sn, client_sn):
        sn.handler.router = Router()
        sw.run_query(sn, sn.node.bootstrap(sw.now))
    keys = key_pair(bytes([90]) * 32)
    core = ServerCore(keys, random.Random(11))
    assert isinstance(server_sn.handler.router, Router)
    server_sn.handler.router.serve(hash32(keys.public_key), core)
    sw.run_query(server_sn, start_announce(server_sn.node, hash32(keys.public_key), keys,
                                           sw.now))
    connected = 0
    tries = 20
    for i in range(tries):
        client = ClientCore(key_pair(bytes([100 + i]) * 32), keys.public_key,
                            random.Random(i), public_address=client_sn.server)
        qid = client_sn.node.query(client.target, HyperCommand.FIND_PEER, None, sw.now,
                                   emit_replies=True)
        sw.run_query(client_sn, qid)
        holders = [e.reply.from_addr for e in client_sn.events
                   if isinstance(e, QueryReply) and e.query == qid and e.reply.value]
        for holder in holders:
            handle = client_sn.node.request(holder, HyperCommand.PEER_HANDSHAKE, sw.now,
                                            target=client.target, value=client.request_value)
            sw.touch(client_sn)
            sw.run_until(functools.partial(answered, client_sn.events, handle), 30)
            done = [e for e in client_sn.events if isinstance(e, RequestDone)
                    and e.handle == handle]
            if done and done[0].reply is not None:
                client.on_reply(done[0].reply.value, holder)
                connected += 1
                break
    accepted = []
    while (e := core.next_event()) is not None:
        if isinstance(e, Established):
            accepted.append(e.remote_public_key)
    assert connected >= tries - 1
    assert len(accepted) == len(set(accepted)) >= connected  # never twice for one client

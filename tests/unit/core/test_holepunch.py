"""Holepunching without sockets: NAT classification from samples, the punch rounds (tokens,
fast open, probe schedule, path), what each side refuses."""

from __future__ import annotations

import random

import pytest

from cairn.crypto import key_pair
from cairn.errors import DecodeError
from cairn.hyperdht.client import ClientCore
from cairn.hyperdht.events import Established
from cairn.hyperdht.holepunch import (
    CONSISTENT_ROUNDS,
    MAX_ECHOES,
    ROUND_INTERVAL,
    DoubleRandomizedNatsError,
    HolepunchAbortedError,
    PunchSession,
    RemoteNotHolepunchableError,
    ServerPunch,
    holepunch_token,
)
from cairn.hyperdht.messages import (
    Firewall,
    Handshake,
    HolepunchPayload,
    Mode,
    NoiseError,
    encode_handshake,
)
from cairn.hyperdht.nat import MAX_SAMPLES, NatSampler
from cairn.hyperdht.server import ServerCore

SECRET = bytes(range(32))
PUB_A = ("203.0.113.5", 40000)
PUB_B = ("198.51.100.7", 50000)
NODES = [(f"10.0.0.{i}", 49737) for i in range(1, 9)]


def sampled(*tos: tuple[str, int], open: bool = False) -> NatSampler:
    nat = NatSampler(open=open)
    for to, node in zip(tos, NODES, strict=False):
        nat.add(to, node)
    return nat


# -- NAT classification ---------------------------------------------------------------------------


def test_too_few_samples_is_unknown() -> None:
    nat = sampled(PUB_A, PUB_A)
    assert nat.firewall == Firewall.UNKNOWN and nat.addresses == ()


def test_one_mapping_seen_three_times_is_consistent() -> None:
    nat = sampled(PUB_A, PUB_A, PUB_A)
    assert nat.firewall == Firewall.CONSISTENT
    assert nat.addresses == (PUB_A,)


def test_every_sample_different_is_random_with_the_host_only() -> None:
    nat = sampled(("203.0.113.5", 1), ("203.0.113.5", 2), ("203.0.113.5", 3))
    assert nat.firewall == Firewall.RANDOM
    assert nat.addresses == (("203.0.113.5", 0),)


def test_two_hits_on_one_host_of_four_samples_is_random() -> None:
    nat = sampled(PUB_A, PUB_A, ("203.0.113.5", 2), ("203.0.113.5", 3))
    assert nat.firewall == Firewall.RANDOM


def test_two_hosts_seen_twice_each_is_consistent() -> None:
    nat = sampled(PUB_A, PUB_A, PUB_B, PUB_B)
    assert nat.firewall == Firewall.CONSISTENT
    assert set(nat.addresses) == {PUB_A, PUB_B}


def test_two_hits_and_one_stray_waits_for_more() -> None:
    nat = sampled(PUB_A, PUB_A, ("203.0.113.5", 9))
    before = nat.firewall
    nat.add(PUB_A, NODES[5])
    assert (before, nat.firewall) == (Firewall.UNKNOWN, Firewall.CONSISTENT)


def test_a_node_answering_twice_counts_once_and_samples_are_bounded() -> None:
    nat = NatSampler()
    assert nat.add(PUB_A, NODES[0])
    assert not nat.add(PUB_A, NODES[0])
    for i in range(100):
        nat.add(PUB_A, (f"10.1.0.{i}", 1))
    assert nat.sampled == MAX_SAMPLES


def test_open_only_when_told() -> None:
    assert sampled(PUB_A, PUB_A, PUB_A, open=True).firewall == Firewall.OPEN
    assert sampled(PUB_A, PUB_A, PUB_A, PUB_A).firewall == Firewall.CONSISTENT


def test_a_frozen_verdict_stays() -> None:
    nat = sampled(PUB_A, PUB_A, PUB_A)
    nat.freeze()
    for i in range(5):
        nat.add(("203.0.113.5", 100 + i), NODES[3 + i])
    assert nat.firewall == Firewall.CONSISTENT


# -- the rounds -----------------------------------------------------------------------------------


def server_punch(nat: NatSampler | None = None, seed: int = 1) -> ServerPunch:
    return ServerPunch(SECRET, random.Random(seed), nat or sampled(PUB_B, PUB_B, PUB_B), PUB_A,
                       0.0)


def client_session(nat: NatSampler | None = None) -> PunchSession:
    return PunchSession(True, SECRET, random.Random(7), nat or sampled(PUB_A, PUB_A, PUB_A))


def test_token_is_keyed_blake2b_of_the_host() -> None:
    a = holepunch_token(b"k" * 32, "10.0.0.1")
    assert len(a) == 32 and a != holepunch_token(b"k" * 32, "10.0.0.2")
    assert a != holepunch_token(b"j" * 32, "10.0.0.1")


def test_consistent_to_consistent_rounds_fast_open_and_verified_probes() -> None:
    server = server_punch()
    client = client_session()
    # round 0: the client probed PUB_B (one of the server's own addresses): fast open
    data, fast = server.on_request(client.seal(HolepunchPayload(
        firewall=Firewall.CONSISTENT, round=0, addresses=(PUB_A,), remote_address=PUB_B)),
        PUB_A, True, 0.1)
    assert fast == PUB_A
    reply = client.open(data)
    assert reply.error == NoiseError.NONE and reply.firewall == Firewall.CONSISTENT
    assert reply.addresses == (PUB_B,) and reply.token is not None and not reply.punching
    client.update_remote(reply, None)
    client.check_punchable()
    # round 1: punching, with the server's token echoed and ours
    mine = client.token(PUB_B[0])
    data, _ = server.on_request(client.seal(HolepunchPayload(
        firewall=Firewall.CONSISTENT, round=1, punching=True, addresses=(PUB_A,), token=mine,
        remote_token=reply.token)), PUB_A, True, 0.2)
    reply1 = client.open(data)
    assert reply1.punching and reply1.remote_token == mine
    client.update_remote(reply1, PUB_B[0])
    assert all(a.verified for a in client.remote_addresses)
    assert server.session.punching
    assert all(a.verified for a in server.session.remote_addresses)
    # the client probes at once, the server one interval later
    client.start(1.0)
    assert client.probes_due(1.0) == [PUB_B]
    assert server.session.probes_due(0.2) == []
    assert server.session.probes_due(0.2 + ROUND_INTERVAL) == [PUB_A]
    # the server's probe arrives: the path; later probes change nothing
    assert client.on_probe(PUB_B) == PUB_B
    assert client.path == PUB_B and client.next_timer() is None
    assert client.on_probe(PUB_B) is None


def test_unverified_addresses_are_probed_every_fourth_round_and_rounds_end() -> None:
    s = client_session()
    s.update_remote(HolepunchPayload(firewall=Firewall.CONSISTENT, punching=True,
                                     addresses=(PUB_B,)), None)
    s.start(0.0)
    sent = [s.probes_due(float(i)) for i in range(CONSISTENT_ROUNDS + 1)]
    assert [i + 1 for i, x in enumerate(sent) if x] == [4, 8]
    assert s.exhausted and s.next_timer() is None


def test_a_wrong_token_verifies_nothing() -> None:
    server = server_punch()
    client = client_session()
    data, _ = server.on_request(client.seal(HolepunchPayload(
        firewall=Firewall.CONSISTENT, round=1, punching=True, addresses=(PUB_A,),
        remote_token=b"\x01" * 32)), PUB_A, True, 0.1)
    assert client.open(data).punching
    assert not any(a.verified for a in server.session.remote_addresses)


def test_a_token_through_a_node_that_is_not_the_servers_relay_is_not_trusted() -> None:
    server = server_punch()
    client = client_session()
    data, _ = server.on_request(client.seal(HolepunchPayload(
        firewall=Firewall.CONSISTENT, round=0, addresses=(PUB_A,))), PUB_A, False, 0.1)
    assert client.open(data).token is None


def test_a_payload_that_does_not_open_raises_decode_error() -> None:
    server = server_punch()
    other = PunchSession(True, b"\x09" * 32, random.Random(1), sampled(PUB_A, PUB_A, PUB_A))
    with pytest.raises(DecodeError):
        server.on_request(other.seal(HolepunchPayload()), PUB_A, True, 0.1)
    with pytest.raises(DecodeError):
        server.on_request(b"\x00" * 30, PUB_A, True, 0.1)


def test_server_aborts_a_random_pair_an_unknown_nat_and_after_its_deadline() -> None:
    client = client_session()
    # the client is behind a symmetric NAT: random punching is not built -> ABORTED
    data, _ = server_punch().on_request(client.seal(HolepunchPayload(
        firewall=Firewall.RANDOM, round=1, punching=True, addresses=(("203.0.113.5", 0),))),
        PUB_A, True, 0.1)
    assert client.open(data).error == NoiseError.ABORTED
    # the server could not sample its own NAT
    data, _ = server_punch(NatSampler()).on_request(client.seal(HolepunchPayload(
        firewall=Firewall.CONSISTENT, round=0, addresses=(PUB_A,))), PUB_A, True, 0.1)
    assert client.open(data).error == NoiseError.ABORTED
    # too late
    data, _ = server_punch().on_request(client.seal(HolepunchPayload(
        firewall=Firewall.CONSISTENT, round=0, addresses=(PUB_A,))), PUB_A, True, 60.0)
    assert client.open(data).error == NoiseError.ABORTED
    # the client aborted
    server = server_punch()
    data, _ = server.on_request(client.seal(HolepunchPayload(error=NoiseError.ABORTED)), PUB_A,
                                True, 0.1)
    assert server.aborted and client.open(data).error == NoiseError.ABORTED


def test_client_refuses_unpunchable_pairs_with_a_reason() -> None:
    s = client_session(sampled(("1.2.3.4", 1), ("1.2.3.4", 2), ("1.2.3.4", 3)))
    s.update_remote(HolepunchPayload(firewall=Firewall.RANDOM), None)
    with pytest.raises(DoubleRandomizedNatsError, match="both sides"):
        s.check_punchable()
    s = client_session()
    s.update_remote(HolepunchPayload(firewall=Firewall.RANDOM), None)
    with pytest.raises(RemoteNotHolepunchableError, match="symmetric NAT"):
        s.check_punchable()
    s = client_session(NatSampler())
    s.update_remote(HolepunchPayload(firewall=Firewall.CONSISTENT), None)
    with pytest.raises(HolepunchAbortedError, match="unknown"):
        s.check_punchable()
    s = client_session()
    s.update_remote(HolepunchPayload(firewall=Firewall.CONSISTENT, addresses=()), None)
    with pytest.raises(HolepunchAbortedError, match="no address"):
        s.start(0.0)


def test_probes_from_strangers_are_dropped_and_echoes_are_bounded() -> None:
    server = server_punch()
    s = server.session
    s.update_remote(HolepunchPayload(firewall=Firewall.CONSISTENT, addresses=(PUB_A,)), None)
    assert s.on_probe(("192.0.2.66", 1234)) is None
    assert s.dropped == {"probe from a host the peer did not name": 1}
    echoed = [s.on_probe(PUB_A) for _ in range(MAX_ECHOES + 10)]
    assert echoed.count(PUB_A) == MAX_ECHOES
    # the client takes no path from a stranger either
    c = client_session()
    c.update_remote(HolepunchPayload(firewall=Firewall.CONSISTENT, addresses=(PUB_B,)), None)
    assert c.on_probe(("192.0.2.66", 1)) is None and c.path is None


def test_remote_address_lists_are_bounded_and_bad_ports_skipped() -> None:
    s = client_session()
    many = (*((f"198.51.100.{i}", 1000 + i) for i in range(40)), ("198.51.100.1", 0))
    s.update_remote(HolepunchPayload(firewall=Firewall.CONSISTENT, addresses=many), None)
    assert len(s.remote_addresses) == 8
    assert all(a.address[1] > 0 for a in s.remote_addresses)


# -- the handshake says whether to punch ---------------------------------------------------------


def test_a_handshake_between_two_nated_sides_carries_the_punch_id() -> None:
    server = ServerCore(key_pair(bytes([40]) * 32), random.Random(2))
    nated = ClientCore(key_pair(bytes([41]) * 32), server.key_pair.public_key, random.Random(3),
                       holepunch=True)
    reply = server.on_handshake(nated.noise, PUB_A, 0.0)
    assert reply is not None
    accepted = server.next_event()
    assert isinstance(accepted, Established) and accepted.holepunch_id is not None
    relayed = encode_handshake(Handshake(Mode.REPLY, reply, PUB_B))
    est = nated.on_reply(relayed, ("10.0.0.1", 49737))
    assert est.holepunch_id == accepted.holepunch_id
    assert est.remote_address == PUB_B  # the server's puncher, as the relay saw it
    assert est.relay == ("10.0.0.1", 49737)
    # a client that says OPEN needs no punch: the server connects to it
    open_client = ClientCore(key_pair(bytes([42]) * 32), server.key_pair.public_key,
                             random.Random(4), public_address=PUB_A)
    assert server.on_handshake(open_client.noise, PUB_A, 0.0) is not None
    accepted = server.next_event()
    assert isinstance(accepted, Established) and accepted.holepunch_id is None
    # an OPEN server: no punch either
    public = ServerCore(key_pair(bytes([43]) * 32), random.Random(5), public_address=PUB_B)
    c = ClientCore(key_pair(bytes([44]) * 32), public.key_pair.public_key, random.Random(6),
                   holepunch=True)
    reply = public.on_handshake(c.noise, PUB_A, 0.0)
    assert reply is not None
    est = c.on_reply(encode_handshake(Handshake(Mode.REPLY, reply, PUB_B)), ("10.0.0.1", 1))
    assert est.holepunch_id is None and est.remote_address == PUB_B

"""Attacks on connect by key (issue 19): forged and replayed handshakes, handshake floods at a
server and at a relaying node, reflection through relays, malformed holepunch payloads.

Sans-I/O and seeded: the server core and the router run on fake time, attackers build their
messages with Cairn's own encoders. Each test records a scorecard line and asserts its bound.
"""

from __future__ import annotations

import random

from cairn.crypto import key_pair
from cairn.dht.node import DHTNode, IncomingRequest
from cairn.dht.records import HyperCommand, hash32
from cairn.hyperdht.client import BadReplyError, ClientCore
from cairn.hyperdht.events import Established
from cairn.hyperdht.messages import (
    Handshake,
    HolepunchPayload,
    Mode,
    NoisePayload,
    encode_handshake,
    encode_holepunch,
    encode_noise_payload,
    seal_holepunch_payload,
)
from cairn.hyperdht.messages import Holepunch as HolepunchMsg
from cairn.hyperdht.noise_ik import IKHandshake
from cairn.hyperdht.router import Router
from cairn.hyperdht.server import RETRY_WINDOW, ServerCore
from tests.scorecard import record, scale

HONEST = ("10.9.0.1", 4000)


def server(seed: int = 1) -> ServerCore:
    return ServerCore(key_pair(bytes([seed]) * 32), random.Random(seed))


def accepted(core: ServerCore) -> list[Established]:
    out = []
    while (e := core.next_event()) is not None:
        if isinstance(e, Established):
            out.append(e)
    return out


def honest_connects(core: ServerCore, now: float, seed: int) -> bool:
    client = ClientCore(key_pair(bytes([200]) * 32), core.key_pair.public_key,
                        random.Random(seed))
    reply = core.on_handshake(client.noise, HONEST, now)
    if reply is None:
        return False
    est = client.on_reply(encode_handshake(Handshake(Mode.REPLY, reply)), HONEST)
    return est.remote_public_key == core.key_pair.public_key


def test_forged_handshakes_are_refused() -> None:
    rng = random.Random(11)
    core = server()
    other = key_pair(bytes([99]) * 32)
    n = scale(300, 5000)
    forged: list[bytes] = []
    for i in range(n):
        kind = i % 5
        if kind == 0:  # message 1 for another server's key
            ik = IKHandshake(True, key_pair(rng.randbytes(32)), rng,
                             remote_public_key=other.public_key)
            ik.send(encode_noise_payload(NoisePayload()))
            forged.append(ik.data_to_send())
        elif kind == 1:  # random bytes of a plausible size
            forged.append(rng.randbytes(rng.randrange(0, 300)))
        elif kind == 2:  # a real message 1 with one bit flipped
            ik = IKHandshake(True, key_pair(rng.randbytes(32)), rng,
                             remote_public_key=core.key_pair.public_key)
            ik.send(encode_noise_payload(NoisePayload()))
            m = bytearray(ik.data_to_send())
            m[rng.randrange(len(m))] ^= 1 << rng.randrange(8)
            forged.append(bytes(m))
        elif kind == 3:  # truncated
            ik = IKHandshake(True, key_pair(rng.randbytes(32)), rng,
                             remote_public_key=core.key_pair.public_key)
            ik.send(b"")
            forged.append(ik.data_to_send()[: rng.randrange(0, 95)])
        else:  # a valid IK whose payload is garbage
            ik = IKHandshake(True, key_pair(rng.randbytes(32)), rng,
                             remote_public_key=core.key_pair.public_key)
            ik.send(b"\x01\xff\xff\xff\xff")
            forged.append(ik.data_to_send())
    got = 0
    for i, message in enumerate(forged):
        if core.on_handshake(message, (f"10.1.{i // 250}.{i % 250}", 1000), i * 0.01) is not None:
            got += 1
    got += len(accepted(core))
    ok = honest_connects(core, n * 0.01 + 1, 3)
    line = record("hyperdht", "forged handshakes (wrong key, flipped bits, truncated, junk)",
                  n, got + (0 if ok else 1), "accepted",
                  detail=f"refused as bad: {core.stats['bad']}; honest connect after: {ok}")
    assert line.passed


def test_replayed_handshakes_make_no_connection() -> None:
    core = server(2)
    n = scale(200, 2000)
    captured = []
    for i in range(n):
        client = ClientCore(key_pair(bytes([i % 250 + 1]) * 32), core.key_pair.public_key,
                            random.Random(i))
        host = (f"10.9.{i // 250}.{i % 250 + 1}", 4000)  # honest clients, one per host
        assert core.on_handshake(client.noise, host, i * 0.01) is not None
        captured.append(client.noise)
    first = len(accepted(core))
    replays = 0
    for i, m in enumerate(captured):  # an eavesdropper replays each, later, from elsewhere
        if core.on_handshake(m, (f"10.66.{i // 250}.{i % 250}", 5000),
                             n * 0.01 + RETRY_WINDOW + 1 + i * 0.001):
            replays += 1
    replays += len(accepted(core))
    line = record("hyperdht", "replayed handshake message 1 (after the retry window)", n,
                  replays, "connections", detail=f"first pass accepted {first}")
    assert first == n and line.passed


def test_handshake_flood_at_a_server_is_bounded() -> None:
    rng = random.Random(12)
    core = ServerCore(key_pair(bytes([3]) * 32), random.Random(3), max_recent=256,
                      max_seen=4096)
    n = scale(3000, 30000)
    answered = 0
    for i in range(n):  # valid handshakes from unknown keys, one flooding host, one second
        ik = IKHandshake(True, key_pair(rng.randbytes(32)), rng,
                         remote_public_key=core.key_pair.public_key)
        ik.send(encode_noise_payload(NoisePayload()))
        if core.on_handshake(ik.data_to_send(), ("10.66.0.1", 5000), i / n) is not None:
            answered += 1
    accepted(core)
    ok = honest_connects(core, 1.0, 4)
    state = len(core._recent) + len(core._seen) + len(core._punches)
    bad = (0 if ok else 1) + (1 if len(core._recent) > 256 else 0)
    line = record("hyperdht", f"{n} handshakes/s from one host with unknown keys at a server",
                  n, bad, "honest refused or unbounded",
                  detail=f"answered {answered} (rate limit), state entries {state}")
    assert line.passed and answered < 100 and len(core._seen) <= 4096


def relay() -> tuple[DHTNode, Router, bytes, tuple[str, int]]:
    node = DHTNode(rng=random.Random(5), now=0.0, address=("10.0.0.1", 49737), persistent=True)
    router = Router(max_pending=512)
    target = hash32(b"s" * 32)
    srv = ("10.0.0.2", 5000)
    router.set_forward(target, b"s" * 32 + b"\x00", srv, 0.0)
    return node, router, target, srv


def test_handshake_flood_at_a_relaying_node_is_bounded() -> None:
    node, router, target, srv = relay()
    n = scale(5000, 50000)
    sent = 0
    for i in range(n):  # one host floods PEER_HANDSHAKE FROM_CLIENT for one second
        req = IncomingRequest(HyperCommand.PEER_HANDSHAKE, target,
                              encode_handshake(Handshake(Mode.FROM_CLIENT, b"x" * 96)),
                              False, None, ("10.66.0.1", 1000 + i % 60000), None, i & 0xFFFF)
        router.on_connect_request(req, node, i / n)
        sent += len(node.datagrams_to_send())
    honest = IncomingRequest(HyperCommand.PEER_HANDSHAKE, target,
                             encode_handshake(Handshake(Mode.FROM_CLIENT, b"h" * 96)),
                             False, None, HONEST, None, 7)
    router.on_connect_request(honest, node, 1.0)
    honest_relayed = [to for _, to, _ in node.datagrams_to_send()] == [srv]
    bad = (0 if honest_relayed else 1) + (1 if len(router._pending) > 512 else 0)
    line = record("hyperdht", f"{n} PEER_HANDSHAKE/s from one host at a relaying node", n, bad,
                  "honest dropped or unbounded",
                  detail=f"relayed {sent} to the server, refused {router.limit.refused}")
    assert line.passed and sent <= 40 + 20  # burst + 1 s of the per-host rate


def test_relays_do_not_reflect() -> None:
    node, router, target, _srv = relay()
    victim = ("192.0.2.9", 80)
    n = scale(500, 5000)
    reflected = 0
    for i in range(n):
        kind = i % 3
        if kind == 0:  # FROM_SERVER naming a victim, for a tid never relayed
            value = encode_handshake(Handshake(Mode.FROM_SERVER, b"r" * 48, victim))
            cmd = HyperCommand.PEER_HANDSHAKE
        elif kind == 1:  # FROM_CLIENT asking to be relayed to a victim
            value = encode_handshake(Handshake(Mode.FROM_CLIENT, b"r" * 96, None, victim))
            cmd = HyperCommand.PEER_HANDSHAKE
        else:  # holepunch FROM_CLIENT naming a victim as the server
            value = encode_holepunch(HolepunchMsg(Mode.FROM_CLIENT, 0, b"p" * 50, victim))
            cmd = HyperCommand.PEER_HOLEPUNCH
        router.on_connect_request(IncomingRequest(cmd, target, value, False, None,
                                                  (f"10.7.{i // 250 % 250}.{i % 250}", 9), None,
                                                  i & 0xFFFF), node, i * 0.01)
        reflected += sum(1 for _, to, _ in node.datagrams_to_send() if to == victim)
    line = record("hyperdht", "relay used as a reflector toward a third party", n, reflected,
                  "datagrams to the victim")
    assert line.passed


def test_malformed_holepunch_payloads_are_dropped() -> None:
    rng = random.Random(13)
    core = ServerCore(key_pair(bytes([4]) * 32), random.Random(4))  # not OPEN: punch state
    client = ClientCore(key_pair(bytes([5]) * 32), core.key_pair.public_key, random.Random(5))
    reply = core.on_handshake(client.noise, HONEST, 0.0)
    assert reply is not None
    [est] = accepted(core)
    n = scale(500, 5000)
    answered = 0
    for i in range(n):
        kind = i % 4
        if kind == 0:
            payload = rng.randbytes(rng.randrange(0, 120))
        elif kind == 1:  # sealed with a wrong secret
            payload = seal_holepunch_payload(HolepunchPayload(), rng.randbytes(32),
                                             rng.randbytes(24))
        elif kind == 2:  # right secret, flipped bit
            good = bytearray(seal_holepunch_payload(HolepunchPayload(), est.holepunch_secret,
                                                    rng.randbytes(24)))
            good[rng.randrange(len(good))] ^= 1
            payload = bytes(good)
        else:  # an unknown puncher id
            payload = seal_holepunch_payload(HolepunchPayload(), est.holepunch_secret,
                                             rng.randbytes(24))
        pid = 0 if kind != 3 else 1 + i
        if core.on_holepunch(pid, payload, HONEST, 1.0) is not None:
            answered += 1
    right = core.on_holepunch(0, seal_holepunch_payload(HolepunchPayload(),
                                                        est.holepunch_secret, bytes(24)),
                              HONEST, 1.0)
    line = record("hyperdht", "malformed or forged holepunch payloads at a server", n, answered,
                  "answered", detail=f"dropped {core.stats['holepunch_bad']}; a good one "
                  f"answered: {right is not None}")
    assert line.passed and right is not None


def test_forged_replies_from_hostile_relays() -> None:
    """A relay answers a client's PEER_HANDSHAKE with junk, a flipped tag, or another mode; the
    client refuses each and connects through the next, honest relay."""
    rng = random.Random(14)
    n = scale(200, 2000)
    spoiled = 0
    for i in range(n):
        core = ServerCore(key_pair(bytes([7]) * 32), random.Random(i))
        client = ClientCore(key_pair(rng.randbytes(32)), core.key_pair.public_key,
                            random.Random(i), public_address=("93.184.216.34", 1))
        reply = core.on_handshake(client.noise, HONEST, 0.0)
        assert reply is not None
        flipped = bytearray(reply)
        flipped[rng.randrange(len(flipped))] ^= 1
        lies = [rng.randbytes(rng.randrange(0, 150)),
                encode_handshake(Handshake(Mode.REPLY, bytes(flipped))),
                encode_handshake(Handshake(Mode.FROM_SERVER, reply)),
                encode_handshake(Handshake(Mode.REPLY, rng.randbytes(len(reply))))]
        for lie in lies:
            try:
                client.on_reply(lie, ("10.0.0.66", 1))
                spoiled += 1  # a lie accepted
            except BadReplyError:
                pass
        try:
            client.on_reply(encode_handshake(Handshake(Mode.REPLY, reply)), ("10.0.0.1", 1))
        except BadReplyError:
            spoiled += 1  # the honest reply no longer works
    line = record("hyperdht", "forged REPLYs from hostile relays, then an honest one", n,
                  spoiled, "lies taken or connects spoiled")
    assert line.passed


def test_a_reused_tid_does_not_take_the_servers_answer() -> None:
    """Mallory sends PEER_HANDSHAKEs under the tids of honest clients' relayed requests (16 bits,
    guessable): the server's answers still go to the honest clients only."""
    node, router, target, srv = relay()
    mallory = ("10.66.6.6", 6666)
    n = scale(300, 3000)
    stolen = lost = 0
    for i in range(n):
        client = (f"10.5.{i // 250 % 250}.{i % 250 + 1}", 7000)
        tid = i & 0xFFFF
        now = i * 0.01
        for who in (client, mallory):
            router.on_connect_request(IncomingRequest(
                HyperCommand.PEER_HANDSHAKE, target,
                encode_handshake(Handshake(Mode.FROM_CLIENT, b"c" * 96)), False, None, who,
                None, tid), node, now)
        node.datagrams_to_send()
        router.on_connect_request(IncomingRequest(
            HyperCommand.PEER_HANDSHAKE, target,
            encode_handshake(Handshake(Mode.FROM_SERVER, b"s" * 48, client)), False, None, srv,
            None, tid), node, now)
        sent = [to for _, to, _ in node.datagrams_to_send()]
        stolen += sent.count(mallory)
        lost += 0 if sent == [client] else 1
    line = record("hyperdht", "a relayed request's tid reused to take the server's answer", n,
                  stolen + lost, "answers stolen or lost")
    assert line.passed


def test_forward_entry_flood_from_one_host() -> None:
    """One host announces thousands of self-keys (each a valid, signed announce costs it only
    a key pair): it holds at most 64 forward entries, honest servers elsewhere are still kept."""
    router = Router()
    n = scale(5000, 50000)
    for i in range(n):
        router.set_forward(hash32(i.to_bytes(4, "little")), bytes(33),
                           ("10.66.0.1", 1000 + i % 60000), i * 0.001)
    flooded = router.forward_count()
    honest = [router.set_forward(hash32(b"honest" + bytes([i])), bytes(33),
                                 (f"10.9.0.{i + 1}", 5), n * 0.001) for i in range(20)]
    bad = honest.count(False) + max(0, flooded - router.per_host)
    line = record("hyperdht", "forward-entry flood (self-announces) from one host", n, bad,
                  "honest refused or over quota", detail=f"flooder holds {flooded}")
    assert line.passed

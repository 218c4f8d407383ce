"""Attacks on holepunching (issue 19): holepunch payloads that do not open, wrong tokens,
probes from strangers, clients asking for random punching, a hostile node spoiling NAT samples.

Sans-I/O and seeded (the punch rounds of :mod:`cairn.hyperdht.holepunch` on fake time); the
socket-level floods are in tests/integration/core/test_reliability_holepunch.py. Each test
records a scorecard line and asserts its bound.
"""

from __future__ import annotations

import random

from cairn.errors import DecodeError
from cairn.hyperdht.holepunch import MAX_ECHOES, PunchSession, ServerPunch
from cairn.hyperdht.messages import Firewall, HolepunchPayload, NoiseError
from cairn.hyperdht.nat import MAX_SAMPLES, NatSampler
from tests.scorecard import record, scale

SECRET = bytes(range(32))
CLIENT = ("203.0.113.5", 40000)
SERVER = ("198.51.100.7", 50000)


def consistent_nat(addr: tuple[str, int]) -> NatSampler:
    nat = NatSampler()
    for i in range(3):
        nat.add(addr, (f"10.0.0.{i + 1}", 49737))
    return nat


def server_punch(seed: int = 1) -> ServerPunch:
    return ServerPunch(SECRET, random.Random(seed), consistent_nat(SERVER), CLIENT, 0.0)


def client() -> PunchSession:
    return PunchSession(True, SECRET, random.Random(9), consistent_nat(CLIENT))


def test_holepunch_payloads_that_do_not_open_are_dropped_and_change_nothing() -> None:
    rng = random.Random(1)
    n = scale(500, 5000)
    punch = server_punch()
    honest = client()
    good = honest.seal(HolepunchPayload(firewall=Firewall.CONSISTENT, round=3, punching=True,
                                        addresses=(CLIENT,)))
    answered = 0
    for i in range(n):
        kind = i % 4
        if kind == 0:
            data = rng.randbytes(rng.randrange(0, 120))
        elif kind == 1:  # sealed with another secret
            other = PunchSession(True, rng.randbytes(32), rng, consistent_nat(CLIENT))
            data = other.seal(HolepunchPayload(punching=True, addresses=(("192.0.2.1", 9),)))
        elif kind == 2:  # one bit flipped
            flipped = bytearray(good)
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            data = bytes(flipped)
        else:  # truncated
            data = good[:rng.randrange(len(good))]
        try:
            punch.on_request(data, CLIENT, True, 1.0)
            answered += 1
        except DecodeError:
            pass
    untouched = (punch.round == 0 and not punch.session.remote_addresses
                 and not punch.session.punching)
    reply, _ = punch.on_request(good, CLIENT, True, 1.0)
    line = record("holepunch", "holepunch payloads that do not open (junk, other secret, "
                  "flipped bit, truncated) at a server punch", n, answered, "answered",
                  detail=f"state untouched: {untouched}; the honest round answered: "
                  f"{honest.open(reply).punching}")
    assert line.passed and untouched and honest.open(reply).punching


def test_wrong_tokens_never_verify_an_address() -> None:
    rng = random.Random(2)
    n = scale(300, 3000)
    verified = 0
    for _ in range(n):
        punch = server_punch(rng.randrange(1 << 30))
        c = client()
        punch.on_request(c.seal(HolepunchPayload(
            firewall=Firewall.CONSISTENT, round=1, punching=True, addresses=(CLIENT,),
            remote_token=rng.randbytes(32))), CLIENT, True, 1.0)
        verified += sum(a.verified for a in punch.session.remote_addresses)
    line = record("holepunch", "round 1 with a guessed remoteToken (address verification)", n,
                  verified, "addresses verified")
    assert line.passed


def test_probes_from_strangers_are_neither_echoed_nor_taken_as_the_path() -> None:
    rng = random.Random(3)
    n = scale(2000, 20000)
    punch = server_punch()
    punch.session.update_remote(HolepunchPayload(firewall=Firewall.CONSISTENT,
                                                 addresses=(CLIENT,)), None)
    c = client()
    c.update_remote(HolepunchPayload(firewall=Firewall.CONSISTENT, addresses=(SERVER,)), None)
    bad = 0
    for _ in range(n):
        stranger = (f"192.0.2.{rng.randrange(1, 255)}", rng.randrange(1, 65536))
        bad += punch.session.on_probe(stranger) is not None
        bad += c.on_probe(stranger) is not None
    # the client's own probes flooding back: echoes bounded
    echoes = sum(punch.session.on_probe(CLIENT) is not None for _ in range(n))
    line = record("holepunch", "1-byte probes from strangers at both ends of a punch", 2 * n,
                  bad, "echoed or taken", detail=f"echoes to the client capped at {echoes} "
                  f"(limit {MAX_ECHOES}); path still open for the server: {c.path is None}")
    assert line.passed and echoes == MAX_ECHOES and c.path is None


def test_clients_asking_for_random_punching_cost_no_probes() -> None:
    """Random punching (1,750 probes over 35 s per attempt in hyperdht) is not built: a client
    claiming a symmetric NAT, or naming random hosts, is answered ABORTED at once and the
    server schedules no probe at all, however many ask."""
    rng = random.Random(4)
    n = scale(200, 2000)
    probes = 0
    not_aborted = 0
    for _ in range(n):
        punch = server_punch(rng.randrange(1 << 30))
        c = client()
        reply, _fast = punch.on_request(c.seal(HolepunchPayload(
            firewall=Firewall.RANDOM, round=1, punching=True,
            addresses=((f"192.0.2.{rng.randrange(1, 255)}", 0),))), CLIENT, True, 1.0)
        not_aborted += c.open(reply).error != NoiseError.ABORTED
        probes += len(punch.session.probes_due(1.0)) + len(punch.session.probes_due(5.0))
        probes += punch.session.next_timer() is not None
    line = record("holepunch", "clients claiming a symmetric NAT (random-punch abuse)", n,
                  probes + not_aborted, "probes scheduled or not aborted")
    assert line.passed


def test_a_hostile_node_cannot_grow_or_flip_a_consistent_verdict() -> None:
    """One node answering every ping with a different address (or answering many times) is
    counted once; with the honest samples the verdict stays CONSISTENT, and the sampler never
    holds more than MAX_SAMPLES."""
    rng = random.Random(5)
    n = scale(1000, 10000)
    nat = NatSampler()
    honest = [(f"10.0.0.{i}", 49737) for i in range(1, 4)]
    nat.add(CLIENT, honest[0])
    for _ in range(n):
        nat.add((f"192.0.2.{rng.randrange(1, 255)}", rng.randrange(1, 65536)), ("10.6.6.6", 1))
    for h in honest[1:]:
        nat.add(CLIENT, h)
    wrong = (nat.firewall != Firewall.CONSISTENT) + (nat.sampled > MAX_SAMPLES)
    line = record("holepunch", "one hostile DHT node answering NAT samples over and over", n,
                  wrong, "verdicts spoiled or samples over bound",
                  detail=f"verdict {nat.firewall.name}, {nat.sampled} samples kept")
    assert line.passed

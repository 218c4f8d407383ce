"""The in-band device record (issue 19): an edge whose firewall drops UDP has no record on the
DHT, yet is admitted when it dials the gateway, by the signed record it sends right after the
Noise handshake (:mod:`cairn.fleet.inband`). Real TCP on 127.0.0.1, the gateway's listener and
the edge's dialer as the daemons run them; each hostile record records a scorecard line."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cairn.crypto import KeyPair, derive_stream_key_pair
from cairn.dht.records import MAX_VALUE_SIZE, MutableRecord, sign_mutable
from cairn.fleet.inband import MAGIC, encode_in_band
from cairn.fleet.record import DeviceRecord, encode_record
from cairn.log import Log
from cairn.replication.net import PeerRefusedError
from cairn_edge.dialer import Dialer
from tests.integration.gateway.test_dialout import (
    Edge,
    Gateway,
    dialling,
    frame,
    running,
    until,
)
from tests.scorecard import record

T0 = int(time.time()) - 100


def record_keys(label: str) -> KeyPair:
    return derive_stream_key_pair(label.encode().ljust(32, b"\x00"), "record")


def signed(edge: Edge, label: str, gateway: bytes, seq: int, *,
           noise_key: bytes | None = None, signer: KeyPair | None = None,
           claimed: bytes | None = None) -> bytes:
    """The in-band message of ``edge``'s record (sealed to ``gateway``), as the edge sends it;
    the knobs make it hostile: another field 8, another signer, another claimed record key."""
    keys = record_keys(label)
    rec = DeviceRecord(time=T0, streams=[(n, lg.key) for n, lg in edge.logs.items()],
                       noise_key=edge.noise.public_key if noise_key is None else noise_key)
    value = encode_record(rec, [gateway])
    signer = signer or keys
    assert signer.secret_key is not None
    return encode_in_band(claimed or keys.public_key,
                          MutableRecord(seq, value, sign_mutable(seq, value, signer.secret_key)))


def dialer(edge: Edge, gw: Gateway, credential: Callable[[], bytes | None]) -> Dialer:
    return Dialer(edge.noise, [gw.key.public_key], list(edge.logs.values()), dial=[gw.address],
                  rng=random.Random(7), backoff_initial=0.05, backoff_max=0.5,
                  credential=credential)


def test_an_edge_with_no_dht_record_is_admitted_by_its_in_band_record(tmp_path: Path) -> None:
    """Enrolled, never read on the DHT: its in-band record admits it; a stream it adds later
    reaches the gateway by the record it sends again (seq up)."""
    names = ("fw-1/temperature",)

    async def main() -> None:
        edge = Edge(tmp_path, "fw-1", names)
        gw = Gateway(tmp_path)
        seq = [1]
        made: dict[int, bytes] = {}

        def credential() -> bytes:  # (as the agent does: signed again only when it changed)
            if seq[0] not in made:
                made[seq[0]] = signed(edge, "fw-1", gw.key.public_key, seq[0])
            return made[seq[0]]

        try:
            edge.logs[names[0]].append([frame(names[0], k) for k in range(3)])
            gw.roster.enroll(edge.record_key, "fw-1", time.time())  # no record bound
            async with running(gw), dialling(dialer(edge, gw, credential)) as d:
                await until(lambda: gw.samples(names[0]) == 3)
                assert edge.record_key in gw.collector.live
                assert gw.collector.records[edge.record_key].seq == 1
                second = "fw-1/humidity"
                lg = Log.create(tmp_path / "fw-1-humidity.db",
                                derive_stream_key_pair(b"fw-1".ljust(32, b"\x00"), second))
                lg.append([frame(second, 0), frame(second, 1)])
                edge.logs[second] = lg
                d.logs.append(lg)  # type: ignore[attr-defined]
                seq[0] = 2
                await until(lambda: gw.samples(second) == 2)
                assert gw.collector.records[edge.record_key].seq == 2
                assert gw.listener.in_band_refused == 0
        finally:
            edge.close()
            gw.close()

    asyncio.run(main())


Build = Callable[[Edge, bytes, bytes], bytes]
#: case -> (the hostile message, the reason the gateway gives)
HOSTILE: dict[str, tuple[Build, str]] = {
    "another enrolled key's record (signature fails)":
        (lambda e, gw, victim: signed(e, "attacker", gw, 9, claimed=victim),
         "the signature is not record key"),
    "a replayed older seq": (lambda e, gw, victim: signed(e, "attacker", gw, 3),
                             "seq 3 is older than the record held \\(seq 5\\)"),
    "garbage after the magic": (lambda e, gw, victim: MAGIC + random.Random(3).randbytes(77),
                                "truncated or malformed|trailing bytes|not enrolled"),
    "an oversized record": (lambda e, gw, victim: MAGIC + bytes(MAX_VALUE_SIZE + 200),
                            "more than"),
    "field 8 names another Noise key":
        (lambda e, gw, victim: signed(e, "attacker", gw, 9, noise_key=bytes(32)),
         "field 8 does not name the connection's Noise key"),
    "a record key that is not enrolled":
        (lambda e, gw, victim: signed(e, "stranger", gw, 9), "is not enrolled"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_in_band_record_is_refused_and_nothing_is_stored(
        tmp_path: Path, case: str) -> None:
    """The attacker's record key is enrolled (its record at seq 5 held, naming another Noise
    key), a victim's too: each hostile in-band record is refused with its reason, nothing of
    the attacker's streams is stored."""
    name = "attacker/temperature"

    async def main() -> tuple[int, int]:
        edge = Edge(tmp_path, "attacker", (name,))
        victim = Edge(tmp_path, "victim", ("victim/temperature",))
        gw = Gateway(tmp_path)
        try:
            edge.logs[name].append([frame(name, 0)])
            held = edge.device(noise_key=bytes(range(32)))
            held.seq = 5
            gw.enroll(edge, "attacker", held)
            gw.enroll(victim, "victim")
            build, reason = HOSTILE[case]
            message = build(edge, gw.key.public_key, victim.record_key)
            with pytest.raises(PeerRefusedError, match=reason):
                gw.collector.in_band(message, edge.noise.public_key, gw.roster.enrolled_keys())
            async with running(gw), dialling(dialer(edge, gw, lambda: message)):
                await until(lambda: gw.listener.in_band_refused >= 2)
            return gw.listener.in_band_refused, gw.samples(name)
        finally:
            edge.close()
            victim.close()
            gw.close()

    refused, stored = asyncio.run(main())
    record("replication", f"an enrolled edge dials in with {case} in-band", refused, stored,
           "samples stored", detail="refused after the handshake; the DHT path remains")
    assert stored == 0

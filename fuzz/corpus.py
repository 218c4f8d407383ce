"""Seed corpora: valid inputs for every harness, made by the project's own encoders.

Mutations of a valid message get past the first length check and reach the decoder's deep
paths; mutations of random bytes mostly do not. Everything here is deterministic: the same
bytes every run (Ed25519 signatures are deterministic, the seeded world fixes the rest).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import cbor2

from cairn import messages as hm
from cairn.dht import messages as dm
from cairn.dht import records as dr
from cairn.encoding import write_buffer, write_string, write_uint
from cairn.fleet.record import DeviceRecord, LatestReading, encode_record
from cairn.fleet.watermark import encode_watermarks
from cairn.frames import Frame, Sample
from cairn.messages import Request, RequestBlock, RequestUpgrade, encode_data, encode_request
from cairn.replication import protomux
from cairn.replication.session import (
    EXT_HELLO,
    EXT_RANGE,
    EXT_RANGE_DATA,
    EXT_RANGE_NONE,
    EXT_SEEK,
    EXT_SEEK_RESULT,
)
from cairn_edge import config as edge_config
from cairn_edge import journal
from cairn_gateway import config as gateway_config
from fuzz import world

__all__ = ["SEEDS", "seeds"]

_KEY = bytes(range(32))
_SIG = bytes(range(64))


def _encoding() -> list[bytes]:
    out = []
    for n in (0, 1, 0xFC, 0xFD, 0xFFFF, 0x10000, 2**32, 2**64 - 1):
        b = bytearray([0])  # op 0: uint
        write_uint(b, n)
        out.append(bytes(b))
    b = bytearray([8])  # op 8: string
    write_string(b, "hypercore/alpha")
    out.append(bytes(b))
    b = bytearray([10, 3, 1, 2, 0xFD, 0, 1])  # op 10: array of uints
    out.append(bytes(b))
    b = bytearray([7])  # op 7: bytes
    write_buffer(b, bytes(range(20)))
    out.append(bytes(b + b"\x0d"))
    return out


def _proofs() -> list[bytes]:
    lg = world.writer_log()
    out = []
    for req in (
        Request(id=1, fork=0, block=RequestBlock(3, 0)),
        Request(id=2, fork=0, block=RequestBlock(world.BLOCKS - 1, 2),
                upgrade=RequestUpgrade(0, world.BLOCKS)),
        Request(id=3, fork=0, hash=RequestBlock(6, 0)),
        Request(id=4, fork=0, upgrade=RequestUpgrade(0, world.BLOCKS), manifest=True),
    ):
        out.append(encode_data(lg.proof(req)))
    return out


def _hypercore_messages() -> list[bytes]:
    msgs: list[tuple[int, bytes]] = [
        (0, hm.encode_sync(hm.Sync(0, 48, 12, can_upgrade=True, has_manifest=True))),
        (1, encode_request(Request(id=7, fork=0, block=RequestBlock(5, 1), priority=2))),
        (1, encode_request(Request(id=8, upgrade=RequestUpgrade(0, 48), manifest=True))),
        (2, hm.encode_cancel(hm.Cancel(7))),
        (4, hm.encode_no_data(hm.NoData(7, 2))),
        (5, hm.encode_want(hm.Want(0, 1024, any=True))),
        (7, hm.encode_bitfield(hm.Bitfield(0, (0xFFFFFFFF, 0x0F, 1)))),
        (8, hm.encode_range(hm.Range(0, 48))),
        (8, hm.encode_range(hm.Range(3, 1, drop=True))),
        (9, hm.encode_extension(hm.Extension(EXT_HELLO, b"\x01"))),
        (10, hm.encode_handshake(hm.ChannelHandshake(_KEY, seeks=True))),
    ]
    msgs += [(3, p) for p in _proofs()]
    return [bytes([k]) + m for k, m in msgs]


def _dht_datagrams() -> list[bytes]:
    to = ("10.0.0.1", 40000)
    return [
        dm.encode_request(dm.Request(1, to, dm.Command.PING, True)),
        dm.encode_request(dm.Request(2, to, dm.Command.FIND_NODE, True, _KEY, None, _KEY)),
        dm.encode_request(dm.Request(3, to, dr.HyperCommand.MUTABLE_PUT, False, _KEY, _KEY,
                                     _KEY, dr.encode_mutable_put(_KEY, dr.MutableRecord(
                                         1, b"value", _SIG)))),
        dm.encode_response(dm.Response(4, to, _KEY, _KEY,
                                       (("10.0.0.2", 1), ("10.0.0.3", 65535)), 0, b"v")),
        dm.encode_response(dm.Response(5, to, None, None, (), dm.ErrorCode.SEQ_TOO_LOW)),
    ]


def _dht_records() -> list[bytes]:
    peer = dr.Peer(_KEY, (("10.0.0.2", 49800), ("10.0.0.3", 1)))
    ann = dr.Announce(peer, _KEY, _SIG, 3)
    return [
        b"\x00" + dr.encode_mutable_record(dr.MutableRecord(7, b"latest", _SIG)),
        b"\x01" + dr.encode_mutable_put(_KEY, dr.MutableRecord(7, b"latest", _SIG)),
        b"\x02" + dr.encode_peer(peer),
        b"\x03" + dr.encode_announce(ann),
        b"\x03" + dr.encode_announce(dr.Announce(None)),
        b"\x04" + dr.encode_lookup_reply([dr.encode_peer(peer), dr.encode_peer(dr.Peer(_KEY))], 2),
    ]


def _dht_node() -> list[bytes]:
    """Signed hyperdht requests a storing node acts on (mutable put, announce...)."""
    from cairn.crypto import key_pair

    kp = key_pair(bytes(32))
    rec = dr.MutableRecord(1, b"reading", dr.sign_mutable(1, b"reading", kp.secret_key or b""))
    me = ("10.0.0.1", 40000)
    reqs = [
        dm.Request(1, me, dr.HyperCommand.MUTABLE_PUT, False, None, None,
                   dr.hash32(kp.public_key), dr.encode_mutable_put(kp.public_key, rec)),
        dm.Request(2, me, dr.HyperCommand.MUTABLE_GET, False, None, None,
                   dr.hash32(kp.public_key), b"\x00"),
        dm.Request(3, me, dr.HyperCommand.IMMUTABLE_PUT, False, None, None,
                   dr.hash32(b"blob"), b"blob"),
        dm.Request(4, me, dr.HyperCommand.LOOKUP, False, None, None, _KEY),
        dm.Request(5, me, dr.HyperCommand.ANNOUNCE, False, None, None, _KEY,
                   dr.encode_announce(dr.Announce(dr.Peer(kp.public_key), None, _SIG))),
        dm.Request(6, me, dm.Command.FIND_NODE, True, None, None, _KEY),
        dm.Request(7, me, dm.Command.PING_NAT, True, None, None, None, b"\x01\x02"),
        dm.Request(8, me, dm.Command.DOWN_HINT, True, None, None, None,
                   dm.encode_ipv4(("10.0.1.1", 30000))),
    ]
    return [dm.encode_request(r) for r in reqs] + _dht_datagrams()


def _noise() -> list[bytes]:
    """Each message after real empty-payload messages before it (as the harness replays them),
    with an empty payload and with one."""
    out = []
    for payload in (b"", b"hello"):
        i, r = world.noise_pair()
        out.append(b"\x00" + world.noise_message(i, payload))
        i, r = world.noise_pair()
        r.receive_data(world.noise_message(i))
        out.append(b"\x01" + world.noise_message(r, payload))
        i, r = world.noise_pair()
        r.receive_data(world.noise_message(i))
        i.receive_data(world.noise_message(r))
        out.append(b"\x02" + world.noise_message(i, payload))
    return out


def _stream_transcript(messages: list[bytes]) -> bytes:
    """What the seeded initiator sends to the seeded responder, handshake to last message."""
    i, r = world.initiator_stream(), world.responder_stream()
    sent = bytearray()
    for m in messages:
        i.send(m)
    for _ in range(6):
        chunk = i.data_to_send()
        sent += chunk
        if chunk:
            r.receive_data(chunk)
        while r.next_event() is not None:
            pass
        back = r.data_to_send()
        if back:
            i.receive_data(back)
        while i.next_event() is not None:
            pass
    sent += i.keepalive()
    return bytes(sent)


def _secret_stream() -> list[bytes]:
    full = _stream_transcript([b"hello", protomux.encode_frame(
        protomux.Open(1, hm.PROTOCOL, world.PROTOCOL_ID, b"hs")), bytes(300)])
    return [b"\x00" + full, b"\x80" + full, b"\x07" + full, b"\xa0" + full[:100]]


def _frames() -> list[protomux.Frame]:
    return [
        protomux.Open(1, hm.PROTOCOL, world.PROTOCOL_ID, b"hs"),
        protomux.Data(1, 0, hm.encode_sync(hm.Sync(0, 48, 0))),
        protomux.Data(1, 9, hm.encode_extension(hm.Extension(EXT_HELLO, b"\x01"))),
        protomux.Open(2, "other", None, b""),
        protomux.Data(2, 1, b"early"),
        protomux.Reject(1),
        protomux.Close(1),
        protomux.Close(2),
    ]


def _protomux_codec() -> list[bytes]:
    frames = _frames()
    return [protomux.encode_frame(f) for f in frames] + [
        protomux.encode_frames(frames[:3]), protomux.encode_frames(frames[3:6]),
        protomux.encode_frames(frames)]


def _protomux_mux() -> list[bytes]:
    def messages(ms: list[bytes]) -> bytes:
        return b"".join(bytes([len(m)]) + m for m in ms)

    enc = [protomux.encode_frame(f) for f in _frames()]
    return [messages(enc[:3]), messages([enc[3], enc[4], enc[7]]), messages([enc[0], enc[6]]),
            messages([enc[5]]), messages([protomux.encode_frames(_frames()[:3]), enc[6]])]


def _session() -> list[bytes]:
    """What a real replica says to a real writer (writer side, one message each) and the
    writer's answers (replica side, 0x10: all of them as one input, and each alone)."""
    out = []
    s, lg = world.replica_session()
    w = world.writer_session()
    transcript = bytearray()
    for _ in range(8):
        to_w = s.data_to_send()
        for kind, payload in to_w:
            out.append(bytes([kind]) + payload)
            w.receive_data(kind, payload)
        to_s = w.data_to_send()
        for kind, payload in to_s:
            one = bytearray([kind])
            write_buffer(one, payload)
            out.append(bytes([0x10]) + one)
            transcript += one
            s.receive_data(kind, payload)
        if not to_w and not to_s:
            break
    assert s.stats.blocks_downloaded, "the seed transcript downloads nothing"
    lg.close()
    out.append(bytes([0x10]) + transcript)
    # Cairn's extensions, as a Cairn peer sends them
    ext: list[tuple[str, bytes]] = [(EXT_HELLO, b"\x01")]
    body = bytearray()
    for x in (9, 0, world.BLOCKS, 0, 16):
        write_uint(body, x)
    ext.append((EXT_RANGE, bytes(body)))
    ext.append((EXT_SEEK, b"\x05" + struct.pack("<d", 1.7e9 + 10)))
    ext.append((EXT_RANGE_NONE, b"\x01"))
    ext.append((EXT_RANGE_DATA, b"\x01\x00\x01\x03abc\x00"))
    ext.append((EXT_SEEK_RESULT, b"\x05\x00"))
    for name, message in ext:
        payload = hm.encode_extension(hm.Extension(name, message))
        one = bytearray([9])
        write_buffer(one, payload)
        out += [bytes([9]) + payload, bytes([0x10]) + one]
    return out


def _samples() -> list[bytes]:
    return [
        world.block(3),
        Frame((Sample("board-1/state", None, 1.7e9, "on"), Sample("board-1/ok", None, 1.7e9, True),
               Sample("board-1/raw", "B", 1.7e9, b"\x00\x01"))).encode(),
        cbor2.dumps([{-2: "board-1/", -3: 1.7e9, 0: "t", 2: 21.5}, {0: "h", 2: 40, 6: 1}]),
        cbor2.dumps([{0: "x", 2: cbor2.CBORTag(4, [-2, 2150])}]),
    ]


def _senml() -> list[bytes]:
    pack = [{"bn": "board-1/", "bt": 1.7e9, "bu": "Cel", "n": "temperature", "v": 21.5},
            {"n": "humidity", "u": "%RH", "v": 40, "t": 1},
            {"n": "door", "vb": True}, {"n": "mode", "vs": "eco"}]
    cbor_pack = [{-2: "board-1/", -3: 1.7e9, 0: "temperature", 1: "Cel", 2: 21.5},
                 {0: "humidity", 2: 40, 6: -5}]
    return [b"\x00" + json.dumps(pack).encode(), b"\x01" + json.dumps(pack[:1]).encode(),
            b"\x02" + cbor2.dumps(cbor_pack), b"\x00" + cbor2.dumps(cbor_pack)]


def _tasmota() -> list[bytes]:
    doc = {"Time": "2024-05-01T12:00:00", "BME280": {"Temperature": 21.5, "Humidity": 40.1,
                                                     "Pressure": 1013.2},
           "DS18B20-1": {"Temperature": 19.0}, "ENERGY": {"Total": 1.5, "Power": 20},
           "TempUnit": "C", "PressureUnit": "hPa"}
    return [json.dumps(doc).encode(),
            json.dumps({"SCD30": {"CarbonDioxide": 600}, "TempUnit": "F"}).encode(),
            b'{"TempUnit": [1], "A": {"Temperature": 1}}']  # was a TypeError (fixed)


def _bare() -> list[bytes]:
    return [b"21.5", b"temperature\x0021.5", b"humidity-2\x00 40 ", b"-1e3", b"nan"]


_REAL = Path(__file__).resolve().parents[1] / "tests" / "corpus"


def _real(family: str) -> list[tuple[str, bytes]]:
    """(topic, payload) of the corpus of real devices' messages (tests/corpus/<family>)."""
    out = []
    for path in sorted((_REAL / family).glob("*.json")):
        for m in json.loads(path.read_text())["messages"]:
            p = m["payload"]
            out.append((m["topic"], p.encode() if isinstance(p, str) else
                        json.dumps(p, separators=(",", ":"), ensure_ascii=False).encode()))
    return out


def _zigbee2mqtt() -> list[bytes]:
    return [t.split("/", 1)[1].encode() + b"\0" + p for t, p in _real("zigbee2mqtt")]


def _shelly() -> list[bytes]:
    return [(b"\x01" if "/status/" in t else b"\x00") + p for t, p in _real("shelly")]


def _json() -> list[bytes]:
    return [b'{"a":{"b":21.5},"v":[{"value":"5.90"}],"ok":"ON","name":7,"ts":1700000000}',
            b'{"a":{"b":null},"v":[],"ts":"2024-05-01T12:00:00Z"}']


def _described() -> list[bytes]:
    out = []
    for family in ("esphome", "homie", "tasmota", "senml"):
        out.append(b"\n".join(t.encode() + b"\0" + p for t, p in _real(family)))
    return out


def _device_record() -> list[bytes]:
    gw = world.gateway_key_pair().public_key
    rec = DeviceRecord(1_764_000_000, ("192.168.1.20", 49800),
                       [("board-1/temperature", bytes([1]) * 32), ("board-1/door", bytes(32))],
                       [LatestReading("board-1/temperature", 1_764_000_000 - 2.5, 21.5),
                        LatestReading("board-1/door", 1_764_000_000, True)], 1, 0)
    clear = encode_record(rec, None)
    doc = cbor2.loads(clear)
    doc[4] = [world.seal(doc[4], gw, b"seed-1")]
    return [clear, cbor2.dumps(doc), encode_record(DeviceRecord(1), None)]


def _journal() -> list[bytes]:
    body = (journal.encode_stream(0, "board-1/temperature", "Cel")
            + journal.encode_stream(1, "board-1/door", None)
            + journal.encode_tick([(0, 0, [world.block(0), world.block(1)]), (1, 0, [b"x"])])
            + journal.encode_state("acked", {"mid": 7, "topics": ["a", "b"]}))
    one = journal.encode_state("k", [1, 2.5, None])[8:]  # a body alone, for framing
    deep = bytearray([3])  # a state record of deeply nested JSON: was a RecursionError (fixed)
    write_string(deep, "k")
    write_string(deep, "[" * 5000)
    return [body, one, journal.encode_tick([(0, 5, [b""])])[8:], bytes(deep)]


def _watermark() -> list[bytes]:
    return [encode_watermarks(1_764_000_000, {bytes([k]) * 32: 100 * k for k in range(1, 5)}),
            encode_watermarks(0, {})]


def _edge_config() -> list[bytes]:
    extra = """
[[topic]]
filter = "senml/+/+"
format = "senml"

[[topic]]
filter = "plant/line-4/+"
format = "homie"
device = "line-4"

[[range]]
pattern = "*/temperature"
min = -40
max = 85.5
"""
    return [edge_config.TEMPLATE.encode(), (edge_config.TEMPLATE + extra).encode(),
            b'[mqtt]\nlisten = "0.0.0.0:1883"\nbroker = "embedded"\n'
            b'[replication]\ngateways = ["' + b"ab" * 32 + b'"]\nadvertise = "h:1"\n',
            '[mqtt]\nlisten = "h:\u00b2"\n'.encode()]  # was a ValueError (fixed)


def _gateway_config() -> list[bytes]:
    extra = """
[[policy]]
pattern = "*/vibration"
mode = "backfill"
window = 3600
priority = 5
"""
    return [gateway_config.TEMPLATE.encode(), (gateway_config.TEMPLATE + extra).encode(),
            b'[dht]\nbootstrap = ["10.0.0.1:49737"]\n[collect]\ndevices = ["' + b"cd" * 32
            + b'"]\n', '[api]\nlisten = "h:\u00b2"\n'.encode()]


def _hyperdht_messages() -> list[bytes]:
    from cairn.hyperdht import messages as hm_

    payload = hm_.NoisePayload(firewall=1, holepunch=hm_.HolepunchInfo(
        3, ((("10.0.0.1", 9), ("9.9.9.9", 1000)),)), addresses4=(("1.2.3.4", 5),),
        addresses6=(("::1", 80),), udx=hm_.UdxInfo(7), secret_stream=1,
        relay_through=hm_.RelayThrough(b"k" * 32, b"t" * 32), relay_addresses=(("10.0.0.2", 10),))
    hp = hm_.HolepunchPayload(0, 2, 1, True, True, (("1.2.3.4", 5),), ("5.6.7.8", 9), b"a" * 32,
                              b"b" * 32)
    return [
        b"\x00" + hm_.encode_handshake(hm_.Handshake(0, b"n" * 96, ("1.2.3.4", 5), ("6.7.8.9", 1))),
        b"\x01" + hm_.encode_holepunch(hm_.Holepunch(2, 1, b"p" * 60, ("1.2.3.4", 5))),
        b"\x02" + hm_.encode_noise_payload(payload),
        b"\x03" + hm_.encode_holepunch_payload(hp),
        b"\x04" + hm_.seal_holepunch_payload(hp, bytes(32), bytes(24)),
    ]


def _hyperdht_node() -> list[bytes]:
    # imported here: fuzz.harnesses (the target and key it seeds) imports this package
    from cairn.crypto import key_pair
    from cairn.hyperdht import messages as hm_
    from cairn.hyperdht.client import ClientCore
    from cairn.testing import SeededRandom
    from fuzz.harnesses import HYPERDHT_SERVER_SEED, HYPERDHT_TARGET

    server_key = key_pair(HYPERDHT_SERVER_SEED).public_key
    served = dr.hash32(server_key)
    client = ClientCore(key_pair(bytes([7]) * 32), server_key, SeededRandom("hyperdht-client"))
    to = ("10.0.0.1", 40000)
    out = []
    for target, value in (
        (served, client.request_value),
        (served, hm_.encode_handshake(hm_.Handshake(2, client.noise, ("10.0.0.9", 1)))),
        (HYPERDHT_TARGET, hm_.encode_handshake(hm_.Handshake(0, b"n" * 96))),
        (HYPERDHT_TARGET, hm_.encode_handshake(hm_.Handshake(1, b"r" * 48, ("10.0.0.2", 40001)))),
    ):
        out.append(dm.encode_request(dm.Request(7, to, 0, False, None, None, target, value)))
    for target, value in (
        (served, hm_.encode_holepunch(hm_.Holepunch(2, 0, b"p" * 60, ("10.0.0.9", 1)))),
        (HYPERDHT_TARGET, hm_.encode_holepunch(hm_.Holepunch(0, 0, b"p" * 60))),
    ):
        out.append(dm.encode_request(dm.Request(8, to, 1, False, None, None, target, value)))
    return out


SEEDS: dict[str, Callable[[], list[bytes]]] = {
    "encoding": _encoding,
    "hypercore-messages": _hypercore_messages,
    "dht-datagram": _dht_datagrams,
    "dht-records": _dht_records,
    "dht-node": _dht_node,
    "hyperdht-messages": _hyperdht_messages,
    "hyperdht-node": _hyperdht_node,
    "noise": _noise,
    "secret-stream": _secret_stream,
    "protomux-codec": _protomux_codec,
    "protomux-mux": _protomux_mux,
    "session": _session,
    "frame": _samples,
    "adapter-senml": _senml,
    "adapter-tasmota": _tasmota,
    "adapter-esphome": _bare,
    "adapter-homie": _bare,
    "adapter-zigbee2mqtt": _zigbee2mqtt,
    "adapter-shelly": _shelly,
    "adapter-json": _json,
    "adapter-described": _described,
    "device-record": _device_record,
    "watermark": _watermark,
    "journal": _journal,
    "edge-config": _edge_config,
    "gateway-config": _gateway_config,
}


def seeds(name: str) -> list[bytes]:
    """The seed inputs of harness ``name``."""
    return SEEDS[name]()

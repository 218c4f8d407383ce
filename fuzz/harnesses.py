"""One harness per wire decoder: a function of arbitrary bytes that may raise only what the
decoder documents.

Each harness is declared with :func:`harness`, which names the exceptions the decoder's
docstrings (or ``cairn.errors``) promise; those are swallowed, anything else propagates and is
a finding. :meth:`Harness.check` also times the input, in the CPU time of its thread (other work
on a busy machine is not a hang): one that takes more than :data:`HANG_LIMIT` (100 ms), again on
a second try, is a finding (:class:`Hang`).

Where a decoder reads a prefix the harness takes from the input (which message type, which
side of a handshake, how a stream is cut into reads), that prefix is the input's first byte;
the seed corpora (:mod:`fuzz.corpus`) are written with the same prefixes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cairn import messages as hm
from cairn.crypto import key_pair
from cairn.dht import messages as dht_messages
from cairn.dht import records as dht_records
from cairn.dht.hyper import HyperHandler
from cairn.dht.messages import Command, Request, encode_request, node_id
from cairn.dht.node import DHTNode
from cairn.encoding import Reader, decode_all
from cairn.errors import DecodeError, RemoteError
from cairn.fleet.record import RecordError, decode_record
from cairn.fleet.watermark import WatermarkError, decode_watermarks
from cairn.frames import Frame
from cairn.hyperdht import messages as hd_messages
from cairn.hyperdht.router import Router
from cairn.hyperdht.server import ServerCore
from cairn.replication import protomux
from cairn.replication.noise import HandshakeError
from cairn.testing import SeededRandom
from cairn_edge import adapters, journal
from cairn_edge import config as edge_config
from cairn_edge.adapters import Rejected, Route
from cairn_gateway import config as gateway_config
from cairn_gateway.config import ConfigError
from fuzz import world

__all__ = ["HANG_LIMIT", "HARNESSES", "Finding", "Hang", "Harness", "Undocumented", "harness"]

HANG_LIMIT = 0.100  # seconds one input may take


class Finding(Exception):
    """What a harness turned up: an undocumented exception or a hang."""


class Undocumented(Finding):
    """The decoder raised an exception its documentation does not name."""


class Hang(Finding):
    """One input took longer than :data:`HANG_LIMIT`, twice."""


@dataclass(frozen=True, slots=True)
class Harness:
    name: str
    target: Callable[[bytes], None]  # the decoder call, documented errors not yet caught
    documented: tuple[type[BaseException], ...]
    what: str

    def run(self, data: bytes) -> None:
        """Feed one input; documented errors are the decoder's answer, anything else escapes."""
        with contextlib.suppress(*self.documented):
            self.target(data)

    def check(self, data: bytes) -> float:
        """Run one input and return its time in seconds; raise :class:`Undocumented` (with the
        decoder's exception as its cause) or :class:`Hang`."""
        elapsed = self._timed(data)
        if elapsed > HANG_LIMIT:  # once more: a pause of this process is not a hang
            elapsed = min(elapsed, self._timed(data))
            if elapsed > HANG_LIMIT:
                raise Hang(f"{self.name}: {len(data)}-byte input took {elapsed * 1000:.0f} ms")
        return elapsed

    def _timed(self, data: bytes) -> float:
        start = time.thread_time()  # CPU time: a machine busy with other work is not a hang
        try:
            self.run(data)
        except Exception as exc:  # RecursionError and MemoryError included
            raise Undocumented(f"{self.name}: {type(exc).__name__}: {str(exc)[:200]}") from exc
        return time.thread_time() - start


HARNESSES: dict[str, Harness] = {}


def harness(name: str, *documented: type[BaseException]
            ) -> Callable[[Callable[[bytes], None]], Callable[[bytes], None]]:
    """Register ``fn`` as the harness ``name``; ``documented``: what the decoder may raise."""

    def register(fn: Callable[[bytes], None]) -> Callable[[bytes], None]:
        HARNESSES[name] = Harness(name, fn, documented, (fn.__doc__ or "").strip())
        return fn

    return register


# -- compact-encoding -------------------------------------------------------------------------


def _op(r: Reader, op: int) -> object:
    ops: tuple[Callable[[], object], ...] = (
        r.uint, r.u8, r.u16, r.u24, r.u32, r.u64, r.buffer, r.bytes_, r.string,
        lambda: r.fixed(r.u8() % 40),
        lambda: r.array(Reader.uint, 64),
        lambda: r.array(Reader.string),
        r.rest, r.done,
    )
    return ops[op % len(ops)]()


@harness("encoding", DecodeError)
def encoding(data: bytes) -> None:
    """compact-encoding's Reader: the input is its own program (a u8 op, then that read)."""
    r = Reader(data)
    while r.remaining():
        _op(r, r.u8())
    with contextlib.suppress(DecodeError):
        decode_all(data, Reader.uint)
    decode_all(data, Reader.string)


# -- hypercore/alpha messages -------------------------------------------------------------------

_HYPERCORE: tuple[Callable[[bytes], object], ...] = (
    hm.decode_sync, hm.decode_request, hm.decode_cancel, hm.decode_data, hm.decode_no_data,
    hm.decode_want, hm.decode_want, hm.decode_bitfield, hm.decode_range, hm.decode_extension,
    hm.decode_handshake,
)


@harness("hypercore-messages", DecodeError)
def hypercore_messages(data: bytes) -> None:
    """cairn.messages, every message: byte 0 is the message type (10: handshake)."""
    if data:
        _HYPERCORE[data[0] % len(_HYPERCORE)](data[1:])


# -- DHT ----------------------------------------------------------------------------------------


@harness("dht-datagram", DecodeError)
def dht_datagram(data: bytes) -> None:
    """cairn.dht.hm.decode: one dht-rpc 6 datagram."""
    dht_messages.decode(data)


_RECORDS: tuple[Callable[[bytes], object], ...] = (
    dht_records.decode_mutable_record, dht_records.decode_mutable_put, dht_records.decode_peer,
    dht_records.decode_announce, dht_records.decode_lookup_reply,
)


@harness("dht-records", DecodeError)
def dht_records_(data: bytes) -> None:
    """cairn.dht.records: byte 0 picks mutable record, mutable put, peer, announce, lookup."""
    if data:
        _RECORDS[data[0] % len(_RECORDS)](data[1:])


_ME = ("10.0.0.1", 40000)
_PEER = ("10.0.0.2", 40001)


def _dht_node() -> DHTNode:
    holder: list[DHTNode] = []
    handler = HyperHandler(lambda: holder[0])
    node = DHTNode(rng=SeededRandom("dht-node"), now=0.0, address=_ME, persistent=True,
                   handler=handler)
    holder.append(node)
    node.bootstrapped = True
    for i in range(4):
        addr = (f"10.0.1.{i + 1}", 30000 + i)
        node.receive_datagram(encode_request(Request(i, _ME, Command.PING, True, node_id(addr))),
                              addr, 0.0)
    node.datagrams_to_send()
    return node


@harness("dht-node")
def dht_node(data: bytes) -> None:
    """DHTNode.receive_datagram with the hyperdht handler: documented never to raise."""
    node = _dht_node()
    node.receive_datagram(data, _PEER, 1.0)
    node.datagrams_to_send()
    node.receive_datagram(data, _PEER, 2.0, 1)  # and on the client socket


# -- hyperdht connect -----------------------------------------------------------------------------

_HYPERDHT: tuple[Callable[[bytes], object], ...] = (
    hd_messages.decode_handshake, hd_messages.decode_holepunch,
    hd_messages.decode_noise_payload, hd_messages.decode_holepunch_payload,
    lambda data: hd_messages.close_holepunch_payload(data, bytes(32)),
)


@harness("hyperdht-messages", DecodeError)
def hyperdht_messages(data: bytes) -> None:
    """cairn.hyperdht.messages: byte 0 picks handshake, holepunch, Noise payload, holepunch
    payload, sealed holepunch payload (all-zero secret)."""
    if data:
        _HYPERDHT[data[0] % len(_HYPERDHT)](data[1:])


HYPERDHT_SERVER_SEED = bytes([0x5E]) * 32
HYPERDHT_TARGET = dht_records.hash32(b"f" * 32)  # a forward entry's target (not served here)
HYPERDHT_FORWARD = ("10.0.0.3", 40002)


def _hyperdht_node() -> DHTNode:
    node = _dht_node()
    handler = node.handler
    assert isinstance(handler, HyperHandler)
    router = Router()
    handler.router = router
    keys = key_pair(HYPERDHT_SERVER_SEED)
    router.serve(dht_records.hash32(keys.public_key),
                 ServerCore(keys, SeededRandom("hyperdht-server")))
    router.set_forward(HYPERDHT_TARGET, b"f" * 32 + b"\x00", HYPERDHT_FORWARD, 0.0)
    return node


@harness("hyperdht-node")
def hyperdht_node(data: bytes) -> None:
    """DHTNode.receive_datagram with hyperdht's router (a forward entry, a server on the node):
    documented never to raise."""
    node = _hyperdht_node()
    node.receive_datagram(data, _PEER, 1.0)
    node.datagrams_to_send()
    node.receive_datagram(data, HYPERDHT_FORWARD, 2.0, 1)  # from the forward's server, too
    node.datagrams_to_send()


# -- replication: Noise, secret-stream, Protomux, the session ------------------------------------


@harness("noise", HandshakeError)
def noise(data: bytes) -> None:
    """NoiseHandshake.receive_data: byte 0 % 3 picks the message (1 at the responder, 2 at the
    initiator, 3 at the responder after a real 1 and 2)."""
    if not data:
        return
    step, message = data[0] % 3, data[1:]
    initiator, responder = world.noise_pair()
    if step == 0:
        responder.receive_data(message)
        return
    m1 = world.noise_message(initiator)
    if step == 1:
        initiator.receive_data(message)
        return
    responder.receive_data(m1)
    responder.send()
    responder.receive_data(message)


@harness("secret-stream", RemoteError)
def secret_stream(data: bytes) -> None:
    """SecretStream at the responder: the rest of the input is what the initiator sent, fed in
    reads of byte 0 & 0x7f bytes (0: one read); bit 0x80 ends the stream (EOF) after it."""
    if not data:
        return
    chunk = data[0] & 0x7F or len(data)
    stream = world.responder_stream()
    body = data[1:]
    for pos in range(0, len(body), chunk):
        stream.receive_data(body[pos:pos + chunk])
        while stream.next_event() is not None:
            pass
        stream.data_to_send()
    if data[0] & 0x80:
        stream.receive_data(b"")
        while stream.next_event() is not None:
            pass


@harness("protomux-codec", DecodeError)
def protomux_codec(data: bytes) -> None:
    """protomux.decode_message: one Protomux message."""
    protomux.decode_message(data)


def split_messages(data: bytes) -> list[bytes]:
    """The input as messages: ``u8 length ‖ bytes``, repeated (the last may be short)."""
    out, pos = [], 0
    while pos < len(data):
        n = data[pos]
        out.append(data[pos + 1:pos + 1 + n])
        pos += 1 + n
    return out


@harness("protomux-mux", RemoteError)
def protomux_mux(data: bytes) -> None:
    """Mux.receive_data on messages ``u8 length ‖ bytes`` after we opened one hypercore
    channel."""
    mux = protomux.Mux(max_channels=8, max_buffered=8192)
    mux.open_channel(hm.PROTOCOL, world.PROTOCOL_ID, b"hs")
    for message in split_messages(data):
        mux.receive_data(message)
        while mux.next_event() is not None:
            pass
        mux.data_to_send()


def split_session(data: bytes) -> list[tuple[int, bytes]]:
    """Channel messages ``u8 type ‖ uint length ‖ payload``, repeated, up to the first that
    does not fit."""
    out: list[tuple[int, bytes]] = []
    r = Reader(data)
    with contextlib.suppress(DecodeError):
        while r.remaining():
            kind = r.u8()
            out.append((kind, r.bytes_()))
    return out


@harness("session", RemoteError)
def session(data: bytes) -> None:
    """Session.receive_data (hypercore/alpha and Cairn's extensions). Byte 0 bit 0x10 clear: the
    writer serving gets one message, type = the low nibble, payload = the rest. Set: a replica
    with requests in flight gets messages ``u8 type ‖ uint length ‖ payload`` in turn."""
    if not data:
        return
    if data[0] & 0x10:
        s, lg = world.replica_session()
        try:
            for kind, payload in split_session(data[1:]):
                s.receive_data(kind, payload)
                s.data_to_send()
                while s.next_event() is not None:
                    pass
        finally:
            lg.close()
    else:
        w = world.writer_session()
        w.receive_data(data[0] & 0x0F, data[1:])
        w.data_to_send()


# -- frames and payloads -------------------------------------------------------------------------


@harness("frame", DecodeError)
def frame(data: bytes) -> None:
    """Frame.decode: a block of a stream's log (SenML CBOR)."""
    Frame.decode(data)


_CONTENT_TYPES = (None, "application/senml+json", "application/senml+cbor")
_RECEIVED = 1_700_000_000.0


def _named(data: bytes, default: str) -> tuple[str, bytes]:
    """``name \\0 payload`` as (name, payload); without a NUL the whole input is the payload."""
    name, sep, payload = data.partition(b"\0")
    if not sep:
        return default, data
    return name.decode("utf-8", "replace"), payload


@harness("adapter-senml", Rejected)
def adapter_senml(data: bytes) -> None:
    """adapters.decode on senml/+/+: byte 0 % 3 is the content type (none, JSON, CBOR)."""
    if data:
        adapters.decode((Route("senml/+/+", "senml"),), "senml/board-1/temperature", data[1:],
                        _CONTENT_TYPES[data[0] % 3], _RECEIVED)


@harness("adapter-tasmota", Rejected)
def adapter_tasmota(data: bytes) -> None:
    """adapters.decode on tele/+/SENSOR (a Tasmota JSON document)."""
    adapters.decode((Route("tele/+/SENSOR", "tasmota"),), "tele/board-1/SENSOR", data, None,
                    _RECEIVED)


@harness("adapter-esphome", Rejected)
def adapter_esphome(data: bytes) -> None:
    """adapters.decode on +/sensor/+/state: ``object id \\0 value`` (or just the value)."""
    name, payload = _named(data, "temperature")
    adapters.decode((Route("+/sensor/+/state", "esphome"),), f"board-1/sensor/{name}/state",
                    payload, None, _RECEIVED)


@harness("adapter-homie", Rejected)
def adapter_homie(data: bytes) -> None:
    """adapters.decode on homie/5/+/+/+: ``property \\0 value`` (or just the value)."""
    name, payload = _named(data, "humidity")
    adapters.decode((Route("homie/5/+/+/+", "homie"),), f"homie/5/board-1/env/{name}",
                    payload, None, _RECEIVED)


@harness("adapter-zigbee2mqtt", Rejected)
def adapter_zigbee2mqtt(data: bytes) -> None:
    """adapters.decode on zigbee2mqtt/#: ``friendly name \0 JSON state`` (or just the state)."""
    name, payload = _named(data, "0x00158d0003030af1")
    adapters.decode((Route("zigbee2mqtt/#", "zigbee2mqtt"),), f"zigbee2mqtt/{name}", payload,
                    None, _RECEIVED)


@harness("adapter-shelly", Rejected)
def adapter_shelly(data: bytes) -> None:
    """adapters.decode on Shelly Gen2 topics: byte 0 odd is ``<id>/status/switch:0`` (a status
    document), even ``<id>/events/rpc`` (a JSON-RPC notification)."""
    if data:
        topic = "shelly-1/status/switch:0" if data[0] % 2 else "shelly-1/events/rpc"
        adapters.decode(adapters.DEFAULT_ROUTES, topic, data[1:], None, _RECEIVED)


_JSON_ROUTE = Route("plant/+/data", "json", fields=(
    adapters.Field("a.b", "temperature", "Cel"), adapters.Field("v[0].value", "pm10", None,
                                                                "number"),
    adapters.Field("ok", "ok", None, "boolean"), adapters.Field("name", "name", None, "string")),
    time_path="ts")


@harness("adapter-json", Rejected)
def adapter_json(data: bytes) -> None:
    """adapters.decode on a generic JSON route with four fields and a time path."""
    adapters.decode((_JSON_ROUTE,), "plant/board-1/data", data, None, _RECEIVED)


@harness("adapter-described", Rejected)
def adapter_described(data: bytes) -> None:
    """A :class:`~cairn_edge.adapters.Decoder` on the default routes and Homie 3/4 attributes,
    fed messages ``topic \0 payload`` one a line: discovery documents and Homie attributes
    first change how later values read."""
    decoder = adapters.Decoder((Route("homie/+/+/+/+", "homie"), *adapters.DEFAULT_ROUTES))
    for line in data.split(b"\n")[:64]:
        topic, _, payload = line.partition(b"\0")
        with contextlib.suppress(Rejected):
            decoder.decode(topic.decode("utf-8", "replace"), payload, None, _RECEIVED)


# -- records, journal, configs -------------------------------------------------------------------


@harness("device-record", RecordError)
def device_record(data: bytes) -> None:
    """cairn.fleet.record.decode_record, without a gateway key and with one."""
    with contextlib.suppress(RecordError):
        decode_record(data)
    decode_record(data, world.gateway_key_pair())


@harness("watermark", WatermarkError)
def watermark(data: bytes) -> None:
    """cairn.fleet.watermark.decode_watermarks."""
    decode_watermarks(data)


@harness("journal")
def journal_(data: bytes) -> None:
    """cairn_edge.journal.scan (documented to return, never raise): the input as a journal
    body, and as one record body framed with its right length and CRC (seeded as generation
    7's); stale_generation at each of the input's first offsets."""
    journal.scan(data)
    journal.scan(journal.frame(data, journal.seed(7)), journal.seed(7))
    for off in range(min(len(data), 16)):
        journal.stale_generation(data, off, 9)


_BASE = Path("/nonexistent/cairn-fuzz")


@harness("edge-config", ConfigError)
def edge_config_(data: bytes) -> None:
    """cairn_edge.config.parse_config on the input as UTF-8 text."""
    edge_config.parse_config(data.decode("utf-8", "replace"), _BASE)


@harness("gateway-config", ConfigError)
def gateway_config_(data: bytes) -> None:
    """cairn_gateway.config.parse_config on the input as UTF-8 text."""
    gateway_config.parse_config(data.decode("utf-8", "replace"), _BASE)

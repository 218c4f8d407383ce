"""hyperdht 6's connect messages (hyperdht lib/messages.js), one place for their bytes.

Notation as formats.md; ``ipv4`` = 4 bytes ‖ u16le, ``uint`` = compact-encoding varint.

PEER_HANDSHAKE (command 0) request/response value::

    uint flags (1 peerAddress, 2 relayAddress) ‖ uint mode ‖ buffer noise
    ‖ [ipv4 peerAddress] ‖ [ipv4 relayAddress]

PEER_HOLEPUNCH (command 1)::

    uint flags (1 peerAddress) ‖ uint mode ‖ uint id ‖ buffer payload ‖ [ipv4 peerAddress]

modes: 0 FROM_CLIENT, 1 FROM_SERVER, 2 FROM_RELAY, 3 FROM_SECOND_RELAY, 4 REPLY.

Noise payload (inside both IK messages)::

    uint version=1 ‖ uint flags ‖ uint error ‖ uint firewall ‖ fields in flag order:
      1  holepunch      uint id ‖ uint n ‖ n × (ipv4 relayAddress ‖ ipv4 peerAddress)
      2  addresses4     uint n ‖ n × ipv4
      4  addresses6     uint n ‖ n × (16 bytes ‖ u16le)
      8  udx            uint version=1 ‖ uint features (1 reusableSocket) ‖ uint id ‖ uint seq
      16 secretStream   uint version=1
      32 relayThrough   uint version=1 ‖ uint flags=0 ‖ fixed32 publicKey ‖ fixed32 token
      64 relayAddresses uint n ‖ n × ipv4

A payload whose version is not 1 decodes to :class:`NoisePayload` with only ``version`` set (as
hyperdht: the caller answers VERSION_MISMATCH).

Holepunch payload (``nonce(24) ‖ crypto_secretbox_easy(holepunchSecret)`` of)::

    uint flags (1 connected, 2 punching, 4 addresses, 8 remoteAddress, 16 token,
                32 remoteToken) ‖ uint error ‖ uint firewall ‖ uint round
    ‖ [uint n ‖ n × ipv4] ‖ [ipv4] ‖ [fixed32 token] ‖ [fixed32 remoteToken]

FIND_PEER replies and forward entries hold a peer record: ``fixed32 publicKey ‖ uint n ‖ n ×
ipv4`` (:func:`cairn.dht.records.encode_peer`).

Decoders raise only :class:`~cairn.errors.DecodeError`; like hyperdht, they ignore trailing bytes.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from enum import IntEnum

import nacl.bindings as sodium
import nacl.exceptions

from cairn.dht.messages import Address, decode_ipv4, encode_ipv4
from cairn.encoding import Reader, write_buffer, write_u16, write_uint
from cairn.errors import DecodeError

__all__ = [
    "MAX_ADDRESSES",
    "Firewall",
    "Handshake",
    "Holepunch",
    "HolepunchInfo",
    "HolepunchPayload",
    "Mode",
    "NoiseError",
    "NoisePayload",
    "RelayThrough",
    "UdxInfo",
    "close_holepunch_payload",
    "decode_handshake",
    "decode_holepunch",
    "decode_holepunch_payload",
    "decode_noise_payload",
    "encode_handshake",
    "encode_holepunch",
    "encode_holepunch_payload",
    "encode_noise_payload",
    "seal_holepunch_payload",
]

MAX_ADDRESSES = 64
"""Most addresses (or relay pairs) a list in these messages may hold; a datagram is < 2 KiB."""

_NONCE = 24
_MAC = 16


class Mode(IntEnum):
    FROM_CLIENT = 0
    FROM_SERVER = 1
    FROM_RELAY = 2
    FROM_SECOND_RELAY = 3
    REPLY = 4


class Firewall(IntEnum):
    UNKNOWN = 0
    OPEN = 1
    CONSISTENT = 2
    RANDOM = 3


class NoiseError(IntEnum):
    """The ``error`` field of a Noise or holepunch payload (hyperdht's ERROR)."""

    NONE = 0
    ABORTED = 1
    VERSION_MISMATCH = 2
    TRY_LATER = 3


# -- wrappers ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Handshake:
    mode: int
    noise: bytes
    peer_address: Address | None = None
    relay_address: Address | None = None


@dataclass(frozen=True, slots=True)
class Holepunch:
    mode: int
    id: int
    payload: bytes
    peer_address: Address | None = None


def encode_handshake(m: Handshake) -> bytes:
    out = bytearray()
    write_uint(out, (1 if m.peer_address else 0) | (2 if m.relay_address else 0))
    write_uint(out, m.mode)
    write_buffer(out, m.noise)
    if m.peer_address:
        out += encode_ipv4(m.peer_address)
    if m.relay_address:
        out += encode_ipv4(m.relay_address)
    return bytes(out)


def decode_handshake(data: bytes) -> Handshake:
    r = Reader(data)
    flags = r.uint()
    mode = r.uint()
    noise = r.bytes_()
    peer = decode_ipv4(r) if flags & 1 else None
    relay = decode_ipv4(r) if flags & 2 else None
    return Handshake(mode, noise, peer, relay)


def encode_holepunch(m: Holepunch) -> bytes:
    out = bytearray()
    write_uint(out, 1 if m.peer_address else 0)
    write_uint(out, m.mode)
    write_uint(out, m.id)
    write_buffer(out, m.payload)
    if m.peer_address:
        out += encode_ipv4(m.peer_address)
    return bytes(out)


def decode_holepunch(data: bytes) -> Holepunch:
    r = Reader(data)
    flags = r.uint()
    mode = r.uint()
    id_ = r.uint()
    payload = r.bytes_()
    peer = decode_ipv4(r) if flags & 1 else None
    return Holepunch(mode, id_, payload, peer)


# -- the Noise payload --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HolepunchInfo:
    id: int
    relays: tuple[tuple[Address, Address], ...] = ()  # (relayAddress, peerAddress)


@dataclass(frozen=True, slots=True)
class UdxInfo:
    id: int
    seq: int = 0
    reusable_socket: bool = False
    version: int = 1


@dataclass(frozen=True, slots=True)
class RelayThrough:
    public_key: bytes
    token: bytes
    version: int = 1


@dataclass(frozen=True, slots=True)
class NoisePayload:
    version: int = 1
    error: int = NoiseError.NONE
    firewall: int = Firewall.UNKNOWN
    holepunch: HolepunchInfo | None = None
    addresses4: tuple[Address, ...] = ()
    addresses6: tuple[tuple[str, int], ...] = ()
    udx: UdxInfo | None = None
    secret_stream: int | None = None  # its version (1) when present
    relay_through: RelayThrough | None = None
    relay_addresses: tuple[Address, ...] | None = None


def _write_addresses(out: bytearray, addrs: tuple[Address, ...]) -> None:
    write_uint(out, len(addrs))
    for a in addrs:
        out += encode_ipv4(a)


def _count(r: Reader, size: int, what: str) -> int:
    n = r.uint()
    if n > MAX_ADDRESSES or n * size > r.remaining():
        raise DecodeError(f"{n} {what} do not fit")
    return n


def _read_addresses(r: Reader) -> tuple[Address, ...]:
    return tuple(decode_ipv4(r) for _ in range(_count(r, 6, "IPv4 addresses")))


def _ipv6(r: Reader) -> tuple[str, int]:
    raw = r.fixed(16)
    return socket.inet_ntop(socket.AF_INET6, raw), r.u16()


def encode_noise_payload(m: NoisePayload) -> bytes:
    flags = (
        (1 if m.holepunch else 0)
        | (2 if m.addresses4 else 0)
        | (4 if m.addresses6 else 0)
        | (8 if m.udx else 0)
        | (16 if m.secret_stream is not None else 0)
        | (32 if m.relay_through else 0)
        | (64 if m.relay_addresses is not None else 0)
    )
    out = bytearray()
    for v in (1, flags, m.error, m.firewall):
        write_uint(out, v)
    if m.holepunch:
        write_uint(out, m.holepunch.id)
        write_uint(out, len(m.holepunch.relays))
        for relay, peer in m.holepunch.relays:
            out += encode_ipv4(relay) + encode_ipv4(peer)
    if m.addresses4:
        _write_addresses(out, m.addresses4)
    if m.addresses6:
        write_uint(out, len(m.addresses6))
        for host, port in m.addresses6:
            out += socket.inet_pton(socket.AF_INET6, host)
            write_u16(out, port)
    if m.udx:
        for v in (1, 1 if m.udx.reusable_socket else 0, m.udx.id, m.udx.seq):
            write_uint(out, v)
    if m.secret_stream is not None:
        write_uint(out, 1)
    if m.relay_through:
        write_uint(out, 1)
        write_uint(out, 0)
        out += m.relay_through.public_key + m.relay_through.token
    if m.relay_addresses is not None:
        _write_addresses(out, m.relay_addresses)
    return bytes(out)


def decode_noise_payload(data: bytes) -> NoisePayload:
    r = Reader(data)
    version = r.uint()
    if version != 1:
        return NoisePayload(version=version)
    flags = r.uint()
    error = r.uint()
    firewall = r.uint()
    holepunch = None
    if flags & 1:
        hp_id = r.uint()
        n = _count(r, 12, "holepunch relays")
        holepunch = HolepunchInfo(hp_id, tuple((decode_ipv4(r), decode_ipv4(r))
                                               for _ in range(n)))
    addresses4 = _read_addresses(r) if flags & 2 else ()
    addresses6: tuple[tuple[str, int], ...] = ()
    if flags & 4:
        addresses6 = tuple(_ipv6(r) for _ in range(_count(r, 18, "IPv6 addresses")))
    udx = None
    if flags & 8:
        udx_version = r.uint()
        features = r.uint()
        udx = UdxInfo(r.uint(), r.uint(), bool(features & 1), udx_version)
    secret_stream = r.uint() if flags & 16 else None
    relay_through = None
    if flags & 32:
        rt_version = r.uint()
        r.uint()
        relay_through = RelayThrough(r.fixed(32), r.fixed(32), rt_version)
    relay_addresses = _read_addresses(r) if flags & 64 else None
    return NoisePayload(version, error, firewall, holepunch, addresses4, addresses6, udx,
                        secret_stream, relay_through, relay_addresses)


# -- the holepunch payload ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HolepunchPayload:
    error: int = NoiseError.NONE
    firewall: int = Firewall.UNKNOWN
    round: int = 0
    connected: bool = False
    punching: bool = False
    addresses: tuple[Address, ...] | None = None
    remote_address: Address | None = None
    token: bytes | None = None
    remote_token: bytes | None = None


def encode_holepunch_payload(m: HolepunchPayload) -> bytes:
    flags = (
        (1 if m.connected else 0)
        | (2 if m.punching else 0)
        | (4 if m.addresses is not None else 0)
        | (8 if m.remote_address else 0)
        | (16 if m.token else 0)
        | (32 if m.remote_token else 0)
    )
    out = bytearray()
    for v in (flags, m.error, m.firewall, m.round):
        write_uint(out, v)
    if m.addresses is not None:
        _write_addresses(out, m.addresses)
    if m.remote_address:
        out += encode_ipv4(m.remote_address)
    for tok in (m.token, m.remote_token):
        if tok:
            if len(tok) != 32:
                raise ValueError("a holepunch token is 32 bytes")
            out += tok
    return bytes(out)


def decode_holepunch_payload(data: bytes) -> HolepunchPayload:
    r = Reader(data)
    flags = r.uint()
    error = r.uint()
    firewall = r.uint()
    round_ = r.uint()
    addresses = _read_addresses(r) if flags & 4 else None
    remote = decode_ipv4(r) if flags & 8 else None
    token = r.fixed(32) if flags & 16 else None
    remote_token = r.fixed(32) if flags & 32 else None
    return HolepunchPayload(error, firewall, round_, bool(flags & 1), bool(flags & 2),
                            addresses, remote, token, remote_token)


def seal_holepunch_payload(m: HolepunchPayload, secret: bytes, nonce: bytes) -> bytes:
    """``nonce ‖ secretbox(payload)`` under the 32-byte holepunch secret (``nonce``: 24 random
    bytes from the caller's rng)."""
    if len(secret) != 32 or len(nonce) != _NONCE:
        raise ValueError("a holepunch secret is 32 bytes and its nonce 24")
    box: bytes = sodium.crypto_secretbox(encode_holepunch_payload(m), nonce, secret)
    return nonce + box


def close_holepunch_payload(data: bytes, secret: bytes) -> HolepunchPayload:
    """Open and decode a sealed holepunch payload; DecodeError when it is short, forged or
    malformed."""
    if len(data) <= _NONCE + _MAC:
        raise DecodeError(f"holepunch payload of {len(data)} bytes is too short")
    try:
        plain: bytes = sodium.crypto_secretbox_open(data[_NONCE:], data[:_NONCE], secret)
    except nacl.exceptions.CryptoError as exc:
        raise DecodeError("holepunch payload failed to decrypt") from exc
    return decode_holepunch_payload(plain)

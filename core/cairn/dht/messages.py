"""dht-rpc 6 datagrams (dht-rpc lib/io.js), one place for their bytes.

Byte 0 is ``(type << 4) | 0b11``: ``0x03`` a request, ``0x13`` a response. Then:

- request: ``uint flags, u16le tid, to (ipv4 4 + u16le port), [id 32], [token 32], uint command,
  [target 32], [buffer value]``; flags 1 id, 2 token, 4 internal, 8 target, 16 value.
- response: ``uint flags, u16le tid, to, [id 32], [token 32], [closer nodes: uint n, n x 6],
  [uint error], [buffer value]``; flags 1 id, 2 token, 4 closer, 8 error, 16 value.

Decoders raise only :class:`~cairn.errors.DecodeError`. Like dht-rpc, they ignore bytes after
the last field, so a later protocol version can add fields.
"""

from __future__ import annotations

import functools
import hashlib
import socket
from dataclasses import dataclass
from enum import IntEnum

from cairn.encoding import Reader, write_buffer, write_u16, write_uint
from cairn.errors import DecodeError

__all__ = [
    "REQUEST_ID",
    "RESPONSE_ID",
    "Address",
    "Command",
    "ErrorCode",
    "Request",
    "Response",
    "canonical",
    "decode",
    "decode_ipv4",
    "encode_ipv4",
    "encode_request",
    "encode_response",
    "encode_response_within",
    "node_id",
    "node_id_int",
]

VERSION = 0b11
REQUEST_ID = (0 << 4) | VERSION
RESPONSE_ID = (1 << 4) | VERSION
MAX_CLOSER = 64

Address = tuple[str, int]
"""An IPv4 address and port, as ``("127.0.0.1", 7423)``."""


class Command(IntEnum):
    """Internal (``internal`` flag set) dht-rpc commands."""

    PING = 0
    PING_NAT = 1
    FIND_NODE = 2
    DOWN_HINT = 3
    DELAYED_PING = 4


class ErrorCode(IntEnum):
    """Error codes in responses (dht-rpc's and hyperdht's share one space)."""

    UNKNOWN_COMMAND = 1
    INVALID_TOKEN = 2
    SEQ_REUSED = 16
    SEQ_TOO_LOW = 17


@functools.lru_cache(maxsize=16384)
def encode_ipv4(addr: Address) -> bytes:
    """The 6 bytes of an IPv4 address and port (``to``, closer nodes, node ids)."""
    host, port = addr
    try:
        packed = socket.inet_pton(socket.AF_INET, host)
    except (OSError, TypeError) as exc:
        raise ValueError(f"not an IPv4 address: {host!r}") from exc
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range: {port}")
    return packed + port.to_bytes(2, "little")


def decode_ipv4(r: Reader) -> Address:
    return _address(r.fixed(6))


@functools.lru_cache(maxsize=16384)
def _address(raw: bytes) -> Address:
    # One tuple per address however often it arrives: the routing table keeps these for long,
    # and shared objects keep long-lived memory from being scattered among per-datagram garbage.
    return f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}", raw[4] | raw[5] << 8


@functools.lru_cache(maxsize=16384)
def canonical(addr: Address) -> Address:
    """The shared tuple for an address that came from a socket."""
    return _address(encode_ipv4(addr))


@functools.lru_cache(maxsize=16384)
def node_id(addr: Address) -> bytes:
    """A node's id: BLAKE2b-256 of its IPv4 address and port as seen by others."""
    return hashlib.blake2b(encode_ipv4(addr), digest_size=32).digest()


@functools.lru_cache(maxsize=16384)
def node_id_int(addr: Address) -> int:
    """:func:`node_id` as an integer, for XOR distances."""
    return int.from_bytes(node_id(addr), "big")


@dataclass(frozen=True, slots=True)
class Request:
    tid: int
    to: Address
    command: int
    internal: bool = False
    id: bytes | None = None
    token: bytes | None = None
    target: bytes | None = None
    value: bytes | None = None


@dataclass(frozen=True, slots=True)
class Response:
    tid: int
    to: Address
    id: bytes | None = None
    token: bytes | None = None
    closer_nodes: tuple[Address, ...] = ()
    error: int = 0
    value: bytes | None = None


def encode_request(m: Request) -> bytes:
    flags = (
        (1 if m.id is not None else 0)
        | (2 if m.token is not None else 0)
        | (4 if m.internal else 0)
        | (8 if m.target is not None else 0)
        | (16 if m.value is not None else 0)
    )
    out = bytearray((REQUEST_ID,))
    write_uint(out, flags)
    write_u16(out, m.tid)
    out += encode_ipv4(m.to)
    if m.id is not None:
        out += m.id
    if m.token is not None:
        out += m.token
    write_uint(out, m.command)
    if m.target is not None:
        out += m.target
    if m.value is not None:
        write_buffer(out, m.value)
    return bytes(out)


def encode_response(m: Response) -> bytes:
    flags = (
        (1 if m.id is not None else 0)
        | (2 if m.token is not None else 0)
        | (4 if m.closer_nodes else 0)
        | (8 if m.error else 0)
        | (16 if m.value is not None else 0)
    )
    out = bytearray((RESPONSE_ID,))
    write_uint(out, flags)
    write_u16(out, m.tid)
    out += encode_ipv4(m.to)
    if m.id is not None:
        out += m.id
    if m.token is not None:
        out += m.token
    if m.closer_nodes:
        write_uint(out, len(m.closer_nodes))
        for a in m.closer_nodes:
            out += encode_ipv4(a)
    if m.error:
        write_uint(out, m.error)
    if m.value is not None:
        write_buffer(out, m.value)
    return bytes(out)


def encode_response_within(m: Response, budget: int) -> bytes | None:
    """``m`` encoded in at most ``budget`` bytes, shrunk until it fits: fewer closer nodes first,
    then without its value (the token stays: the sender can ask again with it), then without id
    and token; None when not even that fits. A node answers an address it has not verified so,
    within 3x the bytes of the request (the amplification bound).
    """
    data = encode_response(m)
    if len(data) <= budget:
        return data
    nodes = m.closer_nodes
    while nodes and len(data) > budget:
        nodes = nodes[: max(0, len(nodes) - max(1, (len(data) - budget + 5) // 6))]
        data = encode_response(Response(m.tid, m.to, m.id, m.token, nodes, m.error, m.value))
    if len(data) > budget and m.value is not None:
        data = encode_response(Response(m.tid, m.to, m.id, m.token, (), m.error, None))
    if len(data) > budget:
        data = encode_response(Response(m.tid, m.to, None, None, (), m.error, None))
    return data if len(data) <= budget else None


def decode(data: bytes) -> Request | Response:
    """Decode one datagram; raises DecodeError on anything that is not a dht-rpc 6 message."""
    if len(data) < 2:
        raise DecodeError("datagram too short")
    kind = data[0]
    if kind not in (REQUEST_ID, RESPONSE_ID):
        raise DecodeError(f"unknown datagram type {kind:#04x}")
    r = Reader(data, 1)
    flags = r.uint()
    tid = r.u16()
    to = decode_ipv4(r)
    id_ = r.fixed(32) if flags & 1 else None
    token = r.fixed(32) if flags & 2 else None
    if kind == REQUEST_ID:
        command = r.uint()
        target = r.fixed(32) if flags & 8 else None
        value = r.bytes_() if flags & 16 else None
        return Request(tid, to, command, bool(flags & 4), id_, token, target, value)
    closer: tuple[Address, ...] = ()
    if flags & 4:
        n = r.uint()
        if n > MAX_CLOSER or 6 * n > r.remaining():
            raise DecodeError(f"{n} closer nodes do not fit")
        closer = tuple(decode_ipv4(r) for _ in range(n))
    error = r.uint() if flags & 8 else 0
    value = r.bytes_() if flags & 16 else None
    return Response(tid, to, id_, token, closer, error, value)

"""The ``hypercore/alpha`` channel: its handshake and its ten message types (hypercore 11,
lib/messages.js ``wire.*``; the type is the position in lib/replicator.js's list).

``request`` and ``data`` carry proofs and live in :mod:`cairn.messages` with the log; the rest are
here. Decoders raise only :class:`~cairn.errors.DecodeError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from cairn.encoding import Reader, write_uint
from cairn.errors import DecodeError

__all__ = [
    "PROTOCOL",
    "Bitfield",
    "Cancel",
    "ChannelHandshake",
    "Extension",
    "MessageType",
    "NoData",
    "Range",
    "Sync",
    "Want",
    "decode_bitfield",
    "decode_cancel",
    "decode_extension",
    "decode_handshake",
    "decode_no_data",
    "decode_range",
    "decode_sync",
    "decode_want",
    "encode_bitfield",
    "encode_cancel",
    "encode_extension",
    "encode_handshake",
    "encode_no_data",
    "encode_range",
    "encode_sync",
    "encode_want",
]

PROTOCOL = "hypercore/alpha"


class MessageType(IntEnum):
    SYNC = 0
    REQUEST = 1
    CANCEL = 2
    DATA = 3
    NO_DATA = 4
    WANT = 5
    UNWANT = 6
    BITFIELD = 7
    RANGE = 8
    EXTENSION = 9


@dataclass(frozen=True, slots=True)
class ChannelHandshake:
    capability: bytes
    seeks: bool = False


def encode_handshake(m: ChannelHandshake) -> bytes:
    out = bytearray()
    write_uint(out, 1 if m.seeks else 0)
    if len(m.capability) != 32:
        raise ValueError("a capability is 32 bytes")
    out += m.capability
    return bytes(out)


def decode_handshake(data: bytes) -> ChannelHandshake:
    r = Reader(data)
    flags = r.uint()
    return ChannelHandshake(r.fixed(32), bool(flags & 1))


@dataclass(frozen=True, slots=True)
class Sync:
    fork: int
    length: int
    remote_length: int
    can_upgrade: bool = False
    uploading: bool = True
    downloading: bool = False
    has_manifest: bool = False
    allow_push: bool = False


def encode_sync(m: Sync) -> bytes:
    flags = (
        (1 if m.can_upgrade else 0)
        | (2 if m.uploading else 0)
        | (4 if m.downloading else 0)
        | (8 if m.has_manifest else 0)
        | (16 if m.allow_push else 0)
    )
    out = bytearray()
    for v in (flags, m.fork, m.length, m.remote_length):
        write_uint(out, v)
    return bytes(out)


def decode_sync(data: bytes) -> Sync:
    r = Reader(data)
    flags = r.uint()
    return Sync(r.uint(), r.uint(), r.uint(), bool(flags & 1), bool(flags & 2), bool(flags & 4),
                bool(flags & 8), bool(flags & 16))


@dataclass(frozen=True, slots=True)
class Cancel:
    request: int


def encode_cancel(m: Cancel) -> bytes:
    out = bytearray()
    write_uint(out, m.request)
    return bytes(out)


def decode_cancel(data: bytes) -> Cancel:
    return Cancel(Reader(data).uint())


@dataclass(frozen=True, slots=True)
class NoData:
    request: int
    reason: int = 0


def encode_no_data(m: NoData) -> bytes:
    out = bytearray()
    write_uint(out, m.request)
    write_uint(out, 1 if m.reason else 0)
    if m.reason:
        write_uint(out, m.reason)
    return bytes(out)


def decode_no_data(data: bytes) -> NoData:
    r = Reader(data)
    request = r.uint()
    flags = r.uint() if r.remaining() else 0
    return NoData(request, r.uint() if flags & 1 else 0)


@dataclass(frozen=True, slots=True)
class Want:
    """``want`` and ``unwant``: a range of blocks, or ``any``."""

    start: int
    length: int
    any: bool = False


def encode_want(m: Want) -> bytes:
    out = bytearray()
    write_uint(out, m.start)
    write_uint(out, m.length)
    if m.any:
        write_uint(out, 1)
    return bytes(out)


def decode_want(data: bytes) -> Want:
    r = Reader(data)
    start = r.uint()
    length = r.uint()
    flags = r.uint() if r.remaining() else 0
    return Want(start, length, bool(flags & 1))


@dataclass(frozen=True, slots=True)
class Range:
    """The sender has (or with ``drop``, has dropped) blocks start..start+length."""

    start: int
    length: int
    drop: bool = False


def encode_range(m: Range) -> bytes:
    out = bytearray()
    write_uint(out, (1 if m.drop else 0) | (2 if m.length == 1 else 0))
    write_uint(out, m.start)
    if m.length != 1:
        write_uint(out, m.length)
    return bytes(out)


def decode_range(data: bytes) -> Range:
    r = Reader(data)
    flags = r.uint()
    start = r.uint()
    length = 1 if flags & 2 else r.uint()
    return Range(start, length, bool(flags & 1))


@dataclass(frozen=True, slots=True)
class Bitfield:
    """A page of the sender's bitfield from block ``start``: 32-bit words, LSB first."""

    start: int
    words: tuple[int, ...]


_MAX_WORDS = 1 << 16


def encode_bitfield(m: Bitfield) -> bytes:
    out = bytearray()
    write_uint(out, m.start)
    write_uint(out, len(m.words))
    out += struct.pack(f"<{len(m.words)}I", *m.words)
    return bytes(out)


def decode_bitfield(data: bytes) -> Bitfield:
    r = Reader(data)
    start = r.uint()
    n = r.uint()
    if n > _MAX_WORDS or 4 * n > r.remaining():
        raise DecodeError(f"bitfield of {n} words does not fit")
    raw = r.fixed(4 * n)
    return Bitfield(start, struct.unpack(f"<{n}I", raw))


@dataclass(frozen=True, slots=True)
class Extension:
    name: str
    message: bytes


def encode_extension(m: Extension) -> bytes:
    name = m.name.encode()
    out = bytearray()
    write_uint(out, len(name))
    out += name
    out += m.message
    return bytes(out)


def decode_extension(data: bytes) -> Extension:
    r = Reader(data)
    name = r.string()
    return Extension(name, r.rest())

"""The UDX wire format (libudx): one 20-byte header, then SACK blocks or padding, then data.

========  ====  ===========================================================================
offset    size  field (integers little endian)
========  ====  ===========================================================================
0         1     magic ``0xFF``
1         1     version ``1``
2         1     type bits: 1 DATA, 2 END, 4 SACK, 8 MESSAGE, 16 DESTROY, 32 HEARTBEAT
                (0 = a pure ACK)
3         1     data offset: bytes to skip after the header before the data (the zero padding
                of a path-MTU probe, or the SACK blocks when data follows them)
4         4     the receiver's stream id
8         4     the sender's receive window in bytes
12        4     seq: DATA, END and DESTROY use one; ACK, MESSAGE and HEARTBEAT carry the next
16        4     ack: the next seq the sender expects (everything before it arrived)
20        ...   SACK packets: pairs ``u32 start ‖ u32 end`` (end exclusive) of packets held
                beyond ``ack``, at most 50; then the data
========  ====  ===========================================================================

Sequence numbers count packets and wrap at 2**32: compare them with :func:`seq_diff`.
:func:`decode` raises only :class:`~cairn.errors.DecodeError`, whose message names the field.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from cairn.errors import DecodeError

__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "MAX_DATAGRAM",
    "MAX_SACKS",
    "VERSION",
    "Packet",
    "PacketType",
    "decode",
    "encode",
    "encode_plain",
    "is_udx",
    "seq_add",
    "seq_diff",
]

MAGIC = 0xFF
VERSION = 1
HEADER_SIZE = 20
MAX_SACKS = 50
MAX_DATAGRAM = 2048  # libudx's receive buffer: a longer datagram is not a UDX packet of a peer

_HEADER = struct.Struct("<BBBBIIII")
_SACK = struct.Struct("<II")


class PacketType(enum.IntFlag):
    ACK = 0
    DATA = 1
    END = 2
    SACK = 4
    MESSAGE = 8
    DESTROY = 16
    HEARTBEAT = 32


_KNOWN = 63
_SACK_BIT = 4


def seq_diff(a: int, b: int) -> int:
    """``a - b`` for 32-bit sequence numbers that wrap: negative when ``a`` is older."""
    return ((a - b + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def seq_add(a: int, n: int) -> int:
    return (a + n) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Packet:
    type: int  # PacketType bits (a plain int: IntFlag arithmetic is slow on the hot path)
    stream_id: int  # the receiver's id
    window: int
    seq: int
    ack: int
    sacks: tuple[tuple[int, int], ...] = ()
    data: bytes = b""
    padding: int = 0  # zero bytes between the header (and SACKs) and the data

    @property
    def size(self) -> int:
        return HEADER_SIZE + 8 * len(self.sacks) + self.padding + len(self.data)


def is_udx(datagram: bytes) -> bool:
    """True when the datagram starts like a UDX packet (anything else is dht-rpc or a probe)."""
    return len(datagram) >= HEADER_SIZE and datagram[0] == MAGIC and datagram[1] == VERSION


def encode(packet: Packet) -> bytes:
    sacks = b"".join(_SACK.pack(start, end) for start, end in packet.sacks)
    offset = packet.padding
    if packet.sacks and packet.data:
        offset += len(sacks)
    if offset > 255:
        raise ValueError("a data offset over 255 bytes does not fit the header")
    head = _HEADER.pack(MAGIC, VERSION, packet.type, offset, packet.stream_id,
                        packet.window, packet.seq, packet.ack)
    return b"".join((head, sacks, bytes(packet.padding), packet.data))


def encode_plain(kind: int, stream_id: int, window: int, seq: int, ack: int, data: bytes
                 ) -> bytes:
    """:func:`encode` of a packet without SACK blocks or padding (every packet but a SACK or an
    MTU probe), byte for byte, without building a :class:`Packet`: the sender's hot path."""
    return _HEADER.pack(MAGIC, VERSION, kind, 0, stream_id, window, seq, ack) + data


def decode(datagram: bytes) -> Packet:
    """One UDX packet; :class:`DecodeError` names what is wrong with it."""
    if len(datagram) < HEADER_SIZE:
        raise DecodeError(f"udx packet of {len(datagram)} bytes, shorter than the header")
    if len(datagram) > MAX_DATAGRAM:
        raise DecodeError(f"udx packet of {len(datagram)} bytes, over {MAX_DATAGRAM}")
    magic, version, kind, offset, stream_id, window, seq, ack = _HEADER.unpack_from(datagram)
    if magic != MAGIC or version != VERSION:
        raise DecodeError(f"not a udx packet (magic {magic:#x}, version {version})")
    if kind & ~_KNOWN:
        raise DecodeError(f"udx packet type {kind:#x} has unknown bits")
    if not kind & _SACK_BIT:  # (the common case: the data after the header and any padding)
        if offset > len(datagram) - HEADER_SIZE:
            raise DecodeError(f"udx data offset {offset} is beyond the packet "
                              f"({len(datagram) - HEADER_SIZE} bytes)")
        return Packet(kind, stream_id, window, seq, ack, (),
                      bytes(datagram[HEADER_SIZE + offset:]), offset)
    body = memoryview(datagram)[HEADER_SIZE:]
    if offset > len(body):
        raise DecodeError(f"udx data offset {offset} is beyond the packet ({len(body)} bytes)")
    sacks: tuple[tuple[int, int], ...] = ()
    padding = offset
    if kind & _SACK_BIT:
        # as libudx: the blocks fill the data offset, or the whole body when there is none
        region = body[:offset] if offset else body
        if len(region) % 8:
            raise DecodeError(f"udx sack region of {len(region)} bytes is not whole blocks")
        count = len(region) // 8
        if count == 0:
            raise DecodeError("udx sack packet without sack blocks")
        if count > MAX_SACKS:
            raise DecodeError(f"udx packet with {count} sack blocks, over {MAX_SACKS}")
        sacks = tuple(_SACK.iter_unpack(region))
        padding = 0
        if not offset:
            offset = len(body)
    data = bytes(body[offset:])
    return Packet(kind, stream_id, window, seq, ack, sacks, data, padding)

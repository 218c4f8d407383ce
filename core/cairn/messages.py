r"""Every ``hypercore/alpha`` message codec (hypercore 11, lib/messages.js ``wire.*``).

The channel's handshake and its ten message types; the type is the position in
lib/replicator.js's list (:class:`MessageType`):

====  ==========  =============================================================
type  message     fields (flags are bits of one leading or trailing ``uint``)
====  ==========  =============================================================
\-    handshake   ``uint flags (seeks)`` ‖ 32-byte capability
0     sync        ``uint flags (can_upgrade, uploading, downloading, has_manifest,
                  allow_push)`` ‖ fork ‖ length ‖ remote_length
1     request     ``uint flags (block, hash, seek, upgrade, manifest, priority)`` ‖
                  id ‖ fork ‖ the parts the flags name
2     cancel      request id
3     data        ``uint flags (block, hash, seek, upgrade, manifest)`` ‖ request ‖ fork
                  ‖ the parts the flags name (a proof, the block when asked for)
4     no-data     request id ‖ optional ``uint flags (reason)`` ‖ reason
5, 6  (un)want    start ‖ length ‖ optional ``uint flags (any)``
7     bitfield    start ‖ ``uint words`` ‖ 32-bit little-endian words
8     range       ``uint flags (drop, length is 1)`` ‖ start ‖ length unless 1
9     extension   ``string name`` ‖ message (the rest)
====  ==========  =============================================================

Flag bits are packed and unpacked by one pair of helpers, :func:`pack_flags` and
:func:`unpack_flags` (bit ``i`` is the ``i``-th flag). The log (:mod:`cairn.log`) builds and
verifies the proofs ``request`` and ``data`` carry; the replication session
(:mod:`cairn.replication.session`) speaks the rest. Decoders raise only
:class:`~cairn.errors.DecodeError`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from cairn.encoding import Reader, encode_uint, write_array, write_buffer, write_fixed, write_uint
from cairn.errors import DecodeError

__all__ = [
    "PROTOCOL",
    "Bitfield",
    "Cancel",
    "ChannelHandshake",
    "Data",
    "DataBlock",
    "DataHash",
    "DataSeek",
    "DataUpgrade",
    "Extension",
    "MessageType",
    "NoData",
    "Node",
    "Range",
    "Request",
    "RequestBlock",
    "RequestSeek",
    "RequestUpgrade",
    "Sync",
    "Want",
    "decode_bitfield",
    "decode_cancel",
    "decode_data",
    "decode_extension",
    "decode_handshake",
    "decode_no_data",
    "decode_range",
    "decode_request",
    "decode_sync",
    "decode_want",
    "encode_bitfield",
    "encode_cancel",
    "encode_data",
    "encode_extension",
    "encode_handshake",
    "encode_no_data",
    "encode_range",
    "encode_request",
    "encode_sync",
    "encode_want",
    "pack_flags",
    "read_manifest_bytes",
    "unpack_flags",
]

PROTOCOL = "hypercore/alpha"
MAX_NODES = 4096  # far more than any proof of a 2^64-block tree needs (at most ~130)


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


def pack_flags(*flags: object) -> int:
    """The ``uint`` whose bit ``i`` is set when ``flags[i]`` is true."""
    n = 0
    for i, flag in enumerate(flags):
        if flag:
            n |= 1 << i
    return n


def unpack_flags(n: int, count: int) -> tuple[bool, ...]:
    """The first ``count`` bits of ``n``, bit 0 first (higher bits are ignored, as JS does)."""
    return tuple(bool(n >> i & 1) for i in range(count))


class Node(NamedTuple):
    """A Merkle tree node: flat-tree index, byte size of the blocks below it, BLAKE2b hash."""

    index: int  # type: ignore[assignment]  # the wire's name; shadows tuple.index
    size: int
    hash: bytes


def write_node(out: bytearray, n: Node) -> None:
    write_uint(out, n.index)
    write_uint(out, n.size)
    write_fixed(out, n.hash, 32)


def read_node(r: Reader) -> Node:
    return Node(r.uint(), r.uint(), r.fixed(32))


def read_nodes(r: Reader) -> list[Node]:
    return r.array(read_node, MAX_NODES)


# -- request ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestBlock:
    """A block (``index`` = block number) or hash (``index`` = tree node) request.

    ``nodes``: how many levels above the leaf the requester already lacks, so the responder
    sends siblings only up to a node the requester trusts (0 = send up to a root).
    """

    index: int
    nodes: int = 0


@dataclass(frozen=True, slots=True)
class RequestSeek:
    bytes: int
    padding: int = 0


@dataclass(frozen=True, slots=True)
class RequestUpgrade:
    start: int
    length: int


@dataclass(frozen=True, slots=True)
class Request:
    id: int = 0
    fork: int = 0
    block: RequestBlock | None = None
    hash: RequestBlock | None = None
    seek: RequestSeek | None = None
    upgrade: RequestUpgrade | None = None
    manifest: bool = False
    priority: int = 0


def encode_request(m: Request) -> bytes:
    flags = pack_flags(m.block, m.hash, m.seek, m.upgrade, m.manifest, m.priority)
    out = bytearray()
    write_uint(out, flags)
    write_uint(out, m.id)
    write_uint(out, m.fork)
    for b in (m.block, m.hash):
        if b is not None:
            write_uint(out, b.index)
            write_uint(out, b.nodes)
    if m.seek is not None:
        write_uint(out, m.seek.bytes)
        write_uint(out, m.seek.padding)
    if m.upgrade is not None:
        write_uint(out, m.upgrade.start)
        write_uint(out, m.upgrade.length)
    if m.priority:
        write_uint(out, m.priority)
    return bytes(out)


def _plain_block_request(data: bytes) -> Request | None:
    """``decode_request`` of a request with only a block (flags 1: what a downloader sends
    after its first), read in one loop; None for anything else (truncated, a uint wider than
    two bytes, trailing bytes), which the general reader decodes or refuses."""
    values: list[int] = []
    pos, end = 1, len(data)
    for _ in range(4):  # id, fork, block index, nodes
        if pos >= end:
            return None
        a = data[pos]
        if a < 0xFD:
            values.append(a)
            pos += 1
        elif a == 0xFD and pos + 3 <= end:
            values.append(data[pos + 1] | data[pos + 2] << 8)
            pos += 3
        else:
            return None
    if pos != end:
        return None
    rid, fork, index, nodes = values
    return Request(rid, fork, RequestBlock(index, nodes))


def decode_request(data: bytes) -> Request:
    if data[:1] == b"\x01":
        plain = _plain_block_request(data)
        if plain is not None:
            return plain
    r = Reader(data)
    u = r.uint
    flags = u()  # (bits as unpack_flags reads them, tested inline: a request per block served)
    rid = u()
    fork = u()
    block = RequestBlock(u(), u()) if flags & 1 else None
    hash_ = RequestBlock(u(), u()) if flags & 2 else None
    seek = RequestSeek(u(), u()) if flags & 4 else None
    upgrade = RequestUpgrade(u(), u()) if flags & 8 else None
    priority = u() if flags & 32 else 0
    r.done()
    return Request(rid, fork, block, hash_, seek, upgrade, bool(flags & 16), priority)


# -- data (a proof) --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataBlock:
    index: int
    value: bytes | None
    nodes: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class DataHash:
    index: int
    nodes: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class DataSeek:
    bytes: int
    nodes: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class DataUpgrade:
    start: int
    length: int
    nodes: tuple[Node, ...]
    additional_nodes: tuple[Node, ...]
    signature: bytes | None


@dataclass(frozen=True, slots=True)
class Data:
    """A ``data`` message: a proof, and the block when one was asked for.

    ``manifest`` is the encoded manifest as sent (the key is the hash of exactly these bytes).
    """

    request: int = 0
    fork: int = 0
    block: DataBlock | None = None
    hash: DataHash | None = None
    seek: DataSeek | None = None
    upgrade: DataUpgrade | None = None
    manifest: bytes | None = None


def _write_nodes(out: bytearray, nodes: Sequence[Node]) -> None:
    """``write_array(out, nodes, write_node)`` inlined (every answer carries one)."""
    out += encode_uint(len(nodes))
    for index, size, digest in nodes:
        out += encode_uint(index)
        out += encode_uint(size)
        if len(digest) != 32:
            raise ValueError(f"expected 32 bytes, got {len(digest)}")
        out += digest


def encode_data(m: Data) -> bytes:
    block = m.block
    if block is not None and m.hash is None and m.seek is None and m.upgrade is None:
        # a plain block answer (all a downloader asks for after its first request)
        out = bytearray(b"\x11" if m.manifest else b"\x01")
        out += encode_uint(m.request)
        out += encode_uint(m.fork)
        out += encode_uint(block.index)
        write_buffer(out, block.value)
        _write_nodes(out, block.nodes)
        if m.manifest:
            out += m.manifest
        return bytes(out)
    flags = pack_flags(m.block, m.hash, m.seek, m.upgrade, m.manifest)
    out = bytearray()
    write_uint(out, flags)
    write_uint(out, m.request)
    write_uint(out, m.fork)
    if m.block is not None:
        write_uint(out, m.block.index)
        write_buffer(out, m.block.value)
        write_array(out, m.block.nodes, write_node)
    if m.hash is not None:
        write_uint(out, m.hash.index)
        write_array(out, m.hash.nodes, write_node)
    if m.seek is not None:
        write_uint(out, m.seek.bytes)
        write_array(out, m.seek.nodes, write_node)
    if m.upgrade is not None:
        u = m.upgrade
        write_uint(out, u.start)
        write_uint(out, u.length)
        write_array(out, u.nodes, write_node)
        write_array(out, u.additional_nodes, write_node)
        write_buffer(out, u.signature)
    if m.manifest:
        out += m.manifest
    return bytes(out)


def read_manifest_bytes(r: Reader) -> bytes:
    """Walk one encoded manifest (any version hypercore 11 knows) and return its exact bytes."""
    start = r.pos
    version = r.uint()
    if version == 0:
        if r.uint() != 0:
            raise DecodeError("unknown manifest hash id")
        kind = r.uint()
        if kind == 0:
            r.fixed(32)
        elif kind == 1:
            _read_signer(r)
        elif kind == 2:
            r.uint()
            r.uint()
            r.array(_read_signer, 64)
        else:
            raise DecodeError(f"unknown manifest v0 type {kind}")
    elif version <= 3:
        _allow_patch, prologue, linked, user_data = unpack_flags(r.uint(), 4)
        if r.uint() != 0:
            raise DecodeError("unknown manifest hash id")
        r.uint()  # quorum
        r.array(_read_signer, 64)
        if prologue:
            r.fixed(32)
            r.uint()
        if linked:
            r.array(lambda rr: rr.fixed(32), 64)
        if user_data:
            r.buffer()
    else:
        raise DecodeError(f"unknown manifest version {version}")
    return r.data[start : r.pos]


def _read_signer(r: Reader) -> None:
    if r.uint() != 0:
        raise DecodeError("unknown manifest signature id")
    r.fixed(32)
    r.fixed(32)


def decode_data(data: bytes) -> Data:
    r = Reader(data)
    has_block, has_hash, has_seek, has_upgrade, has_manifest = unpack_flags(r.uint(), 5)
    request = r.uint()
    fork = r.uint()
    block = hash_ = seek = upgrade = None
    if has_block:
        block = DataBlock(r.uint(), r.buffer(), tuple(read_nodes(r)))
    if has_hash:
        hash_ = DataHash(r.uint(), tuple(read_nodes(r)))
    if has_seek:
        seek = DataSeek(r.uint(), tuple(read_nodes(r)))
    if has_upgrade:
        upgrade = DataUpgrade(
            r.uint(), r.uint(), tuple(read_nodes(r)), tuple(read_nodes(r)), r.buffer()
        )
    manifest = read_manifest_bytes(r) if has_manifest else None
    r.done()
    return Data(request, fork, block, hash_, seek, upgrade, manifest)


# -- the channel handshake and the other eight messages ------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelHandshake:
    capability: bytes
    seeks: bool = False


def encode_handshake(m: ChannelHandshake) -> bytes:
    out = bytearray()
    write_uint(out, pack_flags(m.seeks))
    if len(m.capability) != 32:
        raise ValueError("a capability is 32 bytes")
    out += m.capability
    return bytes(out)


def decode_handshake(data: bytes) -> ChannelHandshake:
    r = Reader(data)
    (seeks,) = unpack_flags(r.uint(), 1)
    return ChannelHandshake(r.fixed(32), seeks)


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
    flags = pack_flags(m.can_upgrade, m.uploading, m.downloading, m.has_manifest, m.allow_push)
    out = bytearray()
    for v in (flags, m.fork, m.length, m.remote_length):
        write_uint(out, v)
    return bytes(out)


def decode_sync(data: bytes) -> Sync:
    r = Reader(data)
    flags = unpack_flags(r.uint(), 5)
    return Sync(r.uint(), r.uint(), r.uint(), *flags)


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
    write_uint(out, pack_flags(m.reason))
    if m.reason:
        write_uint(out, m.reason)
    return bytes(out)


def decode_no_data(data: bytes) -> NoData:
    r = Reader(data)
    request = r.uint()
    (has_reason,) = unpack_flags(r.uint() if r.remaining() else 0, 1)
    return NoData(request, r.uint() if has_reason else 0)


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
        write_uint(out, pack_flags(m.any))
    return bytes(out)


def decode_want(data: bytes) -> Want:
    r = Reader(data)
    start = r.uint()
    length = r.uint()
    (any_,) = unpack_flags(r.uint() if r.remaining() else 0, 1)
    return Want(start, length, any_)


@dataclass(frozen=True, slots=True)
class Range:
    """The sender has (or with ``drop``, has dropped) blocks start..start+length."""

    start: int
    length: int
    drop: bool = False


def encode_range(m: Range) -> bytes:
    out = bytearray()
    write_uint(out, pack_flags(m.drop, m.length == 1))
    write_uint(out, m.start)
    if m.length != 1:
        write_uint(out, m.length)
    return bytes(out)


def decode_range(data: bytes) -> Range:
    r = Reader(data)
    drop, single = unpack_flags(r.uint(), 2)
    start = r.uint()
    length = 1 if single else r.uint()
    return Range(start, length, drop)


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

"""hypercore/alpha wire messages (hypercore/lib/messages.js ``wire.*``), one place for their bytes.

This module holds the ``request`` and ``data`` messages, which carry proofs; the replication
session adds the rest of the channel's messages here. Decoders raise only
:class:`~cairn.errors.DecodeError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from cairn.encoding import Reader, write_array, write_buffer, write_fixed, write_uint
from cairn.errors import DecodeError

__all__ = [
    "Data",
    "DataBlock",
    "DataHash",
    "DataSeek",
    "DataUpgrade",
    "Node",
    "Request",
    "RequestBlock",
    "RequestSeek",
    "RequestUpgrade",
    "decode_data",
    "decode_request",
    "encode_data",
    "encode_request",
    "read_manifest_bytes",
]

MAX_NODES = 4096  # far more than any proof of a 2^64-block tree needs (at most ~130)


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
    flags = (
        (1 if m.block else 0)
        | (2 if m.hash else 0)
        | (4 if m.seek else 0)
        | (8 if m.upgrade else 0)
        | (16 if m.manifest else 0)
        | (32 if m.priority else 0)
    )
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


def decode_request(data: bytes) -> Request:
    r = Reader(data)
    flags = r.uint()
    rid = r.uint()
    fork = r.uint()
    block = RequestBlock(r.uint(), r.uint()) if flags & 1 else None
    hash_ = RequestBlock(r.uint(), r.uint()) if flags & 2 else None
    seek = RequestSeek(r.uint(), r.uint()) if flags & 4 else None
    upgrade = RequestUpgrade(r.uint(), r.uint()) if flags & 8 else None
    priority = r.uint() if flags & 32 else 0
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


def encode_data(m: Data) -> bytes:
    flags = (
        (1 if m.block else 0)
        | (2 if m.hash else 0)
        | (4 if m.seek else 0)
        | (8 if m.upgrade else 0)
        | (16 if m.manifest else 0)
    )
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
        flags = r.uint()
        if r.uint() != 0:
            raise DecodeError("unknown manifest hash id")
        r.uint()  # quorum
        r.array(_read_signer, 64)
        if flags & 2:
            r.fixed(32)
            r.uint()
        if flags & 4:
            r.array(lambda rr: rr.fixed(32), 64)
        if flags & 8:
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
    flags = r.uint()
    request = r.uint()
    fork = r.uint()
    block = hash_ = seek = upgrade = None
    if flags & 1:
        block = DataBlock(r.uint(), r.buffer(), tuple(read_nodes(r)))
    if flags & 2:
        hash_ = DataHash(r.uint(), tuple(read_nodes(r)))
    if flags & 4:
        seek = DataSeek(r.uint(), tuple(read_nodes(r)))
    if flags & 8:
        upgrade = DataUpgrade(
            r.uint(), r.uint(), tuple(read_nodes(r)), tuple(read_nodes(r)), r.buffer()
        )
    manifest = read_manifest_bytes(r) if flags & 16 else None
    r.done()
    return Data(request, fork, block, hash_, seek, upgrade, manifest)

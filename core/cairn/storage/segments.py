"""Segments: a log's blocks as rows of many, decoded, and the process-wide pool that caches them.

A segment is one ``segments`` row: the data of blocks start .. start+count-1 back to back, their
sizes (u32 each), their leaf hashes (32 bytes each) and the parent tree nodes made with them,
packed as :data:`NODE_STRUCT`. :class:`Segment` decodes a row; the pool keeps the decoded
segments of every open log under one memory budget and tells a :class:`SegmentOwner` (the log
storage) when it lets one go. No SQL here: the seam is the decoded row.
"""

from __future__ import annotations

import itertools
import struct
import sys
from array import array
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from cairn.errors import StorageError
from cairn.messages import Node

__all__ = [
    "NODE_STRUCT",
    "POOL",
    "Segment",
    "SegmentOwner",
    "limit_segment_cache",
    "pack_nodes",
]

NODE_STRUCT = _NODE = struct.Struct("<QQ32s")  # a packed tree node: index, size, hash

_SEGMENT_CACHE = 32 << 20  # bytes of decoded segments kept, all logs of the process together
_SEGMENT_COUNT = 8192  # and at most this many of them


def pack_nodes(nodes: Iterable[Node]) -> bytes:
    return b"".join(_NODE.pack(n.index, n.size, n.hash) for n in nodes)


class SegmentOwner(Protocol):
    """Whoever keeps segments in the pool: told when the pool lets one of them go."""

    def forget_segment(self, start: int) -> None: ...


class Segment:
    """A decoded ``segments`` row: blocks start .. start+count-1 and the nodes made with them."""

    __slots__ = ("_nodes", "_packed", "_pos", "count", "data", "hashes", "offsets", "start")

    def __init__(
        self,
        path: Path,
        start: int,
        count: int,
        sizes: bytes,
        hashes: bytes,
        data: bytes,
        nodes: bytes,
    ) -> None:
        if (
            count <= 0
            or len(sizes) != 4 * count
            or len(hashes) != 32 * count
            or len(nodes) % _NODE.size
        ):
            raise StorageError(f"{path}: segment at block {start} is damaged")
        lengths = array("I")
        lengths.frombytes(sizes)
        if sys.byteorder != "little":  # pragma: no cover - every board we ship to is LE
            lengths.byteswap()
        offsets = [0, *itertools.accumulate(lengths)]
        if offsets[-1] != len(data):
            raise StorageError(f"{path}: segment at block {start} is damaged (sizes)")
        self.start = start
        self.count = count
        self.offsets = offsets
        self.hashes = hashes
        self.data = data
        self._packed = nodes
        self._nodes: dict[int, Node] | None = None
        self._pos: dict[int, int] | None = None

    @property
    def cost(self) -> int:
        """About how many bytes of memory the decoded segment holds."""
        return len(self.data) + len(self.hashes) + len(self._packed) + 40 * self.count + 200

    def block(self, i: int) -> tuple[bytes, bytes]:
        j = i - self.start
        return (self.data[self.offsets[j] : self.offsets[j + 1]], self.hashes[32 * j : 32 * j + 32])

    def leaf(self, i: int) -> Node:
        j = i - self.start
        return Node(2 * i, self.offsets[j + 1] - self.offsets[j], self.hashes[32 * j : 32 * j + 32])

    def node(self, index: int) -> Node | None:
        """One parent node made with this segment, without decoding the others."""
        pos = self._pos
        if pos is None:
            # a packed node is six u64s (index, size, hash): every sixth one is an index
            words = memoryview(self._packed).cast("Q")
            indexes = words[0::6].tolist()
            if sys.byteorder != "little":  # pragma: no cover
                indexes = [int.from_bytes(i.to_bytes(8, "big"), "little") for i in indexes]
            offsets = range(0, len(self._packed), _NODE.size)
            pos = self._pos = dict(zip(indexes, offsets, strict=True))
        at = pos.get(index)
        if at is None:
            return None
        i, size, digest = _NODE.unpack_from(self._packed, at)
        return Node(i, size, digest)

    def nodes(self) -> dict[int, Node]:
        if self._nodes is None:
            self._nodes = {i: Node(i, s, h) for i, s, h in _NODE.iter_unpack(self._packed)}
        return self._nodes


class _SegmentPool:
    """Decoded segments of every open log, least recently used first, under one byte budget.

    A JS reader asks for blocks in random order and proofs hop between segments, so a log being
    served reads the same segments again and again; an edge board serves many logs, so the
    budget is shared by all of them rather than given to each.
    """

    def __init__(self) -> None:
        self.lru: OrderedDict[tuple[int, int], tuple[SegmentOwner, Segment]] = OrderedDict()
        self.cost = 0

    def touch(self, owner: SegmentOwner, start: int) -> None:
        key = (id(owner), start)
        if key in self.lru:  # (not contextlib.suppress: a served block's read comes here)
            self.lru.move_to_end(key)

    def add(self, owner: SegmentOwner, seg: Segment) -> None:
        key = (id(owner), seg.start)
        old = self.lru.pop(key, None)
        if old is not None:
            self.cost -= old[1].cost
        self.lru[key] = (owner, seg)
        self.cost += seg.cost
        self.trim()

    def trim(self) -> None:
        """Let go of the least recently used segments until within the budget."""
        while len(self.lru) > 1 and (self.cost > _SEGMENT_CACHE or len(self.lru) > _SEGMENT_COUNT):
            (_, start), (gone_owner, gone) = self.lru.popitem(last=False)
            self.cost -= gone.cost
            gone_owner.forget_segment(start)

    def holds(self, owner: SegmentOwner, start: int) -> bool:
        return (id(owner), start) in self.lru

    def drop(self, owner: SegmentOwner, starts: Iterable[int]) -> None:
        for start in starts:
            old = self.lru.pop((id(owner), start), None)
            if old is not None:
                self.cost -= old[1].cost


POOL = _SegmentPool()  # every open log's decoded segments, under one budget per process


def limit_segment_cache(max_bytes: int, max_count: int) -> None:
    """Set the process-wide budget of decoded segments (default 32 MiB, 8,192 segments): an
    edge board with little memory keeps less; a gateway serving many readers keeps more."""
    global _SEGMENT_CACHE, _SEGMENT_COUNT
    if max_bytes < 0 or max_count < 1:
        raise ValueError("the segment cache needs a budget >= 0 and room for one segment")
    _SEGMENT_CACHE, _SEGMENT_COUNT = max_bytes, max_count
    POOL.trim()

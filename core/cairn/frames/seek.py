"""Frames in a log: :func:`frame_at` reads and decodes one block, :func:`seek_time` finds by time.

The log is anything with ``length`` and ``get(index)`` (:class:`BlockSource`; :class:`cairn.log.Log`
has both), so seeking is tested on a list and used on a replica that holds only some blocks.
"""

from __future__ import annotations

import math
from typing import Protocol

from cairn.errors import DecodeError
from cairn.frames.model import Frame

__all__ = ["BlockSource", "frame_at", "seek_time"]

class BlockSource(Protocol):
    """What :func:`seek_time` and :func:`frame_at` need of a log; :class:`cairn.log.Log` has it."""

    @property
    def length(self) -> int: ...

    def get(self, index: int) -> bytes: ...


def frame_at(log: BlockSource, index: int) -> Frame:
    """The frame in block ``index`` of ``log``.

    Raises :class:`~cairn.errors.NotAvailableError` (from ``log.get``) when the block is not
    held, and :class:`DecodeError` naming the index when the block is not a valid frame.
    """
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"index must be a non-negative int, got {index!r}")
    data = log.get(index)
    try:
        return Frame.decode(data)
    except DecodeError as exc:
        raise DecodeError(f"block {index} is not a valid frame: {exc}") from exc


def seek_time(log: BlockSource, t: float) -> int:
    """The index of the first block whose frame has a sample at or after ``t`` (end >= ``t``).

    Returns ``log.length`` when there is none. A binary search: at most
    ``ceil(log2(length + 1))`` block reads. It is exact when the log's frames are in time
    order, meaning both their start and their end times never decrease from one block to the
    next (frames may overlap). On a log out of that order the result is some index in
    ``0..length``, not necessarily the first match.

    Raises :class:`~cairn.errors.NotAvailableError` (its message names the block) when a block
    the search needs is not held, and :class:`DecodeError` when one is not a valid frame.
    """
    if math.isnan(t):
        raise ValueError("t must not be NaN")
    lo, hi = 0, log.length
    while lo < hi:
        mid = (lo + hi) // 2
        if frame_at(log, mid).end >= t:
            hi = mid
        else:
            lo = mid + 1
    return lo

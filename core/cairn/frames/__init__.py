"""Frames: the block format of a stream's log (DESIGN.md, decision 5).

A block is a *frame*: the samples of one stream appended in one commit, encoded as a SenML CBOR
pack (RFC 8428, section 6) with a base time, so any SenML decoder reads a block. A 1 Hz sensor
gets one sample per block, a 100 Hz one about a hundred.

- :class:`Sample` is one reading: name, unit, time (seconds since the Unix epoch, UTC), value.
- :class:`Frame` is a non-empty tuple of samples; :meth:`Frame.encode` gives the same bytes for
  the same frame every time (deterministic CBOR), :meth:`Frame.decode` reads any SenML CBOR pack
  within Cairn's bounds and raises only :class:`~cairn.errors.DecodeError` on anything else.
- :func:`seek_time` finds, in O(log n) block reads, the first block of a log whose frame has a
  sample at or after a given time; :func:`frame_at` reads and decodes one block.

The rooms: ``model`` (Sample, Frame, encoding, bounds), ``decode`` (the full decoder and the
entry point), ``fast`` (the fast path for packs as Cairn writes them), ``seek`` (frames in a
log). The byte layout and the exact rules are in ``docs/frames.md``.
"""

from cairn.frames.model import (
    MAX_FRAME_BYTES,
    MAX_NAME_LENGTH,
    MAX_RECORDS,
    MAX_UNIT_LENGTH,
    Frame,
    Sample,
    Value,
)
from cairn.frames.seek import BlockSource, frame_at, seek_time

__all__ = [
    "MAX_FRAME_BYTES",
    "MAX_NAME_LENGTH",
    "MAX_RECORDS",
    "MAX_UNIT_LENGTH",
    "BlockSource",
    "Frame",
    "Sample",
    "Value",
    "frame_at",
    "seek_time",
]

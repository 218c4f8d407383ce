"""Watermark records: a gateway tells the edges how far it has safely stored each stream.

One signed mutable DHT record per gateway (hyperdht ``mutable_put``, at most 1,000 bytes), under
a key pair derived from the gateway's seed. The value is CBOR::

    {0: 1, 1: time (whole seconds), 2: {log discovery key, first 8 bytes: stored up to}}

"stored up to N" means the gateway durably holds every block below N of that log. An edge
configured to wait for some gateways clears block data below the lowest of their watermarks.
What does not fit in 1,000 bytes (about 70 streams) is left out, the oldest entries first; a
stream left out simply keeps its data on the edge.
"""

from __future__ import annotations

from collections.abc import Mapping

import cbor2

from cairn.errors import DecodeError

__all__ = ["MAX_VALUE", "WatermarkError", "decode_watermarks", "encode_watermarks"]

MAX_VALUE = 1000
PREFIX = 8


class WatermarkError(DecodeError, ValueError):
    """A watermark record that is not one: says what is wrong."""


def encode_watermarks(time: int, marks: Mapping[bytes, int]) -> bytes:
    """The record's value for ``marks`` (discovery key -> stored up to); the highest
    watermarks first when they do not all fit (those are the ones that free the most)."""
    items = sorted(((dk[:PREFIX], n) for dk, n in marks.items() if n > 0),
                   key=lambda kv: -kv[1])
    while True:
        value = cbor2.dumps({0: 1, 1: time, 2: dict(items)})
        if len(value) <= MAX_VALUE:
            return value
        items.pop()


def decode_watermarks(value: bytes) -> tuple[int, dict[bytes, int]]:
    """(time, {discovery key prefix: stored up to}); :class:`WatermarkError` if malformed."""
    if len(value) > MAX_VALUE:
        raise WatermarkError(f"{len(value)} bytes: a watermark record is at most {MAX_VALUE}")
    try:
        doc = cbor2.loads(value)
    except (cbor2.CBORDecodeError, ValueError, RecursionError) as exc:
        raise WatermarkError(f"not CBOR: {exc}") from None
    if not isinstance(doc, dict) or doc.get(0) != 1 or not isinstance(doc.get(1), int):
        raise WatermarkError("not a version 1 watermark record")
    marks = doc.get(2, {})
    if not isinstance(marks, dict) or not all(
            isinstance(k, bytes) and len(k) == PREFIX and isinstance(v, int) and v >= 0
            for k, v in marks.items()):
        raise WatermarkError("bad watermark entries")
    return doc[1], dict(marks)

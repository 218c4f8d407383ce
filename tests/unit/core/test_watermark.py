"""Watermark records: round trip, the 1,000-byte limit, hostile values."""

from __future__ import annotations

import cbor2
import pytest

from cairn.fleet.watermark import MAX_VALUE, WatermarkError, decode_watermarks, encode_watermarks


def test_round_trip_and_the_limit() -> None:
    marks = {bytes([k]) * 32: 1000 + k for k in range(5)}
    t, got = decode_watermarks(encode_watermarks(1_764_000_000, marks))
    assert t == 1_764_000_000 and got == {k[:8]: v for k, v in marks.items()}
    many = {k.to_bytes(8, "big") + bytes(24): k for k in range(1, 500)}
    value = encode_watermarks(1, many)
    assert len(value) <= MAX_VALUE
    kept = decode_watermarks(value)[1]
    assert 60 <= len(kept) < 499 and min(kept.values()) > 499 - len(kept)  # highest kept
    assert decode_watermarks(encode_watermarks(1, {b"x" * 32: 0}))[1] == {}  # nothing stored


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"\xff", "not CBOR"),
        (cbor2.dumps({0: 2, 1: 1}), "not a version 1"),
        (cbor2.dumps({0: 1, 1: 1, 2: {b"short": 3}}), "bad watermark entries"),
        (cbor2.dumps({0: 1, 1: 1, 2: {b"x" * 8: -1}}), "bad watermark entries"),
        (b"\x00" * 1001, "at most 1000"),
    ],
)
def test_hostile_records(value: bytes, message: str) -> None:
    with pytest.raises(WatermarkError, match=message):
        decode_watermarks(value)

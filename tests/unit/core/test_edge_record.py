"""The device's DHT record: sealed stream keys, the 1,000-byte limit, hostile values."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cairn.crypto import key_pair
from cairn.fleet.record import (
    MAX_VALUE,
    DeviceRecord,
    LatestReading,
    RecordError,
    decode_record,
    encode_record,
)

T = 1_764_000_000
GW1, GW2, OTHER = key_pair(bytes([1]) * 32), key_pair(bytes([2]) * 32), key_pair(b"\x03" * 32)


def record(n: int, readings: int | None = None) -> DeviceRecord:
    names = [f"board-{k // 5}/temperature-{k % 5}" for k in range(n)]
    return DeviceRecord(
        time=T, address=("192.168.1.20", 49800),
        streams=[(name, bytes([k]) * 32) for k, name in enumerate(names)],
        readings=[LatestReading(name, T - k, 20.0 + k) for k, name in
                  enumerate(names[: n if readings is None else readings])])


def test_gateways_open_the_keys_and_nobody_else_does() -> None:
    rec = record(4)
    value = encode_record(rec, [GW1.public_key, GW2.public_key])
    for gw in (GW1, GW2):
        got = decode_record(value, gw)
        assert got.streams == rec.streams and got.address == rec.address
        assert got.readings == rec.readings
    stranger = decode_record(value, OTHER)
    assert [k for _, k in stranger.streams] == [None] * 4  # names public, keys not
    assert [n for n, _ in stranger.streams] == [n for n, _ in rec.streams]
    assert all(k not in value for _, k in rec.streams if k is not None)


def test_a_public_fleet_shows_the_keys() -> None:
    rec = record(3)
    assert decode_record(encode_record(rec, None)).streams == rec.streams


def test_what_does_not_fit_is_left_out_and_counted() -> None:
    rec = record(40)
    value = encode_record(rec, [GW1.public_key])
    assert len(value) <= MAX_VALUE
    got = decode_record(value, GW1)
    kept = len(got.streams)
    assert kept + got.streams_omitted == 40
    assert len(got.readings) + got.readings_omitted == 40
    assert got.readings == rec.readings[: len(got.readings)]  # the newest first


@given(n=st.integers(0, 60), r=st.integers(0, 60), gateways=st.integers(0, 6),
       name_len=st.integers(1, 60))
def test_every_record_fits(n: int, r: int, gateways: int, name_len: int) -> None:
    rec = DeviceRecord(time=T, address=("10.0.0.1", 1),
                       streams=[(f"{'x' * name_len}{k}", bytes(32)) for k in range(n)],
                       readings=[LatestReading(f"{'x' * name_len}{k}", T, float(k))
                                 for k in range(min(n, r))])
    keys = [key_pair(bytes([g + 10]) * 32).public_key for g in range(gateways)]
    value = encode_record(rec, keys)
    assert len(value) <= MAX_VALUE
    got = decode_record(value, key_pair(bytes([10]) * 32) if gateways else None)
    assert len(got.streams) + got.streams_omitted == n


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"", "not CBOR"),
        (b"\xff" * 10, "not CBOR"),
        (cbor2.dumps([1, 2]), "not a version 1"),
        (cbor2.dumps({0: 2, 1: T}), "not a version 1"),
        (cbor2.dumps({0: 1, 1: "now"}), "bad time"),
        (cbor2.dumps({0: 1, 1: T, 2: ["h", 70000]}), "bad replication address"),
        (cbor2.dumps({0: 1, 1: T, 3: ["a"], 4: b"short"}), "bytes of keys for 1 streams"),
        (cbor2.dumps({0: 1, 1: T, 3: ["a"], 5: [[5, 0, 1.0]]}), "bad reading"),
        (cbor2.dumps({0: 1, 1: T, 3: ["a"], 5: [[0, 0, [1]]]}), "bad reading"),
        (cbor2.dumps({0: 1, 1: T, 6: -1}), "bad counts"),
        (cbor2.dumps({0: 1, 1: T, 4: 7}), "bad keys field"),
        (b"\x00" * 1001, "at most 1000"),
    ],
)
def test_hostile_records_are_refused(value: bytes, message: str) -> None:
    with pytest.raises(RecordError, match=message):
        decode_record(value, GW1)

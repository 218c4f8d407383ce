"""Frames: SenML CBOR packs as log blocks, their decoder's strictness, and seek by time."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cairn.crypto import key_pair
from cairn.errors import DecodeError, NotAvailableError
from cairn.frames import (
    MAX_FRAME_BYTES,
    MAX_RECORDS,
    Frame,
    Sample,
    Value,
    frame_at,
    seek_time,
)
from cairn.log import Log
from cairn.messages import Request, RequestBlock, RequestUpgrade

# SenML CBOR labels (RFC 8428, table 4), spelled out so the tests do not trust the module's.
BVER, BN, BT, BU, BV, BS = -1, -2, -3, -4, -5, -6
N, U, V, VS, VB, S, T, UT, VD = 0, 1, 2, 3, 4, 5, 6, 7, 8

#: Seeded and with no example database: the same examples on every run and machine.
SEEDED = settings(
    derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

TEMP = "urn:dev:ow:10e2073a01080063:temp"
T0 = 1_700_000_000.0


def pack(*records: dict[Any, Any]) -> bytes:
    return cbor2.dumps(list(records))


def sample_types(frame: Frame) -> list[type]:
    return [type(s.value) for s in frame.samples]


# -- strategies -----------------------------------------------------------------------------------

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9\-:./_]{0,11}", fullmatch=True)
units = st.none() | st.sampled_from(["Cel", "%RH", "Pa", "m/s"]) | st.text(min_size=1, max_size=6)
times = st.floats(allow_nan=False, allow_infinity=False) | st.floats(T0 - 1e6, T0 + 1e6)
values: st.SearchStrategy[Value] = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**70), 2**70).map(float),
    st.booleans(),
    st.text(max_size=20),
    st.binary(max_size=20),
)


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    count = draw(st.integers(1, 12))
    # Often one name / one unit for the whole frame, so bn and bu are exercised too.
    name = draw(st.none() | names)
    unit = draw(st.none() | units)
    samples = [
        Sample(
            name if name is not None else draw(names),
            unit if unit is not None else draw(units),
            draw(times),
            draw(values),
        )
        for _ in range(count)
    ]
    return Frame(tuple(samples))


# -- Sample and Frame -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": 3}, "name"),
        ({"name": "x" * 257}, "name"),
        ({"name": "a\ud800"}, "name"),
        ({"unit": ""}, "unit"),
        ({"unit": b"Cel"}, "unit"),
        ({"unit": "u" * 65}, "unit"),
        ({"time": math.nan}, "time"),
        ({"time": math.inf}, "time"),
        ({"time": -math.inf}, "time"),
        ({"time": "1700000000"}, "time"),
        ({"time": True}, "time"),
        ({"time": 10**400}, "time"),
        ({"value": math.nan}, "value"),
        ({"value": math.inf}, "value"),
        ({"value": -math.inf}, "value"),
        ({"value": 10**400}, "value"),
        ({"value": None}, "value"),
        ({"value": [1.0]}, "value"),
        ({"value": "\udfff"}, "value"),
    ],
)
def test_invalid_sample_raises_value_error_naming_the_field(
    kwargs: dict[str, Any], field: str
) -> None:
    good: dict[str, Any] = {"name": TEMP, "unit": "Cel", "time": T0, "value": 21.5}
    with pytest.raises(ValueError, match=f"^{field} "):
        Sample(**(good | kwargs))


def test_sample_normalises_numbers_and_bytes() -> None:
    s = Sample("n", None, 5, 7)
    assert s.time == 5.0 and type(s.time) is float
    assert s.value == 7.0 and type(s.value) is float
    assert math.copysign(1.0, Sample("n", None, -0.0, 1.0).time) == 1.0
    assert Sample("n", None, 0.0, True).value is True  # bool stays bool, not 1.0
    assert Sample("n", None, 0.0, bytearray(b"ab")).value == b"ab"  # type: ignore[arg-type]
    assert type(Sample("n", None, 0.0, memoryview(b"ab")).value) is bytes  # type: ignore[arg-type]
    assert Sample("n", "Cel", 1.0, 2.0) == Sample("n", "Cel", 1.0, 2.0)
    with pytest.raises(AttributeError):
        s.value = 3.0  # type: ignore[misc]


def test_frame_validation_start_and_end() -> None:
    with pytest.raises(ValueError, match=r"^samples must not be empty"):
        Frame(())
    with pytest.raises(ValueError, match=r"^samples\[1\]"):
        Frame((Sample("a", None, 0.0, 1.0), "b"))  # type: ignore[arg-type]
    one = Sample("a", None, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"^samples has 100001 items"):
        Frame((one,) * (MAX_RECORDS + 1))
    frame = Frame([Sample("a", None, t, 1.0) for t in (5.0, 2.0, 9.0, 3.0)])  # type: ignore[arg-type]
    assert isinstance(frame.samples, tuple)
    assert (frame.start, frame.end) == (2.0, 9.0)


def test_encode_refuses_a_frame_larger_than_the_bound() -> None:
    big = Frame((Sample("blob", None, T0, bytes(MAX_FRAME_BYTES)),))
    with pytest.raises(ValueError, match="at most"):
        big.encode()


# -- encoding -------------------------------------------------------------------------------------


@SEEDED
@given(frames())
def test_round_trip_and_deterministic(frame: Frame) -> None:
    data = frame.encode()
    decoded = Frame.decode(data)
    assert decoded == frame
    assert sample_types(decoded) == sample_types(frame)  # 1.0 == True in Python: check types too
    assert data == frame.encode()
    assert decoded.encode() == data
    assert Frame(tuple(frame.samples)).encode() == data
    assert (decoded.start, decoded.end) == (frame.start, frame.end)


def test_known_frame_is_a_senml_pack_with_base_time() -> None:
    frame = Frame(tuple(Sample(TEMP, "Cel", T0 + i, 21.5 + i / 8) for i in range(3)))
    records = cbor2.loads(frame.encode())
    assert records == [
        {BN: TEMP, BU: "Cel", BT: T0, V: 21.5},
        {T: 1.0, V: 21.625},
        {T: 2.0, V: 21.75},
    ]
    # Numbers are CBOR floats, so a SenML reader sees the same doubles.
    assert all(type(r[V]) is float for r in records)


def test_known_frame_bytes_are_stable() -> None:
    """The example in docs/frames.md: a change here changes every stored block's hash."""
    frame = Frame(tuple(Sample(TEMP, "Cel", T0 + i, 21.5 + i / 8) for i in range(3)))
    assert frame.encode().hex() == (
        "83a402f94d6021782075726e3a6465763a6f773a313065323037336130313038303036333a74656d70"
        "22fa4ecaa7e2236343656ca202f94d6806f93c00a202f94d7006f94000"
    )


def test_mixed_names_units_and_value_kinds() -> None:
    frame = Frame(
        (
            Sample("a", "Cel", T0, 1.5),
            Sample("b", None, T0 - 2, True),
            Sample("c", "%RH", T0, "text"),
            Sample("d", None, T0 + 0.25, b"\x00\xff"),
        )
    )
    assert cbor2.loads(frame.encode()) == [
        {BT: T0, N: "a", U: "Cel", V: 1.5},
        {T: -2.0, N: "b", VB: True},
        {N: "c", U: "%RH", VS: "text"},
        {T: 0.25, N: "d", VD: b"\x00\xff"},
    ]


def test_times_that_do_not_subtract_exactly_get_a_new_base_time() -> None:
    # 1e300 + (0.1 - 1e300) == 0.0, not 0.1: the second record restarts from a new bt
    frame = Frame(
        (Sample("x", None, 1e300, 1.0), Sample("x", None, 0.1, 2.0), Sample("x", None, 0.35, 3.0))
    )
    records = cbor2.loads(frame.encode())
    assert records[0] == {BN: "x", BT: 1e300, V: 1.0}
    assert records[1] == {BT: 0.1, V: 2.0}
    assert records[2] == {T: 0.35 - 0.1, V: 3.0}
    assert Frame.decode(frame.encode()) == frame


# -- decoding packs from other writers ------------------------------------------------------------


def test_decodes_a_pack_whose_base_fields_change_mid_pack() -> None:
    data = pack(
        {BN: "urn:dev:ow:10e2073a01080063:", BT: 1.320067464e9, BU: "%RH", N: "humidity", V: 20},
        {N: "humidity", T: 60, V: 20.3},
        {N: "temp", U: "Cel", T: 60, V: 23.1},  # u overrides bu for this record only
        {N: "humidity", T: 120, V: 20.7},
        {BN: "urn:dev:ow:10e2073a0108006:", BT: 1.3200675e9, BU: "Cel", N: "temp", V: 22},
        {N: "temp", T: -5, V: 21.9},
        {BU: "lon", N: "pos", V: 24.30621},
        {N: "door", VB: True},
        {BN: "", N: "fw", VS: "1.2.3"},
        {N: "raw", VD: b"\x01\x02"},
    )
    frame = Frame.decode(data)
    dev, dev2 = "urn:dev:ow:10e2073a01080063:", "urn:dev:ow:10e2073a0108006:"
    assert frame.samples == (
        Sample(dev + "humidity", "%RH", 1.320067464e9, 20.0),
        Sample(dev + "humidity", "%RH", 1.320067524e9, 20.3),
        Sample(dev + "temp", "Cel", 1.320067524e9, 23.1),
        Sample(dev + "humidity", "%RH", 1.320067584e9, 20.7),
        Sample(dev2 + "temp", "Cel", 1.3200675e9, 22.0),
        Sample(dev2 + "temp", "Cel", 1.320067495e9, 21.9),
        Sample(dev2 + "pos", "lon", 1.3200675e9, 24.30621),
        Sample(dev2 + "door", "lon", 1.3200675e9, True),
        Sample("fw", "lon", 1.3200675e9, "1.2.3"),
        Sample("raw", "lon", 1.3200675e9, b"\x01\x02"),
    )
    assert type(frame.samples[0].value) is float
    assert frame.samples[7].value is True
    assert (frame.start, frame.end) == (1.320067464e9, 1.320067584e9)


def test_decodes_the_other_forms_senml_cbor_allows() -> None:
    records = [
        {BVER: 10, BN: "s", BT: 100, BV: 1000, V: 5, UT: 60, "note": [1, {"x": None}]},
        {T: 1, V: cbor2.CBORTag(4, [-2, 25])},  # decimal fraction: 0.25
        {T: 2.5, V: -1000, BV: 0},
    ]
    expected = (
        Sample("s", None, 100.0, 1005.0),
        Sample("s", None, 101.0, 1000.25),
        Sample("s", None, 102.5, -1000.0),
    )
    assert Frame.decode(cbor2.dumps(records)).samples == expected
    # indefinite-length arrays, maps and strings
    assert Frame.decode(cbor2.dumps(records, indefinite_containers=True)).samples == expected
    # [{_ n: (_ "s"), v: 5.0}]: an indefinite map holding an indefinite (chunked) text string
    chunked = bytes.fromhex("81 bf 00 7f6173ff 02 f94500 ff".replace(" ", ""))
    assert Frame.decode(chunked) == Frame((Sample("s", None, 0.0, 5.0),))
    # the self-described CBOR tag in front of the pack
    assert Frame.decode(b"\xd9\xd9\xf7" + cbor2.dumps(records)).samples == expected
    # no bt at all: times are t, absolute (not relative to "now", see docs/frames.md)
    assert Frame.decode(pack({N: "a", T: 5, V: 1.0})).samples == (Sample("a", None, 5.0, 1.0),)
    assert Frame.decode(bytearray(pack({N: "a", V: 1.0}))).start == 0.0


# -- decoding refuses -----------------------------------------------------------------------------


GOOD = Frame(tuple(Sample(TEMP, "Cel", T0 + i, 20.0 + i) for i in range(3))).encode()

REJECTED: list[tuple[bytes, str]] = [
    (b"", "truncated"),
    (b"\xff", "a SenML pack is a CBOR array"),
    (b"hello", "a SenML pack is a CBOR array"),
    (cbor2.dumps({N: "a", V: 1.0}), "a SenML pack is a CBOR array, got CBOR major type 5"),
    (cbor2.dumps([]), "the pack is empty"),
    (b"\x9f\xff", "the pack is empty"),
    (cbor2.dumps([1]), "record 0 is int, not a map"),
    (pack({N: "a", V: 1.0}, {N: "b"}), r"record 1: no value"),
    (pack({N: "a", V: 1.0, VS: "x"}), "more than one value"),
    (pack({N: "a", 99: 1, V: 1.0}), "unknown SenML label 99"),
    (pack({N: "a", 1.5: 1, V: 1.0}), "label 1.5 is float"),
    (pack({N: "a", b"k": 1, V: 1.0}), "is bytes"),
    (pack({N: "a", V: "x"}), "v must be a number"),
    (pack({N: "a", V: None}), "v must be a number"),
    (pack({N: "a", V: True}), "v must be a number"),
    (pack({N: "a", VB: 1}), "vb must be a boolean"),
    (pack({N: "a", VD: "x"}), "vd must be a byte string"),
    (pack({N: "a", VS: b"x"}), "vs must be a text string"),
    (pack({N: 3, V: 1.0}), "n must be a text string"),
    (pack({N: "a", U: 3, V: 1.0}), "u must be a text string"),
    (pack({N: "a", V: math.nan}), "v is not a finite number"),
    (pack({N: "a", V: math.inf}), "v is not a finite number"),
    (pack({N: "a", BV: 1e308, V: 1e308}), "bv \\+ v is not finite"),
    (pack({N: "a", BT: math.inf, V: 1.0}), "bt is not a finite number"),
    (pack({N: "a", T: -math.inf, V: 1.0}), "t is not a finite number"),
    (pack({N: "a", BT: 1e308, T: 1e308, V: 1.0}), "bt \\+ t is not finite"),
    (pack({N: "a", UT: math.nan, V: 1.0}), "ut is not a finite number"),
    (pack({V: 1.0}), "name must not be empty"),
    (pack({N: "x" * 257, V: 1.0}), "name has 257 characters"),
    (pack({N: "a", U: "", V: 1.0}), "unit must not be empty"),
    (pack({N: "a", S: 1.0, V: 1.0}), "sum"),
    (pack({BS: 1.0, N: "a", V: 1.0}), "sum"),
    (pack({N: "a", "unit_": "x", V: 1.0}), "must-understand"),
    (pack({BVER: 11, N: "a", V: 1.0}), "version 11"),
    (pack({BVER: "10", N: "a", V: 1.0}), "version"),
    (pack({N: "a", V: cbor2.CBORTag(1, 0)}), "CBOR tag 1 "),
    (pack({N: "a", V: 2**70}), "CBOR tag 2 "),  # bignum
    (pack({N: "a", V: cbor2.CBORTag(4, [400, 1])}), "v is not a finite number"),
    (pack({N: "a", V: cbor2.CBORTag(4, [0, 1.5])}), "decimal fraction"),
    (pack({N: "a", V: cbor2.CBORTag(4, [0, 2**70])}), "decimal fraction"),
    (pack({N: "a", V: cbor2.undefined}), "simple value"),
    (pack({N: "a", V: cbor2.CBORSimpleValue(99)}), "simple value"),
    (bytes.fromhex("81d81c81d81d00"), "CBOR tag 28"),  # shared reference: a cycle in cbor2
    (bytes.fromhex("d9d9f7d9d9f781a20061610201"), "a SenML pack is a CBOR array"),
    (bytes.fromhex("81a2006161020100"), "1 bytes after the pack"),
    (GOOD + b"\x00", "1 bytes after the pack"),
    (GOOD[:-1], "truncated"),
    (GOOD[:1], "truncated"),
    (bytes.fromhex("81a200"), "truncated"),
    (bytes.fromhex("81ba00000001"), "truncated"),
    (bytes.fromhex("82a1006161ff"), "break outside"),
    (bytes.fromhex("81bf00ff"), "key without a value"),
    (bytes.fromhex("811c"), "reserved"),
    (bytes.fromhex("811f"), "indefinite length"),
    (bytes.fromhex("81a2007f4161ff0201"), "bad chunk"),
    (bytes.fromhex("81a20062fffe0201"), "invalid CBOR"),  # not UTF-8
    (bytes.fromhex("81a30061610201006162"), "invalid CBOR"),  # duplicate key
    (b"\x81" * 10_000 + b"\x00", "nests more than 8"),
    (pack({N: "a", V: 1.0, "ext": [[[[[[[1]]]]]]]}), "nests more than 8"),
    (b"\x9a\x00\x01\x86\xa1", "at most 100000"),
    (b"\x9f" + b"\xa0" * (MAX_RECORDS + 1) + b"\xff", "more than 100000 records"),
    (bytes(MAX_FRAME_BYTES + 1), "at most 16777216"),
]


@pytest.mark.parametrize(
    ("data", "message"), REJECTED, ids=[f"{i}:{m[:30]}" for i, (_, m) in enumerate(REJECTED)]
)
def test_decode_rejects(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        Frame.decode(data)


def test_decode_refuses_non_bytes_as_a_caller_bug() -> None:
    with pytest.raises(TypeError):
        Frame.decode("[]")  # type: ignore[arg-type]


def test_pack_of_the_maximum_size_decodes() -> None:
    frame = Frame(tuple(Sample("s", "Cel", T0 + i / 100, float(i % 7)) for i in range(MAX_RECORDS)))
    assert Frame.decode(frame.encode()) == frame


def decode_or_decode_error(data: bytes) -> Frame | None:
    try:
        frame = Frame.decode(data)
    except DecodeError:
        return None
    assert isinstance(frame, Frame)
    return frame


@settings(SEEDED, max_examples=500)
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes_raise_only_decode_error(data: bytes) -> None:
    decode_or_decode_error(data)


@settings(SEEDED, max_examples=300)
@given(st.binary(min_size=1, max_size=60))
def test_fuzz_bytes_behind_an_array_head(tail: bytes) -> None:
    # Random bytes rarely start with an array; these always do, to reach deeper into the decoder.
    decode_or_decode_error(b"\x81" + tail)
    decode_or_decode_error(b"\x81\xa2" + tail)


@settings(SEEDED, max_examples=300)
@given(frames(), st.data())
def test_fuzz_mutated_encodings(frame: Frame, data: st.DataObject) -> None:
    encoded = frame.encode()
    i = data.draw(st.integers(0, len(encoded) - 1))
    flipped = bytearray(encoded)
    flipped[i] ^= data.draw(st.integers(1, 255))
    decode_or_decode_error(bytes(flipped))
    decode_or_decode_error(encoded[:i])
    inserted = data.draw(st.binary(min_size=1, max_size=4))
    decode_or_decode_error(encoded[:i] + inserted + encoded[i:])
    decode_or_decode_error(encoded[:i] + encoded[i + 1 :])


cbor_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.sampled_from([N, U, V, VS, VB, T, BN, BT, BU, BV, BVER, 99]),
)
cbor_values = st.recursive(
    cbor_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from([BN, BT, BU, BV, N, U, V, VS, VB, VD, T, UT, 1.0, "x"]),
            inner,
            max_size=5,
        ),
        st.builds(cbor2.CBORTag, st.sampled_from([0, 1, 2, 4, 25, 28, 29, 258, 55799]), inner),
    ),
    max_leaves=20,
)


@settings(SEEDED, max_examples=500)
@given(st.lists(cbor_values, max_size=5))
def test_fuzz_structured_cbor(value: list[Any]) -> None:
    try:
        data = cbor2.dumps(value)
    except Exception:  # some generated trees are not encodable (e.g. bad tag contents)
        return
    decode_or_decode_error(data)


# -- the fast path (packs as Frame.encode writes them) agrees with the full decoder ---------------


def exact(frame: Frame) -> list[tuple[object, ...]]:
    """A frame's samples with their types and float signs (True == 1.0 and 0.0 == -0.0)."""
    return [(s.name, s.unit, repr(s.time), type(s.value), repr(s.value)) for s in frame.samples]


def agree(data: bytes) -> bool:
    """The fast path's answer, when it gives one, is the full decoder's; True if it gave one."""
    from cairn.frames.decode import full_decode
    from cairn.frames.fast import fast_decode

    fast = fast_decode(data)
    if fast is None:
        return False
    full = full_decode(data)  # raises if the fast path took what the full decoder refuses
    assert exact(fast) == exact(full), data.hex()
    assert (fast.start, fast.end) == (full.start, full.end)
    return True


@settings(SEEDED, max_examples=400)
@given(frames(), st.data())
def test_the_fast_path_agrees_with_the_full_decoder(frame: Frame, data: st.DataObject) -> None:
    encoded = frame.encode()
    assert agree(encoded) == (len(frame.samples) <= 23)  # every pack Cairn writes, up to 23
    i = data.draw(st.integers(0, len(encoded) - 1))
    flipped = bytearray(encoded)
    flipped[i] ^= data.draw(st.integers(1, 255))
    agree(bytes(flipped))
    agree(encoded[:i])
    agree(encoded[:i] + data.draw(st.binary(min_size=1, max_size=4)) + encoded[i:])


fast_records = st.dictionaries(
    st.sampled_from([BN, BT, BU, BV, N, U, V, VS, VB, VD, T, UT, BVER]),
    st.one_of(st.none(), st.booleans(), st.integers(-(2**66), 2**66), st.floats(),
              st.text(max_size=6), st.binary(max_size=4), names),
    max_size=6,
)


@settings(SEEDED, max_examples=1500)
@given(st.lists(fast_records, max_size=4), st.sampled_from([False, True]))
def test_the_fast_path_agrees_on_any_pack_of_flat_records(records: list[dict[int, Any]],
                                                          canonical: bool) -> None:
    agree(cbor2.dumps(records, canonical=canonical))


def test_the_fast_path_declines_what_it_does_not_read() -> None:
    from cairn.frames.fast import fast_decode

    good = {BN: TEMP, BT: T0, V: 1.5}
    assert fast_decode(pack(good)) is not None
    declined = [
        b"\xd9\xd9\xf7" + pack(good),  # the self-describe tag
        cbor2.dumps([good] * 24),  # more than 23 records
        pack({**good, BVER: 10}),  # a label it does not read
        pack({**good, "x": 1}),  # an extension field
        pack({**good, V: math.nan}),  # refused by the full decoder
        pack({BN: TEMP, BT: T0, V: 1.5, VS: "x"}),  # two values
        pack({BN: TEMP, BT: T0}),  # no value
        pack({BN: TEMP, BT: T0, BV: math.inf, VS: "x"}),  # a base value that is not finite
        pack({BN: "bad name!", BT: T0, V: 1.0}),
        pack(good) + b"\x00",  # trailing bytes
        bytes.fromhex("81a3") + bytes.fromhex("21") + b"\x7f" + b"ab\xff",  # indefinite text
    ]
    for data in declined:
        assert fast_decode(data) is None, data.hex()


# -- reading frames from a log --------------------------------------------------------------------


def make_frames(rng: random.Random, count: int) -> list[Frame]:
    """Frames in time order (start and end never decrease), with overlaps, ties and big ones."""
    out: list[Frame] = []
    start, end = T0, T0
    for k in range(count):
        if k:
            start += rng.choice([0.0, 0.0, 0.01, 0.25, 1.0, 3.7, 60.0])
            end = max(end, start + rng.choice([0.0, 0.5, 1.0, 2.5, 10.0]))
        n = rng.choice([1, 1, 2, 3, 100, 250])
        if n == 1:
            start = end  # a lone sample must not end before the frame before it
            ts = [end]
        else:
            ts = [start, end] + [rng.uniform(start, end) for _ in range(n - 2)]
            ts.sort()
            if rng.random() < 0.2:
                rng.shuffle(ts)
        out.append(Frame(tuple(Sample("s", "Cel", t, rng.uniform(-40, 85)) for t in ts)))
    for a, b in itertools.pairwise(out):
        assert a.start <= b.start and a.end <= b.end
    assert any(b.start < a.end for a, b in itertools.pairwise(out)) or count < 20
    return out


def linear_seek(frames: list[Frame], t: float) -> int:
    return next((i for i, f in enumerate(frames) if f.end >= t), len(frames))


class CountingLog:
    """A log that records which blocks are read."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.reads: list[int] = []

    @property
    def length(self) -> int:
        return self.log.length

    def get(self, index: int) -> bytes:
        self.reads.append(index)
        return self.log.get(index)


def query_times(rng: random.Random, frames: list[Frame]) -> list[float]:
    qs = [-math.inf, math.inf, frames[0].start - 1, frames[-1].end + 1, frames[-1].end]
    for f in frames:
        for b in (f.start, f.end):
            qs += [b, math.nextafter(b, -math.inf), math.nextafter(b, math.inf)]
        qs.append((f.start + f.end) / 2)
    qs += [rng.uniform(frames[0].start - 5, frames[-1].end + 5) for _ in range(300)]
    return qs


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Log]:
    with Log.create(tmp_path / "x.db", key_pair(bytes(32))) as log:
        yield log


@pytest.mark.parametrize("count", [1, 2, 3, 7, 64, 150])
def test_seek_time_matches_a_linear_scan(writer: Log, count: int) -> None:
    rng = random.Random(count)
    frames = make_frames(rng, count)
    for f in frames:  # one commit per frame, as the edge agent appends them
        writer.append([f.encode()])
    assert writer.length == count
    assert [frame_at(writer, i) for i in range(count)] == frames
    counting = CountingLog(writer)
    bound = math.ceil(math.log2(count + 1))
    for t in query_times(rng, frames):
        counting.reads.clear()
        assert seek_time(counting, t) == linear_seek(frames, t), t
        assert len(counting.reads) <= bound


def test_seek_time_on_an_empty_log_and_bad_input(writer: Log) -> None:
    assert seek_time(writer, T0) == 0
    writer.append([Frame((Sample("s", None, T0, 1.0),)).encode()])
    with pytest.raises(ValueError, match="NaN"):
        seek_time(writer, math.nan)
    with pytest.raises(ValueError, match="index"):
        frame_at(writer, -1)
    with pytest.raises(NotAvailableError, match="block 1 "):
        frame_at(writer, 1)


def test_a_block_that_is_not_a_frame_is_a_decode_error_naming_it(writer: Log) -> None:
    writer.append([Frame((Sample("s", None, T0, 1.0),)).encode(), b"not a frame"])
    with pytest.raises(DecodeError, match=r"^block 1 is not a valid frame"):
        frame_at(writer, 1)
    with pytest.raises(DecodeError, match=r"^block 1 "):
        seek_time(writer, T0 + 1)


def test_seek_time_on_a_sparse_replica(tmp_path: Path, writer: Log) -> None:
    rng = random.Random(7)
    frames = make_frames(rng, 40)
    writer.append([f.encode() for f in frames])

    def path_of(t: float) -> tuple[int, list[int]]:
        counting = CountingLog(writer)
        found = seek_time(counting, t)
        return found, counting.reads

    late = frames[-1].end + 1  # the search goes right: mid, then higher blocks
    early = frames[0].start - 1  # the search goes left: the same mid, then lower blocks
    late_found, late_path = path_of(late)
    early_found, early_path = path_of(early)
    assert (late_found, early_found) == (40, 0)
    assert late_path[0] == early_path[0] and late_path[1] != early_path[1]

    with Log.replica(tmp_path / "r.db", writer.key) as replica:
        for n, i in enumerate(late_path):
            first = n == 0  # the first request also fetches the signed length and the manifest
            request = Request(
                block=RequestBlock(i, replica.missing_nodes(2 * i)),
                upgrade=RequestUpgrade(0, writer.length) if first else None,
                manifest=first,
            )
            replica.verify_and_apply(writer.proof(request))
        assert replica.length == writer.length
        assert all(replica.has(i) for i in late_path)
        assert seek_time(replica, late) == late_found
        missing = early_path[1]
        assert not replica.has(missing)
        with pytest.raises(NotAvailableError, match=f"^block {missing} is not held"):
            seek_time(replica, early)


@pytest.mark.parametrize("bad", ["", ":x", "temp erature", "caf\u00e9", "a\nb", "-a"])
def test_sample_names_follow_senml(bad: str) -> None:
    with pytest.raises(ValueError, match=r"^name"):
        Sample(bad, "Cel", 1.0, 20.5)


def test_a_pack_with_a_non_senml_name_is_refused() -> None:
    import cbor2

    with pytest.raises(DecodeError, match="name"):
        Frame.decode(cbor2.dumps([{-2: "bad name", 2: 1.0, -3: 1.0}]))

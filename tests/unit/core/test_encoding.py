from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cairn.encoding import Reader, decode_all, encode_uint, uint_size
from cairn.errors import DecodeError
from cairn.messages import (
    Data,
    DataBlock,
    DataHash,
    DataSeek,
    DataUpgrade,
    Node,
    Request,
    RequestBlock,
    RequestSeek,
    RequestUpgrade,
    decode_data,
    decode_request,
    encode_data,
    encode_request,
)


@pytest.mark.parametrize(
    ("n", "wire"),
    [
        (0, "00"),
        (0xFC, "fc"),
        (0xFD, "fdfd00"),
        (0xFFFF, "fdffff"),
        (0x10000, "fe00000100"),
        (2**32, "ff0000000001000000"),
    ],
)
def test_uint_known_bytes(n: int, wire: str) -> None:
    assert encode_uint(n).hex() == wire
    assert uint_size(n) == len(wire) // 2
    assert decode_all(bytes.fromhex(wire), Reader.uint) == n


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_uint_roundtrip(n: int) -> None:
    assert decode_all(encode_uint(n), Reader.uint) == n


def test_uint_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="negative"):
        encode_uint(-1)
    with pytest.raises(ValueError, match="out of range"):
        encode_uint(2**64)


def test_truncated_and_trailing() -> None:
    with pytest.raises(DecodeError, match="truncated"):
        decode_all(b"\xfd\x01", Reader.uint)
    with pytest.raises(DecodeError, match="trailing"):
        decode_all(b"\x01\x02", Reader.uint)


hashes = st.binary(min_size=32, max_size=32)
nodes = st.builds(Node, st.integers(0, 2**40), st.integers(0, 2**40), hashes)
node_tuples = st.lists(nodes, max_size=5).map(tuple)
u = st.integers(0, 2**50)

requests = st.builds(
    Request,
    u,
    u,
    st.none() | st.builds(RequestBlock, u, st.integers(0, 64)),
    st.none() | st.builds(RequestBlock, u, st.integers(0, 64)),
    st.none() | st.builds(RequestSeek, u, st.integers(0, 8)),
    st.none() | st.builds(RequestUpgrade, u, u),
    st.booleans(),
    st.integers(0, 5),
)

datas = st.builds(
    Data,
    u,
    u,
    st.none() | st.builds(DataBlock, u, st.binary(min_size=1, max_size=64), node_tuples),
    st.none() | st.builds(DataHash, u, node_tuples),
    st.none() | st.builds(DataSeek, u, node_tuples),
    st.none()
    | st.builds(
        DataUpgrade, u, u, node_tuples, node_tuples, st.none() | st.binary(min_size=64, max_size=68)
    ),
    st.none() | st.just(bytes.fromhex("010000010100") + bytes(64)),
)


@given(requests)
def test_request_roundtrip(m: Request) -> None:
    assert decode_request(encode_request(m)) == m


@given(datas)
def test_data_roundtrip(m: Data) -> None:
    assert decode_data(encode_data(m)) == m


@given(st.binary(max_size=300))
def test_decoders_raise_only_decode_error(data: bytes) -> None:
    # the property: nothing but DecodeError escapes a decoder fed arbitrary bytes
    for decode in (decode_data, decode_request):
        with contextlib.suppress(DecodeError):
            decode(data)


@given(datas, st.data())
def test_mutated_data_raises_only_decode_error(m: Data, draw: st.DataObject) -> None:
    wire = bytearray(encode_data(m))
    pos = draw.draw(st.integers(0, len(wire) - 1))
    wire[pos] ^= draw.draw(st.integers(1, 255))
    cut = draw.draw(st.integers(0, len(wire)))
    for candidate in (bytes(wire), bytes(wire[:cut])):
        with contextlib.suppress(DecodeError):
            decode_data(candidate)

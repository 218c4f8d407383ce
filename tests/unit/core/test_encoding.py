from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cairn.encoding import Reader, decode_all, encode_uint, uint_size
from cairn.errors import DecodeError
from cairn.messages import (
    Bitfield,
    Cancel,
    ChannelHandshake,
    Data,
    DataBlock,
    DataHash,
    DataSeek,
    DataUpgrade,
    Extension,
    NoData,
    Node,
    Range,
    Request,
    RequestBlock,
    RequestSeek,
    RequestUpgrade,
    Sync,
    Want,
    decode_bitfield,
    decode_cancel,
    decode_data,
    decode_extension,
    decode_handshake,
    decode_no_data,
    decode_range,
    decode_request,
    decode_sync,
    decode_want,
    encode_bitfield,
    encode_cancel,
    encode_data,
    encode_extension,
    encode_handshake,
    encode_no_data,
    encode_range,
    encode_request,
    encode_sync,
    encode_want,
    pack_flags,
    unpack_flags,
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


# -- flags and the channel's other messages ------------------------------------------------------


def test_flag_bits_are_in_argument_order() -> None:
    assert pack_flags() == 0
    assert pack_flags(True, False, True) == 0b101
    assert pack_flags(None, b"x", 0, 7) == 0b1010  # truthiness, as the codecs use it
    assert unpack_flags(0b101, 3) == (True, False, True)
    assert unpack_flags(0b11111, 2) == (True, True)  # higher bits ignored


@given(st.lists(st.booleans(), max_size=64))
def test_flags_roundtrip(flags: list[bool]) -> None:
    assert unpack_flags(pack_flags(*flags), len(flags)) == tuple(flags)


uints = st.integers(0, 2**53)
channel_messages = st.one_of(
    st.builds(ChannelHandshake, st.binary(min_size=32, max_size=32), st.booleans()),
    st.builds(Sync, uints, uints, uints, st.booleans(), st.booleans(), st.booleans(),
              st.booleans(), st.booleans()),
    st.builds(Cancel, uints),
    st.builds(NoData, uints, uints),
    st.builds(Want, uints, uints, st.booleans()),
    st.builds(Range, uints, uints, st.booleans()),
    st.builds(Bitfield, uints, st.lists(st.integers(0, 2**32 - 1), max_size=8).map(tuple)),
    st.builds(Extension, st.text(max_size=20), st.binary(max_size=40)),
)
CODECS: dict[type, tuple[Callable[[Any], bytes], Callable[[bytes], object]]] = {
    ChannelHandshake: (encode_handshake, decode_handshake),
    Sync: (encode_sync, decode_sync),
    Cancel: (encode_cancel, decode_cancel),
    NoData: (encode_no_data, decode_no_data),
    Want: (encode_want, decode_want),
    Range: (encode_range, decode_range),
    Bitfield: (encode_bitfield, decode_bitfield),
    Extension: (encode_extension, decode_extension),
}


@given(channel_messages)
def test_channel_message_roundtrip(m: object) -> None:
    encode, decode = CODECS[type(m)]
    assert decode(encode(m)) == m


def test_channel_message_known_bytes() -> None:
    # hypercore 11's bytes: flags first (sync, range) or trailing and optional (no-data, want)
    assert encode_sync(Sync(1, 48, 12, can_upgrade=True, has_manifest=True)).hex() == "0b01300c"
    assert encode_range(Range(3, 1, drop=True)).hex() == "0303"
    assert encode_range(Range(0, 48)).hex() == "000030"
    assert encode_no_data(NoData(7)).hex() == "0700"
    assert encode_no_data(NoData(7, 2)).hex() == "070102"
    assert encode_want(Want(0, 1024)).hex() == "00fd0004"
    assert encode_want(Want(0, 1024, any=True)).hex() == "00fd000401"
    assert encode_handshake(ChannelHandshake(bytes(32), seeks=True)).hex() == "01" + "00" * 32


def _data_field_by_field(m: Data) -> bytes:
    """encode_data as the schema reads, one field after another (its plain block answer is a
    shortcut that must give these bytes)."""
    from cairn.encoding import write_array, write_buffer, write_uint
    from cairn.messages import write_node

    out = bytearray()
    write_uint(out, pack_flags(m.block, m.hash, m.seek, m.upgrade, m.manifest))
    write_uint(out, m.request)
    write_uint(out, m.fork)
    assert m.block is not None
    write_uint(out, m.block.index)
    write_buffer(out, m.block.value)
    write_array(out, m.block.nodes, write_node)
    if m.manifest:
        out += m.manifest
    return bytes(out)


@given(st.builds(Data, u, u,
                 st.builds(DataBlock, u, st.none() | st.binary(max_size=300), node_tuples),
                 manifest=st.none() | st.just(bytes.fromhex("010000010100") + bytes(64))))
def test_block_answer_bytes_as_field_by_field(m: Data) -> None:
    assert encode_data(m) == _data_field_by_field(m)


def _request_field_by_field(wire: bytes) -> Request:
    r = Reader(wire)
    assert r.uint() == 1
    rid, fork, index, nodes = (r.uint() for _ in range(4))
    r.done()
    return Request(rid, fork, RequestBlock(index, nodes))


@given(u | st.integers(0, 0xFFFF), u | st.integers(0, 0xFFFF), u | st.integers(0, 0xFFFF),
       st.integers(0, 64), st.binary(max_size=3), st.integers(0, 12))
def test_plain_block_request_read_as_field_by_field(rid: int, fork: int, index: int, nodes: int,
                                                    tail: bytes, cut: int) -> None:
    """A request with only a block is read by a shortcut; it must read what the general
    reader reads, and refuse (DecodeError) what it refuses, truncated or with trailing bytes."""
    from cairn import messages

    wire = encode_request(Request(rid, fork, RequestBlock(index, nodes))) + tail
    wire = wire[:len(wire) - cut] if cut < len(wire) else wire
    got = messages._plain_block_request(wire)
    try:
        want: object = _request_field_by_field(wire)
    except DecodeError:
        want = DecodeError
    if got is not None:
        assert got == want
    if max(rid, fork, index) <= 0xFFFF and not tail and not cut:
        assert got is not None  # (the shortcut is taken for what a downloader sends)
    try:
        decoded: object = decode_request(wire)
    except DecodeError:
        decoded = DecodeError
    assert decoded == want

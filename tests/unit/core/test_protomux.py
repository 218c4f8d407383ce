"""Protomux: the codec (byte layouts, round trips, fuzzing) and two Mux cores talking in memory."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cairn.crypto import discovery_key
from cairn.errors import DecodeError, LocalError, RemoteError
from cairn.replication.protomux import (
    ChannelClosed,
    ChannelLimitError,
    ChannelMessage,
    ChannelOpened,
    ChannelRejected,
    Close,
    Data,
    Frame,
    Mux,
    MuxError,
    MuxEvent,
    Open,
    Reject,
    decode_message,
    encode_frame,
    encode_frames,
)

# -- byte layouts --------------------------------------------------------------------------


def test_open_for_a_hypercore_has_the_documented_layout() -> None:
    dk = discovery_key(bytes(32))
    handshake = b"\x01" + bytes(range(32))  # flags, capability
    wire = encode_frame(Open(1, "hypercore/alpha", dk, handshake))
    assert wire == b"\x00\x01\x01\x0fhypercore/alpha\x20" + dk + handshake
    assert decode_message(wire) == [Open(1, "hypercore/alpha", dk, handshake)]


def test_control_and_data_layouts() -> None:
    assert encode_frame(Open(2, "p")) == b"\x00\x01\x02\x01p\x00"
    assert encode_frame(Reject(3)) == b"\x00\x02\x03"
    assert encode_frame(Close(300)) == b"\x00\x03\xfd\x2c\x01"
    assert encode_frame(Data(5, 9, b"xyz")) == b"\x05\x09xyz"
    with pytest.raises(ValueError, match="control channel"):
        encode_frame(Data(0, 1, b""))


def test_batch_layout_switches_channel_with_a_zero_length() -> None:
    frames: list[Frame] = [Data(1, 0, b"a"), Data(1, 1, b"bc"), Data(2, 0, b""), Close(1)]
    wire = encode_frames(frames)
    assert wire == (
        b"\x00\x00\x01"  # batch, first channel 1
        b"\x02\x00a"  # length 2: type 0, "a"
        b"\x03\x01bc"
        b"\x00\x02"  # next channel 2
        b"\x01\x00"
        b"\x00\x00"  # next channel 0 (control)
        b"\x02\x03\x01"  # close 1
    )
    assert decode_message(wire) == frames


def test_decoder_details_shared_with_js() -> None:
    assert decode_message(b"") == []  # JS ignores empty messages
    assert decode_message(b"\x00\x07junk") == []  # unknown control types are skipped
    assert decode_message(b"\x00\x03\x04trailing") == [Close(4)]
    # an open with an empty id buffer is an open without id
    assert decode_message(b"\x00\x01\x01\x01p\x00hs") == [Open(1, "p", None, b"hs")]
    # a batch inside a batch is decoded (JS does), to a bounded depth
    inner = encode_frames([Data(1, 0, b"x"), Data(2, 0, b"y")])[1:]
    outer = b"\x00\x00\x00" + bytes([len(inner)]) + inner
    assert decode_message(outer) == [Data(1, 0, b"x"), Data(2, 0, b"y")]
    body = b"\x00\x00"  # type batch, channel 0, no entries
    for _ in range(6):
        body = b"\x00\x00" + bytes([len(body)]) + body  # a batch whose one entry is `body`
    with pytest.raises(DecodeError, match="nested"):
        decode_message(b"\x00" + body)
    assert decode_message(b"\x00\x00\x00\x02\x00\x00") == []  # two levels are fine
    with pytest.raises(DecodeError, match="overruns"):
        decode_message(b"\x00\x00\x01\x05\x00a")
    with pytest.raises(DecodeError):
        decode_message(b"\x00\x01\x01\x02\xff\xfe")  # protocol is not UTF-8


# -- properties ----------------------------------------------------------------------------

ids = st.integers(min_value=0, max_value=2**64 - 1)
channels = st.integers(min_value=1, max_value=2**64 - 1)
payloads = st.binary(max_size=64)
frames_st: st.SearchStrategy[Frame] = st.one_of(
    st.builds(Data, channels, ids, payloads),
    st.builds(
        Open,
        ids,
        st.text(max_size=20),
        st.one_of(st.none(), st.binary(min_size=1, max_size=40)),
        payloads,
    ),
    st.builds(Reject, ids),
    st.builds(Close, ids),
)


@given(frames_st)
def test_one_frame_survives_encode_decode(frame: Frame) -> None:
    assert decode_message(encode_frame(frame)) == [frame]


@given(st.lists(frames_st, min_size=1, max_size=8))
def test_frames_survive_encode_decode(frames: list[Frame]) -> None:
    assert decode_message(encode_frames(frames)) == frames


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_message(data)


@given(st.lists(st.binary(max_size=40), max_size=10))
def test_a_mux_fed_arbitrary_messages_raises_only_remote_errors(messages: list[bytes]) -> None:
    mux = Mux(max_channels=4, max_buffered=4096)
    mux.open_channel("p")
    with contextlib.suppress(RemoteError):
        for message in messages:
            receive(mux, message)


@given(st.lists(frames_st, max_size=12))
def test_a_mux_fed_well_formed_frames_raises_only_remote_errors(frames: list[Frame]) -> None:
    mux = Mux(max_channels=4, max_buffered=4096)
    mux.open_channel("p")
    with contextlib.suppress(RemoteError):
        for frame in frames:
            receive(mux, encode_frame(frame))


# -- two muxes -----------------------------------------------------------------------------


def events(mux: Mux) -> list[MuxEvent]:
    """The events the mux holds, in order."""
    out: list[MuxEvent] = []
    while (event := mux.next_event()) is not None:
        out.append(event)
    return out


def receive(mux: Mux, message: bytes) -> list[MuxEvent]:
    """Feed one message; the events the mux then holds."""
    mux.receive_data(message)
    return events(mux)


def exchange(a: Mux, b: Mux) -> tuple[list[MuxEvent], list[MuxEvent]]:
    """Deliver queued messages both ways until quiet; the events each side saw."""
    seen_a: list[MuxEvent] = events(a)
    seen_b: list[MuxEvent] = events(b)
    while True:
        to_b, to_a = a.data_to_send(), b.data_to_send()
        if not to_a and not to_b:
            return seen_a, seen_b
        for message in to_b:
            seen_b += receive(b, message)
        for message in to_a:
            seen_a += receive(a, message)


def test_open_accept_message_close() -> None:
    a, b = Mux(), Mux()
    ca = a.open_channel("cairn/test", b"id", b"hs-a")
    _, seen_b = exchange(a, b)
    assert seen_b == [ChannelOpened(ca, "cairn/test", b"id", b"hs-a", None)]

    cb = b.open_channel("cairn/test", b"id", b"hs-b")
    seen_a, seen_b = exchange(a, b)
    assert seen_a == [ChannelOpened(cb, "cairn/test", b"id", b"hs-b", ca)]
    assert seen_b == []

    a.send(ca, 0, b"to b")
    b.send(cb, 3, b"to a")
    b.send_batch([(cb, 1, b"one"), (cb, 2, b"two")])
    seen_a, seen_b = exchange(a, b)
    assert seen_b == [ChannelMessage(cb, 0, b"to b")]
    assert seen_a == [
        ChannelMessage(ca, 3, b"to a"),
        ChannelMessage(ca, 1, b"one"),
        ChannelMessage(ca, 2, b"two"),
    ]

    a.close(ca)
    seen_a, seen_b = exchange(a, b)
    assert seen_b == [ChannelClosed(cb, ca)]
    with pytest.raises(LocalError):
        a.send(ca, 0, b"")
    with pytest.raises(LocalError):
        b.send(cb, 0, b"")
    # both ids are free again and get reused
    assert a.open_channel("again") == ca


def test_simultaneous_opens_pair_with_each_other() -> None:
    a, b = Mux(), Mux()
    ca = a.open_channel("p", None, b"A")
    cb = b.open_channel("p", None, b"B")
    seen_a, seen_b = exchange(a, b)
    assert seen_a == [ChannelOpened(cb, "p", None, b"B", ca)]
    assert seen_b == [ChannelOpened(ca, "p", None, b"A", cb)]


def test_messages_before_accept_are_held_then_delivered() -> None:
    a, b = Mux(), Mux()
    ca = a.open_channel("p")
    a.send(ca, 0, b"early 1")
    a.send_batch([(ca, 0, b"early 2"), (ca, 1, b"early 3")])
    _, seen_b = exchange(a, b)
    assert [type(e) for e in seen_b] == [ChannelOpened]
    cb = b.open_channel("p")
    assert events(b) == [
        ChannelMessage(cb, 0, b"early 1"),
        ChannelMessage(cb, 0, b"early 2"),
        ChannelMessage(cb, 1, b"early 3"),
    ]


def test_reject_frees_the_channel() -> None:
    a, b = Mux(), Mux()
    ca = a.open_channel("unwanted")
    a.send(ca, 0, b"held")
    _, seen_b = exchange(a, b)
    opened = seen_b[0]
    assert isinstance(opened, ChannelOpened)
    b.reject(opened.remote_id)
    seen_a, _ = exchange(a, b)
    assert seen_a == [ChannelRejected(ca)]
    with pytest.raises(LocalError):
        a.send(ca, 0, b"")
    with pytest.raises(LocalError):
        b.reject(opened.remote_id)
    assert a.open_channel("next") == ca  # the id came back


def test_closing_before_the_peer_answers_keeps_the_id_until_it_does() -> None:
    a, b = Mux(), Mux()
    ca = a.open_channel("p")
    a.close(ca)
    assert a.open_channel("q") != ca  # still reserved
    _, seen_b = exchange(a, b)
    # b saw the open, then the close of a channel it never accepted, and answered with a reject
    assert seen_b[0] == ChannelOpened(ca, "p", None, b"", None)
    assert ChannelClosed(None, ca) in seen_b
    assert a.open_channel("r") == ca  # the reject freed it


def test_the_peers_open_answers_a_channel_we_closed() -> None:
    a, b = Mux(), Mux()
    ca = a.open_channel("p")
    b.open_channel("p")  # crosses a's open
    a.close(ca)
    seen_a, seen_b = exchange(a, b)
    assert seen_a == []  # a's channel was already closed; the open only freed its id
    assert [type(e) for e in seen_b] == [ChannelOpened, ChannelClosed]
    assert a.open_channel("r") == ca


def test_messages_on_unknown_or_closed_channels_are_ignored() -> None:
    a = Mux()
    assert receive(a, encode_frame(Data(7, 0, b"nobody"))) == []
    assert receive(a, encode_frame(Close(9))) == []


def test_protocol_violations_are_remote_errors() -> None:
    a = Mux()
    receive(a, encode_frame(Open(1, "p")))
    with pytest.raises(MuxError, match="not free"):
        receive(a, encode_frame(Open(1, "p")))  # id 1 is busy
    with pytest.raises(MuxError, match="not free"):
        receive(Mux(), encode_frame(Open(2, "p")))  # ids grow by one
    with pytest.raises(MuxError, match="awaits no answer"):
        receive(Mux(), encode_frame(Reject(1)))


def test_an_open_of_the_control_channel_is_rejected() -> None:
    a = Mux()
    assert receive(a, encode_frame(Open(0, "p"))) == []
    assert a.data_to_send() == [encode_frame(Reject(0))]


def test_max_channels_is_named_when_exceeded() -> None:
    a = Mux(max_channels=3)
    for i in range(1, 4):
        receive(a, encode_frame(Open(i, f"p{i}")))
    with pytest.raises(ChannelLimitError, match="max_channels=3"):
        receive(a, encode_frame(Open(4, "p4")))
    b = Mux(max_channels=2)
    b.open_channel("x")
    b.open_channel("y")
    with pytest.raises(LocalError, match="max_channels"):
        b.open_channel("z")


def test_buffered_bytes_for_unaccepted_channels_are_capped() -> None:
    a = Mux(max_buffered=2000)
    receive(a, encode_frame(Open(1, "p")))
    receive(a, encode_frame(Data(1, 0, bytes(900))))
    with pytest.raises(ChannelLimitError, match="max_buffered=2000"):
        receive(a, encode_frame(Data(1, 0, bytes(200))))


def test_buffer_accounting_returns_after_accept_and_reject() -> None:
    a = Mux(max_buffered=2000)
    receive(a, encode_frame(Open(1, "p")))
    receive(a, encode_frame(Data(1, 0, bytes(900))))
    a.open_channel("p")
    receive(a, encode_frame(Open(2, "q")))
    receive(a, encode_frame(Data(2, 0, bytes(900))))
    a.reject(2)
    receive(a, encode_frame(Open(2, "r")))
    receive(a, encode_frame(Data(2, 0, bytes(900))))  # fits again


def test_local_misuse_is_a_local_error() -> None:
    a = Mux()
    with pytest.raises(LocalError):
        a.send(1, 0, b"")
    with pytest.raises(LocalError):
        a.close(1)
    with pytest.raises(LocalError):
        a.send_batch([(1, 0, b"")])
    with pytest.raises(ValueError, match="max_channels"):
        Mux(max_channels=0)

"""UDX without sockets: the header codec, and two StreamCores through an in-memory lossy link
on a simulated clock (seeded), so loss, reordering, wrap-around and timeouts run in seconds."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cairn.errors import DecodeError, LocalError
from cairn.udx import (
    Packet,
    PacketType,
    StreamClosed,
    StreamCore,
    StreamData,
    StreamEnded,
    StreamMessage,
    decode,
    encode,
    is_udx,
    seq_diff,
)
from cairn.udx.packet import encode_plain
from cairn.udx.stream import MAX_RTO_TIMEOUTS, MTU_BASE, MTU_MAX

# -- the codec ---------------------------------------------------------------------------------

u32 = st.integers(0, 2**32 - 1)


@given(
    kind=st.sampled_from([PacketType.DATA, PacketType.END, PacketType.ACK, PacketType.MESSAGE,
                          PacketType.DATA | PacketType.END, PacketType.DESTROY]),
    stream_id=u32, window=u32, seq=u32, ack=u32,
    data=st.binary(max_size=1400), padding=st.integers(0, 64),
)
def test_packet_round_trip(kind: PacketType, stream_id: int, window: int, seq: int, ack: int,
                           data: bytes, padding: int) -> None:
    packet = Packet(kind, stream_id, window, seq, ack, (), data, padding)
    wire = encode(packet)
    assert len(wire) == packet.size
    assert is_udx(wire)
    assert decode(wire) == packet


@given(kind=st.integers(0, 63).filter(lambda k: not k & PacketType.SACK), stream_id=u32,
       window=u32, seq=u32, ack=u32, data=st.binary(max_size=1400))
def test_the_plain_encoder_agrees_with_the_full_one(kind: int, stream_id: int, window: int,
                                                    seq: int, ack: int, data: bytes) -> None:
    """The sender's fast path (no SACKs, no padding) writes what :func:`encode` writes."""
    wire = encode_plain(kind, stream_id, window, seq, ack, data)
    assert wire == encode(Packet(kind, stream_id, window, seq, ack, (), data))
    assert decode(wire) == Packet(kind, stream_id, window, seq, ack, (), data)


@given(datagram=st.binary(min_size=20, max_size=200))
def test_decode_of_any_bytes_raises_only_decode_error(datagram: bytes) -> None:
    try:
        packet = decode(b"\xff\x01" + datagram[2:])
    except DecodeError:
        return
    assert packet.size == len(datagram)  # every byte is header, SACKs, padding or data


@given(sacks=st.lists(st.tuples(u32, u32), min_size=1, max_size=50))
def test_sack_round_trip(sacks: list[tuple[int, int]]) -> None:
    packet = Packet(PacketType.SACK, 7, 100, 1, 2, tuple(sacks))
    assert decode(encode(packet)) == packet


def test_header_bytes_match_the_table() -> None:
    wire = encode(Packet(PacketType.DATA, 0x01020304, 0x10, 5, 6, (), b"hi"))
    assert wire.hex() == "ff0101000403020110000000050000000600000068" + "69"


@given(st.binary(max_size=300))
def test_decode_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(b"\xff\x01" + data)


@pytest.mark.parametrize(
    ("wire", "words"),
    [
        (b"\xff\x01", "shorter than the header"),
        (b"\xfe\x01" + bytes(18), "not a udx packet"),
        (b"\xff\x01\x40\x00" + bytes(16), "unknown bits"),
        (b"\xff\x01\x01\x09" + bytes(16) + b"abc", "data offset 9 is beyond"),
        (b"\xff\x01\x04\x00" + bytes(16) + bytes(12), "not whole blocks"),
        (b"\xff\x01\x04\x00" + bytes(16) + bytes(8 * 51), "51 sack blocks"),
        (b"\xff\x01\x00\x00" + bytes(2100), "over 2048"),
    ],
)
def test_decode_names_the_fault(wire: bytes, words: str) -> None:
    with pytest.raises(DecodeError, match=words):
        decode(wire)


def test_seq_diff_wraps() -> None:
    assert seq_diff(0, 2**32 - 1) == 1
    assert seq_diff(2**32 - 1, 0) == -1
    assert seq_diff(5, 5) == 0
    assert seq_diff(2**31 - 1, 0) == 2**31 - 1


# -- two cores through a simulated link -------------------------------------------------------


@dataclass
class Link:
    """Two cores, a clock, and a link that drops, duplicates, delays and reorders (seeded)."""

    a: StreamCore
    b: StreamCore
    rng: random.Random = field(default_factory=lambda: random.Random(1))
    loss: float = 0.0
    duplicate: float = 0.0
    jitter: float = 0.0
    delay: float = 0.01
    max_size: int = 10_000  # datagrams over this are dropped (a path MTU)
    now: float = 0.0
    flight: list[tuple[float, int, str, bytes]] = field(default_factory=list)
    received: dict[str, bytearray] = field(default_factory=lambda: {"a": bytearray(),
                                                                      "b": bytearray()})
    events: dict[str, list[object]] = field(default_factory=lambda: {"a": [], "b": []})
    _n: int = 0
    cut: bool = False  # drop everything from b to a

    def core(self, name: str) -> StreamCore:
        return self.a if name == "a" else self.b

    def pump(self) -> None:
        for name, other in (("a", "b"), ("b", "a")):
            core = self.core(name)
            while (event := core.next_event()) is not None:
                self.events[name].append(event)
                if isinstance(event, StreamData):
                    self.received[name] += event.data
            for datagram in core.data_to_send(self.now):
                self._send(other, datagram, name)

    def _send(self, to: str, datagram: bytes, source: str) -> None:
        if len(datagram) > self.max_size or (self.cut and source == "b"):
            return
        copies = 0 if self.rng.random() < self.loss else 1
        if copies and self.rng.random() < self.duplicate:
            copies = 2
        for _ in range(copies):
            self._n += 1
            at = self.now + self.delay + self.rng.random() * self.jitter
            self.flight.append((at, self._n, to, datagram))

    def step(self) -> bool:
        """Advance to the next arrival or timer; False when nothing is left to happen."""
        self.pump()
        timers = [t for t in (self.a.timer(), self.b.timer()) if t is not None]
        arrivals = [f[0] for f in self.flight]
        if not timers and not arrivals:
            return False
        self.now = max(self.now, min(timers + arrivals))
        due = sorted(f for f in self.flight if f[0] <= self.now)
        self.flight = [f for f in self.flight if f[0] > self.now]
        for _, _, to, datagram in due:
            self.core(to).receive_data(datagram, self.now)
        for core in (self.a, self.b):
            timer = core.timer()
            if timer is not None and timer <= self.now:
                core.on_timer(self.now)
        self.pump()
        return True

    def run(self, until: float = 600.0) -> None:
        while self.now < until and self.step():
            pass


def pair(**kwargs: object) -> Link:
    seq_a = kwargs.pop("seq_a", 0)
    seq_b = kwargs.pop("seq_b", 0)
    a = StreamCore(1, 2, seq=int(seq_a), ack=int(seq_b))  # type: ignore[call-overload]
    b = StreamCore(2, 1, seq=int(seq_b), ack=int(seq_a))  # type: ignore[call-overload]
    return Link(a, b, **kwargs)  # type: ignore[arg-type]


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def test_bytes_cross_in_order_and_both_ends_close() -> None:
    link = pair()
    data = payload(300_000)
    link.a.write(data)
    link.a.end()
    link.pump()
    link.run(until=30)
    assert bytes(link.received["b"]) == data
    assert StreamEnded() in link.events["b"]
    link.b.write(b"reply")
    link.b.end()
    link.run(until=60)
    assert bytes(link.received["a"]) == b"reply"
    assert link.events["a"][-1] == StreamClosed(None)
    assert link.events["b"][-1] == StreamClosed(None)
    assert link.a.retransmits == 0


def test_a_closed_stream_acks_a_retransmitted_end() -> None:
    """Our last ack lost: the peer sends its END again; we ack it again instead of leaving the
    peer to retransmit until "peer gone"."""
    link = pair()
    link.b.end()
    link.run(until=5)
    link.a.end()
    link.run(until=10)
    assert link.a.closed and link.b.closed and link.a.error is None
    again = encode(Packet(PacketType.END, 1, 0, (link.a._recv.ack - 1) & 0xFFFFFFFF, 0))
    link.a.receive_data(again, 11.0)
    assert len(link.a.data_to_send(11.0)) == 1
    assert link.a.drops["retransmission after a clean close, acked again"] == 1
    link.a.receive_data(encode(Packet(PacketType.DATA, 1, 0, link.a._recv.ack, 0, (), b"x")),
                        11.0)
    assert link.a.drops["packet after the stream closed"] == 1


def _requests(core: StreamCore, count: int) -> None:
    """``count`` one-packet DATA requests from the peer (id 2, seq 0..) to ``core``."""
    for seq in range(count):
        core.receive_data(encode(Packet(PacketType.DATA, 1, 1 << 20, seq, 0, (), b"q")), 0.0)


def test_the_ack_of_a_request_rides_on_its_answer() -> None:
    """A request answered in the same round: one datagram (the answer carries the ack), where
    an ACK then the answer would be two; every DATA packet is still acked."""
    core = StreamCore(1, 2)
    _requests(core, 3)
    core.write(b"answer")
    out = [decode(d) for d in core.data_to_send(0.0)]
    assert [p.type for p in out] == [PacketType.ACK, PacketType.ACK, PacketType.DATA]
    assert [p.ack for p in out] == [1, 2, 3]  # the last one's ack is on the answer
    assert out[-1].data == b"answer"


def test_an_ack_goes_alone_when_nothing_else_goes_or_sacks_are_owed() -> None:
    core = StreamCore(1, 2)
    _requests(core, 1)
    assert [decode(d).type for d in core.data_to_send(0.0)] == [PacketType.ACK]
    assert core.data_to_send(0.0) == []  # owed once, sent once
    gap = StreamCore(1, 2)
    gap.receive_data(encode(Packet(PacketType.DATA, 1, 1 << 20, 2, 0, (), b"q")), 0.0)
    gap.write(b"answer")
    out = [decode(d) for d in gap.data_to_send(0.0)]
    assert [p.type for p in out] == [PacketType.SACK, PacketType.DATA]
    assert out[0].sacks == ((2, 3),)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_loss_reorder_and_duplicates_still_deliver_everything(seed: int) -> None:
    link = pair(rng=random.Random(seed), loss=0.1, duplicate=0.05, jitter=0.02)
    data = payload(400_000, seed)
    link.a.write(data)
    link.a.end()
    link.b.write(data[::-1])
    link.b.end()
    link.run(until=600)
    assert hashlib.sha256(link.received["b"]).digest() == hashlib.sha256(data).digest()
    assert bytes(link.received["a"]) == data[::-1]
    assert link.a.closed and link.a.error is None
    assert link.b.closed and link.b.error is None
    assert link.a.retransmits > 0


def test_sequence_numbers_wrap() -> None:
    link = pair(seq_a=2**32 - 100, seq_b=2**32 - 3, rng=random.Random(4), loss=0.05)
    data = payload(500_000, 4)
    link.a.write(data)
    link.a.end()
    link.b.end()
    link.run(until=600)
    assert bytes(link.received["b"]) == data
    assert link.a.seq < 1000  # wrapped
    assert link.a.error is None


def test_congestion_window_halves_on_loss_and_grows_back() -> None:
    link = pair(rng=random.Random(5), loss=0.02)
    link.a.write(payload(2_000_000, 5))
    link.a.end()
    windows: list[float] = []
    while link.step() and link.now < 600:
        windows.append(link.a.congestion.cwnd)
    assert max(windows) > 20
    assert any(later < earlier / 1.5 for earlier, later in itertools.pairwise(windows))
    assert bytes(link.received["b"]) == payload(2_000_000, 5)


def test_path_mtu_grows_to_1500_when_the_path_allows() -> None:
    link = pair()
    data = payload(1_500_000, 6)
    for start in range(0, len(data), 30_000):  # a writer that keeps the stream busy a while
        link.a.write(data[start:start + 30_000])
        link.run(until=link.now + 0.05)
    link.run(until=60)
    assert link.a.mtu == MTU_MAX  # one 32-byte step per probe acked
    assert bytes(link.received["b"]) == data


def test_path_mtu_stops_below_a_smaller_path() -> None:
    link = pair(max_size=1300 - 28)  # a path of MTU 1300
    data = payload(600_000, 7)
    link.a.write(data)
    link.a.end()
    link.b.end()
    link.run(until=300)
    assert bytes(link.received["b"]) == data
    assert MTU_BASE < link.a.mtu <= 1300


def test_a_peer_that_stops_acknowledging_closes_the_stream_peer_gone() -> None:
    link = pair()
    link.a.write(payload(100_000, 8))
    link.run(until=0.5)
    link.cut = True
    link.a.write(payload(5_000_000, 9))
    link.run(until=1000)
    closed = link.events["a"][-1]
    assert isinstance(closed, StreamClosed)
    assert closed.error is not None and closed.error.startswith("peer gone")
    # 1 + 2 + 4 + 8 + 16 + 30 s of doubling timeouts at the most
    assert link.now < 0.5 + 1 + 2 + 4 + 8 + 16 + 32
    assert link.a.write_buffered == 0  # nothing kept after the close
    assert link.a.timer() is None
    assert MAX_RTO_TIMEOUTS == 6


def test_messages_are_unreliable_datagrams() -> None:
    link = pair()
    link.a.send_message(b"ping")
    link.pump()
    link.run(until=1)
    assert StreamMessage(b"ping") in link.events["b"]
    with pytest.raises(LocalError, match="over"):
        link.a.send_message(bytes(2000))


def test_destroy_closes_the_peer() -> None:
    link = pair()
    link.a.write(b"x")
    link.run(until=1)
    link.a.destroy()
    link.run(until=2)
    assert link.events["a"][-1] == StreamClosed(None)
    assert link.events["b"][-1] == StreamClosed("destroyed by the peer")


def test_zero_window_waits_then_resumes() -> None:
    link = pair()
    link.b.read_buffered = link.b.window  # the reader takes nothing
    link.a.write(payload(50_000, 10))
    link.run(until=5)
    assert len(link.received["b"]) < 50_000
    link.b.read_buffered = 0
    link.b.update_window()
    link.run(until=60)
    assert len(link.received["b"]) == 50_000


@given(st.lists(st.tuples(st.integers(0, 200), st.booleans()), max_size=300),
       st.integers(0, 2**32 - 1))
def test_sack_runs_agree_with_sorting_what_is_held(moves: list[tuple[int, bool]],
                                                   start: int) -> None:
    """The receiver keeps its SACK runs incrementally (bisect); they are what sorting the held
    seqs gives, wrap-around included."""
    a = StreamCore(1, 2, ack=start)
    for ahead, in_order in moves:
        seq = (a._recv.ack + (0 if in_order else ahead)) & 0xFFFFFFFF
        a.receive_data(encode(Packet(PacketType.DATA, 1, 0, seq, 0, (), b"d")), 0.0)
        held = sorted(a._recv.held, key=lambda s: seq_diff(s, a._recv.ack))
        runs: list[tuple[int, int]] = []
        for s in held:
            if runs and runs[-1][1] == s:
                runs[-1] = (runs[-1][0], (s + 1) & 0xFFFFFFFF)
            else:
                runs.append((s, (s + 1) & 0xFFFFFFFF))
        assert a._recv.sacks() == runs[:50]


def test_write_after_end_is_a_local_error() -> None:
    core = StreamCore(1, 2)
    core.end()
    with pytest.raises(LocalError):
        core.write(b"late")

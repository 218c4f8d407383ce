"""Hostile UDX packets against a StreamCore (no sockets, seeded): every bad packet is dropped
with a counted reason, memory stays bounded, nothing raises out of receive_data, and the honest
stream beside the attack still delivers every byte in order. Plus the peer that stops
acknowledging: the stream closes with "peer gone" after the RTO limit, holding nothing."""

from __future__ import annotations

import random
import sys

from cairn.errors import LocalError
from cairn.udx import Packet, StreamClosed, StreamCore, StreamData, encode
from cairn.udx.stream import DEFAULT_WINDOW, MAX_AHEAD, MAX_RTO_TIMEOUTS
from tests.scorecard import record, scale

A, B = 1, 2  # stream ids: A is the core under attack, B its honest peer


def honest_pair() -> tuple[StreamCore, StreamCore]:
    return StreamCore(A, B), StreamCore(B, A)


def exchange(a: StreamCore, b: StreamCore, now: float) -> bytes:
    """Run the two cores (lossless, instant) until quiet; what ``a`` received."""
    got = bytearray()
    for _ in range(100_000):
        moved = False
        for src, dst in ((a, b), (b, a)):
            for datagram in src.data_to_send(now):
                dst.receive_data(datagram, now)
                moved = True
        while (event := a.next_event()) is not None:
            if isinstance(event, StreamData):
                got += event.data
        while b.next_event() is not None:
            pass
        if not moved:
            return bytes(got)
    raise AssertionError("the cores never went quiet")


def pkt(kind: int, *, seq: int = 0, ack: int = 0, window: int = DEFAULT_WINDOW,
        sacks: tuple[tuple[int, int], ...] = (), data: bytes = b"", stream_id: int = A) -> bytes:
    return encode(Packet(kind, stream_id, window, seq, ack, sacks, data))


def test_malformed_datagrams_are_dropped_and_the_stream_goes_on() -> None:
    rng = random.Random(19)
    runs = scale(5_000, 100_000)
    a, b = honest_pair()
    crashes = 0
    for _ in range(runs):
        kind = rng.choice([rng.randbytes(rng.randrange(0, 60)),
                           b"\xff\x01" + rng.randbytes(rng.randrange(0, 80)),
                           b"\xff\x01" + bytes([rng.randrange(256), rng.randrange(256)])
                           + A.to_bytes(4, "little") + rng.randbytes(rng.randrange(12, 3000))])
        try:
            a.receive_data(kind, 0.0)
        except Exception:
            crashes += 1
    data = rng.randbytes(200_000)
    b.write(data)
    got = exchange(a, b, 1.0)
    held = len(a._recv.held)
    record("udx", "malformed and random datagrams into a stream", runs, crashes, "crashes",
           detail=f"{sum(a.drops.values())} dropped, {len(a.drops)} reasons")
    assert crashes == 0
    assert got == data, "the honest bytes after the garbage"
    assert held == 0


def test_wrong_ids_windows_and_sequence_numbers_are_dropped() -> None:
    a, b = honest_pair()
    b.write(b"x" * 5000)
    exchange(a, b, 0.0)
    before = a._recv.ack
    bad = [
        pkt(1, seq=before, data=b"evil", stream_id=A + 1000),  # another stream's id
        pkt(1, seq=before + MAX_AHEAD, data=b"far"),  # beyond the receive window
        pkt(1, seq=(before + 2**31 - 1) % 2**32, data=b"wrapped"),  # half the seq space on
        pkt(16, seq=before - 5),  # a stale DESTROY
    ]
    for datagram in bad:
        a.receive_data(datagram, 1.0)
    accepted = int(a._recv.ack != before) + len(a._recv.held) + int(a.closed)
    record("udx", "packets with a wrong stream id, seq beyond the window, stale destroy",
           len(bad), accepted, "accepted", detail=str(dict(a.drops)))
    assert accepted == 0
    assert a.drops["wrong stream id"] == 1
    assert a.drops["seq beyond the receive window"] == 2
    assert a.drops["stale destroy"] == 1


def test_forged_acks_and_sacks_are_dropped() -> None:
    a, b = honest_pair()
    a.write(b"y" * 50_000)  # A sends, B is slow to ack: the forgeries target A's sender
    sent = a.data_to_send(0.0)
    assert sent
    next_seq = a.seq
    bad = [
        pkt(0, ack=next_seq + 10),  # ack of unsent data
        pkt(4, ack=0, sacks=((next_seq, next_seq + 5),)),  # sack of unsent data
        pkt(4, ack=0, sacks=((5, 3),)),  # reversed block
        pkt(4, ack=0, sacks=((3, 3),)),  # empty block
        b"\xff\x01\x04\x00" + A.to_bytes(4, "little") + bytes(12) + bytes(8 * 51),  # 51 blocks
        b"\xff\x01\x04\x00" + A.to_bytes(4, "little") + bytes(12) + bytes(13),  # ragged
    ]
    for datagram in bad:
        a.receive_data(datagram, 0.1)
    accepted = int(a.remote_acked != 0) + int(a.write_buffered != 50_000)
    record("udx", "forged acks: of unsent data, sacks out of bounds, reversed, too many",
           len(bad), accepted, "accepted", detail=str(dict(a.drops)))
    assert accepted == 0
    assert a.drops["ack of unsent data"] == 1 and a.drops["sack of unsent data"] == 1
    # the real acks still work
    for datagram in sent:
        b.receive_data(datagram, 0.2)
    exchange(b, a, 0.3)
    assert a.write_buffered == 0


def test_a_reordering_flood_costs_bounded_memory() -> None:
    a, _b = honest_pair()
    rng = random.Random(7)
    flood = scale(20_000, 200_000)
    payload = rng.randbytes(1400)
    for _ in range(flood):  # far-ahead packets that never become in order
        a.receive_data(pkt(1, seq=rng.randrange(1, MAX_AHEAD), data=payload), 0.0)
    held_bytes = a._recv.held_bytes
    over = max(0, held_bytes - DEFAULT_WINDOW)
    record("udx", "reordering flood: packets ahead of a gap that never fills", flood, over,
           "bytes held over the window", detail=f"held {len(a._recv.held)} packets, "
                                                 f"{held_bytes} bytes")
    assert over == 0
    assert len(a._recv.held) <= MAX_AHEAD
    assert sys.getsizeof(a._recv.held) < 1 << 20


def test_duplicates_are_acked_never_delivered_twice() -> None:
    a, b = honest_pair()
    b.write(b"once")
    datagram = b.data_to_send(0.0)[0]
    for _ in range(10_000):
        a.receive_data(datagram, 0.0)
    got = b"".join(e.data for e in iter(a.next_event, None) if isinstance(e, StreamData))
    record("udx", "the same data packet 10,000 times", 10_000, len(got) - 4,
           "bytes delivered twice")
    assert got == b"once"
    assert a.drops["duplicate data"] == 9_999


def test_a_peer_that_stops_acknowledging_is_declared_gone() -> None:
    a, b = honest_pair()
    a.write(b"z" * 20_000)
    now = 0.0
    exchange(b, a, now)  # connected and acked once
    a.write(b"w" * 2_000_000)
    closed_at = None
    for _ in range(1000):  # the peer never answers again: only timers move
        a.data_to_send(now)
        at = a.timer()
        if at is None:
            break
        now = at
        a.on_timer(now)
        if a.closed:
            closed_at = now
            break
    events = list(iter(a.next_event, None))
    gone = [e for e in events if isinstance(e, StreamClosed)]
    held = a.write_buffered + len(a._sent) + len(a._recv.held)
    bad = int(not gone) + int(held != 0)
    record("udx", "a peer that stops acknowledging", 1, bad, "streams left open or holding data",
           detail=f"closed after {closed_at} s: {gone[0].error if gone else '-'}")
    assert gone and gone[0].error is not None and gone[0].error.startswith("peer gone")
    assert closed_at is not None and closed_at <= 1 + 2 + 4 + 8 + 16 + 30
    assert held == 0 and a.timer() is None
    try:
        a.write(b"more")
    except LocalError:
        pass
    else:
        raise AssertionError("a write on a closed stream must be refused")
    assert MAX_RTO_TIMEOUTS == 6

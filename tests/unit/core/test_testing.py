"""The shipped test doubles in `cairn.testing` behave as their docstrings say."""

from __future__ import annotations

import pytest

from cairn.testing import (
    Datagram,
    FakeClock,
    FakeNetwork,
    SeededRandom,
    memory_stream_pair,
)

A = ("10.0.0.1", 49737)
B = ("10.0.0.2", 49737)
C = ("10.0.0.3", 49737)


# -- FakeClock ------------------------------------------------------------------------------------


def test_clock_starts_where_told_and_moves_only_on_advance() -> None:
    clock = FakeClock(start=100.0)
    assert clock.now() == 100.0
    assert clock.now() == 100.0
    clock.advance(2.5)
    assert clock.now() == 102.5
    clock.advance(0)
    assert clock.now() == 102.5


@pytest.mark.parametrize("dt", [-0.001, float("nan"), float("inf")])
def test_clock_refuses_to_go_back_or_to_nowhere(dt: float) -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="forward"):
        clock.advance(dt)
    assert clock.now() == 0.0


def test_timers_fire_in_deadline_order_with_now_at_their_deadline() -> None:
    clock = FakeClock()
    fired: list[tuple[str, float]] = []
    clock.call_at(3.0, lambda: fired.append(("c", clock.now())))
    clock.call_at(1.0, lambda: fired.append(("a", clock.now())))
    clock.call_at(2.0, lambda: fired.append(("b1", clock.now())))
    clock.call_at(2.0, lambda: fired.append(("b2", clock.now())))  # tie: order of scheduling
    clock.call_at(9.0, lambda: fired.append(("late", clock.now())))

    assert clock.next_deadline() == 1.0
    assert clock.advance(0.5) == 0
    assert fired == []
    assert clock.advance(2.5) == 4
    assert fired == [("a", 1.0), ("b1", 2.0), ("b2", 2.0), ("c", 3.0)]
    assert clock.now() == 3.0
    assert clock.pending() == 1
    assert clock.next_deadline() == 9.0


def test_timer_scheduled_by_a_callback_fires_within_the_same_advance() -> None:
    clock = FakeClock()
    fired: list[float] = []

    def tick() -> None:
        fired.append(clock.now())
        if len(fired) < 5:
            clock.call_later(1.0, tick)

    clock.call_later(1.0, tick)
    clock.advance(3.5)
    assert fired == [1.0, 2.0, 3.0]
    clock.advance(10)
    assert fired == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert clock.pending() == 0
    assert clock.next_deadline() is None


def test_cancelled_timer_does_not_fire_and_past_deadline_fires_on_next_advance() -> None:
    clock = FakeClock(start=10.0)
    fired: list[str] = []
    timer = clock.call_at(11.0, lambda: fired.append("cancelled"))
    clock.call_at(5.0, lambda: fired.append("past"))
    timer.cancel()
    assert clock.pending() == 1
    assert clock.advance(0) == 1
    assert fired == ["past"]
    assert clock.now() == 10.0  # a past deadline does not move time back
    clock.advance(5)
    assert fired == ["past"]


# -- SeededRandom ---------------------------------------------------------------------------------


def test_seeded_random_is_reproducible() -> None:
    a, b = SeededRandom(7), SeededRandom(7)
    assert a.randbytes(32) == b.randbytes(32)
    assert [a.random() for _ in range(5)] == [b.random() for _ in range(5)]
    assert SeededRandom(7).randbytes(32) != SeededRandom(8).randbytes(32)
    assert len(SeededRandom(1).randbytes(0)) == 0
    with pytest.raises(ValueError, match="negative"):
        SeededRandom(1).randbytes(-1)


def test_fork_depends_on_seed_and_label_not_on_draws_made() -> None:
    parent = SeededRandom(42)
    first = parent.fork("node-1").randbytes(16)
    parent.randbytes(1000)
    assert parent.fork("node-1").randbytes(16) == first
    assert parent.fork("node-2").randbytes(16) != first
    assert SeededRandom(43).fork("node-1").randbytes(16) != first
    assert SeededRandom("42").fork("node-1").randbytes(16) != first  # seed 42 is not seed "42"


# -- FakeNetwork ----------------------------------------------------------------------------------


def _network(
    seed: int = 1,
    *,
    loss: float = 0.0,
    min_delay: float = 0.0,
    max_delay: float = 0.0,
    duplicate: float = 0.0,
) -> FakeNetwork:
    net = FakeNetwork(
        seed, loss=loss, min_delay=min_delay, max_delay=max_delay, duplicate=duplicate
    )
    for address in (A, B, C):
        net.register(address)
    return net


def test_lossless_network_with_no_delay_delivers_everything_in_order() -> None:
    net = _network()
    for i in range(10):
        net.send(A, B, bytes([i]))
    assert net.pending() == 10
    assert net.deliver_due() == [Datagram(A, B, bytes([i])) for i in range(10)]
    assert net.pending() == 0
    assert net.stats.sent == net.stats.delivered == 10


def test_loss_rate_is_close_to_the_configured_probability() -> None:
    net = _network(seed=2024, loss=0.2)
    for i in range(10_000):
        net.send(A, B, i.to_bytes(2, "big"))
    delivered = net.deliver_due()
    # Binomial(10000, 0.2) has a standard deviation of 40: allow five of them either way.
    assert 1800 <= net.stats.lost <= 2200
    assert len(delivered) + net.stats.lost == 10_000
    assert net.stats.delivered == len(delivered)


def test_datagrams_arrive_by_delay_not_by_send_order() -> None:
    net = _network(seed=5, min_delay=0.010, max_delay=0.200)
    for i in range(200):
        net.send(A, B, i.to_bytes(1, "big"), now=0.0)
    assert net.deliver_due(now=0.0) == []
    arrivals: list[tuple[float, int]] = []
    t = 0.0
    while net.pending():
        next_arrival = net.next_arrival()
        assert next_arrival is not None
        assert 0.010 <= next_arrival <= 0.200
        assert next_arrival >= t
        t = next_arrival
        arrivals.extend((t, d.data[0]) for d in net.deliver_due(now=t))
    order = [i for _, i in arrivals]
    assert sorted(order) == list(range(200))  # nothing lost
    assert order != list(range(200))  # random delays reorder them


def test_delivery_waits_for_the_clock() -> None:
    clock = FakeClock()
    net = FakeNetwork(3, min_delay=0.05, max_delay=0.05, clock=clock)
    net.register(A)
    net.register(B)
    net.send(A, B, b"ping")
    clock.advance(0.049)
    assert net.deliver_due() == []
    clock.advance(0.001)
    assert net.deliver_due() == [Datagram(A, B, b"ping")]


def _history(seed: int) -> list[tuple[float, Datagram]]:
    net = _network(seed=seed, loss=0.3, min_delay=0.001, max_delay=0.1, duplicate=0.2)
    for i in range(300):
        src, dst = [(A, B), (B, C), (C, A)][i % 3]
        net.send(src, dst, i.to_bytes(2, "big"), now=i * 0.001)
    out: list[tuple[float, Datagram]] = []
    while (t := net.next_arrival()) is not None:
        out.extend((t, d) for d in net.deliver_due(now=t))
    return out


def test_same_seed_same_history_different_seed_different_history() -> None:
    first = _history(11)
    assert first == _history(11)
    assert first != _history(12)
    assert 0 < len(first) < 400


def test_duplication_makes_extra_copies() -> None:
    net = _network(seed=9, duplicate=0.5)
    for i in range(1000):
        net.send(A, B, i.to_bytes(2, "big"))
    delivered = net.deliver_due()
    assert 400 <= net.stats.duplicated <= 600
    assert len(delivered) == 1000 + net.stats.duplicated
    assert {d.data for d in delivered} == {i.to_bytes(2, "big") for i in range(1000)}


def test_partition_drops_both_ways_including_in_flight_and_heal_restores() -> None:
    net = _network(min_delay=1.0, max_delay=1.0)
    net.send(A, B, b"in flight", now=0.0)
    net.partition(A, B)
    assert net.is_partitioned(B, A)
    net.send(A, B, b"a->b", now=0.0)
    net.send(B, A, b"b->a", now=0.0)
    net.send(A, C, b"a->c", now=0.0)
    assert net.deliver_due(now=1.0) == [Datagram(A, C, b"a->c")]
    assert net.stats.partitioned == 3

    net.heal(A, B)
    net.send(B, A, b"healed", now=2.0)
    assert net.deliver_due(now=3.0) == [Datagram(B, A, b"healed")]

    net.partition(A, B)
    net.partition(B, C)
    net.heal()
    assert not net.is_partitioned(A, B)
    assert not net.is_partitioned(B, C)


def test_unregistered_endpoints() -> None:
    net = _network(min_delay=1.0, max_delay=1.0)
    with pytest.raises(ValueError, match="not registered"):
        net.send(("10.9.9.9", 1), A, b"x")
    with pytest.raises(ValueError, match="already registered"):
        net.register(A)
    net.send(A, B, b"to a node that leaves", now=0.0)
    net.send(A, ("10.9.9.9", 1), b"to nobody", now=0.0)
    net.unregister(B)
    assert B not in net.endpoints
    assert net.deliver_due(now=1.0) == []
    assert net.stats.unreachable == 2


@pytest.mark.parametrize(
    ("loss", "duplicate", "min_delay", "max_delay"),
    [(1.5, 0, 0, 0), (0, -0.1, 0, 0), (0, 0, 0.2, 0.1), (0, 0, -1, 0), (0, 0, 0, float("inf"))],
)
def test_network_rejects_impossible_settings(
    loss: float, duplicate: float, min_delay: float, max_delay: float
) -> None:
    with pytest.raises(ValueError, match=r"probability|delay"):
        FakeNetwork(0, loss=loss, duplicate=duplicate, min_delay=min_delay, max_delay=max_delay)


# -- MemoryStream ---------------------------------------------------------------------------------


def test_memory_streams_carry_bytes_both_ways_in_order() -> None:
    a, b = memory_stream_pair()
    a.write(b"hello ")
    a.write(bytearray(b"world"))
    b.write(memoryview(b"back"))
    assert b.available() == 11
    assert b.read(3) == b"hel"
    assert b.read() == b"lo world"
    assert b.read() == b""
    assert a.read() == b"back"


def test_memory_stream_close_gives_eof_after_the_rest_is_read() -> None:
    a, b = memory_stream_pair()
    a.write(b"last words")
    a.close()
    assert a.closed
    assert not b.at_eof
    assert b.read() == b"last words"
    assert b.at_eof
    assert not a.at_eof  # b has not closed its side
    with pytest.raises(BrokenPipeError):
        a.write(b"more")
    b.write(b"still open this way")
    assert a.read() == b"still open this way"

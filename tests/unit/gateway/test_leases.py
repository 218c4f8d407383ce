"""Leases (cairn_gateway.leases): claim, renew, expiry by the database's clock, fair share,
release, two claimers racing. Here on SQLite; tests/integration/gateway/test_leases_postgres.py
runs the same functions on a real PostgreSQL server (several gateways share that one)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cairn_gateway.leases import Leases, fair_share, gateways, holders
from cairn_gateway.roster import Roster
from cairn_gateway.store import Store


def key(i: int) -> bytes:
    return hashlib.blake2b(f"device-{i}".encode(), digest_size=32).digest()


def gw(i: int) -> str:
    return hashlib.blake2b(f"gateway-{i}".encode(), digest_size=32).hexdigest()


def enroll(store: Store, n: int, start: int = 0) -> list[bytes]:
    roster = Roster(store.conn)
    keys = []
    for i in range(start, start + n):
        roster.enroll(key(i), f"board-{i}", 1000.0)
        keys.append(key(i))
    return keys


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def stores(store_target: Callable[[str], str]) -> Iterator[list[Store]]:
    """Three connections to one store (three gateways' processes)."""
    opened = [Store(store_target("fleet")) for _ in range(3)]
    yield opened
    for s in opened:
        s.close()


def expire(store: Store, holder: str | None = None) -> None:
    """Every lease (of ``holder``) an hour expired by the database's clock, and its gateway's
    heartbeat an hour old: what a dead gateway leaves after a lease period."""
    c = store.conn
    if holder is None:
        c.execute("UPDATE leases SET expires = expires - 3600")
        c.execute("UPDATE gateways SET heartbeat = heartbeat - 3600")
    else:
        c.execute("UPDATE leases SET expires = expires - 3600 WHERE holder = ?", (holder,))
        c.execute("UPDATE gateways SET heartbeat = heartbeat - 3600 WHERE id = ?", (holder,))


def test_one_gateway_claims_every_device_and_renews(stores: list[Store]) -> None:
    keys = enroll(stores[0], 5)
    clock = Clock()
    a = Leases(stores[0].conn, gw(0), 30, name="a", clock=clock)
    got = a.beat()
    assert got.held == set(keys) and sorted(got.gained) == sorted(keys)
    assert got.share == 5 and got.live == 1 and got.taken_over == 0
    assert all(a.holds(k) for k in keys)
    assert holders(stores[1].conn) == dict.fromkeys(keys, gw(0))
    first = dict(stores[0].conn.execute("SELECT record_key, expires FROM leases").fetchall())
    again = a.beat()  # renewed: later expiries, nothing gained or lost
    assert again.held == set(keys) and not again.gained and not again.lost
    later = dict(stores[0].conn.execute("SELECT record_key, expires FROM leases").fetchall())
    assert all(later[k] >= first[k] for k in first)
    # a device enrolled later is claimed at the next beat
    new = enroll(stores[0], 1, start=5)
    assert a.beat().gained == new


def test_a_lease_is_trusted_only_until_its_renewal_is_too_old(stores: list[Store]) -> None:
    keys = enroll(stores[0], 2)
    clock = Clock()
    a = Leases(stores[0].conn, gw(0), 30, clock=clock)
    a.beat()
    clock.t += a.period - a.margin - 0.5  # just before: still proven
    assert a.period < 30 and a.holds(keys[0]) and a.proven() == set(keys)
    clock.t += 0.6  # renewal too old: this gateway stops collecting (before anyone may take)
    assert not a.holds(keys[0]) and a.proven() == frozenset()


def test_expiry_is_by_the_database_clock_and_another_takes_over(stores: list[Store]) -> None:
    keys = enroll(stores[0], 4)
    a = Leases(stores[0].conn, gw(0), 30, name="a")
    b = Leases(stores[1].conn, gw(1), 30, name="b")
    a.beat()
    got = b.beat()  # all held, live: nothing for b (share 2, but none free)
    assert got.held == frozenset() and got.live == 2
    expire(stores[0], gw(0))  # a died a lease period ago
    got = b.beat()
    assert got.held == set(keys) and got.taken_over == 4 and b.takeovers == 4
    assert holders(stores[2].conn) == dict.fromkeys(keys, gw(1))
    # a comes back: its renewal finds its leases taken; b gives back above its share
    assert a.beat().held == frozenset()
    assert len(b.beat().lost) == 2
    assert len(a.beat().gained) == 2 and a.takeovers == 0
    assert set(holders(stores[2].conn)) == set(keys)


def test_three_gateways_split_forty_devices_and_do_not_flap(stores: list[Store]) -> None:
    keys = enroll(stores[0], 40)
    gws = [Leases(s.conn, gw(i), 30, name=f"g{i}") for i, s in enumerate(stores)]
    gws[0].beat()
    assert len(gws[0].held) == 40  # alone: every device
    for _ in range(4):  # b and c arrive; a gives back above its share; they take it
        for g in gws:
            g.beat()
    counts = sorted(len(g.held) for g in gws)
    share = fair_share(40, 3)
    assert sum(counts) == 40 and max(counts) <= share and min(counts) >= 40 // 3 - 1, counts
    held = holders(stores[0].conn)
    assert set(held) == set(keys)  # every device held, by exactly one gateway (a primary key)
    for g in gws:
        assert {k for k, h in held.items() if h == g.id} == g.held
    settled = [g.held for g in gws]
    for _ in range(3):  # no flapping: more beats change nothing
        for g in gws:
            got = g.beat()
            assert not got.gained and not got.lost
    assert [g.held for g in gws] == settled
    rows = {r.name: r for r in gateways(stores[0].conn, 30)}
    assert sorted(r.leases for r in rows.values()) == counts and all(r.live for r in rows.values())


@pytest.mark.parametrize("devices", [4, 40])
def test_gateways_arriving_one_by_one_each_get_devices(stores: list[Store], devices: int) -> None:
    """The first holds every device; each one arriving after gets its floor, though the
    others are at their share (four devices, three gateways: 1, 1, 2, not 2, 2, 0)."""
    enroll(stores[0], devices)
    gws = [Leases(s.conn, gw(i), 30) for i, s in enumerate(stores)]
    for arrived in range(1, 4):
        for _ in range(4):
            for g in gws[:arrived]:
                g.beat()
        counts = [len(g.held) for g in gws[:arrived]]
        assert sum(counts) == devices
        assert min(counts) >= devices // arrived, counts
        assert max(counts) <= fair_share(devices, arrived), counts
    settled = [g.held for g in gws]
    for g in gws:
        g.beat()
    assert [g.held for g in gws] == settled


def test_a_dead_gateways_share_goes_to_the_others(stores: list[Store]) -> None:
    keys = enroll(stores[0], 12)
    gws = [Leases(s.conn, gw(i), 30) for i, s in enumerate(stores)]
    for _ in range(3):
        for g in gws:
            g.beat()
    assert sorted(len(g.held) for g in gws) == [4, 4, 4]
    dead = gws[2]
    expire(stores[0], dead.id)
    got = [gws[0].beat(), gws[1].beat()]
    assert sum(r.taken_over for r in got) == 4 and all(r.live == 2 for r in got)
    assert len(gws[0].held) + len(gws[1].held) == 12
    assert set(holders(stores[0].conn)) == set(keys)
    assert not any(r.live for r in gateways(stores[0].conn, 30) if r.id == dead.id)


def test_release_and_a_clean_stop_give_devices_back_at_once(stores: list[Store]) -> None:
    keys = enroll(stores[0], 6)
    a = Leases(stores[0].conn, gw(0), 30)
    b = Leases(stores[1].conn, gw(1), 30)
    a.beat()
    a.release(keys[:2])
    assert not a.holds(keys[0]) and a.holds(keys[2])
    assert b.beat().gained and set(b.held) == set(keys[:2])  # share 3, two free
    a.release_all()
    assert a.proven() == frozenset()
    got = b.beat()  # a stopped: not live; b holds all
    assert got.live == 1 and b.held == set(keys)


def test_a_removed_device_is_let_go(stores: list[Store]) -> None:
    keys = enroll(stores[0], 3)
    a = Leases(stores[0].conn, gw(0), 30)
    a.beat()
    Roster(stores[0].conn).remove("board-1", 2000.0)
    got = a.beat()
    assert got.lost == [keys[1]] and keys[1] not in holders(stores[0].conn)


def test_two_claimers_racing_for_one_device_exactly_one_wins(stores: list[Store]) -> None:
    """Two gateways (two connections, two threads) claim the same free device at the same
    moment, twenty times: each time exactly one gets it."""
    n = 20
    keys = enroll(stores[0], n)
    a = Leases(stores[0].conn, gw(0), 30)
    b = Leases(stores[1].conn, gw(1), 30)
    wins = []
    for k in keys:
        barrier = threading.Barrier(2)
        got: dict[str, bool] = {}

        def claim(g: Leases, k: bytes = k, barrier: threading.Barrier = barrier,
                  got: dict[str, bool] = got) -> None:
            barrier.wait(10)
            got[g.id] = g._claim(k)

        threads = [threading.Thread(target=claim, args=(g,)) for g in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        wins.append(sum(got.values()))
        assert holders(stores[2].conn)[k] in {g for g, won in got.items() if won}
    assert wins == [1] * n


def test_lease_seconds_are_bounded(stores: list[Store]) -> None:
    for bad in (0.0, 2.0, 4000.0):
        with pytest.raises(ValueError, match="lease_seconds"):
            Leases(stores[0].conn, gw(0), bad)


def test_a_gateway_holding_no_lease_is_ready_with_nothing_to_collect(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three devices, four gateways: the one holding none counts no device in its rounds, so
    /readyz says it has nothing to collect rather than that it stores nothing."""
    import asyncio

    from cairn.crypto import random_key_pair
    from cairn_gateway import daemon
    from cairn_gateway.collect import Collector
    from cairn_gateway.config import parse_config
    from cairn_gateway.health import GatewayHealth, RoundSummary

    store = Store(tmp_path / "gw.db")
    collector = Collector(tmp_path / "gw", random_key_pair(), store)
    try:
        keys = [key(i) for i in range(3)]

        async def discover(*_a: object, **_k: object) -> list[bytes]:
            return keys

        async def collect_round(*_a: object, **_k: object) -> list[object]:
            return []

        async def publish(*_a: object, **_k: object) -> int:
            return 0

        monkeypatch.setattr(daemon, "discover", discover)
        monkeypatch.setattr(collector, "collect_round", collect_round)
        monkeypatch.setattr(collector, "publish_watermarks", publish)
        cfg = parse_config("", tmp_path)
        for held, devices in ((set(), 0), ({keys[0]}, 1)):
            collector.holds = held.__contains__
            seen = daemon.RoundSeen()
            asyncio.run(daemon.collection_round(cfg, collector, store, object(),  # type: ignore[arg-type]
                                                random_key_pair(), 0, seen, retain=False))
            assert seen.devices == devices
        health = GatewayHealth(tmp_path, None, 10.0, 3)
        health.round_done(RoundSummary.of(1, 0, [], 0.1))
        ready, why = health.collecting()
        assert ready and "other gateways" in why
    finally:
        collector.close()
        store.close()

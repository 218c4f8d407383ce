"""The gateway's sample store: exactly once, rollups kept at ingest, queries, retention."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cairn.frames import Frame, Sample
from cairn_gateway.store import Store, StoreError

T0 = 1_764_000_000.0  # on a whole hour
KEY = bytes(range(32))


@pytest.fixture
def store(store_target: Callable[[str], str]) -> Iterator[Store]:
    s = Store(store_target("gw"))
    yield s
    s.close()


def frames(name: str, times: list[float], value: float = 0.0) -> list[Frame]:
    return [Frame((Sample(name, "Cel", t, value + t - T0),)) for t in times]


def stream(store: Store, name: str = "board-1/temperature", key: bytes = KEY) -> int:
    dev = store.device(b"d" * 32, "board-1", T0)
    return store.stream(dev, name, key, "Cel")


def test_blocks_are_stored_exactly_once(store: Store,
                                        store_target: Callable[[str], str]) -> None:
    sid = stream(store)
    blocks = [(i, 0, f) for i, f in enumerate(frames("board-1/temperature",
                                                      [T0 + k for k in range(120)]))]
    assert store.ingest(sid, blocks[:70]) == 70
    assert store.ingest(sid, blocks[50:]) == 50  # a re-download overlapping what is stored
    assert store.ingest(sid, blocks) == 0  # everything again
    other = Store(store_target("gw"))  # a second gateway process on the same store
    try:
        assert other.ingest(sid, blocks[:10]) == 0
    finally:
        other.close()
    got = store.samples(sid, T0, T0 + 1000)
    assert [t for t, *_ in got] == [T0 + k for k in range(120)]
    assert [(b, f) for _, _, b, f in got] == [(k, 0) for k in range(120)]  # provenance
    minute = store.rollup(sid, T0, T0 + 120, 60)
    assert [(r.bucket, r.n) for r in minute] == [(int(T0), 60), (int(T0) + 60, 60)]
    assert minute[0].lo == 0.0 and minute[0].hi == 59.0 and minute[0].mean == 29.5


def test_two_samples_at_the_same_time_are_both_kept(store: Store) -> None:
    """Tasmota stamps whole seconds: two messages in one second give two samples at one time,
    in one frame (one commit) or in two blocks. Keyed by (stream, time) the second was
    dropped silently; both are kept, once each, in the samples and in the rollups."""
    sid = stream(store)
    one = Frame((Sample("b/h", "%RH", T0, 43.2), Sample("b/h", "%RH", T0, 43.3)))
    two = Frame((Sample("b/h", "%RH", T0 + 1, 44.0),))
    three = Frame((Sample("b/h", "%RH", T0 + 1, 44.5),))
    assert store.ingest(sid, [(0, 0, one), (1, 0, two)]) == 3
    assert store.ingest(sid, [(1, 0, two), (2, 0, three)]) == 1  # block 1 again: skipped
    got = [(t, v) for t, v, _, _ in store.samples(sid, T0, T0 + 10)]
    assert sorted(got) == [(T0, 43.2), (T0, 43.3), (T0 + 1, 44.0), (T0 + 1, 44.5)]
    [minute] = store.rollup(sid, T0, T0 + 60, 60)
    assert minute.n == 4 and minute.lo == 43.2 and minute.hi == 44.5


def test_an_old_store_is_migrated_and_keeps_its_samples(tmp_path: Path) -> None:
    import sqlite3

    import sqlite_utils
    from sqlite_migrate import Migrations

    from cairn_gateway.store.sqlite import m001_initial

    db = sqlite_utils.Database(sqlite3.connect(tmp_path / "old.db"))
    first = Migrations("cairn-gateway")  # the migrations a gateway before this change had
    first()(m001_initial)
    first.apply(db)
    db.execute("INSERT INTO devices VALUES (1, ?, 'b', 0, 0)", [b"d" * 32])
    db.execute("INSERT INTO streams (id, device_id, name, log_key) VALUES (1, 1, 'b/t', ?)",
               [KEY])
    db.execute("INSERT INTO samples VALUES (1, ?, 20.5, NULL, 0, 0)", [T0])
    db.conn.commit()
    db.conn.close()
    s = Store(tmp_path / "old.db")
    try:
        assert s.samples(1, T0, T0 + 1) == [(T0, 20.5, 0, 0)]
        assert s.ingest(1, [(1, 0, Frame((Sample("b/t", "Cel", T0, 21.0),)))]) == 1
    finally:
        s.close()


def test_rollups_count_each_sample_once_whatever_the_order(store: Store) -> None:
    sid = stream(store)
    rng = random.Random(4)
    times = [T0 + k * 0.5 for k in range(7200)]  # an hour at 2 Hz
    blocks = [(i, 0, f) for i, f in enumerate(frames("board-1/temperature", times))]
    order = blocks[:]
    rng.shuffle(order)
    for k in range(0, len(order), 97):  # in random chunks, some twice
        store.ingest(sid, order[k:k + 97])
        if k % 3 == 0:
            store.ingest(sid, order[max(0, k - 50):k + 20])
    hour = store.rollup(sid, T0, T0 + 3600, 3600)
    assert [(r.n, r.lo, r.hi) for r in hour] == [(7200, 0.0, 3599.5)]
    five = store.rollup(sid, T0, T0 + 3600, 300)
    assert len(five) == 12 and all(r.n == 600 for r in five)
    assert sum(r.mean * r.n for r in five) == pytest.approx(sum(t - T0 for t in times))


def test_streams_and_devices(store: Store) -> None:
    sid = stream(store)
    assert stream(store) == sid  # idempotent
    dev2 = store.device(b"e" * 32, "board-2", T0)
    with pytest.raises(StoreError, match="already stream"):
        store.stream(dev2, "board-2/temperature", KEY)
    store.stop(sid, "fork: two signatures for length 7")
    with pytest.raises(StoreError, match="stopped: fork: two signatures"):
        store.ingest(sid, [(0, 0, frames("board-1/temperature", [T0])[0])])
    assert store.samples(sid, 0, 2e9) == []


def test_text_and_boolean_values(store: Store) -> None:
    sid = stream(store)
    f = Frame((Sample("board-1/state", None, T0, "open"), Sample("board-1/state", None,
                                                                    T0 + 1, True)))
    assert store.ingest(sid, [(0, 0, f)]) == 2
    values = [v for _, v, _, _ in store.samples(sid, T0, T0 + 2)]
    assert values == ["open", True] and values[1] is True  # a boolean, not 1.0
    assert store.kind(sid) == "string" and store.other_kind(sid) == 1


def test_retention(store: Store) -> None:
    sid = stream(store)
    store.ingest(sid, [(i, 0, f) for i, f in enumerate(
        frames("board-1/temperature", [T0 + k * 60 for k in range(100)]))])
    assert store.prune(T0 + 50 * 60) == 50
    assert len(store.samples(sid, 0, 2e9)) == 50
    assert store.rollup(sid, 0, 2e9, 60)[0].bucket == int(T0) + 50 * 60


def test_bad_step(store: Store) -> None:
    with pytest.raises(ValueError, match="multiple of 60"):
        store.rollup(1, 0, 1, 45)


def test_gateway_config_policies_and_bad_input(tmp_path: Path) -> None:
    from cairn_gateway.config import TEMPLATE, ConfigError, parse_config

    cfg = parse_config(TEMPLATE + '\n[[policy]]\npattern = "*/vibration"\nmode = "on_demand"\n'
                       '[[policy]]\npattern = "board-2/*"\nmode = "backfill"\nwindow = 3600\n',
                       tmp_path)
    assert cfg.policy("board-1/vibration").mode == "on_demand"
    assert (cfg.policy("board-2/co2").mode, cfg.policy("board-2/co2").window) == ("backfill",
                                                                                    3600.0)
    assert cfg.policy("board-1/co2").mode == "tail"
    for text, message in [
        ("[[policy]]\npattern = '*'\nmode = 'sometimes'", "is not tail, backfill or on_demand"),
        ("[[policy]]\npattern = '*'\nmode = 'backfill'", "backfill needs a window"),
        ("[[policy]]\nmode = 'tail'", "needs a pattern"),
        ("[[policy]]\npattern = '*'\nmode = 'tail'\nspeed = 3", r"unknown key\(s\) speed"),
        ("[api]\nlisten = 'nowhere'", "is not host:port"),
        ("[collect]\ninterval = 0", "interval"),
        ("[collect]\ndevices = ['beef']", "64-hex-digit"),
        ("colour = 'blue'", r"unknown key\(s\) colour"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_config(text, tmp_path, "gateway.toml")

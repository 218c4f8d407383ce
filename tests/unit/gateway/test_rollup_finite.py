"""Gateway rollups stay finite whatever values arrive (issue 17 part 5).

Two readings of 1.7e308 used to overflow a bucket's sum to inf for good (and the mean of every
coarser step with it). Values beyond ``ROLLUP_BOUND`` are stored as sent but not rolled up,
counted per stream; a store poisoned by an older version is repaired by migration m006.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlite_utils
from sqlite_migrate import Migrations

from cairn.frames import Frame, Sample
from cairn_gateway.store import ROLLUP_BOUND, Store
from cairn_gateway.store.sqlite import m001_initial, m002_samples_at_the_same_time

T0 = 1_764_000_000.0  # on a whole hour
KEY = bytes(range(32))


@pytest.fixture
def store(store_target: Callable[[str], str]) -> Iterator[Store]:
    s = Store(store_target("gw"))
    yield s
    s.close()


def block(i: int, t: float, *values: float) -> tuple[int, int, Frame]:
    return i, 0, Frame(tuple(Sample("b/t", None, t + k, v) for k, v in enumerate(values)))


def stream(store: Store) -> int:
    return store.stream(store.device(b"d" * 32, "b", T0), "b/t", KEY)


def finite(store: Store, sid: int) -> bool:
    rows = [*store.rollup(sid, T0, T0 + 7200, 60), *store.rollup(sid, T0, T0 + 7200, 3600),
            *store.rollup(sid, T0, T0 + 7200, 7200)]
    return bool(rows) and all(math.isfinite(x) for r in rows for x in (r.mean, r.lo, r.hi))


def test_huge_values_are_stored_but_not_rolled_up(store: Store) -> None:
    sid = stream(store)
    assert store.ingest(sid, [block(0, T0, 20.0, 1.7e308, 1.7e308, -1.7e308, 22.0)]) == 5
    assert store.ingest(sid, [block(1, T0 + 30, ROLLUP_BOUND, 21.0)]) == 2  # the bound: in
    assert finite(store, sid)
    [minute] = store.rollup(sid, T0, T0 + 60, 60)
    assert minute.n == 4 and minute.lo == 20.0 and minute.hi == ROLLUP_BOUND
    assert store.unrolled(sid) == 3
    assert [v for _, v, _, _ in store.samples(sid, T0, T0 + 5)] == [
        20.0, 1.7e308, 1.7e308, -1.7e308, 22.0]  # kept as the device signed them
    assert store.ingest(sid, [block(0, T0, 20.0, 1.7e308, 1.7e308, -1.7e308, 22.0)]) == 0
    assert store.unrolled(sid) == 3  # a re-download counts nothing twice


def test_many_values_at_the_bound_do_not_overflow_a_bucket(store: Store) -> None:
    sid = stream(store)
    blocks = [block(i, T0 + i * 10, *([ROLLUP_BOUND] * 10)) for i in range(360)]
    assert store.ingest(sid, blocks) == 3600
    assert finite(store, sid)
    [hour] = store.rollup(sid, T0, T0 + 3600, 3600)
    assert hour.n == 3600 and hour.mean == pytest.approx(ROLLUP_BOUND)


def test_a_store_poisoned_by_an_older_version_is_repaired(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite_utils.Database(sqlite3.connect(path))
    old = Migrations("cairn-gateway")  # the migrations a gateway before this change had
    old()(m001_initial)
    old()(m002_samples_at_the_same_time)
    old.apply(db)
    db.execute("INSERT INTO devices VALUES (1, ?, 'b', 0, 0)", [b"d" * 32])
    db.execute("INSERT INTO streams (id, device_id, name, log_key) VALUES (1, 1, 'b/t', ?)",
               [KEY])
    for k, v in enumerate([20.0, 1.7e308, 1.7e308, 22.0]):
        db.execute("INSERT INTO samples VALUES (1, ?, ?, NULL, 0, 0, ?)", [T0 + k, v, k])
    for table, bucket in (("rollup_minute", T0), ("rollup_hour", T0)):  # as the old sum made
        db.execute(f"INSERT INTO {table} VALUES (1, ?, 4, ?, 20.0, 1.7e308)",
                   [int(bucket), math.inf])
    # an hour whose samples retention deleted: nothing to recompute it from
    db.execute("INSERT INTO rollup_hour VALUES (1, ?, 2, ?, 1.0, 1.7e308)",
               [int(T0) - 3600, math.inf])
    db.conn.commit()
    db.conn.close()
    s = Store(path)
    try:
        [minute] = s.rollup(1, T0, T0 + 60, 60)
        assert (minute.n, minute.mean, minute.lo, minute.hi) == (2, 21.0, 20.0, 22.0)
        assert [r.bucket for r in s.rollup(1, T0 - 3600, T0 + 3600, 3600)] == [int(T0)]
        assert finite(s, 1) and s.unrolled(1) == 2
    finally:
        s.close()

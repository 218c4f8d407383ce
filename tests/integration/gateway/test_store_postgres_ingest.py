"""The PostgreSQL engine's ingest transaction on a real server: blocks claimed in one statement
(``INSERT .. SELECT FROM unnest .. ON CONFLICT DO NOTHING RETURNING``), the monthly partitions a
batch needs, a stopped stream found under its lock, and several gateways storing the same
blocks at once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from cairn.frames import Frame, Sample
from cairn_gateway.store import Store, StoreError
from cairn_gateway.store.postgres import PostgresStore, _bigints
from tests.scorecard import record

T0 = datetime(2025, 11, 30, 23, 0, tzinfo=UTC).timestamp()  # an hour before December


def frame(t: float, v: float) -> Frame:
    return Frame((Sample("s", "Cel", t, v),))


def partitions(store: PostgresStore) -> dict[str, int]:
    """Each partition of ``samples`` and the rows it holds."""
    names = [str(r[0]) for r in store.conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'samples'::regclass")]
    return {n: int(store.conn.execute(f"SELECT count(*) FROM {n}").fetchone()[0])
            for n in names}


def test_bigints_is_an_array_literal_of_integers_only() -> None:
    assert _bigints([1, -2, 3]) == "{1,-2,3}"
    assert _bigints([]) == "{}"
    with pytest.raises(ValueError, match="invalid literal for int"):
        _bigints(["1}, {2"])  # type: ignore[list-item]  # (only ever ints: never text)


def test_a_batch_across_months_makes_each_months_partition(pg_url: str) -> None:
    s = Store(pg_url)
    assert isinstance(s, PostgresStore)
    try:
        sid = s.stream(s.device(b"d" * 32, "d", T0), "d/t", b"k" * 32)
        # one batch: November, December, January, and a time before 1970 (samples_other)
        times = [T0, T0 + 2 * 3600, T0 + 33 * 86400, -86400.0]
        assert s.ingest(sid, [(i, 0, frame(t, float(i))) for i, t in enumerate(times)]) == 4
        got = partitions(s)
        assert got == {"samples_other": 1, "samples_y2025m11": 1, "samples_y2025m12": 1,
                       "samples_y2026m01": 1}
        # a batch within a month already made: stored there, nothing new made
        assert s.ingest(sid, [(10, 0, frame(T0 + 3 * 3600, 1.0)),
                              (11, 0, frame(T0 + 4 * 3600, 2.0))]) == 2
        assert partitions(s) == {**got, "samples_y2025m12": 3}
        # a second gateway's store, which has not seen the months made: stores there too
        other = Store(pg_url)
        try:
            assert other.ingest(sid, [(12, 0, frame(T0 + 40 * 86400, 3.0))]) == 1
        finally:
            other.close()
        assert partitions(s)["samples_y2026m01"] == 2
    finally:
        s.close()


def test_ingest_into_a_stopped_stream_says_so_and_stores_nothing(pg_url: str) -> None:
    s = Store(pg_url)
    try:
        sid = s.stream(s.device(b"d" * 32, "d", T0), "d/t", b"k" * 32)
        s.stop(sid, "fork: two signed lengths")
        with pytest.raises(StoreError, match=r"stream \d+ is stopped: fork: two signed"):
            s.ingest(sid, [(0, 0, frame(T0, 1.0))])
        assert s.conn.execute("SELECT count(*) FROM blocks").fetchone()[0] == 0
        assert s.conn.execute("SELECT count(*) FROM samples").fetchone()[0] == 0
        with pytest.raises(StoreError, match="stream 999 is stopped: unknown"):
            s.ingest(999, [(0, 0, frame(T0, 1.0))])
    finally:
        s.close()


def test_three_gateways_storing_the_same_blocks_at_once_store_each_once(pg_url: str) -> None:
    """Three stores (three gateways) on one database, each in its own thread, ingest
    overlapping runs of the same two streams in different orders (as a lease that moved, or a
    retry, would make them): every block is claimed by one of them, no sample is stored twice
    or lost, rollups count each sample once, and nobody deadlocks or fails."""
    stores = [Store(pg_url) for _ in range(3)]
    try:
        dev = stores[0].device(b"d" * 32, "d", T0)
        sids = [stores[0].stream(dev, f"d/t{j}", bytes([j]) * 32) for j in range(2)]
        blocks = [(i, 0, frame(T0 + 7200 + i, float(i % 10))) for i in range(600)]
        errors: list[BaseException] = []
        stored = [0, 0, 0]

        def gateway(g: int) -> None:
            try:
                runs = [blocks[k:k + 100 + 50 * g] for k in range(0, 600, 75)]
                for n, run in enumerate(runs if g != 1 else runs[::-1]):
                    sid = sids[(n + g) % 2]
                    stored[g] += stores[g].ingest(sid, run)
                    stored[g] += stores[g].ingest(sids[1 - (n + g) % 2], run)
            except BaseException as exc:  # (reported below)
                errors.append(exc)

        threads = [threading.Thread(target=gateway, args=(g,)) for g in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        s = stores[0]
        per_block = s.conn.execute(
            "SELECT count(*) FROM (SELECT stream_id, block FROM samples GROUP BY 1, 2 "
            "HAVING count(*) <> 1) x").fetchone()[0]
        total = s.conn.execute("SELECT count(*) FROM samples").fetchone()[0]
        rolled = s.conn.execute("SELECT CAST(sum(n) AS BIGINT) FROM rollup_minute"
                                ).fetchone()[0]
        counted = [s.conn.execute("SELECT stored_blocks FROM streams WHERE id = ?",
                                  (sid,)).fetchone()[0] for sid in sids]
        bad = per_block + abs(total - 1200) + abs(sum(stored) - 1200) + len(errors)
        record("storage", "3 gateways store the same blocks of 2 streams at once", 3, bad,
               "samples stored twice or lost, or a gateway failed")
        assert not errors, errors
        assert (per_block, total, sum(stored), rolled, counted) == (0, 1200, 1200, 1200,
                                                                    [600, 600])
    finally:
        for st in stores:
            st.close()

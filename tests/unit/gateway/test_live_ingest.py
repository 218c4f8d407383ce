"""Live push's batched store path: ``Store.ingest_many`` (many streams, one transaction) keeps
every rule of ``Store.ingest``, and the collector's ``Ingestor`` loses nothing and stores
nothing twice when the store fails under it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator, Sequence

import pytest

from cairn.frames import Frame, Sample
from cairn_gateway.live import Ingestor, LiveDevice
from cairn_gateway.schedule import Limits
from cairn_gateway.store import IngestItem, Store, StoreError
from tests.scorecard import record

T0 = 1_764_000_000.0


@pytest.fixture
def stores(store_target: Callable[[str], str]) -> Iterator[tuple[Store, Store]]:
    a, b = Store(store_target("one")), Store(store_target("many"))
    yield a, b
    a.close()
    b.close()


def value(rng: random.Random, kind: int) -> float | bool | str | bytes:
    if kind == 0 or rng.random() < 0.05:  # now and then a sample of another kind
        return rng.choice([rng.uniform(-50, 50), 1e300, float(rng.randrange(9))])
    if kind == 1:
        return rng.random() < 0.5
    return rng.choice(["open", "closed"])


def streams_of(store: Store, n: int) -> list[int]:
    dev = store.device(b"d" * 32, "board-1", T0)
    return [store.stream(dev, f"board-1/s{i}", bytes([i]) * 32) for i in range(n)]


def test_ingest_many_stores_what_ingest_stores(stores: tuple[Store, Store]) -> None:
    """The same blocks (several kinds, samples outside the window, blocks sent twice, runs
    out of order) through ingest, stream by stream, and through ingest_many, many streams a
    call: the same samples, rollups, counts, kinds and units."""
    one, many = stores
    rng = random.Random(19)
    sids = streams_of(one, 6)
    assert streams_of(many, 6) == sids
    kinds = [0, 0, 1, 2, 0, 1]
    window = (T0, T0 + 500)
    blocks: dict[int, list[tuple[int, int, Frame]]] = {}
    for sid, kind in zip(sids, kinds, strict=True):
        blocks[sid] = [(i, 0, Frame(tuple(
            Sample(f"s{sid}", "Cel", T0 + i * 2 + k + rng.choice([0, 0, 0, 900]),
                   value(rng, kind)) for k in range(rng.randrange(1, 4)))))
            for i in range(300)]
    calls: list[list[IngestItem]] = []
    for _ in range(40):
        call = []
        for sid in rng.sample(sids, rng.randrange(1, len(sids) + 1)):
            start = rng.randrange(0, 290)
            run = blocks[sid][start:start + rng.randrange(1, 12)]
            call.append(IngestItem(sid, run, window, "Cel"))
        calls.append(call)
    calls.append([IngestItem(sid, blocks[sid], window, "Cel") for sid in sids])  # all, again
    for call in calls:
        for item in call:
            one.ingest(item.stream_id, item.blocks, item.window)
            one.set_unit(item.stream_id, item.unit)
        many.ingest_many(call)
    for sid in sids:
        assert many.samples(sid, 0, 2e9) == one.samples(sid, 0, 2e9)
        assert many.rollup(sid, T0, T0 + 2000, 60) == one.rollup(sid, T0, T0 + 2000, 60)
        assert many.rollup(sid, T0, T0 + 7200, 3600) == one.rollup(sid, T0, T0 + 7200, 3600)
        assert (many.kind(sid), many.refused(sid), many.other_kind(sid), many.unrolled(sid),
                many.stored_prefix(sid)) == (one.kind(sid), one.refused(sid),
                                             one.other_kind(sid), one.unrolled(sid), 300)
        q = "SELECT stored_blocks, unit FROM streams WHERE id = ?"
        assert many.conn.execute(q, (sid,)).fetchone() == one.conn.execute(q, (sid,)).fetchone()


def test_a_stopped_stream_in_a_batch_stores_nothing_and_the_others_go_on(
        stores: tuple[Store, Store]) -> None:
    _, store = stores
    a, b = streams_of(store, 2)
    store.stop(a, "fork: two signatures for length 3")
    frame = Frame((Sample("x", None, T0, 1.0),))
    got = store.ingest_many([IngestItem(a, [(0, 0, frame)]), IngestItem(b, [(0, 0, frame)])])
    assert got == [None, 0]
    assert store.samples(a, 0, 2e9) == [] and len(store.samples(b, 0, 2e9)) == 1


class Replica:
    """What LiveDevice reads of a replica: its key, fork, lengths and blocks (all held)."""

    def __init__(self, key: bytes, name: str) -> None:
        self.key = key
        self.fork = 0
        self.name = name
        self.blocks: list[bytes] = []

    @property
    def contiguous_length(self) -> int:
        return len(self.blocks)

    @property
    def length(self) -> int:
        return len(self.blocks)

    def has(self, i: int) -> bool:
        return 0 <= i < len(self.blocks)

    def get(self, i: int) -> bytes:
        return self.blocks[i]

    def append(self, t: float) -> None:
        self.blocks.append(Frame((Sample(self.name, "Cel", t, t - T0),)).encode())


def test_a_store_failure_under_live_batches_loses_nothing_and_stores_nothing_twice(
        store_target: Callable[[str], str]) -> None:
    """Three devices' streams stored through one Ingestor; every other batch the store
    fails (a locked or full disk): those blocks are taken again on the next pass, so each
    block is stored exactly once and the batches are shared by the devices."""
    store = Store(store_target("gw"))
    try:
        fails = {"left": 3}
        real = store.ingest_many

        def flaky(items: Sequence[IngestItem]) -> list[int | None]:
            if fails["left"] and len(items) > 1:
                fails["left"] -= 1
                raise StoreError("database is locked")
            return real(items)

        store.ingest_many = flaky  # type: ignore[method-assign]

        async def main() -> tuple[int, int]:
            ingestor = Ingestor(store, window=0.01)
            devices: list[tuple[LiveDevice, list[Replica]]] = []
            for d in range(3):
                dev_id = store.device(bytes([d]) * 32, f"board-{d}", T0)
                reps = [Replica(bytes([d, k]) * 16, f"board-{d}/s{k}") for k in range(4)]
                by_key = {r.key: r for r in reps}
                plan = [(r.name, r.key) for r in reps]
                live = LiveDevice(store, dev_id, Limits(), lambda: T0 + 100,
                                  lambda plan=plan: plan,  # type: ignore[misc]
                                  by_key.__getitem__,  # type: ignore[arg-type]
                                  ingestor)
                live.replicas()
                devices.append((live, reps))
            for tick in range(20):
                for live, reps in devices:
                    for r in reps:
                        r.append(T0 + tick)
                        live.stored(r)  # type: ignore[arg-type]
                await asyncio.sleep(0.02 if tick % 2 else 0)
            for _ in range(3):  # a last pass for what failed last
                ingestor.flush()
                for live, reps in devices:
                    for r in reps:
                        live.stored(r)  # type: ignore[arg-type]
            ingestor.flush()
            return ingestor.batches, fails["left"]

        batches, left = asyncio.run(main())
        rows = store.conn.execute(
            "SELECT stream_id, count(*), count(DISTINCT block), min(block), max(block) "
            "FROM samples GROUP BY stream_id").fetchall()
        bad = sum(1 for _sid, n, distinct, lo, hi in rows
                  if (n, distinct, lo, hi) != (20, 20, 0, 19)) + (12 - len(rows))
        record("storage", "the store fails under live batches (3 of them)", 12, bad,
               "streams with a block lost or stored twice",
               detail=f"{batches} batches for 12 streams of 3 devices x 20 appends")
        assert left == 0 and bad == 0 and batches < 12 * 20
    finally:
        store.close()


def test_ingest_many_refuses_a_database_error_whole(stores: tuple[Store, Store]) -> None:
    _, store = stores
    a, b = streams_of(store, 2)
    frame = Frame((Sample("x", None, T0, 1.0),))
    store.conn.execute("CREATE TRIGGER no BEFORE INSERT ON blocks WHEN NEW.stream_id = "
                       f"{b} BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.raises(StoreError, match="disk full"):
        store.ingest_many([IngestItem(a, [(0, 0, frame)]), IngestItem(b, [(0, 0, frame)])])
    assert store.samples(a, 0, 2e9) == [] and store.stored_prefix(a) == 0
    store.conn.execute("DROP TRIGGER no")
    assert store.ingest_many([IngestItem(a, [(0, 0, frame)]), IngestItem(b, [(0, 0, frame)])]) \
        == [0, 0]
    assert store.stored_prefix(a) == store.stored_prefix(b) == 1
    for table in ("batch", "batch_blocks", "batch_streams"):  # emptied after the error
        assert store.conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)

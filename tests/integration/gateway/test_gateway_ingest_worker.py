"""The gateway's ingest worker (cairn_gateway.ingest): a second process decodes and stores
what the download verified. It must store exactly what storing in the gateway's own process
stores, and be an accelerator only: a worker killed mid-download, or one that cannot start,
leaves nothing lost or stored twice. Real replication over TCP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from cairn.crypto import derive_stream_key_pair, random_key_pair
from cairn.frames import Frame, Sample
from cairn.log import Log
from cairn_gateway.collect import INGEST_RUN, Collector
from cairn_gateway.ingest import IngestWorker
from cairn_gateway.store import Store
from tests.integration.gateway.test_gateway_integrity import NAME, T0, collect_from

BLOCKS = 6 * INGEST_RUN + 321  # six full runs for the worker and a last short one


def frames(count: int) -> list[bytes]:
    """Every kind of frame an edge writes: one sample, several, strings, booleans, units."""
    out = []
    for k in range(count):
        t = T0 + k
        if k % 7 == 3:
            out.append(Frame(tuple(Sample(NAME, "Cel", t + j / 10, 20.0 + j) for j in
                                   range(5))).encode())
        elif k % 11 == 5:
            out.append(Frame((Sample(NAME, None, t, f"state-{k}"),)).encode())
        elif k % 13 == 6:
            out.append(Frame((Sample(NAME, None, t, k % 2 == 0),)).encode())
        else:
            out.append(Frame((Sample(NAME, "Cel", t, 20.0 + (k % 50) / 10),)).encode())
    return out


def everything(store: Store) -> list[tuple[object, ...]]:
    return list(store.conn.execute(
        "SELECT t, value, text, block, fork, k FROM samples ORDER BY block, k").fetchall())


def rollups(store: Store) -> list[tuple[object, ...]]:
    return list(store.conn.execute(
        "SELECT bucket, n, total, lo, hi FROM rollup_minute ORDER BY bucket").fetchall())


@pytest.fixture
def edge(tmp_path: Path) -> Log:
    lg = Log.create(tmp_path / "edge.db", derive_stream_key_pair(b"\x09" * 32, NAME))
    lg.append(frames(BLOCKS))
    return lg


def gather(tmp_path: Path, edge: Log, label: str, *, worker: bool,
           kill_after: int | None = None) -> tuple[Store, int, str | None, Collector]:
    gw = random_key_pair()
    store = Store(tmp_path / f"{label}.db")
    collector = Collector(tmp_path / label, gw, store)
    if worker:
        collector.start_worker()
        assert collector.worker is not None and collector.worker.alive
    if kill_after is not None:
        assert collector.worker is not None
        pid = collector.worker._proc.pid
        real = collector.worker.submit
        sent = []

        def submit(stream_id: int, blocks: list[tuple[int, int, bytes, bytes]],
                   window: tuple[float, float] | None = None,
                   cap: int | None = None) -> asyncio.Future[int]:
            sent.append(len(blocks))
            if len(sent) == kill_after + 1 and pid is not None:
                os.kill(pid, signal.SIGKILL)  # mid-download, with runs in flight
            return real(stream_id, blocks, window, cap)

        collector.worker.submit = submit  # type: ignore[method-assign]
    stored, error = asyncio.run(collect_from(edge, collector, gw.public_key))
    return store, stored, error, collector


def test_the_worker_stores_exactly_what_the_gateway_process_stores(tmp_path: Path,
                                                                    edge: Log) -> None:
    inline, n_inline, err1, c1 = gather(tmp_path, edge, "inline", worker=False)
    piped, n_piped, err2, c2 = gather(tmp_path, edge, "piped", worker=True)
    try:
        assert err1 is None and err2 is None
        want = sum(len(Frame.decode(edge.get(i)).samples) for i in range(BLOCKS))
        assert n_inline == n_piped == want
        assert everything(piped) == everything(inline)
        assert rollups(piped) == rollups(inline)
        units = [r[0] for r in piped.conn.execute("SELECT unit FROM streams")]
        assert units == ["Cel"]
        # a second sync finds nothing new, and stores nothing twice
        assert asyncio.run(collect_from(edge, c2, c2.key_pair.public_key)) == (0, None)
        assert everything(piped) == everything(inline)
    finally:
        for c, s in ((c1, inline), (c2, piped)):
            c.close()
            s.close()
        edge.close()


def test_a_worker_killed_mid_download_loses_nothing_and_stores_nothing_twice(
        tmp_path: Path, edge: Log) -> None:
    inline, _, _, c1 = gather(tmp_path, edge, "inline", worker=False)
    piped, n_piped, error, c2 = gather(tmp_path, edge, "killed", worker=True, kill_after=2)
    try:
        assert error is None
        assert c2.worker is not None and not c2.worker.alive
        assert c2.worker.failed is not None and "exited" in c2.worker.failed
        assert everything(piped) == everything(inline)  # all of it, once
        assert rollups(piped) == rollups(inline)
        assert n_piped == len(everything(inline))
    finally:
        for c, s in ((c1, inline), (c2, piped)):
            c.close()
            s.close()
        edge.close()


def test_a_worker_that_cannot_open_the_store_says_so_and_is_not_used(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-database.db"
    bad.write_bytes(b"this is not SQLite" * 100)
    worker = IngestWorker(bad)
    try:
        assert not worker.alive
        assert worker.failed is not None and "not a database" in worker.failed
    finally:
        worker.close()

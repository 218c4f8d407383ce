"""The PostgreSQL store under faults, on real servers: restarts (fast, immediate, kill -9)
under live batches and under the ingest worker, a connection dropped mid-COPY (the backend
terminated, the TCP path cut), a full disk, two gateways storing the same blocks at once, the
server down when the gateway starts and while it serves, and hostile values. Each ends with
the same audit: every block stored exactly once, every sample of it there, the rollups equal
to a recomputation from the samples. Tests that stop or fill a server start a cluster of
their own; the others use this process's shared one (``tests/pg.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from cairn.frames import Frame, Sample
from cairn_gateway.store import IngestItem, Store, StoreError
from tests.scorecard import record, scale

T0 = 1_764_000_000.0
PASSWORD = "s3cret-pw"  # in the URLs of these tests: no error may show it
DEADLINE = 120.0  # seconds any wait here may take at most


# -- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[Any]:
    """A PostgreSQL server of this test's own (it gets stopped, killed or filled)."""
    from tests.conftest import missing

    try:
        from cairn_gateway.pgcluster import PostgresCluster, find_bindir
    except ModuleNotFoundError as exc:
        missing(f"the Python package {exc.name}", "pip install -e '.[dev]'")
    if find_bindir() is None:
        missing("PostgreSQL (initdb, postgres)", "apt-get install postgresql")
    with PostgresCluster(fast=True) as pg:
        yield pg


def with_password(url: str) -> str:
    """The URL with a password (the test servers trust 127.0.0.1 and never ask for it)."""
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@", 1)


def open_store(url: str, **kwargs: Any) -> Store:
    from cairn_gateway.store.postgres import PostgresStore

    return PostgresStore(with_password(url), timeout=2.0, **kwargs)


def shut(pg: Any, how: str) -> None:
    """Stop the server: ``fast`` (SIGINT), ``immediate`` (SIGQUIT), ``kill`` (-9)."""
    if how == "fast":
        pg.stop()
    elif how == "kill":
        pg.kill()
    else:
        pg.proc.send_signal(signal.SIGQUIT)
        pg.proc.wait(DEADLINE)
        pg.proc = None


def frame(stream: int, block: int, n: int) -> Frame:
    """Block ``block`` of stream ``stream``: ``n`` samples, 7 s apart, values from both."""
    return Frame(tuple(Sample(f"s{stream}", "Cel", T0 + (block * n + k) * 7.0,
                              float((stream * 31 + block * 7 + k) % 97) - 40.0)
                       for k in range(n)))


def streams(store: Store, devices: int, per_device: int, tag: str = "board") -> list[int]:
    out = []
    for d in range(devices):
        dev = store.device(bytes([d + 1]) * 32, f"{tag}-{d}", T0)
        out += [store.stream(dev, f"{tag}-{d}/s{k}", bytes([d + 1, k + 1]) * 16)
                for k in range(per_device)]
    return out


def check_error(exc: BaseException, errors: list[str]) -> None:
    """A store error: one line, naming the server, never its password."""
    text = str(exc)
    errors.append(text)
    assert "\n" not in text and PASSWORD not in text, text
    assert text.startswith("postgresql://postgres:***@127.0.0.1:"), text


def until_stored(call: Callable[[], Any], errors: list[str]) -> Any:
    """``call`` again until it succeeds (the caller's retry), each failure checked."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            return call()
        except StoreError as exc:
            check_error(exc, errors)
            if time.monotonic() > deadline:
                raise


def audit(store: Store, expected: dict[int, dict[int, int]]) -> int:
    """Problems found (0: none): each stream holds exactly the blocks expected (block ->
    samples), each block's samples once, ``stored_blocks`` right, and the rollups (minute
    and hour) equal to a recomputation from the samples."""
    c = store.conn
    bad = 0
    for sid, blocks in expected.items():
        got = dict(c.execute("SELECT block, samples FROM blocks WHERE stream_id = ?", (sid,)))
        per = dict(c.execute("SELECT block, count(*) FROM samples WHERE stream_id = ? "
                             "GROUP BY block", (sid,)))
        counted = c.execute("SELECT stored_blocks FROM streams WHERE id = ?", (sid,)).fetchone()
        bad += (got != blocks) + (per != {b: n for b, n in blocks.items() if n}) \
            + (int(counted[0]) != len(blocks))
    for table, width in (("rollup_minute", 60), ("rollup_hour", 3600)):
        want = {(r[0], r[1]): r[2:] for r in c.execute(
            f"SELECT stream_id, (floor(t / {width}) * {width})::bigint, count(*), sum(value), "
            f"min(value), max(value) FROM samples WHERE kind = 0 AND abs(value) <= 1e290 "
            f"AND abs(t) < 1e15 "
            f"GROUP BY 1, 2")}
        have = {(r[0], r[1]): r[2:] for r in c.execute(
            f"SELECT stream_id, bucket, n, total, lo, hi FROM {table}")}
        bad += want.keys() != have.keys()
        for key in want.keys() & have.keys():
            (n, total, lo, hi), (n2, total2, lo2, hi2) = want[key], have[key]
            bad += (n, lo, hi) != (n2, lo2, hi2) or not math.isclose(total, total2,
                                                                     rel_tol=1e-9, abs_tol=1e-6)
    return bad


def batches(sids: Sequence[int], blocks: int, n: int, rng: random.Random,
            ) -> list[list[IngestItem]]:
    """Every block of every stream in live-path batches: many streams a batch, runs of a
    few blocks each, some blocks sent twice."""
    out = []
    cursor = dict.fromkeys(sids, 0)
    while any(c < blocks for c in cursor.values()):
        batch = []
        for sid in sids:
            start = max(0, cursor[sid] - rng.choice([0, 0, 1]))  # now and then one again
            stop = min(blocks, cursor[sid] + rng.randrange(1, 5))
            if start < stop:
                batch.append(IngestItem(sid, [(i, 0, frame(sid, i, n)) for i in
                                              range(start, stop)], None, "Cel"))
            cursor[sid] = stop
        out.append(batch)
    return out


# -- 1. restarts --------------------------------------------------------------------------------


def test_restarts_under_live_batches_lose_nothing_and_store_nothing_twice(cluster: Any) -> None:
    """ingest_many batches (8 streams of 4 devices a batch) run in a thread while the server
    is shut down fast, immediately and by kill -9, then started: the batches in flight fail
    with a one-line StoreError, the writer's retry stores them once the server is back, on
    the same Store (its pool recovers by itself)."""
    rng = random.Random(22)
    restarts = scale(3, 12)
    url = cluster.create_database("restarts")
    store = open_store(url)
    try:
        sids = streams(store, 4, 2)
        todo = batches(sids, scale(60, 240), 20, rng)
        errors: list[str] = []
        done = [0]

        def writer() -> None:
            for batch in todo:
                until_stored(lambda b=batch: store.ingest_many(b), errors)  # type: ignore[misc]
                done[0] += 1

        thread = threading.Thread(target=writer, name="live batches")
        thread.start()
        hows = ["fast", "immediate", "kill"]
        try:
            for r in range(restarts):
                at = (r + 1) * len(todo) // (restarts + 2)
                deadline = time.monotonic() + DEADLINE
                while done[0] < at and thread.is_alive() and time.monotonic() < deadline:
                    time.sleep(0.005)
                shut(cluster, hows[r % 3])
                cluster.start()
        finally:
            thread.join(DEADLINE)
        assert not thread.is_alive() and done[0] == len(todo)
        expected = {sid: dict.fromkeys(range(scale(60, 240)), 20) for sid in sids}
        bad = audit(store, expected)
    finally:
        store.close()
    line = record("storage", "PostgreSQL shut down fast / immediate / kill -9 under live "
                  "ingest_many batches, then started", restarts, bad,
                  "blocks lost, doubled or rollups wrong",
                  detail=f"{len(errors)} failed attempts, each a one-line StoreError naming "
                         f"the server; {len(todo)} batches stored; the same Store throughout")
    assert line.passed and errors, errors[:3]


def test_restarts_under_the_ingest_worker_lose_nothing(cluster: Any) -> None:
    """Runs handed to the ingest worker process (Store.ingest there) while the server is
    killed, shut down immediately and fast: the runs in flight fail naming the store error,
    the retry after the server is back stores them exactly once (the worker's pool recovers
    by itself)."""
    from cairn.crypto import leaf_hash
    from cairn_gateway.ingest import IngestWorker

    url = cluster.create_database("worker")
    store = open_store(url)
    sids = streams(store, 2, 2)
    runs = [(sid, [(i, 0, frame(sid, i, 20).encode()) for i in range(start, start + 5)])
            for start in range(0, scale(60, 240), 5) for sid in sids]
    errors: list[str] = []

    async def main() -> int:
        worker = IngestWorker(with_password(url))
        try:
            assert worker.alive, worker.failed
            failed = 0
            for n, (sid, blocks) in enumerate(runs):
                hows = {len(runs) * k // 4: how for k, how in
                        ((1, "kill"), (2, "immediate"), (3, "fast"))}
                if n in hows:
                    await asyncio.to_thread(shut, cluster, hows[n])
                    fut = worker.submit(sid, [(i, f, d, leaf_hash(d)) for i, f, d in blocks])
                    with pytest.raises(RuntimeError) as caught:
                        await fut
                    failed += 1
                    text = str(caught.value)
                    assert text.startswith("StoreError: postgresql://postgres:***@"), text
                    check_error(StoreError(text.removeprefix("StoreError: ")), errors)
                    await asyncio.to_thread(cluster.start)
                deadline = time.monotonic() + DEADLINE
                while True:  # the collector's retry
                    fut = worker.submit(sid, [(i, f, d, leaf_hash(d)) for i, f, d in blocks])
                    try:
                        await fut
                        break
                    except RuntimeError as exc:
                        errors.append(str(exc))
                    if time.monotonic() > deadline:
                        raise AssertionError(f"not stored within {DEADLINE} s: {errors[-1]}")
            return failed
        finally:
            worker.close()

    try:
        failed = asyncio.run(main())
        bad = audit(store, {sid: dict.fromkeys(range(scale(60, 240)), 20) for sid in sids})
    finally:
        store.close()
    line = record("storage", "PostgreSQL killed / shut down immediate / fast under the "
                  "ingest worker process, "
                  "then started", 3, bad, "blocks lost, doubled or rollups wrong",
                  detail=f"{failed} runs failed in flight, {len(errors)} failed attempts; "
                         f"{len(runs)} runs stored by the same worker")
    assert line.passed and failed == 3


def test_the_pool_reconnects_as_soon_as_a_long_outage_ends(cluster: Any) -> None:
    """The server away far longer than the pool's first reconnection attempts (psycopg_pool
    spaces them twice as far each time: after a 150 s outage its next try came 117 s after
    the server was back): the same Store serves again within a few attempts of its return."""
    outage = scale(15, 90)
    store = open_store(cluster.create_database("outage"))
    errors: list[str] = []
    try:
        (sid,) = streams(store, 1, 1)
        cluster.stop()
        gone = time.monotonic()
        tries = 0
        while time.monotonic() - gone < outage:  # the gateway keeps asking, as its API does
            with contextlib.suppress(StoreError):
                store.ingest_many([IngestItem(sid, [(tries, 0, frame(sid, tries, 5))])])
            tries += 1
            time.sleep(0.2)
        cluster.start()
        back = time.monotonic()
        until_stored(lambda: store.ingest_many([IngestItem(sid, [(tries, 0, frame(sid, tries,
                                                                                   5))])]),
                     errors)
        took = time.monotonic() - back
        stored = int(store.conn.execute("SELECT count(*) FROM blocks").fetchone()[0])
    finally:
        store.close()
    line = record("storage", f"PostgreSQL away for {outage} s, then back: the same Store "
                  "serves again", 1, stored != 1, "stores that did not recover",
                  detail=f"stored again {took:.1f} s after the server was back "
                         f"({len(errors)} failed attempts)")
    assert line.passed


# -- 2. a connection dropped mid-COPY ----------------------------------------------------------


def _big_batch(sid: int, first: int, blocks: int) -> list[IngestItem]:
    return [IngestItem(sid, [(i, 0, frame(sid, i, 100)) for i in range(first, first + blocks)])]


def _held(store: Store, sid: int, lo: int, hi: int) -> int:
    row = store.conn.execute("SELECT count(*) FROM blocks WHERE stream_id = ? AND block >= ? "
                             "AND block < ?", (sid, lo, hi)).fetchone()
    return int(row[0])


def test_a_backend_terminated_mid_copy_stores_nothing_of_its_batch(pg_url: str) -> None:
    """pg_terminate_backend of the ingesting backend while it runs the COPY of a batch of
    100,000 samples: nothing of that batch is stored, the next attempt stores it whole."""
    import psycopg

    store = open_store(pg_url)
    rounds = scale(2, 8)
    hit = bad = 0
    errors: list[str] = []
    try:
        (sid,) = streams(store, 1, 1)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            for r in range(rounds):
                lo, hi = r * 1000, (r + 1) * 1000
                outcome: list[BaseException | None] = []

                def ingest(lo: int = lo, out: list[BaseException | None] = outcome) -> None:
                    try:
                        store.ingest_many(_big_batch(sid, lo, 1000))
                        out.append(None)
                    except StoreError as exc:
                        out.append(exc)

                thread = threading.Thread(target=ingest)
                thread.start()
                deadline = time.monotonic() + DEADLINE
                killed = False
                while thread.is_alive() and not killed and time.monotonic() < deadline:
                    for (pid,) in admin.execute(
                            "SELECT pid FROM pg_stat_activity WHERE application_name = "
                            "'cairn-gateway' AND state = 'active' AND query LIKE 'COPY batch %'"):
                        killed = bool(admin.execute("SELECT pg_terminate_backend(%s)",
                                                    (pid,)).fetchone())
                thread.join(DEADLINE)
                if isinstance(outcome[0], StoreError):
                    hit += 1
                    check_error(outcome[0], errors)
                    bad += _held(store, sid, lo, hi) != 0  # nothing of it
                    store.ingest_many(_big_batch(sid, lo, 1000))  # the next attempt
                bad += _held(store, sid, lo, hi) != 1000
        bad += audit(store, {sid: dict.fromkeys(range(rounds * 1000), 100)})
    finally:
        store.close()
    line = record("storage", "the ingesting backend terminated during the COPY of a "
                  "100,000-sample batch", rounds, bad, "batches partly stored, lost or doubled",
                  detail=f"{hit} of {rounds} terminations landed in the batch's transaction")
    assert line.passed and hit >= 1, errors


def test_a_tcp_path_cut_mid_copy_stores_nothing_of_its_batch(pg_cluster: Any,
                                                              pg_url: str) -> None:
    """The gateway reaches the server through a TCP relay, cut while a large batch is
    being copied (and restored): the batch is stored whole or not at all, the retry on the
    same Store stores what is missing, exactly once."""
    from cairn.brokers.mosquitto import free_port
    from cairn_demo.proxy import Proxy

    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, name="proxy loop")
    runner.start()
    proxy = Proxy(loop, free_port("127.0.0.1"), ("127.0.0.1", pg_cluster.port))
    rounds = scale(2, 8)
    hit = bad = 0
    errors: list[str] = []
    try:
        proxy.restore()
        via = pg_url.replace(f":{pg_cluster.port}/", f":{proxy.port}/", 1)
        store = open_store(via)
        try:
            (sid,) = streams(store, 1, 1)
            for r in range(rounds):
                lo, hi = r * 1000, (r + 1) * 1000
                outcome: list[BaseException | None] = []

                def ingest(lo: int = lo, out: list[BaseException | None] = outcome) -> None:
                    try:
                        store.ingest_many(_big_batch(sid, lo, 1000))
                        out.append(None)
                    except StoreError as exc:
                        out.append(exc)

                start = proxy.relayed
                thread = threading.Thread(target=ingest)
                thread.start()
                deadline = time.monotonic() + DEADLINE
                while thread.is_alive() and proxy.relayed - start < 2_000_000 \
                        and time.monotonic() < deadline:
                    time.sleep(0.001)
                proxy.cut()
                thread.join(DEADLINE)
                proxy.restore()
                held = _held(store, sid, lo, hi)
                if isinstance(outcome[0], StoreError):
                    hit += 1
                    check_error(outcome[0], errors)
                    bad += held not in (0, 1000)  # all or nothing (a commit may have made it)
                    until_stored(lambda lo=lo: store.ingest_many(  # type: ignore[misc]
                        _big_batch(sid, lo, 1000)), errors)
                bad += _held(store, sid, lo, hi) != 1000
            bad += audit(store, {sid: dict.fromkeys(range(rounds * 1000), 100)})
        finally:
            store.close()
    finally:
        proxy.cut()
        loop.call_soon_threadsafe(loop.stop)
        runner.join(DEADLINE)
        loop.close()
    line = record("storage", "the TCP path to PostgreSQL cut during the COPY of a "
                  "100,000-sample batch", rounds, bad, "batches partly stored, lost or doubled",
                  detail=f"{hit} of {rounds} cuts failed the batch in flight")
    assert line.passed and hit >= 1, errors


# -- 3. a full disk -----------------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(owner: Any, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` owned by the server's user (root only: fail in CI, skip else)."""
    from tests.conftest import missing

    if os.geteuid() != 0:
        missing("root (to mount a small tmpfs for the full-disk test)",
                "run the reliability tests as root, as CI does")
    where = Path(tempfile.mkdtemp(prefix="cairn-full-"))
    where.chmod(0o755)
    uid, gid = (owner.pw_uid, owner.pw_gid) if owner is not None else (0, 0)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},uid={uid},gid={gid},"
                           "mode=0700", "tmpfs", str(where)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        where.rmdir()
        missing("a tmpfs mount (mount -t tmpfs)", f"mount said: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)
        where.rmdir()


def test_a_full_disk_fails_ingest_in_words_loses_nothing_and_resumes(cluster: Any,
                                                                      tmp_path: Path) -> None:
    """The store's tables in a tablespace on a 2 MB tmpfs (the WAL stays on the server's own
    disk: PostgreSQL stops with a PANIC when its WAL cannot be written, the restart test's
    case): batches are stored until the disk is full; then each fails with a StoreError
    saying the disk is full, /readyz is 503 naming it and the API answers 503 in one line;
    what was stored stays; once the tmpfs grows the failed batches are stored, once each."""
    import psycopg

    from cairn_gateway.api import make_app
    from cairn_gateway.health import GatewayHealth

    rng = random.Random(53)
    with small_disk(cluster.user, "2m") as disk:
        url = cluster.url("filling")
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute(f"CREATE TABLESPACE small LOCATION '{disk}'".encode())
            admin.execute(b"CREATE DATABASE filling")
            admin.execute(b"ALTER DATABASE filling SET default_tablespace = small")
        store = open_store(url)
        try:
            sids = streams(store, 2, 2)
            todo = batches(sids, 400, 20, rng)
            stored: list[list[IngestItem]] = []
            failed: list[list[IngestItem]] = []
            errors: list[str] = []
            for batch in todo:
                try:
                    store.ingest_many(batch)
                    (failed if failed else stored).append(batch)
                except StoreError as exc:
                    check_error(exc, errors)
                    failed.append(batch)
            assert failed and stored, "the disk never filled (or filled at once)"
            full = [e for e in errors if "disk is full" in e]
            held = store.conn.execute("SELECT count(*) FROM samples").fetchone()[0]
            health = GatewayHealth(tmp_path, None, 10.0, 3, server=store.writable)
            ok, detail = health.store()

            async def ask() -> tuple[httpx.Response, httpx.Response]:
                app = make_app(store, health=health)
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                             base_url="http://gw") as client:
                    return await client.get("/readyz"), await client.get("/api/streams")

            ready, listing = asyncio.run(ask())
            subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
            for batch in failed:
                until_stored(lambda b=batch: store.ingest_many(b), errors)  # type: ignore[misc]
            expected = {sid: dict.fromkeys(range(400), 20) for sid in sids}
            bad = audit(store, expected)
            after = store.conn.execute("SELECT count(*) FROM samples").fetchone()[0]
            health_after = GatewayHealth(tmp_path, None, 10.0, 3, server=store.writable).store()
        finally:
            store.close()
            cluster.stop()
    line = record("storage", "the PostgreSQL store's disk full under live batches, then "
                  "space freed", len(failed), bad, "blocks lost, doubled or rollups wrong",
                  detail=f"{len(stored)} batches stored before, {len(failed)} failed "
                         f"({len(full)} saying the disk is full) and were stored after")
    assert line.passed and full == errors[:len(full)] and full, errors[:3]
    assert "the database server's disk is full" in full[0] and "free space" in full[0]
    assert not ok and "disk is full" in detail, detail
    assert ready.status_code == 503 and "disk is full" in ready.json()["checks"]["store"][
        "detail"]
    assert listing.status_code == 200  # reads go on
    assert after == 400 * 20 * len(sids) and held <= after and health_after == (True,
                                                                                 "writable")


def test_a_full_wal_disk_fails_ingest_in_words_and_ingest_resumes_after(tmp_path: Path) -> None:
    """The whole data directory on a 48 MB tmpfs: when the WAL cannot grow, PostgreSQL's
    backend PANICs and the server restarts itself (or stops, when even its recovery cannot
    write: then it is started again here, as systemd would). The batches in flight fail
    saying the disk is full (or that the server is unreachable); once the tmpfs grows the
    same Store stores every failed batch, once."""
    from cairn_gateway.pgcluster import PostgresCluster, _server_user

    rng = random.Random(48)
    user = _server_user(None)
    with small_disk(user, "48m") as disk:
        pg = PostgresCluster(fast=True, parent=disk)
        try:
            pg.start()
            store = open_store(pg.create_database("wal"))
            try:
                sids = streams(store, 2, 2)
                todo = batches(sids, 1500, 50, rng)
                failed: list[list[IngestItem]] = []
                errors: list[str] = []
                for batch in todo:
                    if len(failed) >= 3:  # the server is down: the rest after it is back
                        failed.append(batch)
                        continue
                    try:
                        store.ingest_many(batch)
                    except StoreError as exc:
                        check_error(exc, errors)
                        failed.append(batch)
                assert failed, "the disk never filled"
                stopped = not pg.running
                subprocess.run(["mount", "-o", "remount,size=256m", str(disk)], check=True)
                deadline = time.monotonic() + DEADLINE
                for batch in failed:
                    while True:
                        if not pg.running:  # it stopped itself (at once, or after recovery)
                            stopped = True
                            pg.start()
                        try:
                            store.ingest_many(batch)
                            break
                        except StoreError as exc:
                            check_error(exc, errors)
                            assert time.monotonic() < deadline, errors[-3:]
                bad = audit(store, {sid: dict.fromkeys(range(1500), 50) for sid in sids})
            finally:
                store.close()
        finally:
            pg.close()
    said = [e for e in errors if "disk is full" in e]
    line = record("storage", "the PostgreSQL data directory's disk full (WAL and tables), "
                  "then space freed and the server started", len(failed), bad,
                  "blocks lost, doubled or rollups wrong",
                  detail=f"{len(todo) - len(failed)} batches stored before; the server "
                         f"{'stopped itself' if stopped else 'stayed up'}; {len(said)} of "
                         f"{len(errors)} errors said the disk is full")
    assert line.passed, errors[:3]


# -- 4. two gateways on the same blocks ---------------------------------------------------------


def test_two_stores_racing_on_the_same_blocks_store_each_once(pg_url: str) -> None:
    """Two Store objects (two gateways' pools) in two threads store the same blocks of the
    same streams at once, in seeded random orders and groupings, round after round: every
    sample once, the rollups exact, no deadlock left to the caller."""
    rounds = scale(6, 40)
    a, b = open_store(pg_url), open_store(pg_url)
    errors: list[str] = []
    try:
        sids = streams(a, 3, 3)
        assert streams(b, 3, 3) == sids
        for r in range(rounds):
            lo = r * 30
            barrier = threading.Barrier(2)

            def race(store: Store, seed: int, lo: int = lo,
                     barrier: threading.Barrier = barrier) -> None:
                rng = random.Random(seed)
                items = [(sid, i) for sid in sids for i in range(lo, lo + 30)]
                rng.shuffle(items)
                barrier.wait(DEADLINE)
                while items:
                    take, items = items[:rng.randrange(1, 40)], items[rng.randrange(0, 5):]
                    by: dict[int, list[tuple[int, int, Frame]]] = {}
                    for sid, i in take:
                        by.setdefault(sid, []).append((i, 0, frame(sid, i, 10)))
                    until_stored(lambda by=by: store.ingest_many(  # type: ignore[misc]
                        [IngestItem(sid, blocks) for sid, blocks in by.items()]), errors)

            threads = [threading.Thread(target=race, args=(s, r * 2 + n))
                       for n, s in enumerate((a, b))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(DEADLINE)
            assert not any(t.is_alive() for t in threads)
        bad = audit(a, {sid: dict.fromkeys(range(rounds * 30), 10) for sid in sids})
        retried = a.retried + b.retried  # type: ignore[attr-defined]
    finally:
        a.close()
        b.close()
    line = record("storage", "two gateways' stores storing the same blocks at once, random "
                  "orders and batches", rounds, bad + len(errors),
                  "samples lost or doubled, rollups wrong, errors to the caller",
                  detail=f"{retried} transactions retried after a deadlock or serialisation "
                         "failure")
    assert line.passed, errors[:3]


def test_a_deadlock_with_another_writer_is_retried(pg_url: str) -> None:
    """Another session holds stream B and then asks for stream A while an ingest of A and B
    (which locks A, then waits for B) is under way: PostgreSQL breaks the deadlock by failing
    the ingest's transaction, which the store runs again: the caller sees it succeed once."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as admin:  # (the ingest's side detects it)
        name = pg_url.rsplit("/", 1)[1]
        admin.execute(f"ALTER DATABASE {name} SET deadlock_timeout = '50ms'".encode())
    store = open_store(pg_url)
    try:
        a, b = streams(store, 1, 2)
        batch = [IngestItem(sid, [(0, 0, frame(sid, 0, 10))]) for sid in (a, b)]
        with psycopg.connect(pg_url) as other:
            other.execute("SET deadlock_timeout = '60s'")
            other.execute("SELECT 1 FROM streams WHERE id = %s FOR UPDATE", (b,))
            outcome: list[object] = []
            thread = threading.Thread(target=lambda: outcome.append(store.ingest_many(batch)))
            thread.start()
            deadline = time.monotonic() + DEADLINE
            while not other.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE application_name = 'cairn-gateway' "
                    "AND wait_event_type = 'Lock'").fetchone():
                assert time.monotonic() < deadline and thread.is_alive()
                time.sleep(0.005)
            other.execute("SELECT 1 FROM streams WHERE id = %s FOR UPDATE", (a,))
            other.commit()
        thread.join(DEADLINE)
        retried = store.retried  # type: ignore[attr-defined]
        bad = (outcome != [[0, 0]]) + audit(store, {a: {0: 10}, b: {0: 10}})
    finally:
        store.close()
    line = record("storage", "a deadlock between an ingest and another writer", 1, bad,
                  "errors to the caller, samples lost or doubled",
                  detail=f"{retried} transaction retried")
    assert line.passed and retried == 1, outcome


# -- 5. the server down at start and while serving ---------------------------------------------


def test_a_gateway_started_with_the_database_down_exits_in_one_line(tmp_path: Path) -> None:
    """`cairn gateway run` with [store].url at a server that is down: exit 1 and one line
    naming the server and why, no password, no traceback (systemd restarts it)."""
    from cairn.brokers.mosquitto import free_port
    from tests.integration.entry import run_entry

    ran = run_entry("cairn", "gateway", "init", str(tmp_path / "g"), cwd=tmp_path)
    assert ran.code == 0, ran
    config = tmp_path / "g" / "gateway.toml"
    secret = tmp_path / "g" / "db.password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    port = free_port("127.0.0.1")
    text = config.read_text().replace('listen = "127.0.0.1:8080"', 'listen = "127.0.0.1:0"', 1)
    text = text.replace('listen = "0.0.0.0:7420"', 'listen = ""', 1)
    text = text.replace('url = ""', f'url = "postgresql://cairn@127.0.0.1:{port}/cairn"', 1)
    text = text.replace('password_file = ""', f'password_file = "{secret}"', 1)
    config.write_text(text)
    ran = run_entry("cairn", "gateway", "run", "--config", str(config), cwd=tmp_path)
    lines = ran.stderr.strip().splitlines()
    bad = (ran.code != 1) + (len(lines) != 1) + ("Traceback" in ran.stderr) \
        + (PASSWORD in ran.stderr + ran.stdout)
    line = record("storage", "the gateway started with its PostgreSQL server down", 1, bad,
                  "tracebacks, extra lines, passwords shown or wrong exit codes",
                  detail=lines[0][:120] if lines else "(nothing said)")
    assert line.passed, ran
    assert f"postgresql://cairn:***@127.0.0.1:{port}/cairn: cannot connect" in lines[0], lines
    assert "refused" in lines[0], lines


def test_the_database_going_away_answers_503_in_one_line_and_recovers(cluster: Any,
                                                                      tmp_path: Path) -> None:
    """The API over a PostgreSQL store whose server stops: reads answer 503 with the reason
    in one line (not a 500 and a traceback), /readyz is 503 naming the database server; once
    it is back the same app serves again."""
    from cairn_gateway.api import make_app
    from cairn_gateway.health import STORE_CHECK_EVERY, GatewayHealth

    url = cluster.create_database("away")
    store = open_store(url)
    now = [0.0]
    try:
        streams(store, 1, 2)
        health = GatewayHealth(tmp_path, None, 10.0, 3, server=store.writable,
                               clock=lambda: now[0])
        app = make_app(store, health=health)

        async def ask() -> tuple[httpx.Response, httpx.Response]:
            now[0] += STORE_CHECK_EVERY + 1  # a fresh store check
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://gw") as client:
                return await client.get("/api/streams"), await client.get("/readyz")

        up = asyncio.run(ask())
        cluster.stop()
        down = asyncio.run(ask())
        cluster.start()
        deadline = time.monotonic() + DEADLINE
        back = asyncio.run(ask())
        while back[0].status_code != 200 and time.monotonic() < deadline:
            back = asyncio.run(ask())
    finally:
        store.close()
    detail = down[0].json().get("detail", "")
    store_check = down[1].json()["checks"]["store"]["detail"]
    bad = (down[0].status_code != 503) + ("\n" in detail) + (PASSWORD in down[0].text) \
        + (down[1].status_code != 503) + (back[0].status_code != 200)
    line = record("storage", "the PostgreSQL server stopped under a serving gateway, then "
                  "started", 1, bad, "500s, tracebacks, passwords shown or no recovery",
                  detail=detail[:120])
    assert line.passed, (down[0].text, down[1].text, back[0].text)
    assert up[0].status_code == 200 and len(up[0].json()) == 2
    assert detail.startswith("postgresql://postgres:***@127.0.0.1:") and "refused" in detail
    # (/readyz needs no token: it names no server, user or database)
    assert store_check.startswith("the database server: ") and "127.0.0.1" not in store_check \
        and "postgres" not in store_check.removeprefix("the database server: "), store_check
    assert len(back[0].json()) == 2


def test_a_running_gateway_outlives_its_database_server(cluster: Any, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """The gateway daemon (run_gateway, its API on a real socket) on a PostgreSQL store whose
    server stops and starts again: the daemon keeps running, the API answers 503 in one line
    and /readyz 503 naming the database server meanwhile, and it serves again once the server
    is back, without a restart; its log says so in one warning each way."""
    import logging

    caplog.set_level(logging.INFO)
    from cairn.fleet.identity import new_seed
    from cairn_gateway import daemon
    from cairn_gateway.config import parse_config

    url = cluster.create_database("daemon")
    store = open_store(url)
    try:
        streams(store, 1, 2)
    finally:
        store.close()
    new_seed(tmp_path / "gateway.seed")
    cfg = parse_config(f'[api]\nlisten = "127.0.0.1:0"\n[collect]\ningest_worker = false\n'
                       f'interval = 0.2\n[replication]\nlisten = ""\n[store]\nurl = "{url}"\n',
                       tmp_path)

    async def until(client: httpx.AsyncClient, path: str, ok: Callable[[httpx.Response], bool],
                    ) -> httpx.Response:
        deadline = time.monotonic() + DEADLINE
        while True:
            answer = await client.get(path)
            if ok(answer) or time.monotonic() > deadline:
                return answer
            await asyncio.sleep(0.05)

    async def main() -> tuple[httpx.Response, ...]:
        listening: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
        gateway = asyncio.create_task(daemon.run_gateway(cfg, ready=listening.set_result))
        try:
            host, port = await asyncio.wait_for(listening, DEADLINE)
            async with httpx.AsyncClient(base_url=f"http://{host}:{port}",
                                         timeout=DEADLINE) as client:
                up = await client.get("/api/streams")
                await asyncio.to_thread(cluster.stop)
                down = await until(client, "/api/streams", lambda r: r.status_code != 200)
                ready = await until(client, "/readyz", lambda r: "database server" in r.text)
                live = await client.get("/healthz")
                alive = gateway.done()
                await asyncio.to_thread(cluster.start)
                back = await until(client, "/api/streams", lambda r: r.status_code == 200)
            assert not alive and not gateway.done(), "the daemon stopped"
            return up, down, ready, live, back
        finally:
            gateway.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gateway

    up, down, ready, live, back = asyncio.run(main())
    detail = down.json().get("detail", "")
    store_check = ready.json()["checks"]["store"]
    said = [r.getMessage() for r in caplog.records if r.name == "cairn_gateway.store.postgres"
            and r.levelno >= logging.WARNING]
    bad = (down.status_code != 503) + ("\n" in detail) + ("Traceback" in down.text) \
        + (ready.status_code != 503) + store_check["ok"] + (back.status_code != 200) \
        + (len(said) != 2) + (live.json() != {"ok": True, "streams": None})
    line = record("storage", "the PostgreSQL server stopped and started under a running "
                  "gateway daemon", 1, bad,
                  "500s, tracebacks, daemon exits, /healthz failing or no recovery",
                  detail=f"API: {detail[:100]}")
    assert line.passed, (down.text, ready.text, back.text, said)
    assert "is unreachable: connection failed" in said[0] and "reachable again" in said[1]
    assert up.status_code == 200 and len(up.json()) == len(back.json()) == 2
    assert store_check["detail"].startswith("the database server: ") \
        and "127.0.0.1" not in store_check["detail"], store_check


# -- 6. hostile values --------------------------------------------------------------------------


def forged(t: float, value: float) -> Sample:
    """A sample no frame decoder lets through (NaN or infinite): the store copes all the
    same."""
    s = Sample("x", None, 0.0, 0.0)
    object.__setattr__(s, "time", t)
    object.__setattr__(s, "value", value)
    return s


def test_hostile_values_never_break_the_batch_of_other_devices(pg_url: str) -> None:
    """One live batch holding a hostile device's samples (strings with NUL, a 1 MB string,
    NaN and infinite values, times far outside the monthly partitions, times spread over
    300 months: a partition flood), a device and stream named with odd characters (NUL,
    quotes, SQL, emoji) and an honest device: the batch is stored whole, the honest
    device's samples and rollups exact, and one batch makes at most NEW_MONTHS partitions."""
    from cairn_gateway.store.postgres import NEW_MONTHS

    store = open_store(pg_url)
    try:
        (honest,) = streams(store, 1, 1, "honest")
        odd_dev = store.device(b"\x07" * 32, "b\x00ard'; DROP TABLE samples; --\u202e🙂", T0)
        odd = store.stream(odd_dev, "b\x00ard'\"/t\u0000emp 🙂", b"\x07\x08" * 16)
        hostile_dev = store.device(b"\x09" * 32, "hostile", T0)
        hostile = store.stream(hostile_dev, "hostile/x", b"\x09\x0a" * 16)
        assert store.stream(odd_dev, "b\x00ard'\"/t\u0000emp 🙂", b"\x07\x08" * 16) == odd
        parts = store.conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'samples'::regclass").fetchone()
        values: list[Any] = ["a\x00b", "\x00" * 10, "x" * 1_000_000, 1e308, True, b"\x00\xff"]
        hostile_blocks = [
            (0, 0, Frame((*(Sample("x", None, T0 + k, v) for k, v in enumerate(values)),
                          *(forged(T0 + 10 + k, v) for k, v in
                            enumerate((math.nan, math.inf, -math.inf)))))),
            (1, 0, Frame((*(Sample("x", None, t, 1.0) for t in
                            (1e300, -1e300, 1e15, -62e9, 7e9, 0.0)), forged(math.inf, 1.0)))),
            (2, 0, Frame(tuple(Sample("x", None, T0 + m * 31 * 86400.0, float(m))
                               for m in range(-150, 150)))),
        ]
        honest_blocks = [(i, 0, frame(honest, i, 20)) for i in range(10)]
        odd_blocks = [(0, 0, Frame((Sample("t", "C\x00", T0, "v\x00"),)))]
        got = store.ingest_many([IngestItem(hostile, hostile_blocks, None, "u\x00"),
                                 IngestItem(odd, odd_blocks, None, "C\x00"),
                                 IngestItem(honest, honest_blocks, None, "Cel")])
        parts_after = store.conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'samples'::regclass").fetchone()
        again = store.ingest_many([IngestItem(hostile, hostile_blocks),  # nothing twice
                                   IngestItem(honest, honest_blocks)])
        texts = {r[0] for r in store.conn.execute(
            "SELECT text FROM samples WHERE stream_id = ? AND text IS NOT NULL", (hostile,))}
        counts = {sid: store.conn.execute("SELECT count(*) FROM samples WHERE stream_id = ?",
                                          (sid,)).fetchone()[0]
                  for sid in (hostile, odd, honest)}
        names = store.conn.execute("SELECT d.name, s.name, s.unit FROM streams s JOIN devices d "
                                   "ON d.id = s.device_id WHERE s.id = ?", (odd,)).fetchone()
        bad = (got != [0, 0, 0]) + (again != [0, 0]) \
            + (counts != {hostile: len(values) + 3 + 7 + 300, odd: 1, honest: 200}) \
            + (int(parts_after[0]) - int(parts[0]) > NEW_MONTHS) \
            + audit(store, {honest: dict.fromkeys(range(10), 20)})
    finally:
        store.close()
    line = record("storage", "hostile values in a PostgreSQL batch (NUL, 1 MB strings, NaN, "
                  "inf, far times, a 300-month flood, odd names)", 1, bad,
                  "batches broken, samples lost or doubled, partitions past the bound",
                  detail=f"{int(parts_after[0]) - int(parts[0])} partitions made by the batch "
                         f"(bound {NEW_MONTHS})")
    assert line.passed, (got, again, counts, parts, parts_after)
    assert {"a\ufffdb", "\ufffd" * 10, "x" * 1_000_000, "00ff"} <= texts
    assert names[0].startswith("b\ufffdard'; DROP") and names[2] == "C\ufffd", names


def test_a_partition_flood_is_bounded_and_its_samples_move_to_their_months(pg_url: str) -> None:
    """A stream whose batches each span 40 months: each batch makes at most NEW_MONTHS
    partitions, the other months' samples wait in samples_other and move into their month's
    partition when a later batch makes it; every sample stays readable throughout, once."""
    from cairn_gateway.store.postgres import NEW_MONTHS

    store = open_store(pg_url)
    month = 31 * 86400.0
    try:
        (sid,) = streams(store, 1, 1)
        made: list[int] = []
        for b in range(5):
            before = store.conn.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = "
                                        "'samples'::regclass").fetchone()[0]
            store.ingest_many([IngestItem(sid, [(b, 0, Frame(tuple(
                Sample("x", None, T0 + m * month + b, float(m)) for m in range(40))))])])
            after = store.conn.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = "
                                       "'samples'::regclass").fetchone()[0]
            made.append(int(after) - int(before))
        waiting = store.conn.execute("SELECT count(*) FROM samples_other").fetchone()[0]
        held = len(store.samples(sid, 0, 2e10))
        bad = (max(made) > NEW_MONTHS) + (held != 200) \
            + audit(store, {sid: dict.fromkeys(range(5), 40)})
    finally:
        store.close()
    line = record("storage", "a stream's batches each spread over 40 months (a partition "
                  "flood)", 5, bad, "partitions past the bound, samples lost or doubled",
                  detail=f"partitions made per batch {made}; {waiting} samples still waiting "
                         "in samples_other")
    assert line.passed, (made, held)
    months = {time.gmtime(T0 + m * month)[:2] for m in range(40)}
    assert made[-1] == 0 and sum(made) == len(months) and waiting == 0, (made, waiting)

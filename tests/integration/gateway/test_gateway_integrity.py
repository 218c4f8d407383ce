"""A gateway collecting from an edge that rewrites its history: the fork is caught, both
heads are kept as evidence, the stream is stopped and flagged, and nothing of the rewritten
history is stored. Real replication over TCP on 127.0.0.1 (a Cairn log server)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from cairn.crypto import derive_stream_key_pair, random_key_pair
from cairn.fleet.record import DeviceRecord
from cairn.frames import Frame, Sample
from cairn.log import Log
from cairn.replication.net import serve
from cairn_gateway.collect import Collector, Device
from cairn_gateway.store import Store

T0 = 1_764_000_000.0
NAME = "board-9/temperature"


def frame(k: int, value: float) -> bytes:
    return Frame((Sample(NAME, "Cel", T0 + k, value),)).encode()


async def collect_from(writer: Log, collector: Collector, gw_key: bytes) -> tuple[int, str | None]:
    """Serve ``writer`` to the gateway once and collect."""
    address: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve([writer], random_key_pair(), "127.0.0.1", 0,
                                       allow=[gw_key], ready=address.set_result))
    try:
        host, port = await asyncio.wait_for(address, 10)
        dev = Device(b"r" * 32, 1, DeviceRecord(time=int(T0), address=(host, port)),
                     {NAME: writer.key})
        result = await collector.sync(dev, NAME, (host, port))
        return result.samples, result.error
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server


def test_a_rewritten_history_is_caught_and_stops_the_stream(tmp_path: Path) -> None:
    kp = derive_stream_key_pair(b"\x05" * 32, NAME)
    gw = random_key_pair()
    store = Store(tmp_path / "gw.db")
    collector = Collector(tmp_path / "gw", gw, store)
    writer = Log.create(tmp_path / "edge.db", kp)
    try:
        writer.append([frame(k, 20.0 + k) for k in range(10)])
        stored, error = asyncio.run(collect_from(writer, collector, gw.public_key))
        assert (stored, error) == (10, None)
        # the edge rewrites its history: blocks 6.. replaced by other values (a new fork)
        writer.truncate(6)
        writer.append([frame(k, 99.0) for k in range(6, 12)])
        stored, error = asyncio.run(collect_from(writer, collector, gw.public_key))
        assert stored == 0 and error is not None
        [(sid, status)] = store.conn.execute("SELECT id, status FROM streams").fetchall()
        assert status.startswith("fork: fork detected: node 7 differs") and error is not None
        assert error.startswith("fork:")
        values = [v for _, v, _, _ in store.samples(sid, 0, 2e9)]
        assert values == [20.0 + k for k in range(10)]  # nothing of the rewrite was stored
        replica = collector.replica(writer.key)
        # the replica is frozen at what it verified, with both heads kept as evidence
        assert replica.frozen and (replica.fork, replica.length) == (0, 10)
        [(kind, detail, local, remote)] = replica.evidence()
        assert kind == "fork" and "node 7 differs" in detail and local and remote
    finally:
        writer.close()
        collector.close()
        store.close()


def tamper(path: Path, index: int, forged: bytes) -> None:
    """Edit an edge's log file: block ``index``'s data replaced and its leaf hash recomputed,
    so the edge itself serves it without complaint; the signature does not cover it any more."""
    import hashlib
    import sqlite3
    import struct

    db = sqlite3.connect(path)
    start, sizes, hashes, data = db.execute(
        "SELECT start, sizes, hashes, data FROM segments WHERE start <= ? "
        "ORDER BY start DESC LIMIT 1", (index,)).fetchone()
    k = index - start
    lengths = struct.unpack(f"<{len(sizes) // 4}I", sizes)
    off = sum(lengths[:k])
    assert len(forged) == lengths[k]
    data = data[:off] + forged + data[off + lengths[k]:]
    leaf = hashlib.blake2b(b"\x00" + struct.pack("<Q", len(forged)) + forged,
                           digest_size=32).digest()
    hashes = hashes[:32 * k] + leaf + hashes[32 * (k + 1):]
    db.execute("UPDATE segments SET data = ?, hashes = ? WHERE start = ?", (data, hashes, start))
    db.commit()
    db.close()


def test_a_tampered_block_far_into_a_long_log_stops_the_stream_without_a_crash(
        tmp_path: Path) -> None:
    """Found in review: a tampered block after the first 2,048 made the collector store the
    runs that had verified into a stream it had just stopped (StoreError, the gateway exited)."""
    kp = derive_stream_key_pair(b"\x07" * 32, NAME)
    gw = random_key_pair()
    store = Store(tmp_path / "gw.db")
    collector = Collector(tmp_path / "gw", gw, store)
    path = tmp_path / "edge.db"
    with Log.create(path, kp) as w:
        w.append([frame(k, 20.0 + k) for k in range(5000)])
    tamper(path, 4500, frame(4500, -1.0))
    writer = Log.open(path)
    try:
        _, error = asyncio.run(collect_from(writer, collector, gw.public_key))
        assert error is not None and error.startswith("invalid: ")
        [(sid, status)] = store.conn.execute("SELECT id, status FROM streams").fetchall()
        assert status == error
        assert -1.0 not in [v for _, v, _, _ in store.samples(sid, 0, 2e9)]
        # a stopped stream is not downloaded again: the next round says why, stores nothing
        again, error2 = asyncio.run(collect_from(writer, collector, gw.public_key))
        assert again == 0 and error2 == status
    finally:
        writer.close()
        collector.close()
        store.close()


def test_a_tampered_block_is_refused_and_nothing_of_it_stored(tmp_path: Path) -> None:
    """The edge's file is edited: a block's data changed and its leaf hash recomputed, so the
    edge itself serves it without complaint; the signature does not cover it any more."""
    kp = derive_stream_key_pair(b"\x06" * 32, NAME)
    gw = random_key_pair()
    store = Store(tmp_path / "gw.db")
    collector = Collector(tmp_path / "gw", gw, store)
    path = tmp_path / "edge.db"
    with Log.create(path, kp) as w:
        w.append([frame(k, 20.0 + k) for k in range(8)])
    forged = frame(3, 1000.0)
    tamper(path, 3, forged)
    writer = Log.open(path)
    try:
        assert writer.get(3) == forged  # the edge reads its edited file without complaint
        stored, error = asyncio.run(collect_from(writer, collector, gw.public_key))
        [(sid,)] = store.conn.execute("SELECT id FROM streams").fetchall()
        values = [v for _, v, _, _ in store.samples(sid, 0, 2e9)]
        assert 1000.0 not in values  # the forged value never reaches the store
        replica = collector.replica(writer.key)
        assert not replica.has(3) and all(replica.get(i) == frame(i, 20.0 + i)
                                           for i in range(replica.length) if replica.has(i))
        # the run with the forged block did not verify: nothing of it stored, stream flagged
        assert stored == 0 and values == [] and error is not None
        assert error.startswith("invalid: ") and "do not hash to the signed root" in error
        [(status,)] = store.conn.execute("SELECT status FROM streams").fetchall()
        assert status == error
    finally:
        writer.close()
        collector.close()
        store.close()

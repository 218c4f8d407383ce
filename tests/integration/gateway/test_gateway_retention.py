"""Retention over everything the gateway keeps (samples and replicas), on real SQLite files: an
edge serves its signed log on 127.0.0.1, the gateway collects it, then ``[store]
retention_days`` and ``max_disk_mb`` prune; the files shrink on disk, pruned blocks are never
asked for again, new blocks still verify and are stored, a stopped stream's replica is kept
whole (evidence), and each prune is counted in /metrics and logged."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cairn.crypto import derive_stream_key_pair, random_key_pair
from cairn.frames import Frame, Sample
from cairn.log import Log
from cairn_gateway.collect import Collector, Device
from cairn_gateway.config import GatewayConfig
from cairn_gateway.metrics import GatewayMetrics
from cairn_gateway.retention import apply_retention, disk_usage
from cairn_gateway.schedule import Limits
from cairn_gateway.store import Store
from tests.integration.gateway.test_gateway_schedule import device, serving
from tests.scorecard import record

T0 = 1_764_000_000.0
STEP = 60.0  # seconds between frames
BLOCKS = 600
NAME = "board-1/temperature"


def frames(start: int, n: int) -> list[bytes]:
    """``n`` frames of 20 samples each, the first at block ``start``, one a minute."""
    return [Frame(tuple(Sample(NAME, "Cel", T0 + i * STEP + k, 20.0 + k / 10 + i / 1000)
                        for k in range(20))).encode() for i in range(start, start + n)]


def gateway(tmp_path: Path, now: float) -> tuple[Store, Collector]:
    store = Store(tmp_path / "gw.db")
    collector = Collector(tmp_path / "gw", random_key_pair(), store, wall=lambda: now + 3600,
                          limits=Limits(max_samples=10_000_000))
    return store, collector


def values(metrics: GatewayMetrics) -> dict[tuple[str, str], float]:
    text = metrics.exposition().decode()
    return {(s.name, s.labels.get("reason", s.labels.get("file", ""))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def sync(collector: Collector, dev: Device, lg: Log) -> int:
    async def go() -> int:
        async with serving(lg) as port:
            assert dev.record.address is not None
            dev.record = type(dev.record)(time=dev.record.time, address=("127.0.0.1", port))
            [r] = await collector.sync_devices([dev])
            assert r.error is None, r.error
            return r.blocks
    return asyncio.run(go())


def test_retention_prunes_replicas_and_samples_and_the_files_shrink(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    edge = Log.create(tmp_path / "edge.db", derive_stream_key_pair(b"\x01" * 32, NAME))
    edge.append(frames(0, BLOCKS))
    now = T0 + BLOCKS * STEP + 5
    store, collector = gateway(tmp_path, now)
    dev = device(1, NAME, 1, edge.key)
    try:
        assert sync(collector, dev, edge) == BLOCKS
        replicas = tmp_path / "gw" / "replicas.db"
        collector.replicas.raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # all in the file
        size_before = replicas.stat().st_size
        used_before = disk_usage(collector, store)
        keep = BLOCKS // 4  # the newest quarter is within retention
        cfg = GatewayConfig(tmp_path, tmp_path / "key",
                            retention_days=(keep * STEP) / 86400)
        metrics = GatewayMetrics(store, disk=lambda: disk_usage(collector, store))
        with caplog.at_level(logging.INFO, "cairn_gateway.retention"):
            apply_retention(cfg, collector, store, metrics, now=now)
        replica = collector.replica(edge.key)
        floor = collector.floors.below(edge.key)
        assert BLOCKS - keep - 2 <= floor <= BLOCKS - keep + 1
        assert not any(replica.has(i) for i in range(floor))
        assert all(replica.has(i) for i in range(floor, BLOCKS))
        oldest = store.conn.execute("SELECT min(t) FROM samples").fetchone()[0]
        assert oldest >= now - keep * STEP
        # the files shrink on disk, not only their pages in use
        assert replicas.stat().st_size < size_before * 0.6  # (3/4 of the blocks pruned)
        used = disk_usage(collector, store)
        assert used["replicas"] < used_before["replicas"] * 0.6
        assert used["store"] < used_before["store"]
        got = values(metrics)
        assert got[("cairn_gateway_pruned_blocks_total", "retention")] == floor
        assert got[("cairn_gateway_pruned_samples_total", "retention")] > 0
        assert got[("cairn_gateway_disk_bytes", "replicas")] == used["replicas"]
        assert any("retention: deleted" in r.getMessage() for r in caplog.records)

        # the edge goes on: only its new blocks are downloaded, verified against the tree the
        # replica kept, and stored; nothing pruned comes back
        edge.append(frames(BLOCKS, 10))
        assert sync(collector, dev, edge) == 10
        assert not any(replica.has(i) for i in range(floor))
        assert all(replica.has(i) for i in range(floor, BLOCKS + 10))
        newest = store.conn.execute("SELECT max(t) FROM samples").fetchone()[0]
        assert newest == T0 + (BLOCKS + 9) * STEP + 19
        # a restart reads the floor from replicas.db
        collector.close()
        store.close()
        store, collector = gateway(tmp_path, now)
        assert collector.floors.below(edge.key) == floor
        assert sync(collector, dev, edge) == 0
        # the file was switched to incremental vacuum: a later pass gives back what it frees
        assert collector.replicas.raw.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
        shrunk = replicas.stat().st_size
        later = GatewayConfig(tmp_path, tmp_path / "key", retention_days=(50 * STEP) / 86400)
        apply_retention(later, collector, store, GatewayMetrics(store), now=now)
        assert collector.floors.below(edge.key) > floor
        assert replicas.stat().st_size < shrunk
        record("storage", "gateway retention: replica blocks past retention_days, then the "
               "edge syncs again", 1, 0, "pruned blocks downloaded again",
               detail=f"{floor} of {BLOCKS} blocks pruned, file {size_before} -> "
               f"{replicas.stat().st_size} bytes")
    finally:
        collector.close()
        store.close()
        edge.close()


def test_a_disk_budget_prunes_the_oldest_first_and_keeps_stopped_streams(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    edge = Log.create(tmp_path / "edge.db", derive_stream_key_pair(b"\x01" * 32, NAME))
    edge.append(frames(0, BLOCKS))
    now = T0 + BLOCKS * STEP + 5
    store, collector = gateway(tmp_path, now)
    dev = device(1, NAME, 1, edge.key)
    try:
        assert sync(collector, dev, edge) == BLOCKS
        used = sum(disk_usage(collector, store).values())
        budget = used // 2
        cfg = GatewayConfig(tmp_path, tmp_path / "key", max_bytes=budget)
        metrics = GatewayMetrics(store, budget=budget)
        with caplog.at_level(logging.WARNING, "cairn_gateway.retention"):
            apply_retention(cfg, collector, store, metrics, now=now)
        assert sum(disk_usage(collector, store).values()) <= budget
        replica = collector.replica(edge.key)
        floor = collector.floors.below(edge.key)
        assert 0 < floor < BLOCKS - 1
        assert all(replica.has(i) for i in range(floor, BLOCKS))  # the newest kept
        oldest = store.conn.execute("SELECT min(t) FROM samples").fetchone()[0]
        assert oldest > T0 and store.conn.execute(
            "SELECT max(t) FROM samples").fetchone()[0] == T0 + (BLOCKS - 1) * STEP + 19
        got = values(metrics)
        assert got[("cairn_gateway_pruned_blocks_total", "budget")] == floor
        assert got[("cairn_gateway_disk_budget_bytes", "")] == budget
        assert any("disk budget" in r.getMessage() for r in caplog.records)

        # a stopped stream (a fork: evidence) keeps its replica whole, whatever the budget
        sid = store.conn.execute("SELECT id FROM streams").fetchone()[0]
        store.stop(sid, "fork: test")
        held = sum(1 for i in range(replica.length) if replica.has(i))
        tight = GatewayConfig(tmp_path, tmp_path / "key", retention_days=1 / 86400,
                              max_bytes=1)
        apply_retention(tight, collector, store, metrics, now=now)
        assert sum(1 for i in range(replica.length) if replica.has(i)) == held
    finally:
        collector.close()
        store.close()
        edge.close()


def test_an_edge_that_dials_in_after_a_prune_pushes_only_new_blocks(tmp_path: Path) -> None:
    """Live push: the replica's pruned prefix is not asked for again when the edge dials in
    once more; its new appends are verified and stored, and counted in /metrics."""
    from tests.integration.gateway.test_dialout import (
        Edge,
        Gateway,
        dialer_for,
        dialling,
        frame,
        running,
        until,
    )

    names = ("board-1/temperature",)

    async def main() -> tuple[int, dict[tuple[str, str], float]]:
        edge = Edge(tmp_path, "board-1", names)
        gw = Gateway(tmp_path)
        metrics = GatewayMetrics(gw.store)
        gw.collector.on_live = metrics.live_stored
        lg = edge.logs[names[0]]
        try:
            lg.append([frame(names[0], k) for k in range(50)])
            gw.enroll(edge, "board-1")
            async with running(gw), dialling(dialer_for(edge, gw.key.public_key, gw.address)):
                await until(lambda: gw.samples(names[0]) == 50)
            from cairn_gateway.retention import prune_replicas
            dropped = prune_replicas(gw.collector, before=lg_time(lg, 40))
            replica = gw.collector.replica(lg.key)
            floor = gw.collector.floors.below(lg.key)
            assert dropped == floor == 40
            lg.append([frame(names[0], k) for k in range(50, 55)])
            async with running(gw), dialling(dialer_for(edge, gw.key.public_key, gw.address)):
                await until(lambda: gw.samples(names[0]) == 55)
                for k in range(55, 58):  # and appends one at a time, live
                    lg.append([frame(names[0], k)])
                    await until(lambda k=k: gw.samples(names[0]) == k + 1)  # type: ignore[misc]
            assert not any(replica.has(i) for i in range(floor))
            assert all(replica.has(i) for i in range(floor, 58))
            return floor, values(metrics)
        finally:
            edge.close()
            gw.close()

    floor, got = asyncio.run(main())
    assert floor == 40
    assert got[("cairn_gateway_live_samples_total", "")] == 58


def lg_time(lg: Log, block: int) -> float:
    """The end time of a log's frame: prune before it and that block stays."""
    return Frame.decode(lg.get(block)).end

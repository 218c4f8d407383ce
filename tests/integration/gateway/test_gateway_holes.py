"""A block damaged on the edge (a bad sector) is no silent hole: the gateway collects the rest of
that stream and every other stream, and lists the missing block on the stream with the reason
the edge gave, in the store, ``/api/integrity``, ``/metrics`` and ``cairn gateway integrity``.
A block the edge cleared (its disk quota) is listed as "not served"; one the edge cleared
because the gateway had stored it is no hole. Real replication over TCP on 127.0.0.1 (a Cairn
log server), real SQLite files with bytes flipped behind the edge's back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from cairn.cli import main
from cairn.crypto import derive_stream_key_pair, random_key_pair
from cairn.fleet.record import DeviceRecord
from cairn.frames import Frame, Sample
from cairn.log import Log
from cairn.replication.net import serve
from cairn_gateway.api import make_app
from cairn_gateway.collect import Collector, Device, SyncResult
from cairn_gateway.store import Store
from tests.scorecard import record, scale
from tests.unit.core.test_damaged_blocks import flip_block

T0 = 1_764_000_000.0
SEED = b"\x0b" * 32
NAMES = ("board-4/temperature", "board-4/humidity")


def frame(name: str, k: int) -> bytes:
    return Frame((Sample(name, "Cel", T0 + k, 20.0 + k),)).encode()


async def collect(writers: dict[str, Log], collector: Collector) -> list[SyncResult]:
    """Serve the edge's logs once and collect every stream (one gateway round)."""
    address: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve(list(writers.values()), random_key_pair(), "127.0.0.1",
                                       0, allow=[collector.key_pair.public_key],
                                       ready=address.set_result))
    try:
        host, port = await asyncio.wait_for(address, 10)
        dev = Device(b"r" * 32, 1, DeviceRecord(time=int(T0), address=(host, port)),
                     {n: lg.key for n, lg in writers.items()})
        return [await collector.sync(dev, n, (host, port)) for n in sorted(writers)]
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server


def make_edge(tmp_path: Path, blocks: int) -> dict[str, Path]:
    paths = {}
    for n in NAMES:
        paths[n] = tmp_path / f"{n.replace('/', '-')}.db"
        with Log.create(paths[n], derive_stream_key_pair(SEED, n)) as lg:
            for k in range(0, blocks, 25):
                lg.append([frame(n, i) for i in range(k, min(blocks, k + 25))])
    return paths


def stored_blocks(store: Store, sid: int) -> list[int]:
    return [b for (b,) in store.conn.execute(
        "SELECT block FROM blocks WHERE stream_id = ? ORDER BY block", (sid,))]


def test_a_damaged_block_on_the_edge_marks_the_stream_and_the_rest_keeps_coming(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    runs = scale(3, 20)
    holes_unreported = 0
    for run in range(runs):
        holes_unreported += one_run(tmp_path / f"run{run}", run, caplog)
    record("storage", "a damaged block on the edge: streams marked", runs, holes_unreported,
           "holes unreported",
           detail="a flipped byte in 1-3 blocks of one stream's edge log: the gateway lists "
                  "each missing block as damaged, stores the rest and the other stream, "
                  "keeps collecting new blocks")
    assert holes_unreported == 0


def one_run(tmp_path: Path, run: int, caplog: pytest.LogCaptureFixture) -> int:
    tmp_path.mkdir()
    temp, hum = NAMES
    paths = make_edge(tmp_path, 200)
    damaged = [[77], [3, 150], [0, 1, 199]][run % 3]
    for i in damaged:
        flip_block(paths[temp], i)
    writers = {n: Log.open(p) for n, p in paths.items()}
    store = Store(tmp_path / "gw.db")
    collector = Collector(tmp_path / "gw", random_key_pair(), store)
    try:
        with caplog.at_level(logging.WARNING):
            results = asyncio.run(collect(writers, collector))
        assert all(r.error is None for r in results), results
        ids = dict(store.conn.execute("SELECT name, id FROM streams"))
        # the edge said it, once per block, at warning level
        said = [r.getMessage() for r in caplog.records if r.name == "cairn.log"]
        assert all("is damaged" in m for m in said)
        assert len(said) == len(damaged)
        # the rest of the damaged stream, and all of the other one, are stored; both stay ok
        assert stored_blocks(store, ids[temp]) == [i for i in range(200) if i not in damaged]
        assert stored_blocks(store, ids[hum]) == list(range(200))
        assert store.status(ids[temp]) == store.status(ids[hum]) == "ok"
        holes = store.missing()
        listed = [i for a, b, why, _ in holes.get(ids[temp], []) for i in range(a, b)
                  if why == "damaged"]
        unreported = len(set(damaged) - set(listed))
        assert ids[hum] not in holes
        # the edge goes on: new blocks are collected; the hole stays listed, nothing new said
        for n, lg in writers.items():
            lg.append([frame(n, i) for i in range(200, 230)])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="cairn_gateway.collect"):
            asyncio.run(collect(writers, collector))
        assert stored_blocks(store, ids[temp])[-1] == 229
        assert stored_blocks(store, ids[hum]) == list(range(230))
        assert store.missing() == holes
        assert not caplog.records  # the same holes: not said again every round
        check_api_and_cli(tmp_path, store, damaged)
        return unreported
    finally:
        for lg in writers.values():
            lg.close()
        collector.close()
        store.close()


def check_api_and_cli(tmp_path: Path, store: Store, damaged: list[int]) -> None:
    temp, hum = NAMES

    async def get(path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=make_app(store))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            return await c.get(path)

    rows = {r["name"]: r for r in asyncio.run(get("/api/integrity")).json()}
    assert rows[temp]["status"] == "ok" and rows[temp]["alert"] is True
    assert rows[temp]["missing_blocks"] == len(damaged)
    assert {x["reason"] for x in rows[temp]["missing_ranges"]} == {"damaged"}
    assert rows[temp]["missing_ranges"][0]["start"] == damaged[0]
    assert rows[temp]["missing"].startswith(f"blocks {damaged[0]}")
    assert rows[hum]["alert"] is False and rows[hum]["missing"] is None
    metrics = asyncio.run(get("/metrics")).text
    holes = {(s.labels["stream"], s.labels["reason"]): s.value
             for f in text_string_to_metric_families(metrics) for s in f.samples
             if s.name == "cairn_gateway_missing_blocks"}
    assert holes[(temp, "damaged")] == len(damaged) and holes[(hum, "damaged")] == 0, metrics
    config = tmp_path / "gateway.toml"
    config.write_text(f'data_dir = "{tmp_path}"\n')
    result = CliRunner().invoke(main, ["gateway", "integrity", "--config", str(config)])
    assert result.exit_code == 1, result.output
    assert f"missing {len(damaged)} blocks: blocks {damaged[0]}" in result.output
    assert "damaged: the edge says its copy is damaged" in result.output


def test_cleared_blocks_are_told_apart(tmp_path: Path) -> None:
    """Cleared by the edge's disk quota before the gateway had them: "not served". Cleared
    because the gateway stored them (the watermark): no hole. Damaged: "damaged"."""
    temp, _ = NAMES
    paths = make_edge(tmp_path, 100)
    writers = {n: Log.open(p) for n, p in paths.items()}
    store = Store(tmp_path / "gw.db")
    collector = Collector(tmp_path / "gw", random_key_pair(), store)
    try:
        asyncio.run(collect(writers, collector))  # the gateway holds 0..99
        for n, lg in writers.items():
            lg.append([frame(n, i) for i in range(100, 200)])
        writers[temp].clear(0, 100)  # the watermark: the gateway holds these
        writers[temp].clear(120, 130)  # the quota: before the gateway had them
        writers[temp].close()
        flip_block(paths[temp], 160)
        writers[temp] = Log.open(paths[temp])
        # a gateway that lost its replicas file asks for everything again
        collector.close()
        (tmp_path / "gw" / "replicas.db").unlink()
        collector = Collector(tmp_path / "gw", random_key_pair(), store)
        results = asyncio.run(collect(writers, collector))
        assert all(r.error is None for r in results), results
        sid = dict(store.conn.execute("SELECT name, id FROM streams"))[temp]
        assert [(a, b, r) for a, b, r, _ in store.missing()[sid]] == [
            (120, 130, "not served"), (160, 161, "damaged")]
    finally:
        for lg in writers.values():
            lg.close()
        collector.close()
        store.close()

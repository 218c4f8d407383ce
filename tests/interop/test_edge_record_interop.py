"""The edge agent's DHT record, published into a network of JS hyperdht nodes, read back with
JS hyperdht's mutableGet (which checks the signature) and decoded by a gateway."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from cairn.brokers import Mosquitto
from cairn.crypto import random_key_pair
from cairn.fleet.record import decode_record
from tests.integration.edge.test_edge_dht import publish
from tests.integration.edge.test_edge_mqtt import EdgeProcess
from tests.interop.test_dht_interop import js_peers

pytestmark = pytest.mark.integration  # besides interop (its folder): it opens sockets


async def test_js_mutable_get_reads_the_edge_record(node_path: Path, interop_dir: Path,
                                                     mosquitto_path: Path,
                                                     tmp_path: Path) -> None:
    gw = random_key_pair()
    async with js_peers(node_path, interop_dir, 6, None) as js:
        with Mosquitto(tmp_path / "broker", executable=mosquitto_path) as broker:
            edge = EdgeProcess(tmp_path / "edge", broker, gateways=[gw.public_key.hex()],
                               dht=js.bootstrap)
            await asyncio.to_thread(edge.start)
            t0 = time.time()
            await asyncio.to_thread(publish, broker, [("board-3/temperature", t0, 19.25),
                                                      ("board-3/humidity", t0, 55.0)])
            # the edge publishes its record at start (no readings yet), then after the commit
            # that holds the readings: wait for a publish after that commit
            committed = await asyncio.to_thread(edge.until, lambda s: s["samples"] >= 2)
            line = await asyncio.to_thread(
                edge.until, lambda s: s.get("dht_publishes", 0) > committed["dht_publishes"])
            got = await js.call(op="mutableGet", node=3, publicKey=line["record_key"], seq=0)
            await asyncio.to_thread(edge.stop)
    assert got["seq"] is not None and got["seq"] >= 1
    rec = decode_record(bytes.fromhex(got["value"]), gw)
    assert {r.stream: r.value for r in rec.readings} == {"board-3/temperature": 19.25,
                                                         "board-3/humidity": 55.0}
    assert all(k is not None for _, k in rec.streams)

"""The edge agent's DHT record on a local Cairn DHT (`cairn dht testnet`): published on change,
readable and verifiable by a gateway, stream keys sealed to it, seq growing across restarts."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cairn.brokers import Mosquitto, free_port
from cairn.crypto import random_key_pair
from cairn.dht.api import DHT
from cairn.dht.records import MutableRecord
from cairn.fleet.record import decode_record, fleet_topic
from tests.integration.edge.test_edge_mqtt import WAIT, EdgeProcess


@pytest.fixture
def broker(tmp_path: Path, mosquitto_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", executable=mosquitto_path) as m:
        yield m


@pytest.fixture
def testnet() -> Iterator[tuple[str, int]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cairn.cli", "dht", "testnet", "--nodes",
                             "8", "--port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("testnet ready"):
                break
        else:
            raise AssertionError("the DHT testnet did not start")
        yield ("127.0.0.1", port)
    finally:
        proc.terminate()
        proc.wait(WAIT)
        if proc.stdout is not None:
            proc.stdout.close()


def publish(broker: Mosquitto, readings: list[tuple[str, float, float]]) -> None:
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-pub")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    for name, t, v in readings:
        pub.publish(f"senml/{name}", json.dumps([{"bn": name, "bt": t, "bu": "Cel", "v": v}]),
                    qos=1).wait_for_publish(WAIT)
    pub.disconnect()
    pub.loop_stop()


def fetch(boot: tuple[str, int], public_key: bytes, min_seq: int = 0) -> MutableRecord | None:
    async def go() -> MutableRecord | None:
        async with DHT.start("127.0.0.1", 0, [boot], persistent=False) as d:
            return await d.mutable_get(public_key, min_seq=min_seq)

    return asyncio.run(go())


def test_the_record_reaches_a_gateway(broker: Mosquitto, testnet: tuple[str, int],
                                      tmp_path: Path) -> None:
    gw = random_key_pair()
    edge = EdgeProcess(tmp_path / "edge", broker, gateways=[gw.public_key.hex()], dht=testnet)
    ready = edge.start()
    t0 = time.time()
    publish(broker, [("board-1/temperature", t0, 20.5), ("board-2/temperature", t0, 18.0),
                     ("board-1/temperature", t0 + 1, 20.75)])
    edge.until(lambda s: s.get("samples", 0) >= 3)
    line = edge.until(lambda s: s.get("dht_publishes", 0) >= 1 and s["samples"] >= 3)
    got = fetch(testnet, bytes.fromhex(line["record_key"]))
    assert got is not None
    rec = decode_record(got.value, gw)
    keys = dict(rec.streams)
    assert set(keys) == {"board-1/temperature", "board-2/temperature"}
    assert all(k is not None and len(k) == 32 for k in keys.values())
    latest = {r.stream: r.value for r in rec.readings}
    assert latest == {"board-1/temperature": 20.75, "board-2/temperature": 18.0}
    assert rec.address == tuple(ready["replication"])
    assert [k for _, k in decode_record(got.value, random_key_pair()).streams] == [None, None]
    first_seq = got.seq
    edge.stop()

    edge.start()  # a restart: the record is published at once, before any new reading
    line = edge.until(lambda s: s.get("dht_publishes", 0) >= 1)
    assert line["samples"] == 0
    at_start = fetch(testnet, bytes.fromhex(line["record_key"]), min_seq=first_seq + 1)
    assert at_start is not None and at_start.seq > first_seq  # the seq goes on growing
    assert dict(decode_record(at_start.value, gw).streams).keys() == keys.keys()
    publish(broker, [("board-1/temperature", t0 + 2, 21.0)])
    line = edge.until(lambda s: s.get("dht_publishes", 0) >= 2 and s["samples"] >= 1
                      and s["dht_announces"] >= 1)
    again = fetch(testnet, bytes.fromhex(line["record_key"]), min_seq=first_seq + 1)
    assert again is not None and again.seq > first_seq
    assert {r.stream: r.value for r in decode_record(again.value, gw).readings}[
        "board-1/temperature"] == 21.0
    edge.stop()

    async def lookup() -> set[bytes]:
        async with DHT.start("127.0.0.1", 0, [testnet], persistent=False) as d:
            found = set()
            async with d.lookup(fleet_topic("default")) as peers:
                async for p in peers:
                    found.add(p.public_key)
            return found

    assert bytes.fromhex(line["record_key"]) in asyncio.run(lookup())

"""Booleans and strings end to end (issue 20 item 2): readings published over a real Mosquitto to
a real edge agent (its own process, signed logs, DHT record) are collected by the gateway,
verified, stored in their kind and served by /api/latest; two readings with one time and
different values are both stored; a stream that switches kind, a huge string and control
characters are handled as documented (docs/edge.md, docs/gateway.md)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cairn.brokers import Mosquitto
from cairn.crypto import random_key_pair
from cairn.dht.api import DHT
from cairn_gateway import queries
from cairn_gateway.api import make_app
from cairn_gateway.collect import Collector
from cairn_gateway.store import Store
from tests.integration.edge import test_edge_dht, test_edge_mqtt
from tests.scorecard import record

testnet = test_edge_dht.testnet  # a fixture
EdgeProcess = test_edge_mqtt.EdgeProcess


HOSTILE = "\x1b[31mred\x1b[0m\r\n\"}]\u202eevil\u0007\x00"


@pytest.fixture
def broker(tmp_path: Path, mosquitto_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", executable=mosquitto_path) as m:
        yield m


def publish(broker: Mosquitto, messages: list[tuple[str, list[dict[str, Any]]]]) -> None:
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-values")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        for topic, pack in messages:
            pub.publish(topic, json.dumps(pack), qos=1).wait_for_publish(30)
    finally:
        pub.disconnect()
        pub.loop_stop()


async def api_latest(store: Store) -> list[dict[str, Any]]:
    transport = httpx.ASGITransport(app=make_app(store))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        r = await c.get("/api/latest")
        assert r.status_code == 200 and not any(b < 0x20 for b in r.content)
        rows: list[dict[str, Any]] = r.json()
        return rows


def test_booleans_and_strings_reach_the_store_and_the_api(
        broker: Mosquitto, testnet: tuple[str, int], tmp_path: Path) -> None:
    gw = random_key_pair()
    edge = EdgeProcess(tmp_path / "edge", broker, gateways=[gw.public_key.hex()], dht=testnet)
    edge.start()
    t0 = time.time()
    publish(broker, [
        ("senml/board-5/door", [{"bn": "board-5/door", "bt": t0 - 6, "vb": True}]),
        ("senml/board-5/door", [{"bn": "board-5/door", "bt": t0 - 5, "vb": False}]),
        ("senml/board-5/mode", [{"bn": "board-5/mode", "bt": t0 - 6, "vs": "heating"}]),
        ("senml/board-5/mode", [{"bn": "board-5/mode", "bt": t0 - 5, "vs": HOSTILE}]),
        # two readings at one time with different values: both kept
        ("senml/board-5/co2", [{"bn": "board-5/co2", "bt": t0 - 4, "u": "ppm", "v": 400}]),
        ("senml/board-5/co2", [{"bn": "board-5/co2", "bt": t0 - 4, "u": "ppm", "v": 401}]),
        # the same reading again: a duplicate, stored once
        ("senml/board-5/co2", [{"bn": "board-5/co2", "bt": t0 - 4, "u": "ppm", "v": 401}]),
        # the door switches kind: refused alone, its neighbour stored
        ("senml/board-5/x", [{"bn": "board-5/", "bt": t0 - 3, "n": "door", "v": 1},
                             {"n": "humidity", "u": "%RH", "v": 40}]),
        # a string past the adapter's bound (1 kB): refused with its reason
        ("senml/board-5/mode", [{"bn": "board-5/mode", "bt": t0 - 3, "vs": "y" * 5000}]),
    ])
    status = edge.until(lambda s: s.get("samples", 0) >= 7 and s.get("dht_publishes", 0) >= 1
                        and s.get("refused_samples") and s.get("rejected"))
    assert status["refused_samples"] == {"kind-changed": 1}
    assert sum(status["rejected"].values()) == 1 and status["duplicates"] == 1

    (tmp_path / "gateway").mkdir()
    store = Store(tmp_path / "gateway" / "gw.db")
    collector = Collector(tmp_path / "gateway", gw, store)

    async def collect() -> None:
        async with DHT.start("127.0.0.1", 0, [testnet], persistent=False) as dht:
            keys = await collector.devices_on(dht, "default")
            for k in keys:
                await collector.collect(dht, k)

    try:
        asyncio.run(collect())
        ids = {name: sid for sid, name in store.conn.execute("SELECT id, name FROM streams")}
        assert set(ids) == {"board-5/door", "board-5/mode", "board-5/co2", "board-5/humidity"}
        got: dict[str, list[tuple[float, Any]]] = {
            name: [(t - t0, v) for t, v, _, _ in store.samples(sid, 0, 2e9)]
            for name, sid in ids.items()}
        assert [v for _, v in got["board-5/door"]] == [True, False]
        assert [round(t) for t, _ in got["board-5/door"]] == [-6, -5]
        assert [type(v) for _, v in got["board-5/door"]] == [bool, bool]
        assert [v for _, v in got["board-5/mode"]] == ["heating", HOSTILE]
        assert sorted(v for _, v in got["board-5/co2"]) == [400.0, 401.0]
        assert [v for _, v in got["board-5/humidity"]] == [40.0]
        assert {name: store.kind(sid) for name, sid in ids.items()} == {
            "board-5/door": "boolean", "board-5/mode": "string", "board-5/co2": "number",
            "board-5/humidity": "number"}
        latest = {x["name"]: (x["value"], x["kind"], x["stream_kind"])
                  for x in asyncio.run(api_latest(store))}
        assert latest["board-5/door"] == (False, "boolean", "boolean")
        assert latest["board-5/mode"] == (HOSTILE, "string", "string")
        assert latest["board-5/co2"][0] in (400.0, 401.0) and len(latest) == 4
        assert len(queries.latest(store.conn)) == 4  # one row per stream
    finally:
        collector.close()
        store.close()
        edge.stop()
    record("mqtt", "booleans, strings, equal-time values, a kind switch, over Mosquitto", 9,
           0, "readings lost or misstored",
           detail="to the gateway store and /api/latest; the switch and 5 kB string refused")

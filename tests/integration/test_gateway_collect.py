"""The path from sensors to the gateway's store: simulator -> Mosquitto -> edge agent (signed
logs, DHT record) -> gateway collector (record found on the fleet topic, keys opened, streams
downloaded and verified) -> sample store; checked against the simulator's ledger."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cairn.crypto import random_key_pair
from cairn.dht.api import DHT
from cairn_gateway.collect import Collector
from cairn_gateway.store import Store
from cairn_sim.fleet import Fleet
from cairn_sim.mosquitto import Mosquitto
from cairn_sim.mqtt import Ledger, Runner, parse_broker
from tests.integration.test_edge_dht import testnet  # noqa: F401 - a fixture
from tests.integration.test_edge_mqtt import EdgeProcess, _no_agent_left, routed  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(tmp_path: Path, mosquitto_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", executable=mosquitto_path) as m:
        yield m


def test_samples_reach_the_gateway_store_exactly_once(
        broker: Mosquitto, testnet: tuple[str, int], tmp_path: Path) -> None:  # noqa: F811
    gw = random_key_pair()
    edge = EdgeProcess(tmp_path / "edge", broker, gateways=[gw.public_key.hex()], dht=testnet)
    edge.start()
    fleet = Fleet(devices=3, sensors=3, rate=2.0, seed=31, start_time=time.time(),
                  formats=["senml", "senml-cbor", "senml"])
    book = Ledger(tmp_path / "ledger.jsonl")
    Runner(fleet, parse_broker(broker.url), ledger=book).run(3.0)
    book.close()
    messages, acks = Ledger.read(tmp_path / "ledger.jsonl")
    want = {(name, t, v) for m in routed(messages) if m["seq"] in acks
            for name, _u, t, v in m["samples"]}
    edge.until(lambda s: s.get("samples", 0) >= len(want) and s.get("dht_publishes", 0) >= 1)

    (tmp_path / "gateway").mkdir()
    store = Store(tmp_path / "gateway" / "gw.db")
    collector = Collector(tmp_path / "gateway", gw, store)

    async def collect_twice() -> tuple[int, int, set[bytes]]:
        async with DHT.start("127.0.0.1", 0, [testnet], persistent=False) as dht:
            keys = await collector.devices_on(dht, "default")
            totals = []
            for _ in range(2):
                total = 0
                for k in keys:
                    total += sum(r.samples for r in await collector.collect(dht, k))
                totals.append(total)
            return totals[0], totals[1], keys

    try:
        first, again, keys = asyncio.run(collect_twice())
        assert len(keys) == 1 and first == len(want) and again == 0  # exactly once
        got = set()
        for (sid, name) in store.conn.execute("SELECT id, name FROM streams"):
            for t, v, block, fork in store.samples(sid, 0, 2e9):
                got.add((name, t, v))
                assert fork == 0 and block >= 0
        assert got == want
    finally:
        collector.close()
        store.close()
        edge.stop()

"""The path from sensors to the gateway's store: simulator -> Mosquitto -> edge agent (signed
logs, DHT record) -> gateway collector (record found on the fleet topic, keys opened, streams
downloaded and verified) -> sample store; checked against the simulator's ledger."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cairn.brokers import Mosquitto, parse_broker
from cairn.crypto import random_key_pair
from cairn.dht.api import DHT
from cairn_gateway.collect import Collector
from cairn_gateway.store import Store
from cairn_sim.fleet import Fleet
from cairn_sim.mqtt import Ledger, Runner
from tests.integration.edge.test_edge_dht import testnet  # noqa: F401 - a fixture
from tests.integration.edge.test_edge_mqtt import EdgeProcess, routed


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


def test_the_gateway_service_collects_and_serves(
        broker: Mosquitto, testnet: tuple[str, int], tmp_path: Path) -> None:  # noqa: F811
    """`cairn gateway run`: from a fleet on the DHT to the HTTP API Grafana reads."""
    import json
    import queue
    import subprocess
    import sys
    import threading
    from urllib.request import urlopen

    from cairn.brokers import free_port
    from cairn.fleet.identity import new_seed, noise_key_pair

    gdir = tmp_path / "gw"
    gdir.mkdir()
    gw = noise_key_pair(new_seed(gdir / "gateway.seed"))
    port = free_port()
    (gdir / "gateway.toml").write_text(
        f'[dht]\nbootstrap = ["{testnet[0]}:{testnet[1]}"]\n[collect]\ninterval = 0.5\n'
        f'[api]\nlisten = "127.0.0.1:{port}"\n[replication]\nlisten = "127.0.0.1:0"\n')
    edge = EdgeProcess(tmp_path / "edge", broker, gateways=[gw.public_key.hex()], dht=testnet)
    edge.start()
    t0 = time.time()
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-pub")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    for k in range(5):
        pub.publish("senml/board-4/co2", json.dumps(
            [{"bn": "board-4/co2", "bt": t0 - 5 + k, "bu": "ppm", "v": 400 + k}]), qos=1
        ).wait_for_publish(30)
    pub.disconnect()
    pub.loop_stop()
    edge.until(lambda s: s.get("samples", 0) >= 5 and s.get("dht_publishes", 0) >= 1)
    enroll(gdir / "gateway.toml", edge, "board-4")
    watched = subprocess.run([sys.executable, "-m", "cairn.cli", "gateway", "watch", "--once",
                              "--config", str(gdir / "gateway.toml")], capture_output=True,
                             text=True, timeout=60, check=False, env={
                                 **__import__("os").environ, "COLUMNS": "200"})
    assert watched.returncode == 0, watched.stderr
    row = next(line for line in watched.stdout.splitlines() if "board-4/co2" in line)
    assert "404" in row and "ppm" in row and "verified" in row
    window = subprocess.run([sys.executable, "-m", "cairn.cli", "gateway", "fetch", "--config",
                             str(gdir / "gateway.toml"), "--device", edge_record_key(edge),
                             "--stream", "board-4/co2", "--since", str(t0 - 4),
                             "--until", str(t0 - 2)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert window.returncode == 0, window.stderr
    # the edge committed the five readings (all in the past: one ahead of the clock would wait
    # for its time) in one frame: the window's one block holds them all
    assert window.stdout.strip() == "board-4/co2: 1 blocks, 5 samples stored"
    once = subprocess.run([sys.executable, "-m", "cairn.cli", "gateway", "collect", "--config",
                           str(gdir / "gateway.toml")], capture_output=True, text=True,
                          timeout=60, check=False)
    assert once.returncode == 0, once.stderr
    assert once.stdout.split() == ["board-4/co2", "0", "blocks", "0", "samples"]  # held
    proc = subprocess.Popen([sys.executable, "-m", "cairn.cli", "gateway", "run", "--config",
                             str(gdir / "gateway.toml")], stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        api = json.loads(lines.get(timeout=30))["api"]
        with urlopen(f"{api}/api/latest", timeout=10) as r:
            latest = json.loads(r.read())
        assert [(x["name"], x["value"], x["unit"], x["device"], x["verified"])
                for x in latest] == [("board-4/co2", 404.0, "ppm", "board-4", True)]
        with urlopen(f"{api}/api/streams", timeout=10) as r:
            [stream] = json.loads(r.read())
        with urlopen(f"{api}/api/samples?stream={stream['id']}&from={t0 - 6}&to={t0 + 5}",
                     timeout=10) as r:
            assert [s["value"] for s in json.loads(r.read())] == [400.0, 401.0, 402.0, 403.0,
                                                                   404.0]
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
        edge.stop()


def edge_record_key(edge: EdgeProcess) -> str:
    """The device's DHT record key, as the edge says it in its status lines."""
    return str(edge.last["record_key"])


def enroll(config: Path, edge: EdgeProcess, name: str) -> None:
    """Enrol an edge in a gateway's roster as an operator does: the enrollment string
    `cairn edge keys` prints, given to `cairn gateway devices add` (a gateway collects
    enrolled devices only)."""
    import subprocess
    import sys

    keys = subprocess.run([sys.executable, "-m", "cairn.cli", "edge", "keys", "--config",
                           str(edge.config), "--name", name], capture_output=True, text=True,
                          timeout=60, check=True)
    string = next(line.split()[1] for line in keys.stdout.splitlines()
                  if line.startswith("enrollment "))
    added = subprocess.run([sys.executable, "-m", "cairn.cli", "gateway", "devices", "add",
                            string, "--config", str(config)], capture_output=True, text=True,
                           timeout=60, check=False)
    assert added.returncode == 0, added.stderr


def test_an_on_demand_stream_is_fetched_when_the_api_asks(
        broker: Mosquitto, testnet: tuple[str, int], tmp_path: Path) -> None:  # noqa: F811
    """Policy on_demand: a collection round stores nothing of the stream; a query for a window
    downloads just that window from the edge (verified), then answers."""
    import json

    import httpx
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from cairn_gateway.api import make_app
    from cairn_gateway.config import Policy

    gw = random_key_pair()
    edge = EdgeProcess(tmp_path / "edge", broker, gateways=[gw.public_key.hex()], dht=testnet,
                       commit_interval=0.05)
    edge.start()
    t0 = time.time() - 100
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-pub")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    for k in range(40):  # one frame each: wait for each commit
        pub.publish("senml/board-6/vibration", json.dumps(
            [{"bn": "board-6/vibration", "bt": t0 + k, "bu": "m/s2", "v": k / 10}]), qos=1
        ).wait_for_publish(30)
        edge.until(lambda s, k=k: s.get("samples", 0) >= k + 1)
    pub.disconnect()
    pub.loop_stop()
    edge.until(lambda s: s.get("dht_publishes", 0) >= 1)
    (tmp_path / "gateway").mkdir()
    store = Store(tmp_path / "gateway" / "gw.db")
    collector = Collector(tmp_path / "gateway", gw, store)

    def policy(name: str) -> Policy:
        return Policy("*/vibration", "on_demand")

    async def scenario() -> tuple[int, list[dict[str, object]], int]:
        async with DHT.start("127.0.0.1", 0, [testnet], persistent=False) as dht:
            [key] = await collector.devices_on(dht, "default")
            stored = sum(r.samples for r in await collector.collect(dht, key, policy))
        [stream_id] = list(collector.known)
        app = make_app(store, on_demand=collector.on_demand, demand=lambda s: True)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://gateway") as client:
            r = await client.get("/api/samples", params={"stream": stream_id,
                                                          "from": t0 + 10, "to": t0 + 15})
            held = store.conn.execute("SELECT count(*) FROM samples").fetchone()[0]
            return stored, r.json(), held

    try:
        stored, window, held = asyncio.run(scenario())
        assert stored == 0  # the round downloaded nothing of an on-demand stream
        assert [s["value"] for s in window] == [1.0, 1.1, 1.2, 1.3, 1.4]
        # just that window: its 5 frames, and the two the time seeks prove its edges with
        assert held == 7
    finally:
        collector.close()
        store.close()
        edge.stop()


def test_the_edge_frees_what_the_gateway_stored(
        broker: Mosquitto, testnet: tuple[str, int], tmp_path: Path) -> None:  # noqa: F811
    """The gateway publishes its watermark record; the edge clears block data below it (the
    tree stays, the log verifies), and keeps the rest."""
    import json

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from cairn.crypto import derive_stream_key_pair

    gw_seed = b"\x09" * 32
    gw = random_key_pair()
    marks_key = derive_stream_key_pair(gw_seed, "#watermark")
    edge = EdgeProcess(tmp_path / "edge", broker, gateways=[gw.public_key.hex()], dht=testnet,
                       commit_interval=0.05, watermarks=[marks_key.public_key.hex()])
    edge.start()
    t0 = time.time() - 100
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-pub")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    for k in range(10):
        pub.publish("senml/board-8/temperature", json.dumps(
            [{"bn": "board-8/temperature", "bt": t0 + k, "bu": "Cel", "v": k}]), qos=1
        ).wait_for_publish(30)
        edge.until(lambda s, k=k: s.get("samples", 0) >= k + 1)
    pub.disconnect()
    pub.loop_stop()
    edge.until(lambda s: s.get("dht_publishes", 0) >= 1)
    (tmp_path / "gateway").mkdir()
    store = Store(tmp_path / "gateway" / "gw.db")
    collector = Collector(tmp_path / "gateway", gw, store)

    async def collect_and_publish() -> int:
        async with DHT.start("127.0.0.1", 0, [testnet], persistent=False) as dht:
            [key] = await collector.devices_on(dht, "default")
            stored = sum(r.samples for r in await collector.collect(dht, key))
            await collector.publish_watermarks(dht, marks_key, 1)
            return stored

    try:
        assert asyncio.run(collect_and_publish()) == 10
        assert collector.watermarks() and list(collector.watermarks().values()) == [10]
        line = edge.until(lambda s: s.get("cleared_blocks", 0) >= 9)
        assert line["cleared_blocks"] == 9  # all but the newest block, which the edge keeps
    finally:
        collector.close()
        store.close()
    edge.stop()
    from tests.integration.edge.test_edge_mqtt import stored as edge_stored

    held = edge_stored(edge.dir, edge.seed)  # (verifies every log: the tree is whole)
    assert held == {"board-8/temperature": [(t0 + 9, 9.0)]}

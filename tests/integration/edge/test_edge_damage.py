"""The edge agent as a process with a bad sector under one of its frames: a gateway collecting
from it gets every other block and lists the damaged one; the agent logs it once, counts it in
/metrics and `cairn edge status`, and keeps taking readings. Real Mosquitto, real TCP, the
agent's own streams.db with a byte flipped while it was stopped."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.request import urlopen

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from cairn.brokers import Mosquitto, free_port
from cairn.cli import main
from cairn.crypto import random_key_pair
from cairn.fleet.record import DeviceRecord
from cairn_edge.streams import stream_log_key
from cairn_gateway.collect import Collector, Device
from cairn_gateway.store import Store
from tests.integration.edge.test_edge_mqtt import WAIT, EdgeProcess
from tests.unit.core.test_damaged_blocks import flip_block

NAME = "board-6/temperature"
BAD = 4


@pytest.fixture
def broker(tmp_path: Path, mosquitto_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", executable=mosquitto_path) as m:
        yield m


def publish(broker: Mosquitto, t0: float, ks: range) -> None:
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-pub")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    for k in ks:
        pub.publish(f"senml/{NAME}", json.dumps(
            [{"bn": NAME, "bt": t0 + k, "bu": "Cel", "v": 20 + k}]), qos=1).wait_for_publish(WAIT)
    pub.disconnect()
    pub.loop_stop()


def test_a_damaged_frame_on_a_running_edge(broker: Mosquitto, tmp_path: Path) -> None:
    gw = random_key_pair()
    port = free_port()
    edge = EdgeProcess(tmp_path / "edge", broker, gateways=[gw.public_key.hex()], metrics=port)
    edge.start()
    t0 = time.time() - 100
    for k in range(10):  # ten frames: each message waited for until it is committed
        publish(broker, t0, range(k, k + 1))
        edge.until(lambda s, k=k: s.get("streams", {}).get(NAME, 0) >= k + 1)
    edge.stop()
    db = edge.dir / "data" / "streams.db"
    con = sqlite3.connect(db)
    try:
        (lid,) = con.execute("SELECT id FROM logs WHERE name = ?", (NAME,)).fetchone()
    finally:
        con.close()
    flip_block(db, BAD, table=f"l{int(lid)}_segments")

    ready = edge.start()
    address = tuple(ready["replication"])
    store = Store(tmp_path / "gw.db")
    collector = Collector(tmp_path / "gw", gw, store)
    dev = Device(bytes.fromhex(ready["noise_key"]), 1, DeviceRecord(time=int(t0),
                 address=address), {NAME: stream_log_key(edge.seed, NAME)})
    try:
        for _ in range(2):  # two rounds: the damage is said once
            result = asyncio.run(collector.sync(dev, NAME, address))
            assert result.error is None, result
        [(sid, status)] = store.conn.execute("SELECT id, status FROM streams").fetchall()
        assert status == "ok"
        stored = [b for (b,) in store.conn.execute(
            "SELECT block FROM blocks WHERE stream_id = ? ORDER BY block", (sid,))]
        assert stored == [i for i in range(10) if i != BAD]
        assert [(a, b, r) for a, b, r, _ in store.missing()[sid]] == [(BAD, BAD + 1, "damaged")]
        # the edge: /metrics and `cairn edge status` say it, and it keeps taking readings
        with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=WAIT) as r:
            text = r.read().decode()
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for fam in text_string_to_metric_families(text) for s in fam.samples}
        assert samples[("cairn_edge_damaged_blocks", (("stream", NAME),))] == 1
        st = CliRunner().invoke(main, ["edge", "status", "--json", "--config",
                                       str(edge.config)])
        assert json.loads(st.output)["streams"][NAME]["damaged_blocks"] == [BAD]
        publish(broker, t0, range(10, 11))
        edge.until(lambda s: s.get("streams", {}).get(NAME, 0) >= 11)
        asyncio.run(collector.sync(dev, NAME, address))
        assert store.conn.execute("SELECT max(block) FROM blocks").fetchone()[0] == 10
    finally:
        edge.stop()
        collector.close()
        store.close()
    said = [x for x in (edge.dir / "agent.log").read_text().splitlines()
            if f"block {BAD} is damaged" in x]
    assert len(said) == 1 and "WARNING" in said[0]

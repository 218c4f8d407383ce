"""Zero-config reach (issue 19 item 4), whole processes: an edge whose config names only the
gateway's key (and the DHT) dials the gateway, found by the gateway's signed address record,
and is collected live by `cairn gateway run`; `cairn gateway devices list` says it is
connected."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.request import urlopen

import pytest

from cairn.brokers import Mosquitto, free_port
from cairn.fleet.identity import new_seed, noise_key_pair
from tests.integration.edge.test_edge_dht import testnet  # noqa: F401 - a fixture
from tests.integration.edge.test_edge_mqtt import EdgeProcess
from tests.integration.gateway.test_gateway_collect import enroll


@pytest.fixture
def broker(tmp_path: Path, mosquitto_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", executable=mosquitto_path) as m:
        yield m


def _publish(broker: Mosquitto, t: float, value: float) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{value}")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    pub.publish("senml/board-9/co2", json.dumps(
        [{"bn": "board-9/co2", "bt": t, "bu": "ppm", "v": value}]), qos=1).wait_for_publish(30)
    pub.disconnect()
    pub.loop_stop()


def test_an_edge_with_only_the_gateways_key_is_collected_live(
        broker: Mosquitto, testnet: tuple[str, int], tmp_path: Path) -> None:  # noqa: F811
    gdir = tmp_path / "gw"
    gdir.mkdir()
    gw = noise_key_pair(new_seed(gdir / "gateway.seed"))
    config = gdir / "gateway.toml"
    config.write_text(
        f'[dht]\nbootstrap = ["{testnet[0]}:{testnet[1]}"]\n'
        '[collect]\ninterval = 1.0\ningest_worker = false\n'
        f'[api]\nlisten = "127.0.0.1:{free_port()}"\n[replication]\nlisten = "127.0.0.1:0"\n')
    edge = EdgeProcess(tmp_path / "edge", broker, gateways=[gw.public_key.hex()], dht=testnet)
    edge.start()
    t0 = time.time()
    _publish(broker, t0 - 1, 400.0)
    edge.until(lambda s: s.get("samples", 0) >= 1 and s.get("dht_publishes", 0) >= 1)
    enroll(config, edge, "board-9")
    proc = subprocess.Popen([sys.executable, "-m", "cairn.cli", "gateway", "run", "--config",
                             str(config)], stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        api = json.loads(lines.get(timeout=30))["api"]
        # the edge found the gateway's address on the DHT and dialled in
        edge.until(lambda s: any(g.get("connected") for g in s.get("gateways", [])))

        def devices() -> list[dict[str, object]]:
            with urlopen(f"{api}/api/devices", timeout=10) as r:
                return list(json.loads(r.read()))

        deadline = time.monotonic() + 60
        while not str(devices()[0].get("reach") or "").startswith("connected since"):
            assert time.monotonic() < deadline, devices()
            time.sleep(0.1)
        # a reading now reaches /api/latest over the standing connection
        _publish(broker, time.time(), 401.0)
        while True:
            with urlopen(f"{api}/api/latest", timeout=10) as r:
                latest = json.loads(r.read())
            if latest and latest[0]["value"] == 401.0:
                break
            assert time.monotonic() < deadline, latest
            time.sleep(0.05)
        listed = subprocess.run([sys.executable, "-m", "cairn.cli", "gateway", "devices",
                                 "list", "--config", str(config)], capture_output=True,
                                text=True, timeout=60, check=True,
                                env={**os.environ, "COLUMNS": "200"})
        assert "reach: connected since" in listed.stdout, listed.stdout
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
        edge.stop()


def test_an_edge_started_after_the_gateway_is_admitted_without_waiting_a_round(
        broker: Mosquitto, testnet: tuple[str, int], tmp_path: Path) -> None:  # noqa: F811
    """Rounds an hour apart: the gateway's first round finds no record of the enrolled board
    (not started yet); when the board dials in with a key no record read names, the gateway
    runs a round at once, reads its record, and admits it when it dials again."""
    gdir = tmp_path / "gw"
    gdir.mkdir()
    gw = noise_key_pair(new_seed(gdir / "gateway.seed"))
    config = gdir / "gateway.toml"
    config.write_text(
        f'[dht]\nbootstrap = ["{testnet[0]}:{testnet[1]}"]\n'
        '[collect]\ninterval = 3600\ningest_worker = false\n'
        f'[api]\nlisten = "127.0.0.1:{free_port()}"\n[replication]\nlisten = "127.0.0.1:0"\n')
    edge = EdgeProcess(tmp_path / "edge", broker, gateways=[gw.public_key.hex()], dht=testnet)
    enroll(config, edge, "board-13")  # (its keys come from its seed: it need not run)
    proc = subprocess.Popen([sys.executable, "-m", "cairn.cli", "gateway", "run", "--config",
                             str(config)], stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        api = json.loads(lines.get(timeout=30))["api"]
        deadline = time.monotonic() + 60
        while True:  # the first round has run: it found no record of the board
            with urlopen(f"{api}/api/devices", timeout=10) as r:
                reach = json.loads(r.read())[0]["reach"]
            if reach and reach.startswith("no record on the DHT"):
                break
            assert time.monotonic() < deadline, reach
            time.sleep(0.1)
        t = time.monotonic()
        edge.start()
        edge.until(lambda s: any(g.get("connected") for g in s.get("gateways", [])))
        assert time.monotonic() - t < 60
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
        edge.stop()

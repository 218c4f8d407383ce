"""The edge agent as a process, against a real Mosquitto and the simulator (and its ledger)."""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cairn.brokers import Mosquitto, parse_broker
from cairn.crypto import random_key_pair
from cairn.fleet.identity import load_seed, new_seed
from cairn.frames import Frame
from cairn.log import Log
from cairn.replication.net import download
from cairn_edge.adapters import DEFAULT_ROUTES, IGNORED, match_topic
from cairn_edge.streams import StreamStore
from cairn_sim.fleet import Fleet
from cairn_sim.mqtt import Ledger, Runner
from cairn_sim.scenario import Scenario

WAIT = 30.0


@pytest.fixture
def broker(tmp_path: Path, mosquitto_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", executable=mosquitto_path) as m:
        yield m


class EdgeProcess:
    """``cairn edge run --status-lines`` in a child process, its stdout read by a thread."""

    running: ClassVar[list[EdgeProcess]] = []  # killed after each test, whatever happened

    def __init__(self, directory: Path, broker: Mosquitto, *, gateways: list[str] | None = None,
                 commit_interval: float = 0.3, dht: tuple[str, int] | None = None,
                 embedded: int | None = None, metrics: int | None = None,
                 max_disk_mb: float = 0, watermarks: list[str] | None = None) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        if not (directory / "device.seed").exists():
            new_seed(directory / "device.seed")
        self.config = directory / "edge.toml"
        mqtt_table = (f'[mqtt]\nbroker = "embedded"\nlisten = "127.0.0.1:{embedded}"\n'
                      if embedded else f'[mqtt]\nbroker = "{broker.url}"\n')
        self.config.write_text(
            'data_dir = "data"\nseed_file = "device.seed"\n'
            + mqtt_table + 'client_id = "edge-under-test"\n'
            f"[logs]\ncommit_interval = {commit_interval}\nmax_disk_mb = {max_disk_mb}\n"
            '[validation]\ntime_floor = 1700000000\n'
            '[replication]\nhost = "127.0.0.1"\nport = 0\n'
            f"gateways = {json.dumps(gateways or [])}\n"
            + (f'[dht]\nbootstrap = ["{dht[0]}:{dht[1]}"]\npublish_interval = 0.2\n'
               f"watermarks = {json.dumps(watermarks or [])}\nwatermark_interval = 0.3\n"
               if dht else "")
            + (f'[health]\nmetrics = "127.0.0.1:{metrics}"\n' if metrics else ""))
        self.proc: subprocess.Popen[str] | None = None
        self.log: Any = None
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.last: dict[str, Any] = {}

    @property
    def seed(self) -> bytes:
        return load_seed(self.dir / "device.seed")

    def start(self) -> dict[str, Any]:
        self.lines = queue.Queue()
        self.log = open(self.dir / "agent.log", "a")  # noqa: SIM115 - the child writes it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cairn.cli", "edge", "run", "--config", str(self.config),
             "--status-lines"], stdout=subprocess.PIPE, stderr=self.log, text=True)
        EdgeProcess.running.append(self)
        threading.Thread(target=self._read, args=(self.proc, self.lines), daemon=True).start()
        first = self.next()
        assert first.get("ready"), first
        return first

    @staticmethod
    def _read(proc: subprocess.Popen[str], out: queue.Queue[dict[str, Any] | None]) -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                out.put(json.loads(line))
        out.put(None)

    def next(self) -> dict[str, Any]:
        item = self.lines.get(timeout=WAIT)
        assert item is not None, "the agent exited: " + (self.dir / "agent.log").read_text()[-2000:]
        self.last = item
        return item

    def until(self, done: Any) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            line = self.next()
            if done(line):
                return line
        raise AssertionError(f"the agent never got there: {self.last}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(WAIT)
        self.log.close()

    def stop(self) -> dict[str, Any]:
        """SIGTERM, and the agent must be gone within WAIT seconds (it is killed if not, so no
        test leaves one behind)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(WAIT)
            raise AssertionError(f"the agent did not exit within {WAIT:g} s of SIGTERM") from None
        finally:
            self.log.close()
        final = {}
        while (item := self.lines.get(timeout=WAIT)) is not None:
            final = item
        assert final.get("stopped"), final
        return final


def routed(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ledger's messages the agent subscribes to and reads samples from."""
    return [m for m in messages if not IGNORED.search(m["topic"]) and
            any(match_topic(r.filter, m["topic"]) is not None for r in DEFAULT_ROUTES)]


def stored(directory: Path, seed: bytes) -> dict[str, list[tuple[float, Any]]]:
    """Every stream's samples held (the late companions folded into their stream), and checks
    that every log verifies."""
    # a copy: the agent may be running (and holds its transaction open between checkpoints)
    with tempfile.TemporaryDirectory(prefix="cairn-stored-") as copy:
        return _stored(StreamStore.snapshot(directory / "data", seed, copy))


def _stored(s: StreamStore) -> dict[str, list[tuple[float, Any]]]:
    out: dict[str, list[tuple[float, Any]]] = {}
    try:
        for name, lg in s.logs.items():
            held = [i for i in range(lg.length) if lg.has(i)]
            assert lg.verify_all().blocks == len(held), name
            base = name.removesuffix("/late")
            for i in held:
                out.setdefault(base, []).extend(
                    (x.time, x.value) for x in Frame.decode(lg.get(i)).samples)
    finally:
        s.close()
    return out


def assert_same(got: list[tuple[float, Any]], want: list[tuple[float, Any]], name: str) -> None:
    """The same samples: times exactly, values to 1e-12 (Tasmota's kWh and hPa)."""
    got, want = sorted(got), sorted(want)
    assert [t for t, _ in got] == [t for t, _ in want], name
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-12), name


def test_every_valid_message_is_one_sample_and_every_bad_one_a_reason(
        broker: Mosquitto, tmp_path: Path) -> None:
    edge = EdgeProcess(tmp_path / "edge", broker)
    edge.start()
    scenario = Scenario.parse(
        "[[fault]]\nkind='malformed'\nprobability=0.1\n"
        "[[fault]]\nkind='duplicate'\nprobability=0.1\ndevices=['board-1','board-2','board-3']\n"
        "[[fault]]\nkind='out_of_order'\nprobability=0.1\nburst=3\ndevices=['board-1']\n")
    fleet = Fleet(devices=5, sensors=4, rate=2.0, seed=21, start_time=time.time(),
                  formats=["senml", "senml-cbor", "tasmota", "esphome", "homie"],
                  scenario=scenario)
    book = Ledger(tmp_path / "ledger.jsonl")
    Runner(fleet, parse_broker(broker.url), ledger=book).run(4.0)
    book.close()
    messages, acks = Ledger.read(tmp_path / "ledger.jsonl")
    assert {m["seq"] for m in messages} == acks
    mine = routed(messages)
    edge.until(lambda s: s.get("messages", 0) >= len(mine))
    final = edge.stop()
    invalid = [m for m in mine if not m["valid"]]
    assert invalid and sum(final["rejected"].values()) == len(invalid)
    assert final["duplicates"] >= sum(1 for m in mine if "duplicate" in m["faults"])
    got = stored(edge.dir, edge.seed)
    want: dict[str, list[tuple[float, Any, str]]] = {}
    for m in mine:
        if m["valid"] and m["kind"] == "data":
            for name, _unit, t, v in m["samples"]:
                want.setdefault(name, []).append((t, v, m["topic"]))
    assert set(got) == set(want)
    for name, items in want.items():
        timed = items[0][2].startswith(("senml/", "tele/"))
        if timed:  # the payload states the time: the same (time, value) once each
            expect = sorted({(t, v) for t, v, _ in items})
            assert_same(got[name], expect, name)
        else:  # ESPHome, Homie: stamped at receipt; the values, once each, in order
            assert [v for _, v in sorted(got[name])] == [v for _, v, _ in
                                                          sorted(items)], name


def test_only_configured_gateways_replicate(broker: Mosquitto, tmp_path: Path) -> None:
    gateway = random_key_pair()
    edge = EdgeProcess(tmp_path / "edge", broker, gateways=[gateway.public_key.hex()])
    ready = edge.start()
    port = ready["replication"][1]
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-pub")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    t0 = time.time()
    for k in range(5):
        pub.publish("senml/board-7/temperature", json.dumps(
            [{"bn": "board-7/temperature", "bt": t0 + k, "bu": "Cel", "v": 20 + k}]), qos=1
        ).wait_for_publish(WAIT)
    pub.disconnect()
    pub.loop_stop()
    line = edge.until(lambda s: s.get("samples", 0) >= 5)
    key = bytes.fromhex(_key_of(edge, "board-7/temperature"))
    length = line["streams"]["board-7/temperature"]

    async def fetch(kp: Any, path: Path) -> tuple[int, str | None]:
        error = None
        with Log.replica(path, key) as replica:
            try:
                await asyncio.wait_for(download("127.0.0.1", port, replica, kp, start=0,
                                                end=length), WAIT)
            except (ConnectionError, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            held = sum(replica.has(i) for i in range(replica.length))
            if held:
                assert replica.verify_all().blocks == held
            return held, error

    held, error = asyncio.run(fetch(random_key_pair(), tmp_path / "stranger.db"))
    assert held == 0 and error is not None  # refused after the handshake
    held, error = asyncio.run(fetch(gateway, tmp_path / "gateway.db"))
    assert error is None and held == length
    edge.stop()


def _key_of(edge: EdgeProcess, stream: str) -> str:
    done = subprocess.run([sys.executable, "-m", "cairn.cli", "edge", "keys", "--config",
                           str(edge.config), "--json"], capture_output=True, text=True,
                          timeout=WAIT, check=True)
    return str(json.loads(done.stdout)["streams"][stream])


def test_broker_restart_loses_nothing(broker: Mosquitto, tmp_path: Path) -> None:
    edge = EdgeProcess(tmp_path / "edge", broker)
    edge.start()
    fleet = Fleet(devices=2, sensors=3, rate=10.0, seed=8, start_time=time.time(),
                  formats=["senml"])
    book = Ledger(tmp_path / "ledger.jsonl")
    restarted: list[int] = []

    def tick(stats: Any) -> None:
        if not restarted and stats.acked > 50:
            restarted.append(stats.acked)
            broker.restart()

    Runner(fleet, parse_broker(broker.url), ledger=book, backoff_min=0.05,
           backoff_max=0.5).run(4.0, on_tick=tick)
    book.close()
    assert restarted
    messages, acks = Ledger.read(tmp_path / "ledger.jsonl")
    want = Counter(name for m in routed(messages) if m["seq"] in acks
                   for name, *_ in m["samples"])

    def complete(_: dict[str, Any]) -> bool:
        got = stored(edge.dir, edge.seed)
        return all(len(got.get(n, [])) >= c for n, c in want.items())

    if not complete({}):
        edge.until(complete)
    edge.stop()
    got = stored(edge.dir, edge.seed)
    assert {n: len(v) for n, v in got.items()} == dict(want)
    assert all(len(v) == len(set(v)) for v in got.values())


def test_the_embedded_broker_needs_no_mosquitto(broker: Mosquitto, tmp_path: Path) -> None:
    """broker = "embedded": the agent runs an MQTT 3.1.1 broker itself; the simulator (its MQTT 5
    CONNECT unanswered, 3.1.1 used after 3 s) publishes to it, and the agent stores it all."""
    from cairn.brokers import free_port

    port = free_port()
    edge = EdgeProcess(tmp_path / "edge", broker, embedded=port)
    edge.start()
    fleet = Fleet(devices=2, sensors=3, rate=2.0, seed=4, start_time=time.time(),
                  formats=["senml", "tasmota"])
    book = Ledger(tmp_path / "ledger.jsonl")
    stats = Runner(fleet, parse_broker(f"mqtt://127.0.0.1:{port}"), ledger=book).run(6.0)
    book.close()
    assert stats.fallbacks == 2 and stats.acked == stats.sent
    messages, _ = Ledger.read(tmp_path / "ledger.jsonl")
    # Tasmota states whole seconds: two readings at 2 Hz with one time and one value are one
    # sample (the store cannot tell them from a redelivery)
    want = {(name, t, v) for m in routed(messages) for name, _u, t, v in m["samples"]}
    edge.until(lambda s: s.get("samples", 0) >= len(want))
    edge.stop()
    got = stored(edge.dir, edge.seed)
    assert {(n, t, v) for n, items in got.items() for t, v in items} == want


def test_prometheus_metrics_say_what_status_says(broker: Mosquitto, tmp_path: Path) -> None:
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    from cairn.brokers import free_port

    port = free_port()
    edge = EdgeProcess(tmp_path / "edge", broker, metrics=port)
    edge.start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-pub")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    t0 = time.time()
    for k in range(3):
        pub.publish("senml/board-5/temperature", json.dumps(
            [{"bn": "board-5/temperature", "bt": t0 + k, "bu": "Cel", "v": 20 + k}]), qos=1
        ).wait_for_publish(WAIT)
    pub.publish("senml/board-5/temperature", b"not json", qos=1).wait_for_publish(WAIT)
    pub.disconnect()
    pub.loop_stop()
    line = edge.until(lambda s: s.get("samples", 0) >= 3 and s["rejected"])
    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=WAIT) as r:
        text = r.read().decode()
    edge.stop()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert samples[("cairn_edge_samples_total", ())] == line["samples"] == 3
    assert samples[("cairn_edge_rejected_total", (("reason", "bad-json"),))] == 1
    assert samples[("cairn_edge_log_length", (("stream", "board-5/temperature"),))] >= 1
    assert samples[("cairn_edge_broker_connected", ())] == 1
    assert samples[("cairn_edge_disk_bytes", ())] > 0


def test_the_disk_quota_clears_the_oldest_blocks_and_says_so(broker: Mosquitto,
                                                              tmp_path: Path) -> None:
    edge = EdgeProcess(tmp_path / "edge", broker, commit_interval=0.05, max_disk_mb=0.2)
    edge.start()
    fleet = Fleet(devices=2, sensors=5, rate=20.0, seed=6, start_time=time.time(),
                  formats=["senml"])
    Runner(fleet, parse_broker(broker.url)).run(4.0)
    line = edge.until(lambda s: s.get("cleared_blocks", 0) > 0)
    edge.stop()
    assert "disk quota of 0 MB reached: cleared blocks 0.." in (edge.dir / "agent.log").read_text()
    got = stored(edge.dir, edge.seed)  # (verifies every log)
    assert sum(len(v) for v in got.values()) < line["samples"]

"""firmware-sim against a real Mosquitto started by each test (own config, port, persistence)."""

from __future__ import annotations

import base64
import contextlib
import json
import math
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cbor2
import paho.mqtt.client as mqtt
import pytest
import senml  # type: ignore[import-untyped]
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cairn.brokers import Mosquitto, parse_broker
from cairn_sim.fleet import Fleet
from cairn_sim.mqtt import Ledger, Runner, RunStats
from cairn_sim.payloads import FORMATS
from cairn_sim.scenario import Scenario

T0 = 1_764_000_000.0
WAIT = 20.0  # bound on waiting for messages to arrive

RFC8428_LABELS = {-2: "bn", -3: "bt", -4: "bu", -5: "bv", -6: "bs", -1: "bver", 0: "n", 1: "u",
                  2: "v", 3: "vs", 4: "vb", 5: "s", 6: "t", 7: "ut", 8: "vd"}  # fmt: skip


@pytest.fixture
def broker(tmp_path: Path, mosquitto_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", executable=mosquitto_path) as m:
        yield m


class Subscriber:
    """A persistent-session QoS 1 subscriber to everything, on its own paho thread."""

    def __init__(self, host: str, port: int, client_id: str = "test-subscriber") -> None:
        self.got: list[tuple[str, bytes, Any]] = []
        self.cond = threading.Condition()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                        protocol=MQTTProtocolVersion.MQTTv5)
        c.reconnect_delay_set(1, 2)
        c.on_message = self._on_message
        c.on_connect = self._on_connect
        self.subscribed = threading.Event()
        c.on_subscribe = lambda *a: self.subscribed.set()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        c.connect(host, port, clean_start=False, properties=props)
        self.client = c
        c.loop_start()
        assert self.subscribed.wait(WAIT), "the subscriber could not subscribe"

    def _on_connect(self, client: mqtt.Client, u: Any, flags: Any, rc: Any, p: Any) -> None:
        client.subscribe("#", qos=1)

    def _on_message(self, client: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.got.append((msg.topic, bytes(msg.payload), msg.properties))
            self.cond.notify_all()

    def wait_for(self, done: Callable[[list[tuple[str, bytes, Any]]], bool]) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: done(self.got), WAIT)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def acked_messages(ledger: Path) -> list[dict[str, Any]]:
    messages, acks = Ledger.read(ledger)
    return [m for m in messages if m["seq"] in acks]


def contains(received: list[tuple[str, bytes, Any]], wanted: list[dict[str, Any]]) -> bool:
    have = Counter((t, p) for t, p, _ in received)
    need = Counter((m["topic"], base64.b64decode(m["payload"])) for m in wanted)
    return not (need - have)


def run_fleet(broker: Mosquitto, ledger: Path, *, seconds: float = 3.0,
              on_tick: Callable[[RunStats], None] | None = None, url: str | None = None,
              **fleet_args: Any) -> RunStats:
    args: dict[str, Any] = {"devices": 3, "sensors": 4, "seed": 7, "start_time": T0}
    args.update(fleet_args)
    fleet = Fleet(**args)
    book = Ledger(ledger)
    try:
        return Runner(fleet, parse_broker(url or broker.url), ledger=book,
                      backoff_min=0.05, backoff_max=0.5).run(seconds, on_tick=on_tick)
    finally:
        book.close()


def test_same_seed_same_messages(tmp_path: Path, mosquitto_path: Path) -> None:
    seen = []
    for k in range(2):
        with Mosquitto(tmp_path / f"broker{k}", executable=mosquitto_path) as b:
            sub = Subscriber(b.host, b.port)
            stats = run_fleet(b, tmp_path / f"l{k}.jsonl", formats=list(FORMATS), rate=5.0)
            wanted = acked_messages(tmp_path / f"l{k}.jsonl")
            assert stats.acked == stats.sent == len(wanted) > 100
            assert sub.wait_for(lambda got, w=wanted: contains(got, w))  # type: ignore[misc]
            sub.close()
            messages, _ = Ledger.read(tmp_path / f"l{k}.jsonl")
            seen.append(sorted((m["device"], m["topic"], m["payload"]) for m in messages))
    assert seen[0] == seen[1]


def test_every_payload_shape_decodes_with_an_independent_decoder(broker: Mosquitto,
                                                                  tmp_path: Path) -> None:
    sub = Subscriber(broker.host, broker.port)
    stats = run_fleet(broker, tmp_path / "l.jsonl", devices=len(FORMATS),
                      formats=list(FORMATS), sensors=6, rate=2.0, ha_discovery=True)
    wanted = acked_messages(tmp_path / "l.jsonl")
    assert stats.sent == len(wanted)
    assert sub.wait_for(lambda got: contains(got, wanted))
    sub.close()
    by_payload = {(m["topic"], base64.b64decode(m["payload"])): m for m in wanted}
    checked: Counter[str] = Counter()
    for topic, payload, props in sub.got:
        sent = by_payload.get((topic, payload))
        if sent is None or sent["kind"] != "data":
            continue
        samples = [tuple(s) for s in sent["samples"]]
        if topic.startswith("senml/"):
            ctype = getattr(props, "ContentType", None)
            if ctype == "application/senml+cbor":
                records = [{RFC8428_LABELS[k]: v for k, v in r.items()}
                           for r in cbor2.loads(payload)]
                checked["senml-cbor"] += 1
            else:
                assert ctype == "application/senml+json"
                records = json.loads(payload)
                checked["senml"] += 1
            doc = senml.SenMLDocument.from_json(records)
            resolved = [m.to_absolute(doc.base) for m in doc.measurements]
            assert [(r.name, r.unit, r.time, r.value) for r in resolved] == samples
        elif topic.startswith("tele/"):
            doc = json.loads(payload)
            values = sorted(v for g in doc.values() if isinstance(g, dict) for v in g.values())
            assert len(values) == len(samples)
            checked["tasmota"] += 1
        elif topic.startswith("homie/5/"):
            assert [float(payload)] == [s[3] for s in samples]
            checked["homie"] += 1
        elif topic.startswith("zigbee2mqtt/"):
            assert list(json.loads(payload).values()) == [s[3] for s in samples]
            checked["zigbee2mqtt"] += 1
        elif topic.endswith("/events/rpc"):
            note = json.loads(payload)
            assert note["method"] == "NotifyStatus" and note["params"]["ts"] == samples[0][2]
            (status,) = [v for k, v in note["params"].items() if k != "ts"]
            values = [x for k, v in status.items() if k != "id"
                      for x in (v.values() if isinstance(v, dict) else [v])]
            assert sorted(values) == sorted(s[3] for s in samples)
            checked["shelly"] += 1
        else:
            assert "/sensor/" in topic and [float(payload)] == [s[3] for s in samples]
            checked["esphome"] += 1
    assert set(checked) == set(FORMATS) and min(checked.values()) >= 5
    discovery = [json.loads(p) for t, p, _ in sub.got if t.startswith("homeassistant/")]
    assert discovery and all("state_topic" in d and "unit_of_measurement" in d
                             for d in discovery)


def test_broker_restart_loses_no_acknowledged_message(broker: Mosquitto, tmp_path: Path) -> None:
    sub = Subscriber(broker.host, broker.port)
    restarted: list[float] = []

    def tick(stats: RunStats) -> None:
        if not restarted and stats.acked > 200:
            restarted.append(stats.acked)
            broker.restart()  # SIGTERM: the broker saves its sessions, then starts again

    stats = run_fleet(broker, tmp_path / "l.jsonl", devices=5, sensors=4, rate=20.0,
                      seconds=4.0, on_tick=tick)
    assert restarted, "the broker was not restarted during the run"
    assert stats.reconnects >= 5  # every device came back
    wanted = acked_messages(tmp_path / "l.jsonl")
    assert len(wanted) > restarted[0] + 200  # messages acknowledged after the restart too
    assert sub.wait_for(lambda got: contains(got, wanted)), "acknowledged messages were lost"
    sub.close()


def test_storms_and_reboots_lose_nothing_acknowledged(broker: Mosquitto, tmp_path: Path) -> None:
    sub = Subscriber(broker.host, broker.port)
    scenario = Scenario.parse(
        "[[fault]]\nkind='reconnect_storm'\ndevices=['board-1']\nstart=0.5\nduration=2\n"
        "interval=0.4\n"
        "[[fault]]\nkind='reboot'\ndevices=['board-2']\nstart=1\ndowntime=0.5\nntp_delay=0.5\n")
    stats = run_fleet(broker, tmp_path / "l.jsonl", rate=10.0, seconds=3.5, scenario=scenario,
                      formats=["esphome"])
    assert stats.faults["storm"] >= 4 and stats.faults["reboot"] == 2
    assert stats.reconnects >= 5
    wanted = acked_messages(tmp_path / "l.jsonl")
    messages, _ = Ledger.read(tmp_path / "l.jsonl")
    assert len(wanted) == len(messages)  # every message sent was acknowledged in the end
    assert sub.wait_for(lambda got: contains(got, wanted))
    # board-2 lost power: the broker sent its will, and it said "online" again after booting
    states = [p for t, p, _ in sub.got if t == "board-2/status"]
    assert b"offline" in states and states[-1] == b"online"
    assert any("clock_1970" in m["faults"] for m in messages)
    sub.close()


class V311OnlyBroker:
    """A stand-in for an old broker: refuses MQTT 5 (CONNACK 'unacceptable protocol version',
    as a 3.1.1 broker answers) and passes 3.1.1 connections through to Mosquitto."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.refused = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            first = _read_packet(conn)
            if first is None:
                return
            level = first[first.index(b"MQTT") + 4]
            if level == 5:
                self.refused += 1
                conn.sendall(b"\x20\x02\x00\x01")
                return
            with socket.create_connection(self.upstream) as up:
                up.sendall(first)
                pump = threading.Thread(target=_pipe, args=(up, conn), daemon=True)
                pump.start()
                _pipe(conn, up)
                pump.join(WAIT)

    def close(self) -> None:
        self.server.close()


def _read_packet(conn: socket.socket) -> bytes | None:
    head = conn.recv(1)
    if not head:
        return None
    length, shift, raw = 0, 0, bytearray(head)
    while True:
        b = conn.recv(1)
        if not b:
            return None
        raw += b
        length |= (b[0] & 0x7F) << shift
        shift += 7
        if not b[0] & 0x80:
            break
    while len(raw) < len(head) + (shift // 7) + length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        raw += chunk
    return bytes(raw)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def test_falls_back_to_mqtt_311_when_the_broker_refuses_5(broker: Mosquitto,
                                                           tmp_path: Path) -> None:
    old = V311OnlyBroker((broker.host, broker.port))
    sub = Subscriber(broker.host, broker.port)
    try:
        stats = run_fleet(broker, tmp_path / "l.jsonl", url=f"mqtt://127.0.0.1:{old.port}",
                          rate=5.0, seconds=2.0)
    finally:
        old.close()
    assert old.refused == 3 and stats.fallbacks == 3 and stats.connects == 3
    wanted = acked_messages(tmp_path / "l.jsonl")
    messages, _ = Ledger.read(tmp_path / "l.jsonl")
    assert len(wanted) == len(messages) > 50
    assert sub.wait_for(lambda got: contains(got, wanted))
    sub.close()


# -- the command line -----------------------------------------------------------------------


def cairn(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cairn.cli", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def test_cli_runs_a_fleet_and_writes_the_ledger(broker: Mosquitto, tmp_path: Path) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text("[[fault]]\nkind = 'malformed'\nprobability = 0.2\n")
    done = cairn("sim", "run", "--broker", broker.url, "--devices", "2", "--sensors", "3",
                 "--rate", "5", "--duration", "2", "--format", "senml,homie", "--seed", "3",
                 "--scenario", str(scenario), "--ledger", str(tmp_path / "l.jsonl"), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "messages sent" in done.stdout and "malformed" in done.stdout
    messages, acks = Ledger.read(tmp_path / "l.jsonl")
    assert len(messages) > 40 and {m["seq"] for m in messages} == acks
    assert any(not m["valid"] for m in messages)
    assert all(math.isfinite(s[2]) for m in messages for s in m["samples"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--broker", "http://127.0.0.1:1"], "scheme must be mqtt:// or mqtts://"),
        (["--broker", "mqtt://127.0.0.1:99999"], "bad port"),
        (["--format", "xml"], "xml: not a payload format"),
        (["--kinds", "temperature,lux"], "lux: not a sensor kind"),
        (["--rate", "0"], "--rate"),
        (["--devices", "0"], "--devices"),
    ],
)
def test_cli_refuses_bad_arguments(args: list[str], message: str) -> None:
    done = cairn("sim", "run", "--duration", "1", *args)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_cli_says_what_is_wrong_with_a_scenario(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[fault]]\nkind = 'spike'\nmagnitud = 3\n")
    done = cairn("sim", "run", "--duration", "1", "--scenario", str(bad))
    assert done.returncode == 2 and "unknown key(s) magnitud" in done.stderr  # a usage error


def test_cli_says_when_no_device_can_connect() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        done = cairn("sim", "run", "--broker", f"mqtt://127.0.0.1:{port}", "--duration", "1",
                     "--quiet")
    assert done.returncode == 1 and "no device could connect" in done.stderr

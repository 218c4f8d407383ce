"""deploy/mosquitto: the real Mosquitto with Cairn's config, ACL and a mosquitto_passwd file.

Each board logs in as itself and can publish under its own topics only; anonymous clients and
wrong passwords are refused; the edge agent's user reads everything. Non-delivery is shown
without sleeping: after the refused messages a board publishes one it may, and once that
marker reaches the edge's subscriber, Mosquitto has handled (and dropped) everything before it.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cairn.brokers import Mosquitto
from cairn_edge.adapters import DEFAULT_ROUTES
from cairn_sim.fleet import Fleet
from cairn_sim.payloads import FORMATS, Publish, will
from tests.conftest import missing
from tests.scorecard import record

ROOT = Path(__file__).resolve().parents[3]
CONF = ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
ACL = ROOT / "deploy" / "mosquitto" / "acl"
WAIT = 10.0  # bound on every wait for the broker
T0 = 1_764_000_000.0
EDGE_USER = "cairn-edge"  # the user deploy/mosquitto/acl lets read everything
PASSWORDS = {EDGE_USER: "edge-secret", **{f"board-{i}": f"secret-{i}" for i in range(1, 8)}}


class DeployedMosquitto(Mosquitto):
    """Mosquitto with deploy/mosquitto/mosquitto.conf, only its paths and listener moved into
    the test's directory (127.0.0.1, a free port)."""

    def __init__(self, directory: Path, executable: Path, passwd: Path) -> None:
        super().__init__(directory, executable=executable)
        self.passwd = passwd

    def _write_config(self) -> None:
        text = CONF.read_text()
        swaps = {
            r"^password_file .*$": f"password_file {self.passwd}",
            r"^acl_file .*$": f"acl_file {ACL}",
            r"^persistence_location .*$": f"persistence_location {self.dir}/",
            r"^listener 1883$": f"listener {self.port} {self.host}",
        }
        for pattern, line in swaps.items():
            text, n = re.subn(pattern, line, text, flags=re.MULTILINE)
            assert n == 1, f"deploy/mosquitto/mosquitto.conf has no line {pattern}"
        if os.geteuid() == 0:  # as root Mosquitto drops to "mosquitto", which cannot write here
            text += f"\nuser {pwd.getpwuid(os.geteuid()).pw_name}\n"
        self.config.write_text(text)


@pytest.fixture
def broker(tmp_path: Path, mosquitto_path: Path) -> Iterator[DeployedMosquitto]:
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not os.access(tool, os.X_OK):
        missing("mosquitto_passwd", "apt-get install mosquitto (it ships mosquitto_passwd)")
    passwd = tmp_path / "passwd"
    passwd.touch(mode=0o600)
    for user, password in PASSWORDS.items():
        subprocess.run([tool, "-b", str(passwd), user, password], check=True, timeout=30,
                       capture_output=True)
    assert "board-1:$7$" in passwd.read_text(), "mosquitto_passwd writes salted PBKDF2 hashes"
    m = DeployedMosquitto(tmp_path / "broker", mosquitto_path, passwd)
    m.start()
    try:
        yield m
    finally:
        m.stop()


class Client:
    """One MQTT 5 connection on its own paho thread; every wait is bounded."""

    def __init__(self, broker: Mosquitto, user: str | None, password: str | None = None,
                 *, will_message: Publish | None = None, client_id: str | None = None,
                 persistent: bool = False) -> None:
        self.connected = threading.Event()
        self.connack: ReasonCode | None = None
        self.session_present = False
        self.cond = threading.Condition()
        self.got: list[tuple[str, bytes]] = []
        self.acks: dict[int, ReasonCode] = {}
        self.granted: list[ReasonCode] = []
        self.subscribed = threading.Event()
        c = self.mqtt = mqtt.Client(CallbackAPIVersion.VERSION2,
                                    client_id=client_id or f"t-{user}",
                                    protocol=MQTTProtocolVersion.MQTTv5)
        if user is not None:
            c.username_pw_set(user, password)
        if will_message is not None:
            c.will_set(will_message.topic, will_message.payload, qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        props = None
        if persistent:  # as the edge agent: its session (and QoS 1 queue) outlives it
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 3600
        c.connect(broker.host, broker.port, keepalive=30, clean_start=not persistent,
                  properties=props)
        c.loop_start()
        assert self.connected.wait(WAIT), f"no CONNACK for {user} in {WAIT} s"

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object,
                    reason: ReasonCode, props: object) -> None:
        self.connack = reason
        self.session_present = bool(getattr(flags, "session_present", False))
        self.connected.set()

    def _on_message(self, client: mqtt.Client, userdata: object,
                    msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.got.append((msg.topic, bytes(msg.payload)))
            self.cond.notify_all()

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int,
                    reason: ReasonCode, props: object) -> None:
        with self.cond:
            self.acks[mid] = reason
            self.cond.notify_all()

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int,
                      reasons: list[ReasonCode], props: object) -> None:
        self.granted = list(reasons)
        self.subscribed.set()

    def subscribe(self, *filters: str) -> list[ReasonCode]:
        self.subscribed.clear()
        self.mqtt.subscribe([(f, 1) for f in filters])
        assert self.subscribed.wait(WAIT), "no SUBACK"
        return self.granted

    def publish(self, p: Publish) -> ReasonCode:
        """Publish at QoS 1 and return the broker's PUBACK reason."""
        mid = self.mqtt.publish(p.topic, p.payload, qos=1, retain=p.retain).mid
        with self.cond:
            assert self.cond.wait_for(lambda: mid in self.acks, WAIT), f"no PUBACK: {p.topic}"
            return self.acks[mid]

    def wait_for(self, topic: str, payload: bytes) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: (topic, payload) in self.got, WAIT), \
                f"{topic} did not arrive in {WAIT} s"

    def close(self) -> None:
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


def fleet_messages() -> dict[str, list[Publish]]:
    """What the simulator's boards publish, one board per payload shape: births (status,
    Homie descriptions, Home Assistant discovery), a second of readings, and wills."""
    fleet = Fleet(devices=len(FORMATS), sensors=2, formats=FORMATS, start_time=T0,
                  ha_discovery=True, seed=3)
    out: dict[str, list[Publish]] = {name: [] for name in fleet.devices}
    for name in fleet.devices:
        out[name] += [o.publish for o in fleet.births(name)]
        out[name].append(will(fleet.devices[name].fmt, name))
    for item in fleet.pop_due(1.0):
        device = getattr(item, "device", None)
        if device is not None:
            out[device].append(item.publish)  # type: ignore[union-attr]
    assert set(out) == {f"board-{i}" for i in range(1, len(FORMATS) + 1)}
    return out


@pytest.fixture
def edge(broker: Mosquitto) -> Iterator[Client]:
    c = Client(broker, EDGE_USER, PASSWORDS[EDGE_USER])
    assert c.connack is not None and not c.connack.is_failure
    c.subscribe("#")
    yield c
    c.close()


def test_the_edge_user_may_subscribe_to_every_default_topic(broker: Mosquitto,
                                                            edge: Client) -> None:
    filters = [r.filter for r in DEFAULT_ROUTES]
    granted = edge.subscribe(*filters)
    assert [int(r.value) for r in granted] == [1] * len(filters)  # QoS 1 granted, none refused


def test_each_board_publishes_its_own_topics_and_the_edge_gets_them(broker: Mosquitto,
                                                                     edge: Client) -> None:
    messages = fleet_messages()
    assert sum(len(m) for m in messages.values()) > 20
    for device, publishes in messages.items():
        board = Client(broker, device, PASSWORDS[device])
        try:
            for p in publishes:
                assert not board.publish(p).is_failure, f"{device} refused on {p.topic}"
            for p in publishes:
                edge.wait_for(p.topic, p.payload)
        finally:
            board.close()


def test_a_board_cannot_publish_under_another_boards_topics(broker: Mosquitto,
                                                            edge: Client) -> None:
    messages = fleet_messages()
    board = Client(broker, "board-1", PASSWORDS["board-1"])
    try:
        others = [p for dev, ps in messages.items() if dev != "board-1" for p in ps]
        topics = {p.topic.split("/")[0] for p in others}
        assert {"senml", "tele", "homie", "homeassistant"} <= topics
        assert any(t.startswith("board-") for t in topics)  # ESPHome: <board>/sensor/...
        refused = [board.publish(p) for p in others]
        assert all(r.is_failure and r.getName() == "Not authorized" for r in refused), refused
        marker = Publish("senml/board-1/status", b"marker")
        assert not board.publish(marker).is_failure
        edge.wait_for(marker.topic, marker.payload)
        with edge.cond:
            leaked = [t for t, _ in edge.got if not t.startswith("senml/board-1/")]
        record("mqtt", "a board publishes on other boards' topics (Mosquitto, deploy conf)",
               len(others), len(leaked) + sum(not r.is_failure for r in refused),
               "publishes accepted or delivered",
               detail=f"board-1 on {len(topics)} first topic levels of 4 other boards")
        assert leaked == [], f"delivered despite the ACL: {leaked}"
    finally:
        board.close()


def test_the_edge_user_publishes_nothing_of_a_board(broker: Mosquitto, edge: Client) -> None:
    reason = edge.publish(Publish("senml/board-1/temperature", b"[]"))
    assert reason.is_failure and reason.getName() == "Not authorized"


@pytest.mark.parametrize(("user", "password"), [(None, None), ("board-1", "wrong"),
                                                 ("nobody", "secret-1")],
                         ids=["anonymous", "wrong-password", "unknown-user"])
def test_clients_without_valid_credentials_are_refused(broker: Mosquitto, user: str | None,
                                                       password: str | None) -> None:
    c = Client(broker, user, password)
    try:
        assert c.connack is not None and c.connack.is_failure, c.connack
        assert c.connack.getName() in {"Not authorized", "Bad user name or password"}
    finally:
        c.close()


def test_a_board_cannot_take_the_edges_client_id_and_its_session(broker: Mosquitto) -> None:
    """Attack: while the edge agent is away (restarting), a board logs in with the edge's
    client id and a clean start. Mosquitto would hand it the edge's persistent session and
    discard it, with the readings queued for the edge. With use_username_as_clientid a
    client's id is its user name: the board gets its own session, the edge's stays whole."""
    edge = Client(broker, EDGE_USER, PASSWORDS[EDGE_USER], client_id="cairn-edge",
                  persistent=True)
    edge.subscribe("senml/#")
    edge.close()  # away: the broker queues QoS 1 readings for its session
    readings = [Publish("senml/board-1/temperature",
                        f'[{{"bn":"board-1/temperature","bt":{T0 + k},"v":{k}}}]'.encode())
                for k in range(20)]
    takeovers = 0
    honest = Client(broker, "board-1", PASSWORDS["board-1"])
    try:
        for k, p in enumerate(readings):
            if k % 4 == 0:  # again and again, between the readings
                thief = Client(broker, "board-2", PASSWORDS["board-2"], client_id="cairn-edge")
                assert thief.connack is not None and not thief.connack.is_failure
                takeovers += 1
                thief.close()
            assert not honest.publish(p).is_failure
    finally:
        honest.close()
    edge = Client(broker, EDGE_USER, PASSWORDS[EDGE_USER], client_id="cairn-edge",
                  persistent=True)
    try:
        with edge.cond:
            edge.cond.wait_for(lambda: readings[-1].topic in {t for t, _ in edge.got}
                               and all((p.topic, p.payload) in edge.got for p in readings),
                               WAIT)
            lost = [p for p in readings if (p.topic, p.payload) not in edge.got]
        record("mqtt", "a board logs in with the edge's client id (Mosquitto, deploy conf)",
               takeovers, len(lost), "queued readings lost", detail=(
                   f"{takeovers} clean-start logins as client id cairn-edge while the edge was "
                   f"away, {len(readings)} readings queued for it; session present on its "
                   f"return: {edge.session_present}"))
        assert edge.session_present, "the edge's session was taken"
        assert lost == []
        # the service runs on: the edge still gets a fresh reading
        fresh = Publish("senml/board-1/temperature", b"[]")
        board = Client(broker, "board-1", PASSWORDS["board-1"])
        try:
            assert not board.publish(fresh).is_failure
        finally:
            board.close()
        edge.wait_for(fresh.topic, fresh.payload)
    finally:
        edge.close()

"""MQTT identity attacks on a running edge agent (issue 17 part 5), real sockets and processes.

- on the embedded broker with board logins, a board publishes under another board's topics,
  anonymous and wrong-password clients try to publish, and a client takes the edge's client id;
- a broker password in the edge's broker URL must appear in no log line or message, whatever
  happens to the connection, and none in the simulator's.

Each test ends with the agent running, honest readings current, and nothing of the attacker
stored. Non-delivery is shown without sleeping: after its refused publishes the attacker
publishes on a topic of its own, and once that reaches the edge's log, the broker has handled
(and dropped) everything it sent before.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, cast

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from cairn.brokers import Mosquitto, free_port
from tests.integration.edge.test_edge_mqtt import EdgeProcess, stored
from tests.scorecard import record
from tests.unit.edge.test_edge_boards import mosquitto_hash

WAIT = 30.0
SECRET = "Tr0ub4dor-and-3"  # a password that must never be shown
PASSWORDS = {"board-1": "secret-one", "board-2": "secret-two"}
FORGED = 666.0


class Board:
    """An MQTT 3.1.1 client (what the embedded broker speaks) on its own paho thread."""

    def __init__(self, port: int, user: str | None, password: str | None = None, *,
                 client_id: str = "", clean: bool = True) -> None:
        self.done = threading.Event()
        self.refused: bool | None = None
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=MQTTProtocolVersion.MQTTv311, clean_session=clean)
        if user is not None:
            self.c.username_pw_set(user, password)
        self.c.on_connect = self._on_connect
        self.c.connect("127.0.0.1", port, keepalive=30)
        self.c.loop_start()
        assert self.done.wait(WAIT), f"no CONNACK for {user}"

    def _on_connect(self, client: mqtt.Client, u: object, flags: object, reason: Any,
                    props: object) -> None:
        self.refused = bool(reason.is_failure)
        self.done.set()

    def reading(self, topic: str, device: str, t: float, v: float) -> None:
        payload = json.dumps([{"bn": f"{device}/temperature", "bt": t, "bu": "Cel", "v": v}])
        info = self.c.publish(topic, payload, qos=1)
        info.wait_for_publish(WAIT)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


class VerboseEdge(EdgeProcess):
    """The agent with ``-v``: its info lines (connected to, disconnected from) logged too."""

    def start(self) -> dict[str, Any]:
        self.lines = queue.Queue()
        self.log = open(self.dir / "agent.log", "a")  # noqa: SIM115 - the child writes it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cairn.cli", "-v", "edge", "run", "--config",
             str(self.config), "--status-lines"], stdout=subprocess.PIPE, stderr=self.log,
            text=True)
        EdgeProcess.running.append(self)
        threading.Thread(target=self._read, args=(self.proc, self.lines), daemon=True).start()
        first = self.next()
        assert first.get("ready"), first
        return first


def embedded_edge(tmp_path: Path) -> tuple[EdgeProcess, int]:
    port = free_port()
    edge = EdgeProcess(tmp_path / "edge", cast(Mosquitto, None), embedded=port,
                       commit_interval=0.2)
    text = edge.config.read_text()
    edge.config.write_text(text.replace("[mqtt]\n", '[mqtt]\nboards_file = "boards.passwd"\n'))
    passwd = edge.dir / "boards.passwd"
    passwd.write_text("".join(f"{name}:{mosquitto_hash(pw, salt=name.encode().ljust(12, b'_'))}\n"
                              for name, pw in PASSWORDS.items()))
    os.chmod(passwd, 0o600)
    return edge, port


def test_a_board_cannot_publish_as_another_on_the_embedded_broker(tmp_path: Path) -> None:
    edge, port = embedded_edge(tmp_path)
    edge.start()
    now = time.time()
    honest = Board(port, "board-1", PASSWORDS["board-1"])
    rogue = Board(port, "board-2", PASSWORDS["board-2"])
    outsiders = [Board(port, None), Board(port, "board-1", "wrong"),
                 Board(port, "nobody", PASSWORDS["board-1"])]
    try:
        honest.reading("senml/board-1/temperature", "board-1", now, 21.5)
        forged_topics = ["senml/board-1/temperature", "tele/board-1/SENSOR",
                         "board-1/sensor/temperature/state", "homie/5/board-1/env/temperature"]
        runs = 0
        for k in range(5):
            for topic in forged_topics:
                rogue.reading(topic, "board-1", now + 0.1 + k / 10, FORGED)
                runs += 1
        rogue.reading("senml/board-2/temperature", "board-2", now + 1, 1.0)  # its own: marker
        for o in outsiders:
            assert o.refused, "a client without a board login was let in"
        edge.until(lambda s: s.get("streams", {}).get("board-2/temperature", 0) >= 1)
        honest.reading("senml/board-1/temperature", "board-1", time.time(), 22.5)
        line = edge.until(lambda s: s.get("samples", 0) >= 3)
        assert line["broker_connected"]
    finally:
        for b in (honest, rogue, *outsiders):
            b.close()
    edge.stop()
    got = stored(edge.dir, edge.seed)
    forged = [(n, t, v) for n, items in got.items() for t, v in items if v == FORGED]
    record("mqtt", "a board publishes on another board's topics (embedded broker)", runs,
           len(forged), "forged readings stored", detail=(
               f"board-2, logged in, on {len(forged_topics)} topic shapes of board-1; "
               f"{len(outsiders)} clients without a valid login refused"))
    assert forged == []
    assert [v for _, v in got["board-1/temperature"]] == [21.5, 22.5]  # honest data, current
    said = (edge.dir / "agent.log").read_text()
    # said, and once a minute at most: a client trying again and again fills no disk
    assert said.count("refused board 'board-2' publishing to") == 1, said
    assert said.count("refused a login as") == 1, said
    [(t, v)] = got["board-2/temperature"]
    assert v == 1.0 and t == pytest.approx(now + 1)


def test_no_client_takes_the_edges_session_on_the_embedded_broker(tmp_path: Path) -> None:
    """amqtt ends the session of a client id before it checks the login: the edge's client id
    there is made at start and unguessable, and the configured one is useless to a thief."""
    edge, port = embedded_edge(tmp_path)
    edge.start()
    honest = Board(port, "board-1", PASSWORDS["board-1"])
    tries = 0
    t0 = time.time()
    try:
        for k in range(10):
            for user, pw in (("board-2", PASSWORDS["board-2"]), (None, None)):
                thief = Board(port, user, pw, client_id="edge-under-test", clean=k % 2 == 0)
                tries += 1
                thief.close()
            honest.reading("senml/board-1/temperature", "board-1", t0 + k / 10, float(k))
        line = edge.until(lambda s: s.get("samples", 0) >= 10)
        assert line["broker_connected"]
    finally:
        honest.close()
    edge.stop()
    got = [v for _, v in stored(edge.dir, edge.seed).get("board-1/temperature", [])]
    lost = len([k for k in range(10) if float(k) not in got])
    record("mqtt", "clients log in with the edge's client id (embedded broker)", tries, lost,
           "honest readings lost", detail="board-2 and anonymous, clean and persistent, "
           "between 10 honest readings")
    assert lost == 0


def test_no_broker_password_in_any_log_line(tmp_path: Path, mosquitto_path: Path) -> None:
    """The edge with user:password in its broker URL: connected, the broker gone (so it logs
    disconnects and retries), a config whose URL is bad; the simulator that cannot connect."""
    runs = 0
    texts: list[str] = []
    with Mosquitto(tmp_path / "broker", executable=mosquitto_path) as broker:
        edge = VerboseEdge(tmp_path / "edge", broker, commit_interval=0.2)
        text = edge.config.read_text()
        url = f"mqtt://cairn-edge:{SECRET}@{broker.host}:{broker.port}"
        edge.config.write_text(text.replace(f'broker = "{broker.url}"', f'broker = "{url}"'))
        assert url in edge.config.read_text()
        edge.start()
        board = Board(broker.port, None)
        try:
            board.reading("senml/board-1/temperature", "board-1", time.time(), 20.0)
        finally:
            board.close()
        edge.until(lambda s: s.get("samples", 0) >= 1)
        broker.stop()  # the edge logs the lost connection and its retries
        runs += 1
        broker.start()
        board = Board(broker.port, None)
        try:
            board.reading("senml/board-1/temperature", "board-1", time.time(), 21.0)
        finally:
            board.close()
        line = edge.until(lambda s: s.get("samples", 0) >= 2)
        assert line["broker_connected"]  # running, and current
        final = edge.stop()
        runs += 1
    texts += [(edge.dir / "agent.log").read_text(), json.dumps(final)]
    for bad_url in (f"mqtt://cairn-edge:{SECRET}@127.0.0.1:99999",
                    f"mqtt://cairn-edge:{SECRET}@127.0.0.1/x"):
        edge.config.write_text(text.replace(f'broker = "{broker.url}"', f'broker = "{bad_url}"'))
        out = subprocess.run([sys.executable, "-m", "cairn.cli", "-v", "edge", "run", "--config",
                              str(edge.config)], capture_output=True, text=True, timeout=WAIT)
        assert out.returncode != 0 and "[mqtt].broker" in out.stderr, out.stderr
        texts += [out.stdout, out.stderr]
        runs += 1
    closed = free_port()
    sim = subprocess.run([sys.executable, "-m", "cairn.cli", "-v", "sim", "run", "--broker",
                          f"mqtt://board:{SECRET}@127.0.0.1:{closed}", "--duration", "0.5",
                          "--devices", "1", "--quiet"], capture_output=True, text=True,
                         timeout=WAIT)
    assert sim.returncode != 0 and f"127.0.0.1:{closed}" in sim.stderr + sim.stdout
    texts += [sim.stdout, sim.stderr]
    runs += 1
    assert "connected to mqtt://127.0.0.1" in texts[0]  # the address is logged, without it
    shown = [t for t in texts if SECRET in t]
    record("mqtt", "a broker password in the URL (edge and simulator logs)", runs, len(shown),
           "outputs showing it", detail="edge: connect, broker lost and back, stop, two bad "
           "URLs in the config; simulator: no broker")
    assert shown == []

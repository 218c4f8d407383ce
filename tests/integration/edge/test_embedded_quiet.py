"""The embedded broker (amqtt) in an edge process: a subscriber that never acknowledges makes
amqtt time out waiting for its PUBACK; at -v that is one info line, never a traceback (what
reached the demo's live view)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cairn.brokers import free_port
from cairn.fleet.identity import new_seed

WAIT = 30.0


def test_a_subscriber_that_never_acknowledges_logs_no_traceback(tmp_path: Path) -> None:
    pytest.importorskip("amqtt")
    port = free_port()
    new_seed(tmp_path / "device.seed")
    (tmp_path / "edge.toml").write_text(
        f'[mqtt]\nbroker = "embedded"\nlisten = "127.0.0.1:{port}"\n'
        '[replication]\nhost = "127.0.0.1"\nport = 0\n')
    err: list[str] = []
    proc = subprocess.Popen([sys.executable, "-m", "cairn.cli", "-v", "edge", "run", "--config",
                             str(tmp_path / "edge.toml")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    reader = threading.Thread(target=lambda: err.extend(proc.stderr or ()), daemon=True)
    reader.start()
    silent = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="never-acks",
                         protocol=mqtt.MQTTv311, manual_ack=True)
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sender",
                         protocol=mqtt.MQTTv311)
    try:
        assert '"ready": true' in proc.stdout.readline()
        subscribed = threading.Event()
        silent.on_subscribe = lambda *_a: subscribed.set()
        silent.on_connect = lambda c, *_a: c.subscribe("senml/#", qos=1)
        silent.connect("127.0.0.1", port)
        silent.loop_start()
        assert subscribed.wait(WAIT)
        sender.connect("127.0.0.1", port)
        sender.loop_start()
        # amqtt waits 5 s for each PUBACK; a delivery that timed out is reported (with its
        # traceback, at error level) when the next message is broadcast: keep publishing
        deadline = time.monotonic() + WAIT
        while not any("Timeout waiting for PUBACK" in line for line in err):
            assert time.monotonic() < deadline, "".join(err)[-2000:]
            sender.publish("senml/quiet/x", b"[]", qos=1).wait_for_publish(WAIT)
            time.sleep(0.2)
    finally:
        for c in (silent, sender):
            c.disconnect()
            c.loop_stop()
        proc.terminate()
        try:
            proc.wait(WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(WAIT)
            reader.join(WAIT)
            proc.stdout.close()
            proc.stderr.close()
    text = "".join(err)
    assert "Traceback" not in text, text[-3000:]
    lines = [x for x in err if "Timeout waiting for PUBACK" in x]
    assert lines and all(" INFO " in x and "amqtt" in x for x in lines), lines

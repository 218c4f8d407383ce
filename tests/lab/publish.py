"""A board in the lab: publishes a known sequence of SenML readings into the MQTT broker of its
namespace, QoS 1, and prints each reading the broker acknowledged as a JSON line.

    python -m tests.lab.publish DEVICE [--broker 127.0.0.1:1883] [--rate 5] [--seconds 300]

Topic ``senml/DEVICE/temperature``; reading i has the value i and the time it was sent (the
stream ``DEVICE/temperature`` at the edge and the gateway). It prints ``{"connected": true}``
once connected, then ``{"i": i, "t": t, "v": i}`` for each acknowledged reading; it stops on
SIGTERM or after --seconds.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from types import FrameType

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def _print(value: object) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.lab.publish")
    p.add_argument("device")
    p.add_argument("--broker", default="127.0.0.1:1883")
    p.add_argument("--rate", type=float, default=5.0)
    p.add_argument("--seconds", type=float, default=300.0)
    a = p.parse_args(argv)
    host, _, port = a.broker.rpartition(":")
    stop = threading.Event()

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"lab-board-{a.device}")
    client.connect(host, int(port))
    client.loop_start()
    try:
        _print({"connected": True})
        topic = f"senml/{a.device}/temperature"
        deadline = time.monotonic() + a.seconds
        i = 0
        while not stop.is_set() and time.monotonic() < deadline:
            t = round(time.time(), 3)
            pack = [{"bn": f"{a.device}/temperature", "bt": t, "bu": "Cel", "v": i}]
            info = client.publish(topic, json.dumps(pack), qos=1)
            info.wait_for_publish(10.0)
            if info.is_published():
                _print({"i": i, "t": t, "v": i})
            i += 1
            stop.wait(1.0 / a.rate)
    finally:
        client.loop_stop()
        client.disconnect()


if __name__ == "__main__":
    main()

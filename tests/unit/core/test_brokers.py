"""cairn.brokers: one module for what sim, edge, demo and tests share about brokers, importable
on a machine with no MQTT library at all (amqtt is imported only when an embedded broker
starts)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from cairn import errors
from cairn.brokers import (
    BrokerURLError,
    EmbeddedBrokerError,
    Mosquitto,
    MosquittoError,
    mosquitto,
    parse_broker,
    start_embedded,
)


def test_importing_the_brokers_needs_no_mqtt_library() -> None:
    code = ("import sys\n"
            "for name in ('amqtt', 'amqtt.broker', 'paho', 'paho.mqtt'):\n"
            "    sys.modules[name] = None  # importing it raises ImportError\n"
            "import cairn.brokers\n"
            "print(cairn.brokers.parse_broker('mqtt://h:1').url())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "mqtt://h:1\n"


def test_without_amqtt_starting_an_embedded_broker_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "amqtt.broker", None)
    with pytest.raises(EmbeddedBrokerError, match=r"pip install 'cairn\[embedded-broker\]'"):
        asyncio.run(start_embedded("127.0.0.1", 1883, plugins={}))


def test_broker_errors_say_whose_fault_they_are(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BrokerURLError) as bad:
        parse_broker("http://h")
    assert isinstance(bad.value, errors.UsageError) and isinstance(bad.value, ValueError)
    assert issubclass(EmbeddedBrokerError, errors.ServiceError)
    monkeypatch.setattr(mosquitto, "find_mosquitto", lambda: None)
    with pytest.raises(MosquittoError, match="not installed") as missing:
        Mosquitto(tmp_path / "broker")
    assert isinstance(missing.value, errors.ServiceError)

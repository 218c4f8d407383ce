"""Everything about MQTT brokers that the simulator, the edge, the demo and the tests share.

- :mod:`cairn.brokers.url`: broker addresses, ``mqtt[s]://[user:password@]host[:port]``
  (:func:`parse_broker`, :func:`redact`), no MQTT library needed;
- :mod:`cairn.brokers.mosquitto`: a Mosquitto child process with its own config, port and
  persistence (:class:`Mosquitto`, :func:`find_mosquitto`, :func:`free_port`);
- :mod:`cairn.brokers.embedded`: the embedded amqtt broker (:func:`start_embedded`), amqtt
  imported only when one starts.

The simulator imports nothing else from ``cairn``: it talks to the rest through MQTT only
(tests/unit/test_import_boundaries.py holds it to that).
"""

from __future__ import annotations

from cairn.brokers.embedded import EmbeddedBrokerError, start_embedded
from cairn.brokers.mosquitto import Mosquitto, MosquittoError, find_mosquitto, free_port
from cairn.brokers.url import Broker, BrokerURLError, parse_broker, redact

__all__ = [
    "Broker",
    "BrokerURLError",
    "EmbeddedBrokerError",
    "Mosquitto",
    "MosquittoError",
    "find_mosquitto",
    "free_port",
    "parse_broker",
    "redact",
    "start_embedded",
]

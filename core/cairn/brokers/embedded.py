"""The embedded MQTT broker: amqtt (MQTT 3.1.1, pure Python) in this process, on one listener.

For a board without Mosquitto (the edge's ``broker = "embedded"``) and the demo. Who may log in
and publish is the caller's: it names amqtt plugins and their configs (the edge's board logins
are :mod:`cairn_edge.embedded`). amqtt is an optional extra (``cairn[embedded-broker]``), so it
is imported only when a broker starts: ``import cairn.brokers`` works without it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from cairn.errors import ServiceError

__all__ = ["EmbeddedBrokerError", "start_embedded"]

INSTALL = "pip install 'cairn[embedded-broker]'"


class EmbeddedBrokerError(ServiceError, RuntimeError):
    """The embedded broker cannot run here: amqtt is not installed."""


async def start_embedded(host: str, port: int, *,
                         plugins: Mapping[str, Mapping[str, Any]]) -> Any:
    """Start an amqtt broker on ``host:port`` with ``plugins`` (dotted class name -> its
    config); returns it (``await broker.shutdown()`` stops it). amqtt's own log lines are kept
    to errors."""
    try:
        from amqtt.broker import Broker  # type: ignore[import-untyped]
    except ImportError:
        raise EmbeddedBrokerError(f"the embedded broker needs amqtt: {INSTALL}") from None
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.ERROR)
    broker = Broker({
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "sys_interval": 0,
        "plugins": {name: dict(config) for name, config in plugins.items()},
    })
    await broker.start()
    return broker

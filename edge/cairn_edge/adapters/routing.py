"""Which route a topic takes, and the adapter that reads it.

:class:`Decoder` holds what devices describe of themselves on their own topics (Home
Assistant discovery documents, Homie attributes), so later values get their units and types;
:func:`decode` is the same without memory (one message alone).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from cairn_edge.adapters.common import (
    MAX_PAYLOAD,
    Decoded,
    Rejected,
    Route,
    _device,
    match_topic,
)
from cairn_edge.adapters.discovery import Discovery
from cairn_edge.adapters.esphome import decode_esphome
from cairn_edge.adapters.generic import decode_json
from cairn_edge.adapters.homie import HomieIndex, decode_homie, homie_device
from cairn_edge.adapters.senml import decode_senml
from cairn_edge.adapters.shelly import decode_shelly
from cairn_edge.adapters.tasmota import decode_tasmota
from cairn_edge.adapters.zigbee2mqtt import decode_zigbee2mqtt, z2m_device

FORMATS = ("senml", "tasmota", "esphome", "homie", "zigbee2mqtt", "shelly", "json",
           "discovery")

#: ESPHome's entity kinds with a ``<device>/<kind>/<object_id>/state`` topic.
ESPHOME_KINDS = ("sensor", "binary_sensor", "text_sensor", "switch", "light", "number", "select",
                 "cover", "fan", "lock")

#: What the edge subscribes to when the config names no topics: the simulator's and the field's
#: usual topics; the first that matches a topic reads it. No two of them match one topic that
#: devices use (a broker delivers a message once for each matching subscription: Mosquitto 2
#: does), so ``homie/+/+/+`` carries Homie 3/4 values and Homie 5's ``$description``, and Homie
#: 3/4's property attributes (``homie/<device>/<node>/<property>/$unit``) need a route of their
#: own where no Homie 5 device publishes (docs/edge.md).
DEFAULT_ROUTES = (
    Route("senml/+/+", "senml"),
    Route("tele/+/SENSOR", "tasmota"),
    Route("homie/5/+/+/+", "homie"),
    Route("homie/+/+/+", "homie"),
    Route("zigbee2mqtt/#", "zigbee2mqtt"),
    Route("homeassistant/#", "discovery"),
    Route("+/events/rpc", "shelly"),
    Route("+/status/+", "shelly"),
    *(Route(f"+/{kind}/+/state", "esphome") for kind in ESPHOME_KINDS),
    Route("+/climate/+/+/state", "esphome"),
)

IGNORED = re.compile(r"(^|/)(\$[^/]*|status|LWT|availability)$")  # state, description, wills


class Decoder:
    """Reads messages by the routes, remembering what devices describe of themselves."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = list(routes)
        self.discovery = Discovery()
        self.homie = HomieIndex()

    def decode(self, topic: str, payload: bytes, content_type: str | None,
               received: float) -> Decoded | None:
        """The readings of one message (with what of it was refused), None for a topic that
        carries none (status, descriptions, commands), or :class:`Rejected`."""
        if len(payload) > MAX_PAYLOAD:
            raise Rejected("too-large", f"{len(payload)}-byte payload (most {MAX_PAYLOAD})")
        for route in self.routes:
            levels = match_topic(route.filter, topic)
            if levels is None:
                continue
            if route.format == "discovery":
                self.discovery.read(topic, payload)
                return None
            if route.format != "homie" and IGNORED.search(topic):
                return None
            found = route_device(route, topic, levels)
            if found is None:
                return None
            return self._read(route, _device(found, topic), topic, payload, content_type,
                              received)
        return None
    def _read(self, route: Route, device: str, topic: str, payload: bytes,
              content_type: str | None, received: float) -> Decoded | None:
        fmt = route.format
        if fmt == "senml":
            return decode_senml(device, payload, content_type, received)
        if fmt == "tasmota":
            return decode_tasmota(device, payload, received, route.timezone)
        if fmt == "homie":
            return decode_homie(device, topic, payload, self.homie)
        if fmt == "zigbee2mqtt":
            return decode_zigbee2mqtt(device, payload)
        if fmt == "shelly":
            return decode_shelly(device, topic, payload)
        if fmt == "json":
            return decode_json(device, payload, route.fields, route.time_path)
        return decode_esphome(device, topic, payload, self.discovery.get(topic))


def route_device(route: Route, topic: str, levels: list[str]) -> str | None:
    """Which device a topic that ``route`` matched (``levels``: its wildcards' levels) is
    from, as the edge reads it; None for a topic of no device (the Zigbee2MQTT bridge's)."""
    if route.device is not None:
        return route.device
    if route.format == "homie":
        return homie_device(topic)
    if route.format == "zigbee2mqtt" and route.filter.endswith("#") and \
            route.device_level == len(levels):
        return z2m_device(levels[-1], topic)
    if route.device_level > len(levels):
        raise Rejected("bad-route", f"route {route.filter} has no level {route.device_level}")
    return levels[route.device_level - 1]


def decode(routes: Sequence[Route], topic: str, payload: bytes, content_type: str | None,
           received: float) -> Decoded | None:
    """One message read alone (no discovery or Homie attributes remembered): see
    :meth:`Decoder.decode`."""
    return Decoder(routes).decode(topic, payload, content_type, received)

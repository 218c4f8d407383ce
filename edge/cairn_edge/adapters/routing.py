"""Which route a topic takes, and the adapter that reads it."""

from __future__ import annotations

import re
from collections.abc import Sequence

from cairn_edge.adapters.common import MAX_PAYLOAD, Reading, Rejected, Route, _device, match_topic
from cairn_edge.adapters.esphome import decode_bare
from cairn_edge.adapters.senml import decode_senml
from cairn_edge.adapters.tasmota import decode_tasmota

FORMATS = ("senml", "tasmota", "esphome", "homie")

#: What the edge subscribes to when the config names no topics: the simulator's and the field's
#: usual topics.
DEFAULT_ROUTES = (
    Route("senml/+/+", "senml"),
    Route("tele/+/SENSOR", "tasmota"),
    Route("+/sensor/+/state", "esphome"),
    Route("homie/5/+/+/+", "homie"),
)

IGNORED = re.compile(r"(^|/)(\$[^/]*|status|LWT)$")  # state, description, will topics


def decode(routes: Sequence[Route], topic: str, payload: bytes, content_type: str | None,
           received: float) -> list[Reading] | None:
    """The readings of one message, None for a topic that carries none (status, descriptions),
    or :class:`Rejected`."""
    if IGNORED.search(topic):
        return None
    if len(payload) > MAX_PAYLOAD:
        raise Rejected("too-large", f"{len(payload)}-byte payload (most {MAX_PAYLOAD})")
    for route in routes:
        levels = match_topic(route.filter, topic)
        if levels is None:
            continue
        if route.device is not None:
            device = route.device
        elif route.device_level > len(levels):
            raise Rejected("bad-route", f"route {route.filter} has no level {route.device_level}")
        else:
            device = _device(levels[route.device_level - 1], topic)
        if route.format == "senml":
            return decode_senml(device, payload, content_type, received)
        if route.format == "tasmota":
            return decode_tasmota(device, payload, received)
        return decode_bare(device, levels[-1], payload)  # esphome, homie
    return None

"""Payload adapters: an MQTT message in any of the field's shapes to readings of one model.

A :class:`Reading` is (source device, quantity, unit, time, value): value a number, a boolean
or text. Time is seconds since the Unix epoch, or ``None`` when the payload states none
(ESPHome, Homie): the receipt time is used.

One module per payload family: :mod:`.senml` (RFC 8428), :mod:`.tasmota`, :mod:`.esphome`,
:mod:`.homie` (3, 4, 5), :mod:`.zigbee2mqtt`, :mod:`.shelly` (Gen2 notifications),
:mod:`.generic` (JSON by a path map), :mod:`.discovery` (Home Assistant discovery documents);
:mod:`.common` holds the model and the checks, :mod:`.routing` the routes and the
:class:`Decoder`.

A message is read item by item: what is readable is returned as :class:`Decoded` (a list of
readings) with the refused items in ``Decoded.refused`` (:class:`Refusal`, by reason); only a
message with nothing readable raises :class:`Rejected` (a short reason for counters, a detail
for the log line).
"""

from __future__ import annotations

from cairn_edge.adapters.common import (
    MAX_PAYLOAD,
    Decoded,
    Field,
    Reading,
    Refusal,
    Rejected,
    Route,
    match_topic,
)
from cairn_edge.adapters.discovery import Discovery
from cairn_edge.adapters.esphome import decode_bare, decode_esphome
from cairn_edge.adapters.generic import decode_json, parse_path
from cairn_edge.adapters.homie import HomieIndex, decode_homie
from cairn_edge.adapters.routing import DEFAULT_ROUTES, FORMATS, IGNORED, Decoder, decode
from cairn_edge.adapters.senml import MAX_RECORDS, decode_senml
from cairn_edge.adapters.shelly import decode_shelly
from cairn_edge.adapters.tasmota import decode_tasmota, zone
from cairn_edge.adapters.zigbee2mqtt import decode_zigbee2mqtt

__all__ = [
    "DEFAULT_ROUTES",
    "FORMATS",
    "IGNORED",
    "MAX_PAYLOAD",
    "MAX_RECORDS",
    "Decoded",
    "Decoder",
    "Discovery",
    "Field",
    "HomieIndex",
    "Reading",
    "Refusal",
    "Rejected",
    "Route",
    "decode",
    "decode_bare",
    "decode_esphome",
    "decode_homie",
    "decode_json",
    "decode_senml",
    "decode_shelly",
    "decode_tasmota",
    "decode_zigbee2mqtt",
    "match_topic",
    "parse_path",
    "zone",
]

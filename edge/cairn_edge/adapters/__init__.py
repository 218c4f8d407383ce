"""Payload adapters: an MQTT message in any of the field's shapes to readings of one model.

A :class:`Reading` is (source device, quantity, unit, time, value). Time is seconds since the
Unix epoch, or ``None`` when the payload states none (ESPHome, Homie): the receipt time is used.
SenML relative times (RFC 8428 4.5.3: a resolved time below 2**28 counts from "now") are
resolved against the receipt time here.

Anything that is not a well-formed message of its shape raises :class:`Rejected` with a short
reason (for counters) and a detail (for the log line); nothing of a rejected message is kept.
"""

from __future__ import annotations

from cairn_edge.adapters.common import MAX_PAYLOAD, Reading, Rejected, Route, match_topic
from cairn_edge.adapters.esphome import decode_bare
from cairn_edge.adapters.routing import DEFAULT_ROUTES, FORMATS, IGNORED, decode
from cairn_edge.adapters.senml import MAX_RECORDS, decode_senml
from cairn_edge.adapters.tasmota import decode_tasmota

__all__ = [
    "DEFAULT_ROUTES",
    "FORMATS",
    "IGNORED",
    "MAX_PAYLOAD",
    "MAX_RECORDS",
    "Reading",
    "Rejected",
    "Route",
    "decode",
    "decode_bare",
    "decode_senml",
    "decode_tasmota",
    "match_topic",
]

"""Bare values named by their topic: ESPHome states."""

from __future__ import annotations

from cairn_edge.adapters.common import Reading, _quantity, _text_value, _unit_for


def decode_bare(device: str, name: str, payload: bytes) -> list[Reading]:
    """A bare value named by its topic: an ESPHome state (object id) or a Homie property."""
    q = _quantity(name)
    return [Reading(device, q, _unit_for(q), None, _text_value(payload, name))]

"""ESPHome's MQTT state topics: ``<device>/<component>/<object_id>/state``.

Every entity kind publishes its state as text: ``sensor`` and ``number`` a number (``nan``
while unknown: refused as ``not-finite``), ``binary_sensor``, ``switch``, ``fan`` ``ON`` /
``OFF`` (booleans), ``text_sensor``, ``select``, ``lock``, ``cover`` a string; a ``light`` a
JSON object (``{"state": "ON", "brightness": 255, "color": {"r": 255, ...}}``): its ``state``
is the entity's reading, each other number ``<object_id>-<key>`` (``-color-r``). ``climate``
publishes each attribute on its own topic (``<device>/climate/<id>/current_temperature/state``):
``<object_id>-<attribute>``.

The quantity is the object id (unique on the device: one stream per entity). The unit comes
from the entity's discovery document when one was seen (``homeassistant/.../config``), else
from the quantity's name (:func:`~cairn_edge.adapters.common.unit_for`).
"""

from __future__ import annotations

from typing import Any

from cairn_edge.adapters.common import (
    STATES,
    Collector,
    Decoded,
    Reading,
    Rejected,
    _json,
    _quantity,
    _text_value,
    scalar,
    text_state,
    unit_for,
)
from cairn_edge.adapters.discovery import Entity

_NUMERIC = {"sensor", "number"}
_BOOLEAN = {"binary_sensor", "switch", "fan"}
_TEXT = {"text_sensor", "select", "lock", "cover", "text", "event", "valve", "datetime",
         "date", "time", "update", "alarm_control_panel"}  # fmt: skip


def decode_bare(device: str, name: str, payload: bytes) -> list[Reading]:
    """A bare number named by its topic (the simulator's ESPHome sensor states)."""
    q = _quantity(name)
    return [Reading(device, q, unit_for(q), None, _text_value(payload, name))]


def decode_esphome(device: str, topic: str, payload: bytes,
                   entity: Entity | None = None) -> Decoded:
    levels = topic.split("/")
    if len(levels) < 4 or levels[-1] != "state":
        raise Rejected("bad-topic", f"{topic[:60]} is not an ESPHome state topic")
    component = levels[1]
    name = "-".join(levels[2:-1])
    quantity = _quantity(name)
    unit = entity.unit if entity is not None and entity.unit else unit_for(quantity)
    out = Collector(device)
    if component == "light" or (payload[:1] == b"{" and component not in _TEXT):
        _json_state(out, quantity, payload)
        return out.result("ESPHome")
    kind = ("number" if component in _NUMERIC else "boolean" if component in _BOOLEAN
            else "string" if component in _TEXT else None)
    value = text_state(payload, topic, kind)
    out.add(quantity, unit if not isinstance(value, bool | str) else None, None, value)
    return out.result("ESPHome")


def _json_state(out: Collector, quantity: str, payload: bytes) -> None:
    doc = _json(payload)
    if not isinstance(doc, dict):
        raise Rejected("wrong-type", f"{quantity}: a JSON state is an object")
    for key, raw in _flatten(doc, ""):
        try:
            value = scalar(raw, f"{quantity}.{key}")
            if isinstance(value, str) and value.lower() in STATES:
                value = STATES[value.lower()]
            q = quantity if key == "state" else _quantity(f"{quantity}-{key}")
            out.add(q, None, None, value)
        except Rejected as exc:
            out.refuse(exc)


def _flatten(doc: dict[str, Any], prefix: str, depth: int = 0) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in doc.items():
        key = f"{prefix}{k}".replace("_", "-")
        if isinstance(v, dict) and depth < 3:
            out.extend(_flatten(v, f"{key}-", depth + 1))
        else:
            out.append((key, v))
    return out

"""Zigbee2MQTT device state messages: ``zigbee2mqtt/<friendly_name>``, one JSON object with
every attribute the device exposes (``{"temperature": 21.5, "humidity": 41, "battery": 97,
"linkquality": 120}``, ``{"contact": false}``, ``{"state": "ON", "brightness": 215}``).

The device is the friendly name (``/`` in it becomes ``.``, a space ``_``). Each key is a
reading under its own name (``local_temperature`` -> ``local-temperature``), one stream per
attribute: numbers in the unit of :data:`UNITS` (Zigbee2MQTT's units, which are SenML's;
``voltage`` stays without a unit: battery devices report mV, plugs V; a number sent as
text, as older versions did, ``"battery": "100.00"``, is read as the number), booleans (``contact``,
``occupancy``, ``water_leak``...) as booleans, ``state`` ``ON``/``OFF`` as a boolean, other
text (``action``) as text. A nested object is read one level down (``color`` ->
``color-x``, ``color-y``). ``last_seen`` (ISO 8601 or epoch milliseconds), when the bridge adds
it, is the readings' time; it and ``elapsed`` and ``update`` (firmware update state) are not
readings. ``null`` is refused for that key (``no-value``), the others are read.

Not readings: ``zigbee2mqtt/bridge/...`` and a device's ``/availability``, ``/set``, ``/get``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cairn_edge.adapters.common import (
    STATES,
    Collector,
    Decoded,
    Rejected,
    _json,
    _number,
    _quantity,
    scalar,
)

UNITS: dict[str, str | None] = {
    "temperature": "Cel", "device-temperature": "Cel", "local-temperature": "Cel",
    "current-heating-setpoint": "Cel", "occupied-heating-setpoint": "Cel",
    "humidity": "%RH", "soil-moisture": "%RH", "pressure": "hPa", "battery": "%EL",
    "illuminance-lux": "lx", "co2": "ppm", "pm25": "ug/m3", "pm10": "ug/m3",
    "power": "W", "energy": "kWh", "current": "A", "voltage": None, "position": "%",
}  # fmt: skip
_NOT_READINGS = {"last_seen", "elapsed", "update", "update_available"}
_SUFFIXES = {"availability", "set", "get"}


def z2m_device(rest: str, topic: str) -> str | None:
    """The device of ``zigbee2mqtt/<rest>``, None for the bridge's and command topics."""
    parts = rest.split("/")
    if parts[0] == "bridge" or parts[-1] in _SUFFIXES:
        return None
    return rest.replace("/", ".").replace(" ", "_")


def decode_zigbee2mqtt(device: str, payload: bytes) -> Decoded:
    doc = _json(payload)
    if not isinstance(doc, dict):
        raise Rejected("bad-zigbee2mqtt", "a Zigbee2MQTT state is a JSON object")
    t = _last_seen(doc.get("last_seen"))
    out = Collector(device)
    for key, raw in doc.items():
        if key in _NOT_READINGS:
            continue
        if isinstance(raw, dict):
            for sub, x in raw.items():
                _item(out, f"{key}-{sub}", x, t)
        else:
            _item(out, key, raw, t)
    return out.result("Zigbee2MQTT")


def _item(out: Collector, key: str, raw: Any, t: float | None) -> None:
    try:
        quantity = _quantity(key)
        value = scalar(raw, key)
        if isinstance(value, str) and value.lower() in STATES and key in ("state", "led"):
            value = STATES[value.lower()]
        elif isinstance(value, str) and _unit(quantity) is not None:
            value = _numeric_text(value, key)
        out.add(quantity, _unit(quantity) if isinstance(value, float) else None, t, value)
    except Rejected as exc:
        out.refuse(exc)


def _unit(quantity: str) -> str | None:
    """The unit of a key, or of the key it numbers (``temperature-2``: a second endpoint)."""
    base, dash, num = quantity.rpartition("-")
    return UNITS.get(base) if dash and num.isdigit() and base in UNITS else UNITS.get(quantity)


def _numeric_text(text: str, key: str) -> float:
    """A number sent as text (older Zigbee2MQTT: ``"battery": "100.00"``)."""
    try:
        v = float(text)
    except ValueError:
        raise Rejected("wrong-type", f"{key}: {text[:20]!r} is not a number") from None
    return _number(v, key)


def _last_seen(raw: object) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        try:
            when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise Rejected("bad-time", f"last_seen {raw[:30]!r} is not ISO 8601") from None
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    ms = _number(raw, "last_seen")
    if not 0 <= ms < 2**50:
        raise Rejected("bad-time", f"last_seen {ms:g} is not epoch milliseconds")
    return ms / 1000.0

"""Home Assistant MQTT discovery documents: the names, units and device classes of the
entities a device announces (ESPHome, Tasmota with SetOption19, Zigbee2MQTT, the simulator).

A document arrives retained on ``homeassistant/<component>/[<node_id>/]<object_id>/config``;
ESPHome writes it with the abbreviated keys (``stat_t``, ``unit_of_meas``, ``dev_cla``) and
the ``~`` base topic, which are expanded here. :class:`Discovery` keeps, per state topic, the
unit (as SenML names it: ``°C`` -> ``Cel``; a unit SenML does not name is not kept), the
device class and the name. A document is never a reading. An empty payload removes the entity.

A document under a node id (``homeassistant/sensor/<node_id>/<object_id>/config``, as ESPHome
writes them) may describe only that device's topics (``<node_id>/...``): one device cannot
relabel another's values. Under the embedded broker with board logins no board may publish
discovery documents at all (no board owns ``homeassistant/#``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cairn_edge.adapters.common import Rejected, _json

MAX_ENTITIES = 10_000

#: The abbreviations of the keys read here (Home Assistant's ABBREVIATIONS table).
_ABBREVIATIONS = {"stat_t": "state_topic", "unit_of_meas": "unit_of_measurement",
                  "dev_cla": "device_class", "uniq_id": "unique_id", "obj_id": "object_id",
                  "val_tpl": "value_template", "json_attr_t": "json_attributes_topic"}  # fmt: skip

#: Display units to SenML units (RFC 8428 / 8798), the same quantity without conversion.
DISPLAY_UNITS = {
    "°C": "Cel", "℃": "Cel", "K": "K", "%": "%", "hPa": "hPa", "Pa": "Pa", "kPa": None,
    "W": "W", "kW": "kW", "Wh": "Wh", "kWh": "kWh", "V": "V", "mV": "mV", "A": "A", "mA": "mA",
    "VA": "VA", "var": "var", "Hz": "Hz", "lx": "lx", "ppm": "ppm", "µg/m³": "ug/m3",
    "μg/m³": "ug/m3", "dBm": "dBm", "dB": "dB", "s": "s", "ms": "ms", "min": "min", "h": "h",
    "m": "m", "cm": "cm", "mm": "mm", "km": "km", "kg": "kg", "g": "g", "m/s": "m/s",
    "km/h": "km/h", "m/s²": "m/s2", "m³": "m3", "L": "l", "B": "B", "bit/s": "bit/s",
}  # fmt: skip

#: A percentage's SenML unit by device class.
_PERCENT = {"humidity": "%RH", "battery": "%EL", "moisture": "%RH"}


@dataclass(frozen=True, slots=True)
class Entity:
    """What a discovery document says of the entity on one state topic."""

    component: str
    unit: str | None
    device_class: str | None
    name: str | None


def senml_unit(display: str | None, device_class: str | None = None) -> str | None:
    """A display unit (``°C``, ``%``) as SenML names it, None when SenML has no name."""
    if display is None:
        return None
    if display == "%":
        return _PERCENT.get(device_class or "", "%")
    return DISPLAY_UNITS.get(display.strip())


def _expand(doc: dict[str, Any]) -> dict[str, Any]:
    out = {_ABBREVIATIONS.get(k, k): v for k, v in doc.items()}
    base = out.get("~")
    if isinstance(base, str):
        for k, v in list(out.items()):
            if k.endswith("_topic") and isinstance(v, str):
                if v.startswith("~"):
                    out[k] = base + v[1:]
                elif v.endswith("~"):
                    out[k] = v[:-1] + base
    return out


class Discovery:
    """The entities announced so far, by state topic."""

    def __init__(self) -> None:
        self.entities: dict[str, Entity] = {}
        self._by_config: dict[str, str] = {}  # config topic -> state topic

    def read(self, topic: str, payload: bytes) -> None:
        """Take a discovery document (or its removal); :class:`Rejected` when malformed."""
        levels = topic.split("/")
        if len(levels) not in (4, 5) or levels[-1] != "config":
            raise Rejected("bad-discovery", f"{topic[:60]} is not a discovery topic")
        if not payload:
            state = self._by_config.pop(topic, None)
            if state is not None:
                self.entities.pop(state, None)
            return
        doc = _json(payload)
        if not isinstance(doc, dict):
            raise Rejected("bad-discovery", "a discovery document is a JSON object")
        doc = _expand(doc)
        state = doc.get("state_topic")
        if not isinstance(state, str) or not state or len(state) > 256:
            raise Rejected("bad-discovery", "no usable state_topic")
        if len(levels) == 5 and state.split("/")[0] != levels[2]:
            raise Rejected("bad-discovery", f"{topic[:60]}: node {levels[2][:30]!r} describes "
                           f"another device's topic {state[:60]!r}")
        unit, cls, name = (doc.get(k) for k in ("unit_of_measurement", "device_class", "name"))
        cls = cls if isinstance(cls, str) else None
        if state not in self.entities and len(self.entities) >= MAX_ENTITIES:
            raise Rejected("too-large", f"more than {MAX_ENTITIES} discovered entities")
        self.entities[state] = Entity(levels[1], senml_unit(unit if isinstance(unit, str)
                                                            else None, cls), cls,
                                      name[:100] if isinstance(name, str) else None)
        self._by_config[topic] = state

    def get(self, state_topic: str) -> Entity | None:
        return self.entities.get(state_topic)

"""Homie 3, 4 and 5: ``homie/5/<device>/<node>/<property>`` (5) and
``homie/<device>/<node>/<property>`` (3 and 4), the value as text.

Names: the node is kept: a property's stream is ``<node>-<property>`` (two lights' ``power``
are ``light1-power`` and ``light2-power``), or ``<property>`` alone when the node is named as
its property (``homie/5/board-1/temperature/temperature``).

Attributes (every topic with a level starting with ``$``: ``$state``, ``$name``,
``$stats/interval``, ``$description``) are never readings. Those that describe a property are
read: Homie 5's ``$description`` document (``nodes.<node>.properties.<property>.datatype``,
``unit``, ``format``) and Homie 3/4's ``<property>/$datatype``, ``$unit`` and ``$format``.
Command topics (``.../set``, Homie 5 ``$target``) are ignored.

Values by datatype: ``integer`` and ``float`` a number; ``boolean`` ``true``/``false``;
``string``, ``enum``, ``color``, ``datetime``, ``duration``, ``json`` text. Without a known
datatype: a number if it reads as one, a boolean for true/false, else text. Unit: ``$unit``
as SenML names it (``°C`` -> ``Cel``; ``%`` of a ``humidity`` property -> ``%RH``), else the
quantity's.
"""

from __future__ import annotations

from dataclasses import dataclass

from cairn_edge.adapters.common import (
    Collector,
    Decoded,
    Rejected,
    _json,
    _quantity,
    text_state,
    unit_for,
)
from cairn_edge.adapters.discovery import senml_unit

MAX_PROPERTIES = 10_000
_KINDS = {"integer": "number", "float": "number", "boolean": "boolean", "string": "string",
          "enum": "string", "color": "string", "datetime": "string", "duration": "string",
          "json": "string"}  # fmt: skip


@dataclass(slots=True)
class Property:
    """What the device said of one property."""

    datatype: str | None = None
    unit: str | None = None
    format: str | None = None


class HomieIndex:
    """Property descriptions by (device, node, property)."""

    def __init__(self) -> None:
        self.properties: dict[tuple[str, str, str], Property] = {}

    def _entry(self, key: tuple[str, str, str]) -> Property:
        if key not in self.properties:
            if len(self.properties) >= MAX_PROPERTIES:
                raise Rejected("too-large", f"more than {MAX_PROPERTIES} Homie properties")
            self.properties[key] = Property()
        return self.properties[key]

    def attribute(self, key: tuple[str, str, str], name: str, payload: bytes) -> None:
        text = payload.decode("utf-8", "replace")[:100]
        entry = self._entry(key)
        if name == "$datatype":
            entry.datatype = text
        elif name == "$unit":
            entry.unit = text
        elif name == "$format":
            entry.format = text

    def description(self, device: str, payload: bytes) -> None:
        doc = _json(payload)
        nodes = doc.get("nodes") if isinstance(doc, dict) else None
        if not isinstance(nodes, dict):
            raise Rejected("bad-homie", f"{device}: $description has no nodes object")
        for node, ndoc in nodes.items():
            props = ndoc.get("properties") if isinstance(ndoc, dict) else None
            if not isinstance(props, dict):
                continue
            for prop, pdoc in props.items():
                if not isinstance(pdoc, dict):
                    continue
                entry = self._entry((device, str(node), str(prop)))
                entry.datatype, entry.unit, entry.format = (
                    v[:100] if isinstance(v, str) else None
                    for v in (pdoc.get("datatype"), pdoc.get("unit"), pdoc.get("format")))


def homie_device(topic: str) -> str:
    """The device of a Homie topic: ``homie/5/<device>/...`` or ``homie/<device>/...`` (the
    base topic is the first level, whatever it is)."""
    levels = topic.split("/")
    return levels[2] if len(levels) > 2 and levels[1] == "5" else levels[1] if \
        len(levels) > 1 else ""


def decode_homie(device: str, topic: str, payload: bytes,
                 index: HomieIndex | None = None) -> Decoded | None:
    """The reading of a property's value topic; None for attributes and commands."""
    levels = topic.split("/")
    rest = levels[2:] if len(levels) > 1 and levels[1] == "5" else levels[1:]
    if any(level.startswith("$") for level in rest):
        if index is not None:
            _attribute(index, device, levels[1] == "5", rest, payload)
        return None
    if len(rest) != 3:
        return None  # commands (.../set) and topics that are not a property's value
    _, node, prop = rest
    quantity = _quantity(prop if node == prop else f"{node}-{prop}")
    desc = index.properties.get((device, node, prop)) if index is not None else None
    kind = _KINDS.get(desc.datatype or "") if desc is not None else None
    value = text_state(payload, topic, kind)
    unit = None
    if not isinstance(value, bool | str):
        unit = senml_unit(desc.unit, prop) if desc is not None and desc.unit else \
            unit_for(quantity)
    out = Collector(device)
    out.add(quantity, unit, None, value)
    return out.result("Homie")


def _attribute(index: HomieIndex, device: str, v5: bool, rest: list[str],
               payload: bytes) -> None:
    if v5 and len(rest) == 2 and rest[1] == "$description":
        index.description(device, payload)
    elif not v5 and len(rest) == 4 and rest[3] in ("$datatype", "$unit", "$format"):
        index.attribute((device, rest[1], rest[2]), rest[3], payload)

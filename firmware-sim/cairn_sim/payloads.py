"""The payload shapes sensor firmware puts on MQTT, as the field uses them.

- ``senml``: SenML JSON (RFC 8428) on ``senml/<device>/<sensor>``: base name, base time, base
  unit, and for a run of samples (the 100 Hz sensor) relative times ``t``;
- ``senml-cbor``: the same pack in CBOR with RFC 8428's integer labels;
- ``tasmota``: ``tele/<device>/SENSOR``, one JSON object per telemetry period with every sensor
  of the device (``{"Time": ..., "BME280": {"Temperature": ...}, "TempUnit": "C"}``), pressure in
  hPa and energy in kWh as Tasmota reports them;
- ``esphome``: ``<device>/sensor/<object>/state`` with the value as text, ``<device>/status``
  online/offline;
- ``homie``: Homie 5, ``homie/5/<device>/<node>/<property>`` with the value as text (retained),
  ``$state`` and a ``$description`` JSON document;
- ``zigbee2mqtt``: ``zigbee2mqtt/<device>``, a JSON state object per sensor (``{"temperature":
  21.5}``, a second sensor of a kind ``temperature_2``), ``/availability`` online/offline;
- ``shelly``: Shelly Gen2 ``<device>/events/rpc`` ``NotifyStatus`` notifications, one component
  per sensor (``temperature:100`` ``tC``, ``switch:0`` ``apower`` and ``aenergy.total``,
  ``devicepower:0`` ``battery.percent``), ``<device>/online`` true/false;

and optionally Home Assistant discovery documents (``homeassistant/sensor/.../config``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import cbor2

from cairn_sim.models import Model, Reading

__all__ = [
    "FORMATS",
    "SENML_CBOR_LABELS",
    "Publish",
    "Sensor",
    "birth",
    "encode",
    "will",
]

FORMATS = ("senml", "senml-cbor", "tasmota", "esphome", "homie", "zigbee2mqtt", "shelly")

#: The sensor kinds a format can carry with the model's units (Zigbee2MQTT reports pressure in
#: hPa and energy in kWh; a Shelly has switches, add-on probes and a battery): None = all.
FORMAT_KINDS: dict[str, frozenset[str] | None] = {
    "zigbee2mqtt": frozenset({"temperature", "humidity", "co2", "battery"}),
    "shelly": frozenset({"temperature", "humidity", "power", "battery"}),
}

#: Shelly Gen2 components by sensor kind: (component type, first id, {field: status path}).
SHELLY_COMPONENTS: dict[str, tuple[str, int, dict[str, str]]] = {
    "temperature": ("temperature", 100, {"temperature": "tC"}),
    "humidity": ("humidity", 100, {"humidity": "rh"}),
    "power": ("switch", 0, {"power": "apower", "energy": "aenergy.total"}),
    "battery": ("devicepower", 0, {"battery": "battery.percent"}),
}

#: RFC 8428 section 6: the integer labels of SenML CBOR.
SENML_CBOR_LABELS = {
    "bn": -2, "bt": -3, "bu": -4, "bv": -5, "bs": -6, "bver": -1,
    "n": 0, "u": 1, "v": 2, "vs": 3, "vb": 4, "s": 5, "t": 6, "ut": 7, "vd": 8,
}  # fmt: skip

CONTENT_TYPES = {"senml": "application/senml+json", "senml-cbor": "application/senml+cbor"}

#: Units as people write them, for formats that do not use SenML's (HA, Homie).
DISPLAY_UNITS = {"Cel": "°C", "%RH": "%", "Pa": "Pa", "ppm": "ppm", "W": "W", "Wh": "Wh",
                 "m/s2": "m/s²", "%EL": "%"}  # fmt: skip

#: Tasmota's sensor groups and keys for each model field: (group, key, scale from SenML unit).
TASMOTA_KEYS: dict[str, tuple[str, str, float]] = {
    "temperature": ("BME280", "Temperature", 1.0),
    "humidity": ("BME280", "Humidity", 1.0),
    "pressure": ("BME280", "Pressure", 0.01),  # Pa -> hPa
    "co2": ("SCD30", "CarbonDioxide", 1.0),
    "power": ("ENERGY", "Power", 1.0),
    "energy": ("ENERGY", "Total", 0.001),  # Wh -> kWh
    "battery": ("BATTERY", "Percentage", 1.0),
}


@dataclass(frozen=True, slots=True)
class Sensor:
    """One sensor of a device: its name on the device (``temperature``, ``co2-2``) and model."""

    device: str
    name: str
    model: Model

    @property
    def id(self) -> str:
        return f"{self.device}/{self.name}"

    @property
    def suffix(self) -> str:
        """``-2`` for the second sensor of a kind on a device, else empty."""
        head, _, tail = self.name.rpartition("-")
        return f"-{tail}" if head and tail.isdigit() else ""

    def field(self, name: str) -> str:
        """A field's quantity name on this device: ``energy``, ``energy-2``."""
        return f"{name}{self.suffix}"


@dataclass(frozen=True, slots=True)
class Publish:
    """One MQTT message to send."""

    topic: str
    payload: bytes
    retain: bool = False
    content_type: str | None = None


def _num(x: float) -> float | int:
    """A value as JSON shows it: whole numbers without '.0'."""
    if math.isfinite(x) and x == int(x) and abs(x) < 2**53:
        return int(x)
    return x


def senml_name(sensor: Sensor, field: str) -> str:
    """A reading's name: ``<device>/<quantity>``, the quantity numbered when a kind repeats
    (``board-1/temperature``, ``board-1/energy-2``). Every payload shape names it the same way
    once an edge adapter has read it."""
    return f"{sensor.device}/{sensor.field(field)}"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def stream_name(fmt: str, sensor: Sensor, field: str) -> str:
    """The stream an edge files a reading under, by payload shape: the SenML name, but for
    Tasmota, whose sensor groups name the instance (``board-1/temperature-bme280``; the
    device-wide ``ENERGY`` group and ``BATTERY`` only their number: ``board-1/power-2``)."""
    if fmt == "shelly":
        kind, first, _ = SHELLY_COMPONENTS[sensor.model.kind]
        ident = first + _index(sensor)
        instance = f"{ident}" if kind == field else f"{kind}-{ident}"
        return f"{sensor.device}/{field}-{instance}"
    if fmt != "tasmota":
        return senml_name(sensor, field)
    group = _slug(TASMOTA_KEYS[field][0])
    tail = sensor.suffix.lstrip("-")
    named = group in ("energy", field)  # device-wide, or named as its quantity
    instance = "-".join(x for x in ((None if named else group), tail) if x)
    return f"{sensor.device}/{field}-{instance}" if instance else f"{sensor.device}/{field}"


def _index(sensor: Sensor) -> int:
    """0 for the first sensor of a kind on a device, 1 for ``-2``..."""
    tail = sensor.suffix.lstrip("-")
    return int(tail) - 1 if tail else 0


def _shelly(sensor: Sensor, values: Sequence[float]) -> tuple[str, dict[str, object]]:
    kind, first, paths = SHELLY_COMPONENTS[sensor.model.kind]
    ident = first + _index(sensor)
    status: dict[str, object] = {"id": ident}
    for f, v in zip(sensor.model.fields, values, strict=True):
        head, _, sub = paths[f.name].partition(".")
        if sub:
            inner = status.setdefault(head, {})
            assert isinstance(inner, dict)
            inner[sub] = _num(v)
        else:
            status[head] = _num(v)
    return f"{kind}:{ident}", status


def senml_records(sensor: Sensor, readings: Sequence[Reading]) -> list[dict[str, object]]:
    """The SenML JSON pack (labels as strings) for readings of one sensor.

    The first record carries the base name, base time and (one unit for all) base unit; a
    one-field sensor's name is the base name itself (``board-1/temperature``), so its records
    need no ``n``; a sensor with several fields has the base name ``board-1/`` and ``n``, ``u``
    in each record; later readings have times relative to the base time.
    """
    fields = sensor.model.fields
    bt = readings[0].time
    single = len(fields) == 1
    records: list[dict[str, object]] = []
    for r in readings:
        for f, v in zip(fields, r.values, strict=True):
            rec: dict[str, object] = {}
            if not records:
                rec["bn"] = senml_name(sensor, f.name) if single else f"{sensor.device}/"
                rec["bt"] = _num(bt)
                if single:
                    rec["bu"] = f.unit
            if not single:
                rec["n"] = sensor.field(f.name)
                rec["u"] = f.unit
            dt = round(r.time - bt, 6)
            if dt:
                rec["t"] = _num(dt)
            rec["v"] = _num(v)
            records.append(rec)
    return records


def _senml_cbor(records: list[dict[str, object]]) -> bytes:
    return cbor2.dumps([{SENML_CBOR_LABELS[k]: v for k, v in rec.items()} for rec in records])


def _iso(t: float) -> str:
    """Tasmota's time: local time without a zone; our boards run on UTC."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _text(v: float) -> str:
    return repr(_num(v)) if not isinstance(_num(v), int) else str(_num(v))


def homie_id(name: str) -> str:
    """A Homie 5 ID: lowercase letters, digits and hyphens."""
    out = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    return out or "x"


def encode(fmt: str, sensors: Sequence[Sensor], readings: Sequence[Sequence[Reading]]
           ) -> list[Publish]:
    """The messages for ``readings[k]`` of ``sensors[k]``.

    SenML, ESPHome and Homie send one message per sensor (ESPHome and Homie one per field);
    Tasmota sends one message for all the sensors of a device.
    """
    if fmt in ("senml", "senml-cbor"):
        out = []
        for sensor, rs in zip(sensors, readings, strict=True):
            records = senml_records(sensor, rs)
            payload = (json.dumps(records, separators=(",", ":")).encode() if fmt == "senml"
                       else _senml_cbor(records))
            out.append(Publish(f"senml/{sensor.id}", payload, content_type=CONTENT_TYPES[fmt]))
        return out
    if fmt == "tasmota":
        doc: dict[str, object] = {"Time": _iso(readings[0][-1].time)}
        counts: dict[str, int] = {}
        for sensor, rs in zip(sensors, readings, strict=True):
            r = rs[-1]
            for f, v in zip(sensor.model.fields, r.values, strict=True):
                group, key, scale = TASMOTA_KEYS[f.name]
                suffix = sensor.name.rpartition("-")[2] if "-" in sensor.name else ""
                g = f"{group}-{suffix}" if suffix.isdigit() else group
                counts[g] = counts.get(g, 0) + 1
                section = doc.setdefault(g, {})
                assert isinstance(section, dict)
                section[key] = _num(round(v * scale, 6))
        doc["TempUnit"] = "C"
        doc["PressureUnit"] = "hPa"
        device = sensors[0].device
        return [Publish(f"tele/{device}/SENSOR", json.dumps(doc, separators=(",", ":")).encode())]
    if fmt == "esphome":
        out = []
        for sensor, rs in zip(sensors, readings, strict=True):
            r = rs[-1]
            for f, v in zip(sensor.model.fields, r.values, strict=True):
                obj = _object_id(sensor, f.name)
                out.append(Publish(f"{sensor.device}/sensor/{obj}/state", _text(v).encode()))
        return out
    if fmt == "homie":
        out = []
        for sensor, rs in zip(sensors, readings, strict=True):
            r = rs[-1]
            for f, v in zip(sensor.model.fields, r.values, strict=True):
                node = homie_id(sensor.field(f.name))  # a node per quantity: node/node
                topic = f"homie/5/{sensor.device}/{node}/{node}"
                out.append(Publish(topic, _text(v).encode(), retain=True))
        return out
    if fmt == "zigbee2mqtt":
        out = []
        for sensor, rs in zip(sensors, readings, strict=True):
            state = {sensor.field(f.name).replace("-", "_"): _num(v)
                     for f, v in zip(sensor.model.fields, rs[-1].values, strict=True)}
            out.append(Publish(f"zigbee2mqtt/{sensor.device}",
                               json.dumps(state, separators=(",", ":")).encode()))
        return out
    if fmt == "shelly":
        out = []
        for sensor, rs in zip(sensors, readings, strict=True):
            r = rs[-1]
            component, status = _shelly(sensor, r.values)
            note = {"src": sensor.device, "dst": "cairn", "method": "NotifyStatus",
                    "params": {"ts": _num(r.time), component: status}}
            out.append(Publish(f"{sensor.device}/events/rpc",
                               json.dumps(note, separators=(",", ":")).encode()))
        return out
    raise ValueError(f"unknown payload format {fmt!r} (known: {', '.join(FORMATS)})")


def _object_id(sensor: Sensor, field: str) -> str:
    """ESPHome's object id: the quantity's name with ``_`` for ``-`` (``energy_2``)."""
    return sensor.field(field).replace("-", "_")


def status_topic(fmt: str, device: str) -> str:
    """Where a device says it is online (birth) or offline (its will)."""
    if fmt == "tasmota":
        return f"tele/{device}/LWT"
    if fmt == "esphome":
        return f"{device}/status"
    if fmt == "homie":
        return f"homie/5/{device}/$state"
    if fmt == "zigbee2mqtt":
        return f"zigbee2mqtt/{device}/availability"
    if fmt == "shelly":
        return f"{device}/online"
    return f"senml/{device}/status"


def will(fmt: str, device: str) -> Publish:
    """The last-will message the broker sends when a device vanishes."""
    payload = {"tasmota": b"Offline", "homie": b"lost", "shelly": b"false"}.get(fmt, b"offline")
    return Publish(status_topic(fmt, device), payload, retain=True)


def birth(fmt: str, device: str, sensors: Sequence[Sensor], ha_discovery: bool = False
          ) -> list[Publish]:
    """What a device publishes when it connects: online state, descriptions, discovery."""
    payload = {"tasmota": b"Online", "homie": b"ready", "shelly": b"true"}.get(fmt, b"online")
    out = []
    if fmt == "homie":
        nodes = {
            homie_id(s.field(f.name)): {
                "name": s.field(f.name),
                "properties": {
                    homie_id(s.field(f.name)): {
                        "datatype": "float",
                        "unit": DISPLAY_UNITS.get(f.unit, f.unit),
                    }
                },
            }
            for s in sensors for f in s.model.fields
        }
        desc = {"homie": "5.0", "version": 1, "name": device, "nodes": nodes}
        out.append(Publish(f"homie/5/{device}/$description",
                           json.dumps(desc, separators=(",", ":")).encode(), retain=True))
    out.append(Publish(status_topic(fmt, device), payload, retain=True))
    if ha_discovery:
        out.extend(_discovery(fmt, device, sensors))
    return out


_DEVICE_CLASS = {"temperature": "temperature", "humidity": "humidity", "pressure": "pressure",
                 "co2": "carbon_dioxide", "power": "power", "energy": "energy",
                 "battery": "battery"}  # fmt: skip


def _discovery(fmt: str, device: str, sensors: Sequence[Sensor]) -> list[Publish]:
    out = []
    for s in sensors:
        for k, f in enumerate(s.model.fields):
            object_id = _object_id(s, f.name)
            if fmt in ("zigbee2mqtt", "shelly"):
                continue  # the bridge's own documents (not simulated)
            if fmt in ("senml", "senml-cbor"):
                state, template = f"senml/{s.id}", f"{{{{ value_json[{k}].v }}}}"
                if fmt == "senml-cbor":
                    continue  # Home Assistant cannot read CBOR
            elif fmt == "tasmota":
                group, key, _ = TASMOTA_KEYS[f.name]
                state, template = f"tele/{device}/SENSOR", f"{{{{ value_json.{group}.{key} }}}}"
            elif fmt == "esphome":
                state, template = f"{device}/sensor/{object_id}/state", None
            else:
                node = homie_id(s.field(f.name))
                state = f"homie/5/{device}/{node}/{node}"
                template = None
            config: dict[str, object] = {
                "name": f"{s.name} {f.name}" if len(s.model.fields) > 1 else s.name,
                "unique_id": f"{device}_{object_id}",
                "state_topic": state,
                "unit_of_measurement": DISPLAY_UNITS.get(f.unit, f.unit),
                "availability_topic": status_topic(fmt, device),
                "device": {"identifiers": [device], "name": device, "manufacturer": "cairn-sim"},
            }
            if f.name in _DEVICE_CLASS:
                config["device_class"] = _DEVICE_CLASS[f.name]
            if template is not None:
                config["value_template"] = template
            out.append(Publish(f"homeassistant/sensor/{device}/{object_id}/config",
                               json.dumps(config, separators=(",", ":")).encode(), retain=True))
    return out

"""Tasmota telemetry: ``tele/<device>/SENSOR`` JSON documents.

One document per telemetry period holds every sensor of the device, each under its group
(``{"Time": ..., "BME280": {"Temperature": 21.3, ...}, "ENERGY": {...}, "TempUnit": "C"}``).

Names: one stream per physical sensor. A reading of group ``G`` is ``<quantity>-<g>`` with
``g`` the group's name in lowercase (``temperature-sht3x``, ``temperature-dht11``,
``temperature-ds18b20-1``, ``temperature-atca1b2c3`` for a BLE sensor named by its MAC
suffix), so two sensors of one kind never share a stream. The device-wide groups ``ENERGY``
and ``ANALOG``, top-level keys, and a group named as its quantity (``BATTERY``) add no name,
only their ``-N`` number (``ENERGY-2`` -> ``power-2``).
An array (the phases of a three-phase meter, tariffs) is one stream per element, ``-l1``,
``-l2``, ... (``voltage-l1``).

Keys: :data:`KEYS` maps the documented keys to a quantity, a SenML unit and a scale (hPa to
Pa, kWh to Wh, kOhm to Ohm); temperatures follow ``TempUnit``, pressures ``PressureUnit``.
Any other key is still read, under its own name in lowercase (``Period`` -> ``period``) with
no unit; booleans and text (``"Switch1": "ON"``) are readings too. Not readings:
``Time``, ``Epoch``, the ``*Unit`` keys, ``Id`` and ``TotalStartTime`` (descriptions).

Time: ``Epoch`` (UTC seconds) when present; else ``Time``, which Tasmota writes in local time:
with its offset if it states one, else in the route's ``timezone`` (UTC without one).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cairn_edge.adapters.common import (
    STATES,
    Collector,
    Decoded,
    Rejected,
    _json,
    _number,
    _quantity,
    scalar,
    slug,
)

#: Tasmota's documented sensor and energy keys: key -> (quantity, SenML unit, scale from
#: Tasmota's unit). Temperatures and pressures are converted by TempUnit / PressureUnit.
KEYS: dict[str, tuple[str, str | None, float]] = {
    "Temperature": ("temperature", "Cel", 1.0),
    "DewPoint": ("dewpoint", "Cel", 1.0),
    "ProbeTemperature": ("temperature", "Cel", 1.0),  # MAX31855 / MAX6675 thermocouples
    "ReferenceTemperature": ("reference-temperature", "Cel", 1.0),  # their cold junction
    "Humidity": ("humidity", "%RH", 1.0),
    "Pressure": ("pressure", "Pa", 1.0),
    "SeaPressure": ("sea-pressure", "Pa", 1.0),
    "Gas": ("gas-resistance", "Ohm", 1000.0),  # BME680: kOhm
    "CarbonDioxide": ("co2", "ppm", 1.0),
    "eCO2": ("eco2", "ppm", 1.0),  # SGP30 / CCS811 estimate: not a CO2 measurement
    "TVOC": ("tvoc", None, 1.0),  # ppb: no SenML unit
    "Illuminance": ("illuminance", "lx", 1.0),
    "PM1": ("pm1", "ug/m3", 1.0),
    "PM2.5": ("pm2-5", "ug/m3", 1.0),
    "PM10": ("pm10", "ug/m3", 1.0),
    "Distance": ("distance", "cm", 1.0),  # SR04
    "Weight": ("weight", "kg", 1.0),  # HX711
    "Battery": ("battery", "%EL", 1.0),  # BLE sensors
    "Percentage": ("battery", "%EL", 1.0),
    "RSSI": ("rssi", "dBm", 1.0),
    # ENERGY
    "Power": ("power", "W", 1.0),
    "ApparentPower": ("apparent-power", "VA", 1.0),
    "ReactivePower": ("reactive-power", "var", 1.0),
    "Factor": ("power-factor", "/", 1.0),
    "Frequency": ("frequency", "Hz", 1.0),
    "Voltage": ("voltage", "V", 1.0),
    "Current": ("current", "A", 1.0),
    "Total": ("energy", "Wh", 1000.0),  # kWh
    "Today": ("energy-today", "Wh", 1000.0),
    "Yesterday": ("energy-yesterday", "Wh", 1000.0),
    "Period": ("energy-period", "Wh", 1.0),  # Wh since the last telemetry
    "ExportActive": ("energy-export", "Wh", 1000.0),
    "TotalTariff": ("energy-tariff", "Wh", 1000.0),
}
_TEMPERATURES = {"Temperature", "DewPoint", "ProbeTemperature", "ReferenceTemperature"}
_PRESSURES = {"Pressure", "SeaPressure"}
_TEMP_UNITS = {"C": (1.0, 0.0), "F": (5 / 9, -32.0 * 5 / 9), "K": (1.0, -273.15)}
_PRESSURE_UNITS = {"hPa": 100.0, "mmHg": 133.322, "inHg": 3386.39}
_DEVICE_GROUPS = {"ENERGY", "ANALOG"}  # device-wide: no instance suffix
_NOT_READINGS = {"Time", "Epoch", "TempUnit", "PressureUnit", "SpeedUnit", "Id",
                 "TotalStartTime"}  # fmt: skip
MAX_PHASES = 16


def decode_tasmota(device: str, payload: bytes, received: float,
                   timezone: str | None = None) -> Decoded:
    doc = _json(payload)
    if not isinstance(doc, dict):
        raise Rejected("bad-tasmota", "a Tasmota SENSOR message is a JSON object")
    t = _time(doc, timezone)
    temp_unit = doc.get("TempUnit", "C")
    if not isinstance(temp_unit, str) or temp_unit not in _TEMP_UNITS:
        raise Rejected("bad-unit", f"TempUnit {str(temp_unit)[:20]!r}")
    pressure_unit = doc.get("PressureUnit", "hPa")
    if not isinstance(pressure_unit, str) or pressure_unit not in _PRESSURE_UNITS:
        raise Rejected("bad-unit", f"PressureUnit {str(pressure_unit)[:20]!r}")
    out = Collector(device)
    units = (temp_unit, pressure_unit)
    for group, section in doc.items():
        if isinstance(section, dict):
            for key, raw in section.items():
                instance = _instance(group, KEYS[key][0] if key in KEYS else slug(key))
                if key not in _NOT_READINGS:
                    _item(out, f"{group}.{key}", key, raw, instance, t, units)
        elif group not in _NOT_READINGS:
            _item(out, group, group, section, "", t, units)
    return out.result("Tasmota")


def _instance(group: str, quantity: str) -> str:
    """The instance part of a group's streams: ``sht3x``, ``ds18b20-1``; the number alone
    (or nothing) for a device-wide group or one named as its quantity (``ENERGY-2``: ``2``)."""
    base, dash, num = group.rpartition("-")
    if not (dash and num.isdigit()):
        base, num = group, ""
    if base in _DEVICE_GROUPS or slug(base) == quantity:
        return num
    return slug(group)


def _item(out: Collector, where: str, key: str, raw: Any, instance: str, t: float | None,
          units: tuple[str, str]) -> None:
    try:
        quantity, unit, scale = KEYS.get(key) or (_quantity(slug(key)), None, 1.0)
        if instance:
            quantity = f"{quantity}-{instance}"
        quantity = _quantity(quantity)
        if isinstance(raw, list):
            if not 1 <= len(raw) <= MAX_PHASES:
                raise Rejected("too-large", f"{where}: an array of {len(raw)} (most {MAX_PHASES})")
            for k, x in enumerate(raw):
                try:
                    out.add(f"{quantity}-l{k + 1}", unit, t,
                            _value(key, x, f"{where}[{k}]", scale, units))
                except Rejected as exc:
                    out.refuse(exc)
            return
        out.add(quantity, unit, t, _value(key, raw, where, scale, units))
    except Rejected as exc:
        out.refuse(exc)


def _value(key: str, raw: Any, where: str, scale: float,
           units: tuple[str, str]) -> float | str | bool:
    if key not in KEYS:
        v = scalar(raw, where)
        if isinstance(v, str) and v.strip().lower() in STATES:
            return STATES[v.strip().lower()]
        return v
    if raw is None:
        raise Rejected("no-value", f"{where} is null (the sensor did not read)")
    x = _number(raw, where)
    if key in _TEMPERATURES:
        mul, add = _TEMP_UNITS[units[0]]
        x = x * mul + add
    elif key in _PRESSURES:
        x *= _PRESSURE_UNITS[units[1]]
    return round(x * scale, 6)


def _time(doc: dict[str, Any], timezone: str | None) -> float | None:
    if "Epoch" in doc:
        epoch = _number(doc["Epoch"], "Epoch")
        if not 0 <= epoch < 2**40:
            raise Rejected("bad-time", f"Epoch {epoch:g} is not a Unix time")
        return epoch
    if "Time" not in doc:
        return None
    stamp = doc["Time"]
    if not isinstance(stamp, str):
        raise Rejected("wrong-type", "Time is not text")
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        raise Rejected("bad-time", f"Time {stamp[:30]!r} is not ISO 8601") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone(timezone) if timezone else UTC)
    t = when.timestamp()
    if not math.isfinite(t):
        raise Rejected("bad-time", f"Time {stamp[:30]!r}")
    return t


def zone(name: str) -> ZoneInfo:
    """An IANA time zone (``Europe/Berlin``); ValueError naming it when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} ({exc})") from None

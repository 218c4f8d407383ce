"""Tasmota telemetry: ``tele/<device>/SENSOR`` JSON documents."""

from __future__ import annotations

from datetime import UTC, datetime

from cairn_edge.adapters.common import Reading, Rejected, _json, _number

#: Tasmota's sensor keys: key -> (quantity, unit, scale to the SenML unit). Pressure and
#: energy are rescaled from the units named in the document (hPa, kWh).
_TASMOTA = {
    "Temperature": ("temperature", "Cel", 1.0),
    "Humidity": ("humidity", "%RH", 1.0),
    "Pressure": ("pressure", "Pa", 100.0),
    "CarbonDioxide": ("co2", "ppm", 1.0),
    "eCO2": ("co2", "ppm", 1.0),
    "Power": ("power", "W", 1.0),
    "Total": ("energy", "Wh", 1000.0),
    "Voltage": ("voltage", "V", 1.0),
    "Current": ("current", "A", 1.0),
    "Illuminance": ("illuminance", "lx", 1.0),
    "Percentage": ("battery", "%EL", 1.0),
}
_TASMOTA_TEMP = {"C": (1.0, 0.0), "F": (5 / 9, -32.0 * 5 / 9), "K": (1.0, -273.15)}


def decode_tasmota(device: str, payload: bytes, received: float) -> list[Reading]:
    doc = _json(payload)
    if not isinstance(doc, dict):
        raise Rejected("bad-tasmota", "a Tasmota SENSOR message is a JSON object")
    t: float | None = None
    if "Time" in doc:
        stamp = doc["Time"]
        if not isinstance(stamp, str):
            raise Rejected("wrong-type", "Time is not text")
        try:
            when = datetime.fromisoformat(stamp)
        except ValueError:
            raise Rejected("bad-time", f"Time {stamp[:30]!r} is not ISO 8601") from None
        t = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    temp_unit = doc.get("TempUnit", "C")
    if not isinstance(temp_unit, str) or temp_unit not in _TASMOTA_TEMP:
        raise Rejected("bad-unit", f"TempUnit {str(temp_unit)[:20]!r}")
    pressure_unit = doc.get("PressureUnit", "hPa")
    if pressure_unit not in ("hPa", "mmHg", "inHg"):
        raise Rejected("bad-unit", f"PressureUnit {str(pressure_unit)[:20]!r}")
    out = []
    for group, section in doc.items():
        if not isinstance(section, dict):
            continue
        suffix = ""
        _, dash, num = group.rpartition("-")
        if dash and num.isdigit():
            suffix = f"-{num}"
        for key, raw in section.items():
            spec = _TASMOTA.get(key)
            if spec is None:
                continue  # a key Cairn does not map (yet): not an error in the message
            quantity, unit, scale = spec
            v = _number(raw, f"{group}.{key}")
            if quantity == "temperature":
                mul, add = _TASMOTA_TEMP[temp_unit]
                v = v * mul + add
            elif quantity == "pressure":
                v = v * {"hPa": 100.0, "mmHg": 133.322, "inHg": 3386.39}[pressure_unit]
                scale = 1.0
            out.append(Reading(device, quantity + suffix, unit, t, round(v * scale, 6)))
    if not out:
        raise Rejected("empty", "no sensor values in the Tasmota message")
    return out

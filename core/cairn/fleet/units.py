"""SenML units (RFC 8428 section 12.1 and the secondary units of RFC 8798), and the units of
well-known quantities for payload shapes that carry none (ESPHome, Homie)."""

from __future__ import annotations

__all__ = ["QUANTITY_UNITS", "SENML_UNITS"]

#: RFC 8428 table 6 (primary units).
_PRIMARY = [
    'm', 'kg', 'g', 's', 'A', 'K', 'cd', 'mol', 'Hz', 'rad', 'sr', 'N', 'Pa', 'J', 'W', 'C', 'V',
    'F', 'Ohm', 'S', 'Wb', 'T', 'H', 'Cel', 'lm', 'lx', 'Bq', 'Gy', 'Sv', 'kat', 'm2', 'm3', 'l',
    'm/s', 'm/s2', 'm3/s', 'l/s', 'W/m2', 'cd/m2', 'bit', 'bit/s', 'lat', 'lon', 'pH', 'dB',
    'dBW', 'Bspl', 'count', '/', '%', '%RH', '%EL', 'EL', '1/s', '1/min', 'beat/min', 'beats',
    'S/m', 'B', 'VA', 'VAs', 'var', 'vars', 'J/m', 'kg/kg',
]

#: RFC 8798 table 1 (secondary units, each with its primary scale).
_SECONDARY = [
    'ms', 'min', 'h', 'MHz', 'kW', 'kVA', 'kvar', 'Ah', 'Wh', 'kWh', 'varh', 'kvarh', 'kVAh',
    'Wh/km', 'KiB', 'GB', 'Mbit/s', 'B/s', 'MB/s', 'mV', 'mA', 'dBm', 'ug/m3', 'mm/h', 'm/h',
    'ppm', '/100', '/1000', 'hPa', 'mm', 'cm', 'km', 'km/h',
]

SENML_UNITS = frozenset(_PRIMARY) | frozenset(_SECONDARY)

#: Units of quantities whose payloads do not say (ESPHome states, Homie values): by the
#: quantity's name without its number (``energy-2`` -> ``energy``).
QUANTITY_UNITS = {
    "temperature": "Cel",
    "humidity": "%RH",
    "pressure": "Pa",
    "co2": "ppm",
    "power": "W",
    "energy": "Wh",
    "battery": "%EL",
    "vibration": "m/s2",
    "voltage": "V",
    "current": "A",
    "illuminance": "lx",
}

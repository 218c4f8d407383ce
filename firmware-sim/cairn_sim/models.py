"""Sensor models: physical behaviour as pure functions of (seed, time).

Every reading is computed from the seed, the sensor's identity and the time it is taken at, never
from state kept between readings, so any run can be reproduced, any reading recomputed, and a
test can ask what a sensor said at a given time. Noise is a counter-based hash of those three
(BLAKE2b), not a stateful generator.

Times are seconds since the Unix epoch (UTC). Units are SenML units (RFC 8428 and the secondary
units of RFC 8798), the names SenML record names.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "DAY",
    "KINDS",
    "Field",
    "Model",
    "Reading",
    "model",
    "noise",
]

DAY = 86_400.0
#: 2026-01-01T00:00:00Z: the reference for slow drifts and battery cycles.
T_REF = 1_767_225_600.0

_U64 = struct.Struct("<Q")


def noise(seed: int, key: str, tick: int) -> float:
    """A reproducible number in [-1, 1): a hash of (seed, key, tick), roughly bell-shaped."""
    h = hashlib.blake2b(f"{seed}:{key}:{tick}".encode(), digest_size=24).digest()
    # the mean of three uniforms: smooth enough for sensor noise, still bounded
    a, b, c = (float(x) / 2**64 for x in struct.unpack("<3Q", h))
    return float((a + b + c) / 1.5 - 1.0)


def _uniform(seed: int, key: str) -> float:
    """A reproducible number in [0, 1) for a sensor's fixed traits (phase, drift rate)."""
    h = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return float(_U64.unpack(h)[0]) / 2**64


@dataclass(frozen=True, slots=True)
class Field:
    """One quantity a sensor reports: its SenML name and unit."""

    name: str
    unit: str


@dataclass(frozen=True, slots=True)
class Reading:
    """What a sensor measured at ``time``: one value per field of its model, in order."""

    time: float
    values: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Model:
    """A kind of sensor: its fields, its natural sampling rate and its physics."""

    kind: str
    fields: tuple[Field, ...]
    rate_hz: float
    #: (seed, sensor id, time, boot time) -> one value per field
    physics: Callable[[int, str, float, float], tuple[float, ...]]
    #: plausible range of each field, for the tests (and a reader's validation rules)
    ranges: tuple[tuple[float, float], ...]

    def read(self, seed: int, sensor_id: str, t: float, boot: float = T_REF) -> Reading:
        """The reading at time ``t`` (``boot``: when the device last started, for counters)."""
        return Reading(t, self.physics(seed, sensor_id, t, boot))


def _day_phase(t: float, peak_hour: float) -> float:
    """cos of the time of day, 1 at ``peak_hour`` UTC and -1 twelve hours later."""
    return math.cos(2 * math.pi * (t - peak_hour * 3600.0) / DAY)


def _tick(t: float, rate: float) -> int:
    return math.floor(t * rate + 1e-6)


def _temperature(seed: int, sid: str, t: float, boot: float) -> tuple[float, ...]:
    base = 12.0 + 10.0 * _uniform(seed, sid + "/base")
    drift_per_day = (_uniform(seed, sid + "/drift") - 0.5) * 0.02  # a sensor ageing
    value = (
        base
        + 5.0 * _day_phase(t, 15.0)
        + drift_per_day * (t - T_REF) / DAY
        + 0.05 * noise(seed, sid, _tick(t, 1.0))
    )
    return (round(value, 2),)


def _humidity(seed: int, sid: str, t: float, boot: float) -> tuple[float, ...]:
    base = 40.0 + 20.0 * _uniform(seed, sid + "/base")
    value = base - 12.0 * _day_phase(t, 15.0) + 0.5 * noise(seed, sid, _tick(t, 1.0))
    return (round(min(100.0, max(0.0, value)), 1),)


def _pressure(seed: int, sid: str, t: float, boot: float) -> tuple[float, ...]:
    # weather: a slow swing over a few days, in pascals
    period = DAY * (2.5 + 2.0 * _uniform(seed, sid + "/period"))
    value = (
        101_325.0
        + 900.0 * math.sin(2 * math.pi * (t - T_REF) / period)
        + 5.0 * noise(seed, sid, _tick(t, 1.0))
    )
    return (round(value, 0),)


def _co2(seed: int, sid: str, t: float, boot: float) -> tuple[float, ...]:
    # outdoor air, plus people in the room during working hours
    occupancy = max(0.0, _day_phase(t, 13.0))
    value = 420.0 + 600.0 * occupancy**2 + 6.0 * noise(seed, sid, _tick(t, 1.0))
    return (round(value, 0),)


def _power(seed: int, sid: str, t: float, boot: float) -> tuple[float, ...]:
    """Power (W) and the energy counter (Wh) since the device booted: the exact integral."""
    base = 200.0 + 400.0 * _uniform(seed, sid + "/base")
    amp = 0.5 * base
    w = 2 * math.pi / DAY

    def phase(x: float) -> float:
        return w * (x - 18.0 * 3600.0)

    watts = base + amp * math.cos(phase(t)) + 3.0 * noise(seed, sid, _tick(t, 1.0))
    since = max(0.0, t - boot)
    joules = base * since + amp / w * (math.sin(phase(t)) - math.sin(phase(boot)))
    return (round(watts, 1), round(max(0.0, joules) / 3600.0, 3))


def _vibration(seed: int, sid: str, t: float, boot: float) -> tuple[float, ...]:
    """Acceleration (m/s2) of a machine running at 25 Hz, sampled at 100 Hz."""
    phase = 2 * math.pi * _uniform(seed, sid + "/phase")
    value = (
        0.8 * math.sin(2 * math.pi * 25.0 * t + phase)
        + 0.2 * math.sin(2 * math.pi * 50.0 * t)
        + 0.05 * noise(seed, sid, _tick(t, 100.0))
    )
    return (round(value, 4),)


def _battery(seed: int, sid: str, t: float, boot: float) -> tuple[float, ...]:
    """Remaining energy (%EL): drains over ~8 days, then someone swaps the battery."""
    cycle = DAY * (7.0 + 2.0 * _uniform(seed, sid + "/cycle"))
    offset = cycle * _uniform(seed, sid + "/offset")
    left = 1.0 - ((t - T_REF + offset) % cycle) / cycle
    return (round(100.0 * left, 1),)


KINDS: dict[str, Model] = {
    m.kind: m
    for m in (
        Model("temperature", (Field("temperature", "Cel"),), 1.0, _temperature, ((-40, 85),)),
        Model("humidity", (Field("humidity", "%RH"),), 1.0, _humidity, ((0, 100),)),
        Model("pressure", (Field("pressure", "Pa"),), 1.0, _pressure, ((87_000, 108_500),)),
        Model("co2", (Field("co2", "ppm"),), 1.0, _co2, ((300, 5_000),)),
        Model(
            "power",
            (Field("power", "W"), Field("energy", "Wh")),
            1.0,
            _power,
            ((0, 10_000), (0, 1e9)),
        ),
        Model("vibration", (Field("vibration", "m/s2"),), 100.0, _vibration, ((-20, 20),)),
        Model("battery", (Field("battery", "%EL"),), 1.0, _battery, ((0, 100),)),
    )
}


def model(kind: str) -> Model:
    """The model of a sensor kind; ValueError names the known kinds."""
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(
            f"unknown sensor kind {kind!r} (known: {', '.join(sorted(KINDS))})"
        ) from None

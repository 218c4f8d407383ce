"""A fleet of simulated devices: what each one sends, and when, with the scenario's faults.

:class:`Fleet` does no I/O and reads no clock: :meth:`Fleet.pop_due` takes the run time (seconds
since the run started) and returns the messages and connection events due by then, in schedule
order. The MQTT side (:mod:`cairn_sim.mqtt`) calls it; tests call it with made-up times. Same
seed, same fleet, same start time: the same messages, byte for byte, however the run is paced.

A *unit* is what publishes on one schedule: one sensor (SenML, ESPHome, Homie), or a whole
device (Tasmota sends all its sensors in one telemetry message). A unit's ticks are spread over
its period by a seeded phase so a thousand sensors do not all fire at the same instant.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import cbor2

from cairn_sim.models import Model, Reading, model
from cairn_sim.payloads import (
    FORMAT_KINDS,
    FORMATS,
    SENML_CBOR_LABELS,
    Publish,
    Sensor,
    birth,
    encode,
    stream_name,
)
from cairn_sim.scenario import Fault, Scenario, chance

__all__ = [
    "DEFAULT_KINDS",
    "Control",
    "Fleet",
    "Outgoing",
    "SampleRecord",
]

#: The sensor kinds a device gets, in order, when none are named (the 100 Hz vibration sensor
#: only when asked for).
DEFAULT_KINDS = ("temperature", "humidity", "pressure", "co2", "power", "battery")

HUGE_BYTES = 300_000  # a "huge" malformed payload: past any sane per-message limit


@dataclass(frozen=True, slots=True)
class SampleRecord:
    """A sample as the device states it in a message (after faults): for the ledger."""

    name: str
    unit: str
    time: float
    value: float


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish."""

    seq: int
    device: str
    publish: Publish
    scheduled: float  # run time it was due at
    faults: tuple[str, ...] = ()
    valid: bool = True  # False: broken on purpose (a malformed fault)
    samples: tuple[SampleRecord, ...] = ()
    kind: Literal["data", "birth"] = "data"


@dataclass(frozen=True, slots=True)
class Control:
    """A change to a device's connection: going offline, coming back, or a cut connection."""

    device: str
    action: Literal["connect", "disconnect", "drop"]
    scheduled: float
    reason: str


@dataclass(slots=True)
class _Unit:
    id: str
    device: str
    fmt: str
    sensors: tuple[Sensor, ...]
    period: float
    phase: float
    batch: int  # samples per message per sensor (the 100 Hz sensor sends runs)
    rate: float  # samples per second
    tick: int = 0
    held: list[Outgoing] = field(default_factory=list)  # an out-of-order burst being held
    hold: int = 0  # messages still to hold in the burst


@dataclass(slots=True)
class _Device:
    name: str
    fmt: str
    sensors: tuple[Sensor, ...]
    boot: float  # absolute time the device last started (counters count from it)
    offline: set[int] = field(default_factory=set)  # faults keeping it offline


class Fleet:
    """``devices`` boards with ``sensors`` sensors each, publishing at ``rate`` Hz."""

    def __init__(
        self,
        *,
        devices: int = 3,
        sensors: int = 5,
        formats: Sequence[str] = ("senml",),
        rate: float = 1.0,
        seed: int = 0,
        scenario: Scenario | None = None,
        start_time: float,
        kinds: Sequence[str] | None = None,
        batch: int = 10,
        ha_discovery: bool = False,
        prefix: str = "board",
    ) -> None:
        if devices < 1 or sensors < 1:
            raise ValueError("a fleet needs at least one device with one sensor")
        if not (0 < rate <= 1000) or not math.isfinite(rate):
            raise ValueError(f"rate must be in (0, 1000] Hz, not {rate}")
        if not 1 <= batch <= 1000:
            raise ValueError(f"batch must be in [1, 1000], not {batch}")
        for fmt in formats:
            if fmt not in FORMATS:
                raise ValueError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
        models = [model(k) for k in (kinds or DEFAULT_KINDS)]
        self.seed = seed
        self.start_time = start_time
        self.scenario = scenario or Scenario()
        self._kinds = {f.kind for f in self.scenario.faults}
        self.ha_discovery = ha_discovery
        self.devices: dict[str, _Device] = {}
        self._units: list[_Unit] = []
        self._heap: list[tuple[float, int, int]] = []  # (due, order, unit index or -control)
        self._controls: list[Control] = []
        self._seq = 0
        self._out: list[Outgoing | Control] = []
        for d in range(devices):
            name = f"{prefix}-{d + 1}"
            fmt = formats[d % len(formats)]
            kinds_ok = FORMAT_KINDS.get(fmt)
            usable = [m for m in models if (fmt in ("senml", "senml-cbor") or m.rate_hz <= 1.0)
                      and (kinds_ok is None or m.kind in kinds_ok)]
            if not usable:
                raise ValueError(f"no sensor kind of {kinds} can be sent as {fmt}")
            chosen = _sensor_names(name, [usable[k % len(usable)] for k in range(sensors)])
            uptime = 30 * 86_400.0 * chance(seed, "uptime", name)
            dev = _Device(name, fmt, tuple(chosen), start_time - uptime)
            self.devices[name] = dev
            groups = [dev.sensors] if fmt == "tasmota" else [(s,) for s in dev.sensors]
            for group in groups:
                fast = group[0].model.rate_hz > 1.0
                unit_rate = group[0].model.rate_hz if fast else rate
                unit_batch = batch if fast else 1
                period = unit_batch / unit_rate
                uid = name if fmt == "tasmota" else group[0].id
                phase = period * chance(seed, "phase", uid)
                self._units.append(
                    _Unit(uid, name, fmt, group, period, phase, unit_batch, unit_rate)
                )
        for k, u in enumerate(self._units):
            heapq.heappush(self._heap, (u.phase, k, k))
        self._order = len(self._units)
        self._schedule_controls()

    # -- the schedule ------------------------------------------------------------------------

    def _schedule_controls(self) -> None:
        for f in self.scenario.faults:
            for dev in self.devices.values():
                if not f.hits_device(self.seed, dev.name):
                    continue
                if f.kind == "dropout":
                    self._control(Control(dev.name, "disconnect", f.start, f"dropout#{f.index}"))
                    if math.isfinite(f.end):
                        self._control(Control(dev.name, "connect", f.end, f"dropout#{f.index}"))
                elif f.kind == "reboot":
                    down = f.number("downtime", 5.0)
                    self._control(Control(dev.name, "disconnect", f.start, f"reboot#{f.index}"))
                    self._control(Control(dev.name, "connect", f.start + down,
                                          f"reboot#{f.index}"))
                elif f.kind == "reconnect_storm":
                    step = f.number("interval", 1.0)
                    t = f.start
                    end = f.end if math.isfinite(f.end) else f.start + 3600.0
                    while t < end:
                        self._control(Control(dev.name, "drop", t, f"storm#{f.index}"))
                        t += step

    def _control(self, c: Control) -> None:
        self._controls.append(c)
        heapq.heappush(self._heap, (c.scheduled, self._order, -len(self._controls)))
        self._order += 1

    def next_due(self) -> float:
        """Run time of the next message or event."""
        return self._heap[0][0] if self._heap else math.inf

    @property
    def units(self) -> int:
        """How many schedules the fleet runs (sensors, or devices for Tasmota)."""
        return len(self._units)

    def rate(self) -> float:
        """Messages per second the fleet sends without faults."""
        return sum(1.0 / u.period for u in self._units)

    def pop_due(self, now: float) -> list[Outgoing | Control]:
        """Everything due at run time ``now`` or before, in schedule order."""
        out = self._out = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, _, ref = heapq.heappop(heap)
            if ref < 0:
                self._apply_control(self._controls[-ref - 1])
                continue
            unit = self._units[ref]
            self._tick(unit, due)
            unit.tick += 1
            heapq.heappush(heap, (unit.phase + unit.tick * unit.period, self._order, ref))
            self._order += 1
        self._out = []
        return out

    def births(self, device: str) -> list[Outgoing]:
        """What ``device`` publishes each time it connects (state, descriptions, discovery)."""
        dev = self.devices[device]
        return [
            Outgoing(0, device, p, 0.0, kind="birth")
            for p in birth(dev.fmt, device, dev.sensors, self.ha_discovery)
        ]

    # -- one tick ------------------------------------------------------------------------------

    def _apply_control(self, c: Control) -> None:
        dev = self.devices[c.device]
        index = int(c.reason.partition("#")[2])
        if c.action == "disconnect":
            dev.offline.add(index)
        elif c.action == "connect":
            dev.offline.discard(index)
            if c.reason.startswith("reboot"):
                dev.boot = self.start_time + c.scheduled  # counters start again
        if c.action == "connect" and dev.offline:
            return  # still held offline by another fault
        self._out.append(c)

    def _active(self, kind: str, dev: _Device, sensor: Sensor | None, t: float) -> list[Fault]:
        if kind not in self._kinds:
            return []
        return [
            f
            for f in self.scenario.faults
            if f.kind == kind
            and f.active(t)
            and f.hits_device(self.seed, dev.name)
            and (sensor is None or f.hits_sensor(sensor.name, sensor.model.kind))
        ]

    def _tick(self, unit: _Unit, due: float) -> None:
        dev = self.devices[unit.device]
        if dev.offline:
            return  # the board is off or has no network: it sends nothing
        seed = self.seed
        tags: list[str] = []
        readings: list[list[Reading]] = []
        per_sensor: list[list[SampleRecord]] = []
        first = unit.tick * unit.batch
        for sensor in unit.sensors:
            rs = []
            records: list[SampleRecord] = []
            per_sensor.append(records)
            for j in range(unit.batch):
                rel = unit.phase + (first + j) / unit.rate
                t_abs = self.start_time + rel
                values = list(sensor.model.read(seed, sensor.id, t_abs, dev.boot).values)
                for f in self._active("stuck", dev, sensor, rel):
                    values = list(sensor.model.read(seed, sensor.id, self.start_time + f.start,
                                                    dev.boot).values)
                    tags.append("stuck")
                for f in self._active("drift", dev, sensor, rel):
                    values = [v + f.number("rate", 1.0) * (rel - f.start) / 3600.0
                              for v in values]
                    tags.append("drift")
                for f in self._active("spike", dev, sensor, rel):
                    if f.hits_message(seed, sensor.id, first + j):
                        values = [v + f.number("magnitude", 50.0) for v in values]
                        tags.append("spike")
                reported = self._reported_time(dev, sensor, rel, t_abs, tags)
                if unit.fmt == "tasmota":
                    reported = float(math.floor(reported))  # Tasmota states whole seconds
                rs.append(Reading(reported, tuple(values)))
                for fld, v in zip(sensor.model.fields, values, strict=True):
                    records.append(SampleRecord(stream_name(unit.fmt, sensor, fld.name), fld.unit,
                                                reported, v))
            readings.append(rs)
        publishes = encode(unit.fmt, unit.sensors, readings)
        valid = True
        for f in self._active("malformed", dev, None, due):
            if any(f.hits_sensor(s.name, s.model.kind) for s in unit.sensors) and \
                    f.hits_message(seed, unit.id, unit.tick):
                variants = f.params["variants"]
                assert isinstance(variants, tuple)
                variant = variants[int(chance(seed, "variant", f.index, unit.id, unit.tick)
                                       * len(variants))]
                publishes = [_malform(unit.fmt, p, str(variant)) for p in publishes]
                tags.append(f"malformed:{variant}")
                valid = False
        tag_tuple = tuple(dict.fromkeys(tags))
        # which samples each message carries: a sensor's (SenML), each field's (ESPHome,
        # Homie), or all of the device's (Tasmota)
        if unit.fmt == "tasmota":
            carried = [tuple(r for rs in per_sensor for r in rs)]
        elif unit.fmt in ("esphome", "homie"):
            carried = [(r,) for rs in per_sensor for r in rs]
        else:
            carried = [tuple(rs) for rs in per_sensor]
        messages = []
        for p, samples in zip(publishes, carried, strict=True):
            self._seq += 1
            messages.append(Outgoing(self._seq, dev.name, p, due, tag_tuple, valid,
                                     samples if valid else ()))
        for f in self._active("duplicate", dev, None, due):
            if f.hits_message(seed, unit.id, unit.tick):
                for m in list(messages):
                    for _ in range(int(f.number("copies", 1))):
                        self._seq += 1
                        messages.append(Outgoing(self._seq, m.device, m.publish, due,
                                                 (*m.faults, "duplicate"), m.valid, m.samples))
        self._send(unit, messages, due)

    def _reported_time(self, dev: _Device, sensor: Sensor, rel: float, t_abs: float,
                       tags: list[str]) -> float:
        """The time a device stamps on a sample: its clock, which may be wrong."""
        since_boot = t_abs - dev.boot
        for f in self._active("reboot", dev, None, rel):
            if since_boot < f.number("ntp_delay", 0.0):
                tags.append("clock_1970")
                return round(since_boot, 3)  # no NTP yet: the clock started at 0 at boot
        for f in self._active("clock_skew", dev, sensor, rel):
            if f.params.get("epoch") == "1970":
                tags.append("clock_1970")
                return round(since_boot, 3)
            tags.append("clock_skew")
            return round(t_abs + f.number("offset", 0.0), 3)
        return round(t_abs, 3)

    def _send(self, unit: _Unit, messages: list[Outgoing], due: float) -> None:
        dev = self.devices[unit.device]
        if unit.hold == 0:
            for f in self._active("out_of_order", dev, None, due):
                if f.hits_message(self.seed, unit.id, unit.tick):
                    unit.hold = int(f.number("burst", 5))
                    break
        if unit.hold > 0:
            unit.held.extend(
                Outgoing(m.seq, m.device, m.publish, m.scheduled, (*m.faults, "out_of_order"),
                         m.valid, m.samples) for m in messages
            )
            unit.hold -= 1
            if unit.hold == 0:
                self._out.extend(reversed(unit.held))
                unit.held = []
            return
        self._out.extend(messages)


def _sensor_names(device: str, models: list[Model]) -> list[Sensor]:
    """``temperature``, or ``temperature-1``, ``temperature-2``... when a kind repeats."""
    counts: dict[str, int] = {}
    for m in models:
        counts[m.kind] = counts.get(m.kind, 0) + 1
    seen: dict[str, int] = {}
    out = []
    for m in models:
        seen[m.kind] = seen.get(m.kind, 0) + 1
        name = m.kind if counts[m.kind] == 1 else f"{m.kind}-{seen[m.kind]}"
        out.append(Sensor(device, name, m))
    return out


def _malform(fmt: str, p: Publish, variant: str) -> Publish:
    """A broken version of a message, the way broken firmware breaks them."""
    payload = p.payload
    if variant == "huge":
        if fmt == "senml":
            payload = json.dumps([{"bn": "x", "vs": "x" * HUGE_BYTES}]).encode()
        elif fmt == "senml-cbor":
            payload = cbor2.dumps([{SENML_CBOR_LABELS["bn"]: "x", 3: "x" * HUGE_BYTES}])
        elif fmt == "tasmota":
            payload = json.dumps({"Time": "2026-01-01T00:00:00", "Junk": "x" * HUGE_BYTES}
                                 ).encode()
        else:
            payload = b"1" * HUGE_BYTES
        return Publish(p.topic, payload, p.retain, p.content_type)
    if variant == "truncated":
        cut = payload[: len(payload) // 2] if fmt in ("senml", "senml-cbor", "tasmota") else b""
        return Publish(p.topic, cut, p.retain, p.content_type)
    # a wrong type or unit breaks every value (an edge stores the readable part of a message,
    # and the ledger counts a malformed message as wholly unreadable)
    if fmt == "senml":
        records = json.loads(payload)
        if variant == "wrong_type":
            for rec in records:
                rec["v"] = "abc"
        elif variant == "nan":
            records[0]["v"] = math.nan  # json.dumps writes the token NaN: not JSON
        elif variant == "wrong_unit":  # every record's unit: nothing of it is readable
            for rec in records:
                rec["u"] = "furlong"  # a record's own unit overrides the base unit
        return Publish(p.topic, json.dumps(records).encode(), p.retain, p.content_type)
    if fmt == "senml-cbor":
        records = cbor2.loads(payload)
        v, u = SENML_CBOR_LABELS["v"], SENML_CBOR_LABELS["u"]
        if variant == "wrong_type":
            for rec in records:
                rec[v] = "abc"
        elif variant == "nan":
            for rec in records:
                rec[v] = math.nan
        elif variant == "wrong_unit":  # every record's unit: nothing of it is readable
            for rec in records:
                rec[u] = "furlong"  # a record's own unit overrides the base unit
        return Publish(p.topic, cbor2.dumps(records), p.retain, p.content_type)
    if fmt == "tasmota":
        doc = json.loads(payload)
        group = next(k for k, v in doc.items() if isinstance(v, dict))
        key = next(iter(doc[group]))
        if variant == "wrong_type":
            for section in doc.values():
                if isinstance(section, dict):
                    for k in section:
                        section[k] = "abc"
        elif variant == "nan":
            doc[group][key] = math.nan
        elif variant == "wrong_unit":
            doc["TempUnit"] = "furlong"
        return Publish(p.topic, json.dumps(doc).encode(), p.retain, p.content_type)
    # ESPHome and Homie send bare values: no unit to get wrong, a type to get wrong (Homie
    # text is a string reading unless the edge has read the property's $datatype: nan then)
    bad = b"nan" if variant == "nan" or fmt == "homie" else b"abc"
    return Publish(p.topic, bad, p.retain, p.content_type)

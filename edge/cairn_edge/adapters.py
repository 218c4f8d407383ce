"""Payload adapters: an MQTT message in any of the field's shapes to readings of one model.

A :class:`Reading` is (source device, quantity, unit, time, value). Time is seconds since the
Unix epoch, or ``None`` when the payload states none (ESPHome, Homie): the receipt time is used.
SenML relative times (RFC 8428 4.5.3: a resolved time below 2**28 counts from "now") are
resolved against the receipt time here.

Anything that is not a well-formed message of its shape raises :class:`Rejected` with a short
reason (for counters) and a detail (for the log line); nothing of a rejected message is kept.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cbor2

from cairn.errors import DecodeError
from cairn.fleet.units import QUANTITY_UNITS

__all__ = [
    "FORMATS",
    "MAX_PAYLOAD",
    "MAX_RECORDS",
    "Reading",
    "Rejected",
    "Route",
    "decode",
    "match_topic",
]

FORMATS = ("senml", "tasmota", "esphome", "homie")
MAX_PAYLOAD = 64 * 1024  # bytes: a sensor message larger than this is broken or hostile
MAX_RECORDS = 2_000  # SenML records in one pack
RELATIVE_LIMIT = 2**28  # RFC 8428: resolved times below this are relative to now

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-:./_]*")
_QUANTITY = re.compile(r"[a-z0-9][a-z0-9_\-]*")

#: RFC 8428 table 4: SenML CBOR's integer labels.
_CBOR_LABELS = {-1: "bver", -2: "bn", -3: "bt", -4: "bu", -5: "bv", -6: "bs", 0: "n", 1: "u",
                2: "v", 3: "vs", 4: "vb", 5: "s", 6: "t", 7: "ut", 8: "vd"}  # fmt: skip
_KNOWN_LABELS = frozenset(_CBOR_LABELS.values())

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


class Rejected(DecodeError, ValueError):
    """A message that is not a valid reading: ``reason`` is a short code, the message says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Reading:
    device: str
    quantity: str
    unit: str | None
    time: float | None
    value: float | str | bool


@dataclass(frozen=True, slots=True)
class Route:
    """Which topics carry which shape: an MQTT filter, the shape, and which ``+`` level names
    the device (1 = the first ``+``), or the one device a filter is for (``senml/board-1/+``
    with ``device = "board-1"``)."""

    filter: str
    format: str
    device_level: int = 1
    device: str | None = None

    def subscription(self) -> str:
        return self.filter


def match_topic(filter_: str, topic: str) -> list[str] | None:
    """The levels a filter's wildcards matched (``+`` each, ``#`` the rest joined), or None."""
    f = filter_.split("/")
    t = topic.split("/")
    out: list[str] = []
    for k, level in enumerate(f):
        if level == "#":
            out.append("/".join(t[k:]))
            return out
        if k >= len(t):
            return None
        if level == "+":
            if t[k].startswith("$") and k == 0:
                return None
            out.append(t[k])
        elif level != t[k]:
            return None
    return out if len(f) == len(t) else None


def _device(name: str, where: str) -> str:
    if not name or len(name) > 64 or not _NAME.fullmatch(name) or "/" in name:
        raise Rejected("bad-device", f"device name {name[:40]!r} from {where} is not usable")
    return name


def _quantity(name: str) -> str:
    q = name.strip().lower().replace("_", "-")
    if not q or len(q) > 64 or not _QUANTITY.fullmatch(q):
        raise Rejected("bad-name", f"quantity {name[:40]!r} is not a usable name")
    return q


def _number(x: object, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise Rejected("wrong-type", f"{what} is {type(x).__name__}, not a number")
    v = float(x)
    if not math.isfinite(v):
        raise Rejected("not-finite", f"{what} is {v}")
    return v


def _no_constants(name: str) -> float:
    raise Rejected("bad-json", f"{name} is not JSON")


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload, parse_constant=_no_constants)
    except Rejected:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise Rejected("bad-json", f"not JSON ({str(exc)[:60]})") from None


# -- SenML ---------------------------------------------------------------------------------------


def _senml_records(payload: bytes, content_type: str | None) -> list[dict[str, Any]]:
    cbor = content_type == "application/senml+cbor" or (
        content_type is None and payload[:1] and payload[0] >> 5 in (4, 5)
        and payload[:1] != b"["
    )
    if cbor:
        try:
            raw = cbor2.loads(payload)
        except (cbor2.CBORDecodeError, ValueError, RecursionError, MemoryError) as exc:
            raise Rejected("bad-cbor", f"not CBOR ({str(exc)[:60]})") from None
        if not isinstance(raw, list):
            raise Rejected("bad-senml", "a SenML pack is an array")
        records = []
        for rec in raw:
            if not isinstance(rec, dict):
                raise Rejected("bad-senml", "a SenML record is a map")
            out = {}
            for k, v in rec.items():
                label = _CBOR_LABELS.get(k) if isinstance(k, int) else k
                if label is None or not isinstance(label, str):
                    raise Rejected("bad-senml", f"unknown SenML CBOR label {k!r}")
                out[label] = v
            records.append(out)
        return records
    doc = _json(payload)
    if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
        raise Rejected("bad-senml", "a SenML pack is an array of objects")
    return doc


def decode_senml(device: str, payload: bytes, content_type: str | None,
                 received: float) -> list[Reading]:
    """RFC 8428 resolution: base fields carry forward; name = bn + n; time = bt + t."""
    records = _senml_records(payload, content_type)
    if not records:
        raise Rejected("empty", "an empty SenML pack")
    if len(records) > MAX_RECORDS:
        raise Rejected("too-large", f"{len(records)} records (most {MAX_RECORDS})")
    bn, bt, bu, bv = "", 0.0, None, 0.0
    out = []
    for k, rec in enumerate(records):
        unknown = set(rec) - _KNOWN_LABELS
        mandatory = [x for x in unknown if isinstance(x, str) and x.endswith("_")]
        if mandatory:
            raise Rejected("bad-senml", f"record {k}: must-understand field {mandatory[0]!r}")
        if "bver" in rec and rec["bver"] not in (5, 10):
            raise Rejected("bad-senml", f"record {k}: SenML version {rec['bver']!r}")
        if "bn" in rec:
            if not isinstance(rec["bn"], str):
                raise Rejected("wrong-type", f"record {k}: bn is not text")
            bn = rec["bn"]
        if "bt" in rec:
            bt = _number(rec["bt"], f"record {k}: bt")
        if "bu" in rec:
            if not isinstance(rec["bu"], str):
                raise Rejected("wrong-type", f"record {k}: bu is not text")
            bu = rec["bu"]
        if "bv" in rec:
            bv = _number(rec["bv"], f"record {k}: bv")
        n = rec.get("n", "")
        if not isinstance(n, str):
            raise Rejected("wrong-type", f"record {k}: n is not text")
        name = bn + n
        if not name or not _NAME.fullmatch(name) or len(name) > 200:
            raise Rejected("bad-name", f"record {k}: {name[:40]!r} is not a SenML name")
        unit = rec.get("u", bu)
        if unit is not None and not isinstance(unit, str):
            raise Rejected("wrong-type", f"record {k}: u is not text")
        t = bt + _number(rec.get("t", 0.0), f"record {k}: t")
        if abs(t) < RELATIVE_LIMIT:
            t = received + t  # relative to "now" (RFC 8428 4.5.3)
        values = [x for x in ("v", "vs", "vb", "vd") if x in rec]
        if "s" in rec and not values:
            raise Rejected("unsupported", f"record {k}: sums without values are not stored")
        if len(values) != 1:
            raise Rejected("bad-senml", f"record {k}: {len(values)} values (one of v, vs, vb)")
        value: float | str | bool
        if "v" in rec:
            value = bv + _number(rec["v"], f"record {k}: v")
        elif "vs" in rec:
            if not isinstance(rec["vs"], str) or len(rec["vs"]) > 1024:
                raise Rejected("wrong-type", f"record {k}: vs is not text (at most 1 kB)")
            value = rec["vs"]
        elif "vb" in rec:
            if not isinstance(rec["vb"], bool):
                raise Rejected("wrong-type", f"record {k}: vb is not a boolean")
            value = rec["vb"]
        else:
            raise Rejected("unsupported", f"record {k}: data values (vd) are not stored")
        head, sep, quantity = name.partition("/")
        if sep and head == device:
            name = quantity  # "board-1/temperature" from board-1: quantity "temperature"
        out.append(Reading(device, _quantity(name.replace("/", "-").replace(":", "-")
                                             .replace(".", "-")), unit, t, value))
    return out


# -- Tasmota, ESPHome, Homie ------------------------------------------------------------------


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


def _text_value(payload: bytes, where: str) -> float:
    if len(payload) > 64:
        raise Rejected("too-large", f"{where}: a {len(payload)}-byte value")
    try:
        text = payload.decode("ascii").strip()
        v = float(text)
    except (UnicodeDecodeError, ValueError):
        raise Rejected("wrong-type", f"{where}: {payload[:20]!r} is not a number") from None
    if not math.isfinite(v):
        raise Rejected("not-finite", f"{where}: {text}")
    return v


def _unit_for(quantity: str) -> str | None:
    base, dash, num = quantity.rpartition("-")
    return QUANTITY_UNITS.get(base if dash and num.isdigit() else quantity)


def decode_bare(device: str, name: str, payload: bytes) -> list[Reading]:
    """A bare value named by its topic: an ESPHome state (object id) or a Homie property."""
    q = _quantity(name)
    return [Reading(device, q, _unit_for(q), None, _text_value(payload, name))]


# -- routing -------------------------------------------------------------------------------------


#: What the edge subscribes to when the config names no topics: the simulator's and the field's
#: usual topics.
DEFAULT_ROUTES = (
    Route("senml/+/+", "senml"),
    Route("tele/+/SENSOR", "tasmota"),
    Route("+/sensor/+/state", "esphome"),
    Route("homie/5/+/+/+", "homie"),
)

IGNORED = re.compile(r"(^|/)(\$[^/]*|status|LWT)$")  # state, description, will topics


def decode(routes: Sequence[Route], topic: str, payload: bytes, content_type: str | None,
           received: float) -> list[Reading] | None:
    """The readings of one message, None for a topic that carries none (status, descriptions),
    or :class:`Rejected`."""
    if IGNORED.search(topic):
        return None
    if len(payload) > MAX_PAYLOAD:
        raise Rejected("too-large", f"{len(payload)}-byte payload (most {MAX_PAYLOAD})")
    for route in routes:
        levels = match_topic(route.filter, topic)
        if levels is None:
            continue
        if route.device is not None:
            device = route.device
        elif route.device_level > len(levels):
            raise Rejected("bad-route", f"route {route.filter} has no level {route.device_level}")
        else:
            device = _device(levels[route.device_level - 1], topic)
        if route.format == "senml":
            return decode_senml(device, payload, content_type, received)
        if route.format == "tasmota":
            return decode_tasmota(device, payload, received)
        return decode_bare(device, levels[-1], payload)  # esphome, homie
    return None

"""What every payload adapter shares: the reading model, the refusals, routes and topic
matching, and the checks of names, numbers and states.

Partial refusal: an adapter reads a message item by item. An item it cannot read (a number
that is not finite, a SenML record of a wrong type) is a :class:`Refusal` with a reason; the
items beside it are still read. The result is :class:`Decoded`, a list of readings (what every
caller of the old list-returning adapters sees) carrying ``refused``. Only a message with
nothing readable at all raises :class:`Rejected` (the first item's reason).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cairn.errors import DecodeError
from cairn.fleet.units import QUANTITY_UNITS

MAX_PAYLOAD = 64 * 1024  # bytes: a sensor message larger than this is broken or hostile
MAX_TEXT = 1024  # characters of a string reading
MAX_ITEMS = 2_000  # readings (and refusals) of one message

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-:./_]*")
_QUANTITY = re.compile(r"[a-z0-9][a-z0-9_\-]*")
_SLUG = re.compile(r"[^a-z0-9]+")

#: What firmware sends for a two-state entity (ESPHome, Homie, Zigbee2MQTT, Tasmota POWER).
STATES = {"on": True, "off": False, "true": True, "false": False}


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
class Refusal:
    """One item of a message that was not read: a short reason (for counters) and why."""

    reason: str
    detail: str


class Decoded(list[Reading]):
    """The readings of one message, and the items of it that were refused (:class:`Refusal`)."""

    def __init__(self, readings: Iterable[Reading] = (),
                 refused: Iterable[Refusal] = ()) -> None:
        super().__init__(readings)
        self.refused: list[Refusal] = list(refused)

    def reasons(self) -> Counter[str]:
        """How many items were refused, by reason."""
        return Counter(r.reason for r in self.refused)


@dataclass(frozen=True, slots=True)
class Field:
    """A generic JSON route's field: the value at a dotted ``path`` is ``quantity`` in
    ``unit`` (Telegraf json_v2's ``[[field]] path``/``rename``/``type``)."""

    path: str
    quantity: str
    unit: str | None = None
    type: str | None = None  # "number", "boolean" or "string": convert (as json_v2's type)


@dataclass(frozen=True, slots=True)
class Route:
    """Which topics carry which shape: an MQTT filter, the shape, and which ``+`` level names
    the device (1 = the first ``+``), or the one device a filter is for (``senml/board-1/+``
    with ``device = "board-1"``).

    ``timezone`` (an IANA name) is the zone of a local time that states none (Tasmota's
    ``Time`` without ``Epoch``); ``fields`` and ``time_path`` configure the generic ``json``
    shape."""

    filter: str
    format: str
    device_level: int = 1
    device: str | None = None
    timezone: str | None = None
    fields: tuple[Field, ...] = ()
    time_path: str | None = None

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


class Collector:
    """Readings and refusals of one message, in the order met."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.readings: list[Reading] = []
        self.refused: list[Refusal] = []

    def add(self, quantity: str, unit: str | None, time: float | None,
            value: float | str | bool) -> None:
        if len(self.readings) >= MAX_ITEMS:
            raise Rejected("too-large", f"more than {MAX_ITEMS} readings in one message")
        self.readings.append(Reading(self.device, quantity, unit, time, value))

    def refuse(self, exc: Rejected) -> None:
        if len(self.refused) >= MAX_ITEMS:
            raise Rejected("too-large", f"more than {MAX_ITEMS} refused items in one message")
        self.refused.append(Refusal(exc.reason, exc.detail))

    def result(self, what: str) -> Decoded:
        """The :class:`Decoded`; :class:`Rejected` when nothing at all was readable."""
        if not self.readings:
            if self.refused:
                first = self.refused[0]
                more = f" (and {len(self.refused) - 1} more)" if len(self.refused) > 1 else ""
                raise Rejected(first.reason, first.detail + more)
            raise Rejected("empty", f"no readings in the {what} message")
        return Decoded(self.readings, self.refused)


def _device(name: str, where: str) -> str:
    if not name or len(name) > 64 or not _NAME.fullmatch(name) or "/" in name:
        raise Rejected("bad-device", f"device name {name[:40]!r} from {where} is not usable")
    return name


def _quantity(name: str) -> str:
    q = name.strip().lower().replace("_", "-")
    if not q or len(q) > 64 or not _QUANTITY.fullmatch(q):
        raise Rejected("bad-name", f"quantity {name[:40]!r} is not a usable name")
    return q


def slug(name: str) -> str:
    """A key as a quantity's part: lowercase letters, digits and ``-`` (``PM2.5`` ->
    ``pm2-5``, ``switch:0`` -> ``switch-0``)."""
    return _SLUG.sub("-", name.lower()).strip("-")


def _number(x: object, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise Rejected("wrong-type", f"{what} is {type(x).__name__}, not a number")
    v = float(x)
    if not math.isfinite(v):
        raise Rejected("not-finite", f"{what} is {v}")
    return v


def scalar(x: object, what: str) -> float | str | bool:
    """A JSON value as a reading's value: a finite number, a boolean, or text (at most
    :data:`MAX_TEXT` characters); :class:`Rejected` for null, objects and arrays."""
    if isinstance(x, bool):
        return x
    if isinstance(x, int | float):
        return _number(x, what)
    if isinstance(x, str):
        if len(x) > MAX_TEXT:
            raise Rejected("too-large", f"{what}: a {len(x)}-character text")
        return x
    if x is None:
        raise Rejected("no-value", f"{what} is null")
    raise Rejected("wrong-type", f"{what} is {type(x).__name__}, not a value")


def _no_constants(name: str) -> float:
    raise Rejected("bad-json", f"{name} is not JSON")


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload, parse_constant=_no_constants)
    except Rejected:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise Rejected("bad-json", f"not JSON ({str(exc)[:60]})") from None


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


def text_state(payload: bytes, where: str, kind: str | None = None) -> float | str | bool:
    """A bare value: ``kind`` "number", "boolean" or "string" when the sender declared it,
    else a number if it reads as one, a boolean for ON/OFF/true/false, else text."""
    if kind == "number":
        return _text_value(payload, where)
    if len(payload) > MAX_TEXT:
        raise Rejected("too-large", f"{where}: a {len(payload)}-byte value")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected("bad-text", f"{where}: {payload[:20]!r} is not UTF-8") from None
    if not payload:
        raise Rejected("empty", f"{where}: an empty payload (a retained value cleared)")
    if text == "\x00":
        return ""  # Homie's empty string
    word = text.strip().lower()
    if kind is None and word and word not in STATES:
        try:
            return _text_value(payload, where)
        except Rejected:
            if word in ("nan", "inf", "-inf", "infinity", "-infinity"):
                raise
    if kind in (None, "boolean") and word in STATES:
        return STATES[word]
    if kind == "boolean":
        raise Rejected("wrong-type", f"{where}: {text[:20]!r} is not a boolean")
    if "\x00" in text:
        raise Rejected("bad-text", f"{where}: a NUL character in text")
    return text


def _unit_for(quantity: str) -> str | None:
    base, dash, num = quantity.rpartition("-")
    return QUANTITY_UNITS.get(base if dash and num.isdigit() else quantity)


def unit_for(quantity: str) -> str | None:
    """The unit of a well-known quantity (``temperature``, or numbered: ``energy-2``), None
    for others: the last resort, after the payload and the device's own description."""
    return _unit_for(quantity)

"""What every payload adapter shares: the reading model, the refusal, routes and topic
matching, and the checks of names and numbers."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from cairn.errors import DecodeError
from cairn.fleet.units import QUANTITY_UNITS

MAX_PAYLOAD = 64 * 1024  # bytes: a sensor message larger than this is broken or hostile

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-:./_]*")
_QUANTITY = re.compile(r"[a-z0-9][a-z0-9_\-]*")

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

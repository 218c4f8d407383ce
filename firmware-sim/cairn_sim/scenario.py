"""Fault scenarios: what goes wrong in a fleet, when, and to whom, from a TOML file.

A scenario is a list of ``[[fault]]`` tables::

    [[fault]]
    kind = "dropout"           # which fault (see KINDS)
    devices = ["board-2"]      # whom (default: every device); or fraction = 0.3 for a seeded subset
    start = 30.0               # seconds after the run starts (default 0)
    duration = 10.0            # how long (default: to the end of the run)

    [[fault]]
    kind = "malformed"
    probability = 0.01         # per message (default 1 for window faults)
    variants = ["truncated", "nan"]

Every random choice (which device, whether a message is hit) is a hash of the run's seed, the
fault's position and the message's identity, so the same seed gives the same faults however fast
or slow the run goes. A file is checked whole before a run starts: an unknown key, a wrong type or
an impossible value is a :class:`ScenarioError` naming the fault and the key.
"""

from __future__ import annotations

import hashlib
import math
import struct
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cairn.errors import UsageError

__all__ = [
    "KINDS",
    "MALFORMED_VARIANTS",
    "Fault",
    "Scenario",
    "ScenarioError",
    "chance",
]

#: The faults a scenario may name, with the keys each one accepts besides the common ones.
KINDS: dict[str, frozenset[str]] = {
    "dropout": frozenset(),
    "reconnect_storm": frozenset({"interval"}),
    "spike": frozenset({"magnitude"}),
    "stuck": frozenset(),
    "drift": frozenset({"rate"}),
    "clock_skew": frozenset({"offset", "epoch"}),
    "duplicate": frozenset({"copies"}),
    "out_of_order": frozenset({"burst"}),
    "malformed": frozenset({"variants"}),
    "reboot": frozenset({"downtime", "ntp_delay"}),
}
_COMMON = frozenset({"kind", "devices", "fraction", "sensors", "start", "duration", "probability"})

MALFORMED_VARIANTS = ("truncated", "wrong_type", "nan", "huge", "wrong_unit")

#: Faults that act on every message in their window unless a probability says otherwise.
_WINDOW_KINDS = frozenset({"dropout", "reconnect_storm", "stuck", "drift", "clock_skew", "reboot"})


class ScenarioError(UsageError, ValueError):
    """A scenario file that cannot be run: says which fault and which key is wrong."""


def chance(seed: int, *parts: object) -> float:
    """A reproducible number in [0, 1) from the seed and the parts naming a decision."""
    key = ":".join(str(p) for p in (seed, *parts)).encode()
    h = hashlib.blake2b(key, digest_size=8).digest()
    return float(struct.unpack("<Q", h)[0]) / 2**64


@dataclass(frozen=True, slots=True)
class Fault:
    """One ``[[fault]]`` of a scenario, checked."""

    index: int
    kind: str
    devices: tuple[str, ...] | None = None
    fraction: float | None = None
    sensors: tuple[str, ...] | None = None
    start: float = 0.0
    duration: float = math.inf
    probability: float = 1.0
    params: Mapping[str, object] = field(default_factory=dict)

    @property
    def end(self) -> float:
        return self.start + self.duration

    def active(self, t: float) -> bool:
        """Whether run time ``t`` (seconds since the run started) is in this fault's window."""
        return self.start <= t < self.end

    def hits_device(self, seed: int, device: str) -> bool:
        if self.devices is not None and device not in self.devices:
            return False
        if self.fraction is not None:
            return chance(seed, "fault", self.index, "device", device) < self.fraction
        return True

    def hits_sensor(self, sensor: str, kind: str) -> bool:
        return self.sensors is None or sensor in self.sensors or kind in self.sensors

    def hits_message(self, seed: int, unit: str, tick: int) -> bool:
        if self.probability >= 1.0:
            return True
        return chance(seed, "fault", self.index, unit, tick) < self.probability

    def number(self, key: str, default: float) -> float:
        value = self.params.get(key, default)
        assert isinstance(value, int | float)
        return float(value)


@dataclass(frozen=True, slots=True)
class Scenario:
    faults: tuple[Fault, ...] = ()

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ScenarioError(f"cannot read scenario {path}: {exc}") from exc
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, source: str = "scenario") -> Scenario:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError(f"{source}: not valid TOML: {exc}") from exc
        unknown = set(doc) - {"fault"}
        if unknown:
            raise ScenarioError(
                f"{source}: unknown top-level key(s) {', '.join(sorted(unknown))} "
                "(a scenario is a list of [[fault]] tables)"
            )
        raw = doc.get("fault", [])
        if not isinstance(raw, list):
            raise ScenarioError(f"{source}: 'fault' must be an array of tables ([[fault]])")
        return cls(tuple(_fault(source, k, item) for k, item in enumerate(raw)))


def _fault(source: str, k: int, item: object) -> Fault:
    where = f"{source}: fault {k + 1}"
    if not isinstance(item, dict):
        raise ScenarioError(f"{where}: must be a table")
    kind = item.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ScenarioError(
            f"{where}: 'kind' must be one of {', '.join(sorted(KINDS))}, not {kind!r}"
        )
    where = f"{where} ({kind})"
    allowed = _COMMON | KINDS[kind]
    unknown = set(item) - allowed
    if unknown:
        raise ScenarioError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
            f"(allowed: {', '.join(sorted(allowed))})"
        )

    def num(key: str, default: float, lo: float = 0.0, hi: float = 1e12) -> float:
        value = item.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ScenarioError(f"{where}: '{key}' must be a number, not {value!r}")
        if key not in item:
            return float(value)
        if not math.isfinite(value) or not lo <= value <= hi:
            raise ScenarioError(f"{where}: '{key}' = {value!r} is outside [{lo}, {hi}]")
        return float(value)

    def names(key: str) -> tuple[str, ...] | None:
        value = item.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ScenarioError(f"{where}: '{key}' must be a list of names")
        return tuple(value)

    params: dict[str, object] = {}
    if kind == "reconnect_storm":
        params["interval"] = num("interval", 1.0, 0.05, 3600)
    elif kind == "spike":
        params["magnitude"] = num("magnitude", 50.0, -1e9, 1e9)
    elif kind == "drift":
        params["rate"] = num("rate", 1.0, -1e6, 1e6)
    elif kind == "clock_skew":
        epoch = item.get("epoch")
        if epoch is not None and epoch != "1970":
            raise ScenarioError(f"{where}: 'epoch' can only be \"1970\" (time since boot)")
        if epoch is not None and "offset" in item:
            raise ScenarioError(f"{where}: give 'offset' or 'epoch', not both")
        params["offset"] = num("offset", 0.0, -1e10, 1e10)
        params["epoch"] = epoch
    elif kind == "duplicate":
        params["copies"] = num("copies", 1, 1, 100)
    elif kind == "out_of_order":
        params["burst"] = num("burst", 5, 2, 1000)
    elif kind == "malformed":
        variants = item.get("variants", list(MALFORMED_VARIANTS))
        if (
            not isinstance(variants, list)
            or not variants
            or not all(v in MALFORMED_VARIANTS for v in variants)
        ):
            raise ScenarioError(
                f"{where}: 'variants' must be a non-empty list of {', '.join(MALFORMED_VARIANTS)}"
            )
        params["variants"] = tuple(variants)
    elif kind == "reboot":
        params["downtime"] = num("downtime", 5.0, 0, 86400)
        params["ntp_delay"] = num("ntp_delay", 0.0, 0, 86400)

    fraction = item.get("fraction")
    if fraction is not None:
        fraction = num("fraction", 1.0, 0.0, 1.0)
        if "devices" in item:
            raise ScenarioError(f"{where}: give 'devices' or 'fraction', not both")
    default_p = 1.0 if kind in _WINDOW_KINDS else 0.01
    duration = num("duration", math.inf, 0.0)
    if kind == "reboot" and "duration" in item:
        raise ScenarioError(f"{where}: a reboot happens once at 'start'; it has 'downtime'")
    return Fault(
        index=k,
        kind=kind,
        devices=names("devices"),
        fraction=fraction,
        sensors=names("sensors"),
        start=num("start", 0.0, 0.0),
        duration=duration,
        probability=num("probability", default_p, 0.0, 1.0),
        params=params,
    )


def describe(faults: Sequence[Fault]) -> list[str]:
    """One line per fault, for the run's summary."""
    out = []
    for f in faults:
        who = ",".join(f.devices) if f.devices else (
            f"{f.fraction:.0%} of devices" if f.fraction is not None else "all devices")
        window = f"from {f.start:g} s" + ("" if math.isinf(f.duration) else
                                           f" for {f.duration:g} s")
        out.append(f"{f.kind}: {who}, {window}, p={f.probability:g}")
    return out

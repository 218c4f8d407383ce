"""Shelly Gen2 (Plus, Pro, Gen3): JSON-RPC notifications on ``<prefix>/events/rpc`` and
status documents on ``<prefix>/status/<component>``.

``NotifyStatus`` and ``NotifyFullStatus`` carry ``params``: ``ts`` (UTC seconds, the readings'
time) and one object per component instance, ``<type>:<id>`` (``switch:0``,
``temperature:100``), with the fields of that component's status. Each field is a reading
named ``<quantity>-<type>-<id>`` (``power-switch-0``), or ``<quantity>-<id>`` when the
component is named as its quantity (``temperature:100`` ``tC`` -> ``temperature-100``).

Fields read (:data:`FIELDS`): ``apower`` W, ``voltage`` V, ``current`` A, ``freq`` Hz, ``pf``,
``aenergy.total`` and ``ret_aenergy.total`` Wh, ``temperature.tC`` and ``tC`` Cel, ``rh`` %RH,
``lux`` lx, ``battery.percent`` %EL, ``battery.V`` V, ``external.present``, ``output`` and
``state`` (booleans), ``current_pos`` %; the per-phase fields of ``em`` meters
(``a_voltage``, ``b_act_power``...). Any other scalar field is read under its own name without
a unit. Not read: ``id``, ``source``, ``errors``, ``flags``, timers, ``by_minute`` arrays, and
the components that are not sensors (``sys``, ``wifi``, ``cloud``, ``mqtt``, ``ble``...: no
``:<id>``; ``script:<id>``). ``NotifyEvent`` (button presses), RPC responses and a notification
of only such components are not readings (ignored, not refused).
"""

from __future__ import annotations

from typing import Any

from cairn_edge.adapters.common import (
    Collector,
    Decoded,
    Rejected,
    _json,
    _number,
    _quantity,
    scalar,
    slug,
)

#: field (dotted for nested objects) -> (quantity, SenML unit)
FIELDS: dict[str, tuple[str, str | None]] = {
    "apower": ("power", "W"), "voltage": ("voltage", "V"), "current": ("current", "A"),
    "freq": ("frequency", "Hz"), "pf": ("power-factor", "/"),
    "aenergy.total": ("energy", "Wh"), "ret_aenergy.total": ("energy-returned", "Wh"),
    "temperature.tC": ("temperature", "Cel"), "tC": ("temperature", "Cel"),
    "rh": ("humidity", "%RH"), "lux": ("illuminance", "lx"),
    "battery.percent": ("battery", "%EL"), "battery.V": ("battery-voltage", "V"),
    "external.present": ("external-power", None), "output": ("output", None),
    "state": ("state", None), "current_pos": ("position", "%"),
    "act_power": ("power", "W"), "aprt_power": ("apparent-power", "VA"),
    "total_act_power": ("power", "W"), "total_aprt_power": ("apparent-power", "VA"),
    "total_current": ("current", "A"), "counts.total": ("count", "count"),
}  # fmt: skip
_PHASE_UNITS = {"current": "A", "voltage": "V", "act_power": "W", "aprt_power": "VA",
                "pf": "/", "freq": "Hz"}  # fmt: skip
_SKIP = {"id", "source", "errors", "flags", "timer_started_at", "timer_duration", "minute_ts",
         "by_minute", "tF", "temperature.tF", "aenergy.minute_ts", "aenergy.by_minute",
         "ret_aenergy.minute_ts", "ret_aenergy.by_minute", "counts.xtotal", "counts.by_minute",
         "counts.minute_ts", "counts.xby_minute"}  # fmt: skip
_METHODS = {"NotifyStatus", "NotifyFullStatus"}
_NOT_SENSORS = {"script", "ui", "ws", "knx", "modbus", "matter"}


def decode_shelly(device: str, topic: str, payload: bytes) -> Decoded | None:
    doc = _json(payload)
    if not isinstance(doc, dict):
        raise Rejected("bad-shelly", "a Shelly message is a JSON object")
    levels = topic.split("/")
    if len(levels) >= 2 and levels[-2] == "status":  # <prefix>/status/<component>
        components: dict[str, Any] = {levels[-1]: doc}
        t = None
    else:
        if doc.get("method") not in _METHODS:
            return None  # NotifyEvent, responses: not readings
        params = doc.get("params")
        if not isinstance(params, dict):
            raise Rejected("bad-shelly", "a notification without a params object")
        t = _number(params["ts"], "params.ts") if "ts" in params else None
        components = {k: v for k, v in params.items() if k != "ts"}
    out = Collector(device)
    for name, status in components.items():
        kind, colon, ident = name.partition(":")
        if not colon or not isinstance(status, dict) or kind in _NOT_SENSORS:
            continue  # sys, wifi, cloud, mqtt, scripts...: not sensors
        instance = slug(ident) if slug(kind) in _own(status) else slug(name)
        for path, raw in _fields(status):
            if path in _SKIP or isinstance(raw, list):
                continue
            try:
                quantity, unit = _field(path)
                q = _quantity(f"{quantity}-{instance}" if instance else quantity)
                value = scalar(raw, f"{name}.{path}")
                out.add(q, unit if isinstance(value, float) else None, t, value)
            except Rejected as exc:
                out.refuse(exc)
    if not out.readings and not out.refused:
        return None  # only components that are not sensors (cloud, wifi...)
    return out.result("Shelly")


def _own(status: dict[str, Any]) -> set[str]:
    """The quantities a component's fields name (a ``temperature`` component reads
    ``temperature``: it needs no second ``temperature`` in its streams' names)."""
    return {_field(p)[0] for p, _ in _fields(status) if p in FIELDS}


def _field(path: str) -> tuple[str, str | None]:
    if path in FIELDS:
        return FIELDS[path]
    phase, _, rest = path.partition("_")
    if len(phase) == 1 and phase in "abc" and rest in _PHASE_UNITS:
        return f"{rest.replace('_', '-')}-{phase}", _PHASE_UNITS[rest]
    return slug(path), None


def _fields(status: dict[str, Any]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in status.items():
        if isinstance(v, dict):
            out.extend((f"{k}.{sub}", x) for sub, x in v.items() if not isinstance(x, dict))
        else:
            out.append((k, v))
    return out

"""The generic JSON shape: any JSON document, read by a route's map of paths to quantities
(the way Telegraf's ``json_v2`` parser names ``[[field]] path`` and ``rename``).

A path is dotted keys with ``[n]`` for an array's element (``sensors.soil.moisture``,
``readings[0].value``, a key with a dot in it is not reachable). Each configured field whose
path holds a number, a boolean or text is a reading of its quantity, in its unit; a path that
is missing (``missing``) or holds null, an object or an array (``wrong-type``) is refused for
that field, the others are read. A field's ``type`` converts (``number``: the text "5.90" is
5.9; ``boolean``: "ON", "true", 1; ``string``), refusing what does not. ``time_path``, when
set, holds the readings' time: Unix seconds, or ISO 8601 text (UTC when it states no zone);
without it, the receipt time.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from cairn_edge.adapters.common import (
    Collector,
    Decoded,
    Field,
    Rejected,
    _json,
    _number,
    scalar,
    text_state,
)

_STEP = re.compile(r"([^.\[\]]+)|\[(\d{1,6})\]")
_MISSING = object()


def parse_path(path: str) -> list[str | int]:
    """``a.b[2].c`` -> ``["a", "b", 2, "c"]``; ValueError for a path that is not one."""
    steps: list[str | int] = []
    pos = 0
    while pos < len(path):
        if path[pos] == "." and steps and pos + 1 < len(path):
            pos += 1
        m = _STEP.match(path, pos)
        if m is None:
            raise ValueError(f"path {path!r} is not keys joined by '.' and [n] indexes")
        steps.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if not steps:
        raise ValueError("an empty path")
    return steps


def lookup(doc: Any, path: str) -> Any:
    """The value at ``path``, or ``_MISSING``."""
    x = doc
    for step in parse_path(path):
        if isinstance(step, int):
            if not isinstance(x, list) or step >= len(x):
                return _MISSING
            x = x[step]
        else:
            if not isinstance(x, dict) or step not in x:
                return _MISSING
            x = x[step]
    return x


def decode_json(device: str, payload: bytes, fields: tuple[Field, ...],
                time_path: str | None) -> Decoded:
    if not fields:
        raise Rejected("bad-route", "a json route with no fields")
    doc = _json(payload)
    t = None
    if time_path is not None:
        t = _time(lookup(doc, time_path), time_path)
    out = Collector(device)
    for f in fields:
        try:
            raw = lookup(doc, f.path)
            if raw is _MISSING:
                raise Rejected("missing", f"no value at {f.path}")
            value = _typed(scalar(raw, f.path), f.type, f.path)
            out.add(f.quantity, f.unit if isinstance(value, float) else None, t, value)
        except Rejected as exc:
            out.refuse(exc)
    return out.result("JSON")


def _typed(value: float | str | bool, kind: str | None, path: str) -> float | str | bool:
    """``value`` as the field's declared type: text "21.5" to a number, "true"/"ON" to a
    boolean, anything to its text; :class:`Rejected` when it does not convert."""
    if kind is None:
        return value
    if kind == "string":
        return value if isinstance(value, str) else str(value).lower() \
            if isinstance(value, bool) else f"{value:g}"
    if isinstance(value, str):
        return text_state(value.encode(), path, kind)
    if kind == "number" and isinstance(value, bool):
        raise Rejected("wrong-type", f"{path}: a boolean, not a number")
    if kind == "boolean" and not isinstance(value, bool):
        if value in (0.0, 1.0):
            return value == 1.0
        raise Rejected("wrong-type", f"{path}: {value:g} is not a boolean")
    return value


def _time(raw: Any, path: str) -> float | None:
    if raw is _MISSING:
        return None
    if isinstance(raw, str):
        try:
            when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise Rejected("bad-time", f"{path}: {raw[:30]!r} is not ISO 8601") from None
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    t = _number(raw, path)
    if not 0 <= t < 2**40:
        raise Rejected("bad-time", f"{path}: {t:g} is not Unix seconds")
    return t

"""TOML text from plain values: what the config modules' ``render_config`` functions write.

The reverse of ``tomllib.loads`` for the shapes Cairn's configs use: a document is a mapping of
keys to strings, booleans, integers, floats, lists of those, tables (mappings) and arrays of
tables (lists of mappings). ``None`` values, and tables holding only those, are left out (a
key not given takes its default).
Strings are TOML basic strings with every character TOML forbids raw escaped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["dumps"]

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def _string(text: str) -> str:
    out = []
    for c in text:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _key(key: str) -> str:
    bare = key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key)
    return key if bare else _string(key)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Sequence):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"no TOML value for {type(value).__name__}")


def _is_tables(value: object) -> bool:
    return (isinstance(value, Sequence) and not isinstance(value, str) and bool(value)
            and all(isinstance(v, Mapping) for v in value))


def _empty(value: object) -> bool:
    return value is None or (isinstance(value, Mapping) and all(map(_empty, value.values())))


def _table(doc: Mapping[str, Any], path: list[str], out: list[str]) -> None:
    for key, value in doc.items():
        if value is not None and not isinstance(value, Mapping) and not _is_tables(value):
            out.append(f"{_key(key)} = {_value(value)}")
    for key, value in doc.items():
        name = [*path, _key(key)]
        if isinstance(value, Mapping) and not _empty(value):
            out.append(f"\n[{'.'.join(name)}]")
            _table(value, name, out)
        elif _is_tables(value):
            for item in value:
                out.append(f"\n[[{'.'.join(name)}]]")
                _table(item, name, out)


def dumps(doc: Mapping[str, Any]) -> str:
    """``doc`` as TOML text that ``tomllib.loads`` reads back to ``doc`` (``None``s left out)."""
    out: list[str] = []
    _table(doc, [], out)
    return "\n".join(out).lstrip("\n") + "\n"

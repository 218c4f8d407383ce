"""Checks shared by the TOML configurations of the edge agent and the gateway.

Every value from a config file is input: these helpers refuse it with a :class:`ConfigError`
that names the key and what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from cairn.errors import UsageError

__all__ = ["ConfigError", "array_of_tables", "hex_keys", "hostport", "load"]

T = TypeVar("T")


class ConfigError(UsageError, ValueError):
    """A configuration that cannot be used: names the key and what is wrong."""


def hostport(text: object, where: str, *, allow_zero: bool = False) -> tuple[str, int]:
    """``"host:port"`` as (host, port); port 0 (any free port) only with ``allow_zero``."""
    host, sep, port = str(text).rpartition(":")
    lowest = 0 if allow_zero else 1
    if not sep or not host or not port.isascii() or not port.isdigit() \
            or not lowest <= int(port) < 65536:
        raise ConfigError(f"{where}: {str(text)[:60]!r} is not host:port")
    return host, int(port)


def hex_keys(values: Iterable[object], where: str, what: str = "key") -> tuple[bytes, ...]:
    """32-byte keys written as 64 hex digits each."""
    keys = []
    for v in values:
        try:
            key = bytes.fromhex(v) if isinstance(v, str) else b""
        except ValueError:
            key = b""
        if len(key) != 32:
            raise ConfigError(f"{where}: {str(v)[:70]!r} is not a 64-hex-digit {what}")
        keys.append(key)
    return tuple(keys)


def array_of_tables(doc: dict[str, Any], key: str, source: str
                    ) -> list[tuple[str, dict[str, Any]]]:
    """The tables of ``[[key]]``, each with where it is (``[[key]] 2``) for error messages."""
    raw = doc.get(key, [])
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: {key} must be an array of tables ([[{key}]])")
    out = []
    for k, table in enumerate(raw):
        where = f"[[{key}]] {k + 1}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table")
        out.append((where, table))
    return out


def load(path: str | Path, parse: Callable[[str, Path, str], T]) -> T:
    """Read a config file and parse it; relative paths in it count from its directory."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config {p}: {exc}") from None
    return parse(text, p.resolve().parent, str(p))

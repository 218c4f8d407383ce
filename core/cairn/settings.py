"""The one config dialect of the edge agent and the gateway (their ``config.py`` modules).

A config is TOML read with ``tomllib`` (:func:`parse_toml`) into a frozen dataclass. Each
table is a :class:`Table`: its known keys (any other key is refused by name, with the list of
allowed ones) and typed getters (:meth:`Table.text`, :meth:`Table.number`,
:meth:`Table.integer`, :meth:`Table.flag`, :meth:`Table.array`, :meth:`Table.path`), each
refusing a value of the wrong type or range with a :class:`ConfigError` that names the dotted
key (``[collect].interval``) and what is wrong. :func:`hostport`, :func:`hex_keys` and
:func:`array_of_tables` check the shapes both configs share; :func:`load` reads a file.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from cairn.errors import UsageError

__all__ = ["ConfigError", "Table", "array_of_tables", "hex_keys", "hostport", "load",
           "parse_toml"]

T = TypeVar("T")


class ConfigError(UsageError, ValueError):
    """A configuration that cannot be used: names the key and what is wrong."""


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """The document of a config's text; :class:`ConfigError` naming ``source`` if not TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None


class Table:
    """One table of a config: refuses keys not in ``known`` when made; typed getters.

    ``where`` names the table in messages: ``[mqtt]``, ``[[topic]] 2``, or the file for the
    top-level table (whose keys are then named alone: ``data_dir``).
    """

    __slots__ = ("data", "top", "where")

    #: How :meth:`number` words a refusal: ``'x' is not a number in [lo, hi]`` (the gateway's
    #: wording), or, when true, ``expected an integer or a number, got text`` for the wrong
    #: type and ``x is outside [lo, hi]`` for the wrong value (the edge's). Both are pinned by
    #: the apps' tests and kept as they were.
    says_outside: ClassVar[bool] = False

    def __init__(self, data: Mapping[str, Any], where: str, known: Iterable[str], *,
                 top: bool = False) -> None:
        allowed = set(known)
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} "
                              f"(allowed: {', '.join(sorted(allowed))})")
        self.data, self.where, self.top = data, where, top

    @classmethod
    def of(cls, doc: Mapping[str, Any], name: str, known: Iterable[str], source: str) -> Table:
        """The table ``[name]`` of ``doc`` (empty if absent)."""
        data = doc.get(name, {})
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        return cls(data, f"[{name}]", known)

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def key(self, key: str) -> str:
        """The key as messages name it: ``[table].key``."""
        return key if self.top else f"{self.where}.{key}"

    def _typed(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        if key not in self.data:
            return default
        v = self.data[key]
        if isinstance(v, bool) and kind is not bool:
            raise ConfigError(f"{self.key(key)}: expected {_kind(kind)}, got a boolean")
        if not isinstance(v, kind):
            raise ConfigError(f"{self.key(key)}: expected {_kind(kind)}, "
                              f"got {type(v).__name__}")
        return v

    def text(self, key: str, default: str | None = None) -> Any:
        """A string (``default`` if absent)."""
        return self._typed(key, str, default)

    def array(self, key: str, default: list[Any] | None = None, *,
              what: str | None = None) -> list[Any]:
        """A list (``default``, else empty, if absent); ``what`` says what it should hold
        when it is not a list (``a list of "host:port"``)."""
        if what is not None and not isinstance(self.data.get(key, []), list):
            raise ConfigError(f"{self.key(key)}: {what}")
        got = self._typed(key, list, [] if default is None else default)
        assert isinstance(got, list)
        return got

    def number(self, key: str, default: float, lo: float, hi: float) -> float:
        """An integer or a float in [lo, hi], as a float."""
        if self.says_outside:
            v = self._typed(key, (int, float), default)
            if not math.isfinite(v) or not lo <= v <= hi:
                raise ConfigError(f"{self.key(key)}: {v!r} is outside [{lo:g}, {hi:g}]")
            return float(v)
        v = self.data.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                or not lo <= v <= hi:
            raise ConfigError(f"{self.key(key)}: {v!r} is not a number in [{lo:g}, {hi:g}]")
        return float(v)

    def integer(self, key: str, default: int, lo: int, hi: int) -> int:
        """An integer (not a float, not a boolean) in [lo, hi]."""
        v = self.data.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ConfigError(f"{self.key(key)}: {v!r} is not an integer in [{lo}, {hi}]")
        return v

    def flag(self, key: str, default: bool) -> bool:
        """``true`` or ``false`` (not 1, not "yes")."""
        v = self.data.get(key, default)
        if type(v) is not bool:
            raise ConfigError(f"{self.key(key)}: {v!r} is not true or false")
        return v

    def path(self, key: str, default: str | None, base: Path) -> Path | None:
        """A non-empty path, relative ones counted from ``base`` (None if absent and no
        ``default``)."""
        v = self.data.get(key, default)
        if v is None:
            return None
        if not isinstance(v, str) or not v:
            raise ConfigError(f"{self.key(key)}: expected a path")
        p = Path(v)
        return p if p.is_absolute() else base / p


def _kind(kind: type | tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "text", list: "a list", bool: "true/false"}
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


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

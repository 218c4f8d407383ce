"""What Grafana does to a dashboard's SQL before PostgreSQL sees it, for the tests that run the
dashboards' queries against a real server (Grafana itself cannot be installed here).

Three steps, in Grafana's order:

1. **Template variables** (the browser, ``SqlDatasource.interpolateVariable`` in
   ``public/app/features/plugins/sql/datasource/SqlDatasource.ts``): ``$name``, ``${name}`` and
   ``${name:text}`` are replaced by the variable's value; a single-value string has each ``'``
   doubled (so ``'$device'`` stays one SQL string whatever the value holds).
2. **Global substitutions** (the server, ``sqleng.Interpolate`` in
   ``pkg/tsdb/grafana-postgresql-datasource/sqleng/sql_engine.go``): ``$__interval_ms`` (the
   interval in milliseconds), then ``$__interval`` (``gtime.FormatInterval``: the largest whole
   unit of y, d, h, m, s, ms), ``$__unixEpochFrom()`` and ``$__unixEpochTo()`` (whole seconds).
3. **Macros** (``pkg/tsdb/grafana-postgresql-datasource/macros.go``): every
   ``$__name(args)`` matched by ``\\$([_a-zA-Z0-9]+)\\(([^\\)]*)\\)``, arguments split on commas
   and trimmed of spaces; the PostgreSQL data source's documentation lists them
   (https://grafana.com/docs/grafana/latest/datasources/postgres/query-editor/, "Macros"):
   ``$__time(c)`` -> ``c AS "time"``; ``$__timeEpoch(c)`` -> ``extract(epoch from c) as "time"``;
   ``$__timeFilter(c)`` -> ``c BETWEEN '<from>' AND '<to>'`` (RFC 3339, UTC);
   ``$__timeFrom()`` / ``$__timeTo()``; ``$__timeGroup(c, '5m')`` ->
   ``floor(extract(epoch from c)/300)*300`` (``AS "time"`` added by the Alias form, or when a
   comma follows, for Grafana 5.2 dashboards); ``$__unixEpochFilter(c)`` ->
   ``c >= <from s> AND c <= <to s>``; ``$__unixEpochGroup(c, '5m')`` -> ``floor((c)/300)*300``
   (and its Alias form). Seconds are printed as Go's ``%v`` prints a float64 (``300``, ``0.5``).

Interval arguments are read as ``gtime.ParseInterval`` reads them (``10s``, ``5m``, ``1h``,
``1d``, ``1w``; Go durations otherwise).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["GrafanaQuery", "expand", "format_interval", "go_float", "macros", "parse_interval",
           "rfc3339nano", "template"]

_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")
_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
             "h": 3600.0}


@dataclass(frozen=True, slots=True)
class GrafanaQuery:
    """A panel's time range (UTC, millisecond precision as the browser sends it) and
    interval."""

    start: datetime
    end: datetime
    interval_ms: int


def go_float(x: float) -> str:
    """A float64 as Go's ``%v`` prints it (shortest form; an exponent only from 1e21)."""
    if x == int(x) and abs(x) < 1e21:
        return str(int(x))
    return repr(x)


def rfc3339nano(t: datetime) -> str:
    """Go's ``time.RFC3339Nano`` of a UTC time: trailing zeros of the fraction dropped."""
    base = t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{t.microsecond:06d}".rstrip("0")
    return f"{base}.{frac}Z" if frac else f"{base}Z"


def _unix(t: datetime) -> int:
    """Go's ``Time.Unix()``: whole seconds, rounded down."""
    return int((t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(seconds=1))


def format_interval(ms: int) -> str:
    """``gtime.FormatInterval``: the largest whole unit."""
    for unit, size in (("y", 365 * 86_400_000), ("d", 86_400_000), ("h", 3_600_000),
                       ("m", 60_000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            return f"{ms // size}{unit}"
    return "1ms"


def parse_interval(text: str) -> float:
    """``gtime.ParseInterval`` (seconds): ``<n>d`` and ``<n>w`` as days and weeks, anything
    else a Go duration (``90s``, ``1h30m``, ``500ms``)."""
    m = re.fullmatch(r"(\d+)([dw])", text)
    if m:
        return int(m.group(1)) * (86_400.0 if m.group(2) == "d" else 604_800.0)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"error parsing interval {text}")
    return sum(float(n) * _GO_UNITS[u] for n, u in parts)


def template(sql: str, variables: Mapping[str, tuple[str, str]]) -> str:
    """Step 1: dashboard variables (name -> (value, text)); Grafana's own ``$__`` names are
    left for the server. An unknown variable is an error (Grafana would leave it in place)."""

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        if name.startswith("__"):
            return m.group(0)
        if name not in variables:
            raise KeyError(f"unknown template variable ${name} in {sql!r}")
        value, text = variables[name]
        return (text if m.group(2) == "text" else value).replace("'", "''")

    return _VARIABLE.sub(one, sql)


def _global(sql: str, q: GrafanaQuery) -> str:
    """Step 2: ``sqleng.Interpolate``."""
    sql = sql.replace("$__interval_ms", str(q.interval_ms))
    sql = sql.replace("$__interval", format_interval(q.interval_ms))
    sql = sql.replace("$__unixEpochFrom()", str(_unix(q.start)))
    return sql.replace("$__unixEpochTo()", str(_unix(q.end)))


def _macro(name: str, args: list[str], q: GrafanaQuery) -> str:
    if name in ("__time", "__timeEpoch", "__timeFilter", "__unixEpochFilter") and not args[0]:
        raise ValueError(f"missing time column argument for macro {name}")
    if name == "__time":
        return f'{args[0]} AS "time"'
    if name == "__timeEpoch":
        return f'extract(epoch from {args[0]}) as "time"'
    if name == "__timeFilter":
        return f"{args[0]} BETWEEN '{rfc3339nano(q.start)}' AND '{rfc3339nano(q.end)}'"
    if name == "__timeFrom":
        return f"'{rfc3339nano(q.start)}'"
    if name == "__timeTo":
        return f"'{rfc3339nano(q.end)}'"
    if name == "__unixEpochFilter":
        return f"{args[0]} >= {_unix(q.start)} AND {args[0]} <= {_unix(q.end)}"
    if name in ("__timeGroup", "__timeGroupAlias", "__unixEpochGroup", "__unixEpochGroupAlias"):
        if len(args) < 2:
            raise ValueError(f"macro {name} needs time column and interval")
        if len(args) == 3:
            raise NotImplementedError("fill modes: Cairn's dashboards use none")
        s = go_float(parse_interval(args[1].strip("'")))
        if name.startswith("__timeGroup"):
            out = f"floor(extract(epoch from {args[0]})/{s})*{s}"
        else:
            out = f"floor(({args[0]})/{s})*{s}"
        return out + (' AS "time"' if name.endswith("Alias") else "")
    raise ValueError(f"unknown macro {name!r}")


def macros(sql: str, q: GrafanaQuery) -> str:
    """Step 3: the PostgreSQL macro engine."""

    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        if name == "__timeGroup":  # the 5.2 form: a comma right after the call adds the alias
            at = sql.find(m.group(0))
            if at >= 0 and sql[at + len(m.group(0)):at + len(m.group(0)) + 1] == ",":
                name = "__timeGroupAlias"
        return _macro(name, [a.strip(" ") for a in m.group(2).split(",")], q)

    return _MACRO.sub(one, sql)


def expand(sql: str, q: GrafanaQuery, variables: Mapping[str, tuple[str, str]]) -> str:
    """The SQL Grafana's PostgreSQL data source sends for a panel's ``rawSql``."""
    return macros(_global(template(sql, variables), q), q)

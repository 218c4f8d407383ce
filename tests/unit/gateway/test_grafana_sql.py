"""The stand-in for Grafana's SQL expansion (:mod:`tests.grafana_sql`) gives what Grafana's own
tests expect of its PostgreSQL macro engine (``macros_test.go`` in
``pkg/tsdb/grafana-postgresql-datasource``, and ``gtime`` for intervals), so the dashboard
tests run the SQL Grafana would run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.grafana_sql import (
    GrafanaQuery,
    expand,
    format_interval,
    go_float,
    macros,
    parse_interval,
    rfc3339nano,
    template,
)

FROM = datetime(2018, 4, 12, 18, 0, tzinfo=UTC)
Q = GrafanaQuery(FROM, FROM + timedelta(minutes=5), 60_000)


@pytest.mark.parametrize(("sql", "want"), [
    ("select $__time(time_column)", 'select time_column AS "time"'),
    ("select min($__time(time_column))", 'select min(time_column AS "time")'),
    ("WHERE $__timeFilter(time_column)",
     "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'"),
    ("select $__timeFrom()", "select '2018-04-12T18:00:00Z'"),
    ("select $__timeTo()", "select '2018-04-12T18:05:00Z'"),
    ("SELECT $__timeGroup(time_column,'5m'), value",
     'SELECT floor(extract(epoch from time_column)/300)*300 AS "time", value'),
    ("SELECT $__timeGroup(time_column,'5m') as time, value",
     "SELECT floor(extract(epoch from time_column)/300)*300 as time, value"),
    ("SELECT $__timeGroupAlias(time_column,'5m')",
     'SELECT floor(extract(epoch from time_column)/300)*300 AS "time"'),
    ("$__timeGroup(time_column , '5m')", "floor(extract(epoch from time_column)/300)*300"),
    ("select $__unixEpochFilter(time)", "select time >= 1523556000 AND time <= 1523556300"),
    ("SELECT $__unixEpochGroup(time_column+time_adjustment,'5m')",
     "SELECT floor((time_column+time_adjustment)/300)*300"),
    ("SELECT $__unixEpochGroupAlias(time_column+time_adjustment,'5m')",
     'SELECT floor((time_column+time_adjustment)/300)*300 AS "time"'),
])
def test_grafanas_own_expectations(sql: str, want: str) -> None:
    assert macros(sql, Q) == want


def test_times_before_1970_and_fractions_of_a_second() -> None:
    q = GrafanaQuery(datetime(1960, 2, 1, 7, 0, 0, 500_000, tzinfo=UTC),
                     datetime(1980, 2, 3, 8, 0, 0, 500_000, tzinfo=UTC), 1000)
    assert rfc3339nano(q.start) == "1960-02-01T07:00:00.5Z"
    assert macros("$__unixEpochFilter(t)", q) == "t >= -312915600 AND t <= 318412800"  # Go floors


def test_intervals_as_gtime_formats_and_parses_them() -> None:
    assert [format_interval(ms) for ms in (20, 1500, 60_000, 90_000, 7_200_000, 86_400_000,
                                           400 * 86_400_000)] == \
        ["20ms", "1s", "1m", "1m", "2h", "1d", "1y"]
    assert [parse_interval(x) for x in ("20ms", "30s", "5m", "1h", "1h30m", "2d", "1w")] == \
        [0.02, 30.0, 300.0, 3600.0, 5400.0, 172_800.0, 604_800.0]
    assert [go_float(x) for x in (300.0, 0.02, 86_400.0)] == ["300", "0.02", "86400"]
    with pytest.raises(ValueError, match="error parsing interval"):
        parse_interval("5 minutes")


def test_interval_then_macros_then_variables_quoted() -> None:
    sql = ("SELECT $__unixEpochGroupAlias(b, $__interval), $__interval_ms FROM r "
           "WHERE id::text = '$stream' AND $__unixEpochFrom() < $__unixEpochTo() "
           "-- ${stream:text}")
    out = expand(sql, GrafanaQuery(FROM, FROM + timedelta(hours=1), 300_000),
                 {"stream": ("7' OR '1'='1", "o'clock")})
    assert out == ('SELECT floor((b)/300)*300 AS "time", 300000 FROM r '
                   "WHERE id::text = '7'' OR ''1''=''1' AND 1523556000 < 1523559600 "
                   "-- o''clock")


def test_an_unknown_variable_or_macro_is_an_error() -> None:
    with pytest.raises(KeyError, match="nope"):
        template("SELECT '$nope'", {})
    with pytest.raises(ValueError, match="unknown macro"):
        macros("SELECT $__nope(x)", Q)

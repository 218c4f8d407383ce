"""The PostgreSQL dashboards (deploy/grafana/dashboards-postgres) against a real PostgreSQL
server holding a fleet ingested through the gateway's store.

Every query of every panel and template variable is expanded as Grafana's PostgreSQL data
source expands it (:mod:`tests.grafana_sql`: the template variables as the browser substitutes
them, then ``sqleng.Interpolate`` and the macro engine of
``pkg/tsdb/grafana-postgresql-datasource/macros.go``, as documented at
https://grafana.com/docs/grafana/latest/datasources/postgres/query-editor/), for several time
ranges and intervals and both values of the ``scope`` variable, and run. Each must return
what Grafana needs (a ``time`` column of a timestamp type for time series, numbers in the value
columns, the columns the panel shows) and the right values: a bucket's mean, min and max are
those of the samples ingested in it, a state bucket shows its last value, the latest table the
last sample, and data that is not verified (a removed device, a stopped stream, a device not
enrolled) shows only when asked for.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cairn.frames import Frame, Sample
from cairn_gateway.roster import Roster
from cairn_gateway.store import Store
from tests.grafana_sql import GrafanaQuery, expand
from tests.scorecard import record

ROOT = Path(__file__).resolve().parents[3] / "deploy" / "grafana"
DASHBOARDS = {p.stem: json.loads(p.read_text())
              for p in sorted((ROOT / "dashboards-postgres").glob("*.json"))}
T0 = 1_764_000_000.0  # a whole hour
HOURS = 3


@dataclass
class Stream:
    id: int
    name: str
    kind: str
    visible: bool  # shown when scope is "verified"
    samples: list[tuple[float, int, int, Any]] = field(default_factory=list)  # t, block, k, v


@dataclass
class Fleet:
    url: str
    streams: dict[str, Stream]
    devices: dict[str, int]


def _ingest(store: Store, sid: int, name: str, unit: str | None,
            points: list[tuple[float, Any]], per_block: int) -> list[tuple[float, int, int, Any]]:
    blocks = []
    rows = []
    for b, at in enumerate(range(0, len(points), per_block)):
        chunk = points[at:at + per_block]
        blocks.append((b, 0, Frame(tuple(Sample(name, unit, t, v) for t, v in chunk))))
        rows += [(t, b, k, v) for k, (t, v) in enumerate(chunk)]
    store.ingest(sid, blocks)
    return rows


def _build(store: Store) -> tuple[dict[str, Stream], dict[str, int]]:
    """Four devices: board-1 (enrolled: a number, a boolean and a string stream), board-2
    (enrolled, then removed), board-3 (enrolled, its stream stopped by a fork), and one never
    enrolled; seeded values over three hours, and board-1's battery a month or two before."""
    rng = random.Random(22)
    roster = Roster(store.conn)
    keys = {n: bytes([i + 1]) * 32 for i, n in enumerate(("board-1", "board-2", "board-3"))}
    for name, key in keys.items():
        roster.enroll(key, name, T0)
    stranger = store.device(b"\x09" * 32, None, T0)
    devices = {n: store.device(k, n, T0) for n, k in keys.items()}
    devices["unenrolled"] = stranger
    span = HOURS * 3600
    plan = [  # device, stream, unit, kind, every (s), samples per block, visible
        ("board-1", "board-1/temperature", "Cel", "number", 7, 5, True),
        ("board-1", "board-1/door", None, "boolean", 60, 3, True),
        ("board-1", "board-1/mode", None, "string", 45, 4, True),
        ("board-2", "board-2/temperature", "Cel", "number", 30, 2, False),
        ("board-3", "board-3/pressure", "hPa", "number", 20, 3, False),
        ("unenrolled", "stranger/temperature", "Cel", "number", 60, 1, False),
        ("board-1", "board-1/battery", "%", "number", -1, 2, True),  # months before
    ]
    streams: dict[str, Stream] = {}
    for n, (dev, name, unit, kind, every, per_block, visible) in enumerate(plan):
        sid = store.stream(devices[dev], name, bytes([0x40 + n]) * 32, unit)
        points: list[tuple[float, Any]] = []
        if every < 0:  # two months back and one: other partitions of samples
            points = [(T0 - d * 86_400 + 0.5, 90.0 - d / 10) for d in (61, 60, 31, 30, 29)]
        for i in range(span // every if every > 0 else 0):
            t = T0 + i * every + rng.choice((0.0, 0.25, 0.5))
            if kind == "number":
                points.append((t, round(20 + rng.gauss(0, 3), 3)))
            elif kind == "boolean":
                points.append((t, rng.random() < 0.4))
            else:
                points.append((t, rng.choice(("idle", "run", "it's off"))))
        stream = Stream(sid, name, kind, visible)
        stream.samples = _ingest(store, sid, name, unit, points, per_block)
        streams[name] = stream
    roster.remove("board-2", T0 + 1)
    store.stop(streams["board-3/pressure"].id, "fork: two signed trees of length 12 differ")
    store.set_missing(streams["board-1/temperature"].id, [(5, 8, "damaged")], T0)
    return streams, devices


@pytest.fixture
def fleet(pg_url: str) -> Fleet:
    """The fleet, ingested through the PostgreSQL store into a database of its own."""
    store = Store(pg_url)
    try:
        streams, devices = _build(store)
    finally:
        store.close()
    return Fleet(pg_url, streams, devices)


# -- running a dashboard's queries as Grafana would ---------------------------------------------

def _at(t: float) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=t)


#: (from, to, interval in ms): an aligned window at 1 min, a ragged one (a fraction of a second
#: at both ends) at 5 min, a wider one at 1 h (the hour rollups), two days at 1 d
RANGES = [
    GrafanaQuery(_at(T0), _at(T0 + 3 * 3600), 60_000),
    GrafanaQuery(_at(T0 + 600.5), _at(T0 + 7199.75), 300_000),
    GrafanaQuery(_at(T0 - 3600), _at(T0 + 4 * 3600), 3_600_000),
    GrafanaQuery(_at(T0 - 86_400), _at(T0 + 86_400), 86_400_000),
]


def _run(url: str, sql: str) -> tuple[list[str], list[int], list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(sql.encode())
        assert cur.description is not None
        names = [d.name for d in cur.description]
        types = [d.type_code for d in cur.description]
        return names, types, cur.fetchall()


def _targets(dash: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(where, rawSql, format) of every panel target and every query variable."""
    out = [(f"{dash['uid']}/{p['title']}", t["rawSql"], t["format"])
           for p in dash["panels"] for t in p["targets"]]
    out += [(f"{dash['uid']}/${v['name']}", v["query"], "table")
            for v in dash["templating"]["list"] if v["type"] == "query"]
    return out


def _variables(fleet: Fleet, scope: str, stream: str = "board-1/temperature",
               state: str = "board-1/door", device: str = "board-1") -> dict[str, tuple[str, str]]:
    s, st = fleet.streams[stream], fleet.streams[state]
    return {"scope": (scope, scope), "device": (str(fleet.devices[device]), device),
            "stream": (str(s.id), s.name), "state": (str(st.id), st.name)}


TIMESTAMPTZ, TIMESTAMP = 1184, 1114
NUMERIC_TYPES = {20, 21, 23, 700, 701, 1700}  # int8, int2, int4, float4, float8, numeric


def test_every_query_of_every_dashboard_runs_and_gives_grafana_its_columns(fleet: Fleet) -> None:
    ran = 0
    for dash in DASHBOARDS.values():
        for where, raw, fmt in _targets(dash):
            for q in RANGES:
                for scope in ("verified", "all"):
                    sql = expand(raw, q, _variables(fleet, scope))
                    names, types, rows = _run(fleet.url, sql)
                    ran += 1
                    if fmt == "time_series":
                        assert names[0] == "time" and types[0] == TIMESTAMPTZ, (where, names)
                        assert all(t in NUMERIC_TYPES for t in types[1:]), (where, types)
                        times = [r[0] for r in rows]
                        assert times == sorted(times), f"{where}: not sorted by time"
                    if "time" in names:
                        assert types[names.index("time")] in (TIMESTAMPTZ, TIMESTAMP), where
                    if where.endswith(("$device", "$stream", "$state")):
                        assert names == ["__text", "__value"], (where, names)
    assert ran == 4 * 2 * sum(len(_targets(d)) for d in DASHBOARDS.values())


def _panel(dash: str, title_start: str) -> str:
    [sql] = [t["rawSql"] for p in DASHBOARDS[dash]["panels"] if p["title"].startswith(title_start)
             for t in p["targets"]]
    return str(sql)


def _expected_series(stream: Stream, q: GrafanaQuery) -> list[tuple[float, float, float, float]]:
    """Buckets of the interval from the rollups' buckets that start in the window (minute
    buckets, hour buckets for whole hours), each with the mean, min and max of its samples."""
    step = q.interval_ms // 1000
    width = 3600 if step % 3600 == 0 else 60
    lo, hi = math.floor(q.start.timestamp()), math.floor(q.end.timestamp())
    groups: dict[int, list[float]] = defaultdict(list)
    for t, _, _, v in stream.samples:
        bucket = int(t // width) * width
        if lo <= bucket <= hi:
            groups[bucket // step * step].append(float(v))
    return [(float(b), sum(vs) / len(vs), min(vs), max(vs)) for b, vs in sorted(groups.items())]


@pytest.mark.parametrize("q", RANGES, ids=["1m", "5m-ragged", "1h", "1d"])
def test_a_bucket_holds_the_mean_min_and_max_of_the_samples_ingested_in_it(
        fleet: Fleet, q: GrafanaQuery) -> None:
    stream = fleet.streams["board-1/temperature"]
    sql = expand(_panel("device-detail", "${stream:text}"), q, _variables(fleet, "verified"))
    _, _, rows = _run(fleet.url, sql)
    got = [(r[0].timestamp(), float(r[1]), float(r[2]), float(r[3])) for r in rows]
    want = _expected_series(stream, q)
    assert len(got) == len(want) and want
    for g, w in zip(got, want, strict=True):
        assert g[0] == w[0] and g[2:] == w[2:]
        assert math.isclose(g[1], w[1], rel_tol=1e-12), (g, w)


def _shown(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return v if isinstance(v, str) else repr(float(v))


@pytest.mark.parametrize("q", RANGES[:3], ids=["1m", "5m-ragged", "1h"])
@pytest.mark.parametrize("name", ["board-1/door", "board-1/mode"])
def test_the_state_timeline_shows_the_last_value_of_each_bucket(
        fleet: Fleet, q: GrafanaQuery, name: str) -> None:
    stream = fleet.streams[name]
    sql = expand(_panel("device-detail", "${state:text}"), q,
                 _variables(fleet, "verified", state=name))
    _, _, rows = _run(fleet.url, sql)
    step = q.interval_ms / 1000
    lo, hi = math.floor(q.start.timestamp()), math.floor(q.end.timestamp())
    last: dict[float, tuple[tuple[float, int, int], Any]] = {}
    for t, b, k, v in stream.samples:
        if lo <= t <= hi:
            bucket = math.floor(t / step) * step
            if bucket not in last or (t, b, k) > last[bucket][0]:
                last[bucket] = ((t, b, k), v)
    assert rows and [(r[0].timestamp(), r[1]) for r in rows] == \
        [(b, _shown(v)) for b, (_, v) in sorted(last.items())]


def test_the_latest_table_shows_each_verified_streams_last_sample(fleet: Fleet) -> None:
    sql = _panel("fleet-overview", "Latest values")
    for scope in ("verified", "all"):
        names, _, rows = _run(fleet.url, expand(sql, RANGES[0], _variables(fleet, scope)))
        got = {r[names.index("stream")]: r for r in rows}
        want = {n for n, s in fleet.streams.items() if s.visible or scope == "all"}
        assert set(got) == want
        for n in want:
            s = fleet.streams[n]
            t, _, _, v = max(s.samples, key=lambda x: x[:3])
            row = dict(zip(names, got[n], strict=True))
            assert row["time"].timestamp() == t and row["value"] == _shown(v), n
            assert row["kind"] == s.kind and row["verified"] is s.visible


def test_samples_table_is_the_newest_thousand_of_the_window(fleet: Fleet) -> None:
    stream = fleet.streams["board-1/temperature"]
    q = RANGES[0]
    names, _, rows = _run(fleet.url, expand(_panel("device-detail", "Samples"), q,
                                            _variables(fleet, "verified")))
    assert names == ["time", "value", "block", "fork"]
    lo, hi = q.start.timestamp(), q.end.timestamp()
    want = sorted((x for x in stream.samples if lo <= x[0] <= hi), reverse=True)[:1000]
    assert len(rows) == 1000 and [(r[0].timestamp(), float(r[1]), r[2]) for r in rows] == \
        [(t, float(v), b) for t, b, _, v in want]


def test_counts_devices_and_integrity(fleet: Fleet) -> None:
    q = RANGES[1]
    lo, hi = math.floor(q.start.timestamp()), math.floor(q.end.timestamp())
    for scope in ("verified", "all"):
        v = _variables(fleet, scope)
        [[count]] = _run(fleet.url, expand(_panel("fleet-overview", "Samples stored"), q, v))[2]
        assert count == sum(1 for s in fleet.streams.values() if s.visible or scope == "all"
                            for t, *_ in s.samples if lo <= t <= hi)
        names, _, rows = _run(fleet.url, expand(_panel("fleet-overview", "Devices"), q, v))
        shown = {r[0] for r in rows}
        assert shown == ({"board-1", "board-3"} if scope == "verified"
                         else {"board-1", "board-2", "board-3", "unenrolled-090909090909"})
    [[stopped]] = _run(fleet.url, expand(_panel("data-integrity", "Streams stopped"), q, {}))[2]
    assert stopped == 1
    names, _, rows = _run(fleet.url, expand(_panel("data-integrity", "Streams: blocks"), q, {}))
    by = {r[names.index("stream")]: dict(zip(names, r, strict=True)) for r in rows}
    assert set(by) == set(fleet.streams)
    temp = by["board-1/temperature"]
    assert (temp["blocks_missing"], temp["missing"], temp["alert"]) == (3, "5..7 (damaged)", True)
    assert by["board-3/pressure"]["alert"] and by["board-3/pressure"]["status"].startswith("fork")
    assert not by["board-1/door"]["alert"] and by["board-1/door"]["missing"] is None
    [first, *_] = rows
    assert first[names.index("alert")] is True  # the streams that need a look come first
    wide = RANGES[3]
    total = sum(float(r[1]) for r in _run(fleet.url, expand(
        _panel("data-integrity", "Number and boolean"), wide, {}))[2])
    assert total == sum(1 for s in fleet.streams.values() if s.kind in ("number", "boolean")
                        for t, *_ in s.samples
                        if wide.start.timestamp() <= t // 3600 * 3600 <= wide.end.timestamp())


def test_variables_list_verified_devices_and_streams_by_kind(fleet: Fleet) -> None:
    dash = DASHBOARDS["device-detail"]
    sql = {v["name"]: v["query"] for v in dash["templating"]["list"] if v["type"] == "query"}
    q = RANGES[0]

    def listed(name: str, scope: str, device: str = "board-1") -> list[str]:
        return [r[0] for r in _run(fleet.url, expand(sql[name], q,
                                                     _variables(fleet, scope, device=device)))[2]]

    assert listed("device", "verified") == ["board-1", "board-3"]
    assert "board-2" in listed("device", "all")
    assert listed("stream", "verified") == ["board-1/battery", "board-1/temperature"]
    assert listed("state", "verified") == ["board-1/door", "board-1/mode"]
    assert listed("stream", "verified", device="board-2") == []
    assert listed("stream", "all", device="board-2") == ["board-2/temperature"]
    assert listed("stream", "verified", device="board-3") == []  # stopped


def test_hostile_variable_values_stay_inside_their_quotes(fleet: Fleet) -> None:
    """A variable's value is whatever the dashboard's URL says (var-stream=...): Grafana doubles
    its quotes, and every variable sits inside '...' compared as text, so a crafted value
    matches nothing and changes no statement."""
    crafted = ["1' OR '1'='1", "1'; DROP TABLE samples; --", "$__interval", "1) OR (1=1",
               "' UNION SELECT name, id FROM devices --", "\\'", "0x01", ""]
    tried = leaked = 0
    for dash in DASHBOARDS.values():
        for _, raw, _ in _targets(dash):
            if not any(f"${n}" in raw for n in ("stream", "state", "device")):
                continue
            for value in crafted:
                variables = dict.fromkeys(("stream", "state", "device"), (value, value))
                variables["scope"] = ("verified", "verified")
                _, _, rows = _run(fleet.url, expand(raw, RANGES[0], variables))
                tried += 1
                leaked += len(rows)
    _, _, [[n]] = _run(fleet.url, "SELECT count(*) FROM samples")
    line = record("grafana", "crafted values of the device and stream variables (quotes, "
                  "UNION, DROP) in every PostgreSQL dashboard query", tried, leaked,
                  "rows shown", detail=f"samples table intact ({n} rows)")
    assert line.passed and n == sum(len(s.samples) for s in fleet.streams.values())


def test_every_panel_says_why_its_macros_use_the_indexes() -> None:
    for dash in DASHBOARDS.values():
        assert "$__unixEpochFilter" in dash["description"]
        assert "index" in dash["description"]
        for p in dash["panels"]:
            for t in p["targets"]:
                assert "$__timeFilter" not in t["rawSql"], "a time filter no index covers"
                assert "--" not in t["rawSql"] and "/*" not in t["rawSql"]  # Grafana strips them
                if "samples" in t["rawSql"] or "rollup" in t["rawSql"]:
                    has_window = "$__unixEpochFilter" in t["rawSql"]
                    assert has_window or "LIMIT 1)" in t["rawSql"], p["title"]


def _scanned(plan: Any) -> set[str]:
    found = {plan["Relation Name"]} if "Relation Name" in plan else set()
    for sub in plan.get("Plans", []):
        found |= _scanned(sub)
    return found


def test_a_window_reads_only_the_sample_partitions_it_overlaps(fleet: Fleet) -> None:
    """$__unixEpochFilter compares the bare column with numbers: the planner prunes the
    partitions of ``samples`` outside the window (and uses the (stream_id, t) index inside)."""
    q = RANGES[1]  # 10 min past T0 to 2 h: November's partition only
    with psycopg.connect(fleet.url) as conn:
        parts = {r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'samples'::regclass")}
        bounds: dict[str, str] = dict(conn.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_class c "
            "WHERE c.relispartition AND c.relname = ANY(%s)", (sorted(parts),)).fetchall())
        for title in ("Samples", "${state:text}"):
            sql = expand(_panel("device-detail", title), q, _variables(fleet, "verified"))
            [[[plan]]] = conn.execute(f"EXPLAIN (FORMAT JSON) {sql}".encode()).fetchall()
            read = _scanned(plan["Plan"]) & parts
            assert read and len(read) < len(parts), (title, read)
            for name in read:
                lo, hi = (float(x) for x in re.findall(r"[-\d.]+", bounds[name]))  # FROM, TO
                assert lo < q.end.timestamp() and hi > q.start.timestamp(), name


def test_the_numbers_come_back_as_numbers(fleet: Fleet) -> None:
    """Grafana converts ``numeric`` to float; the mean's type stays a float (double)."""
    _, types, rows = _run(fleet.url, expand(_panel("device-detail", "${stream:text}"),
                                            RANGES[0], _variables(fleet, "verified")))
    assert types[1:] == [701, 701, 701] and rows
    assert not any(isinstance(x, Decimal) for r in rows for x in r[1:])


def test_the_read_only_role_of_the_docs_runs_every_query_and_writes_nothing(
        fleet: Fleet) -> None:
    """docs/gateway.md's GRANTs (run as written, for a role and database of this test) are
    enough for every query of every dashboard, and that role cannot change the store."""
    docs = (Path(__file__).resolve().parents[3] / "docs" / "gateway.md").read_text()
    grants = docs.split("Give Grafana a role")[1].split("```sql")[1].split("```")[0]
    dbname = fleet.url.rsplit("/", 1)[1]
    role = f"grafana_{dbname}"  # roles are the cluster's: one per test database
    with psycopg.connect(fleet.url, autocommit=True) as admin:
        admin.execute(grants.replace("cairn_grafana", role).replace("'<a long password>'", "'x'")
                      .replace("DATABASE cairn", f"DATABASE {dbname}").encode())
    url = fleet.url.replace("postgres@", f"{role}@")
    for dash in DASHBOARDS.values():
        for _, raw, _ in _targets(dash):
            _run(url, expand(raw, RANGES[0], _variables(fleet, "all")))
    with psycopg.connect(url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM samples")

"""Booleans and strings in the gateway (issue 20 item 2): stored in their kind (not dropped,
not coerced), rolled up only when numbers or booleans (share of true), served in their kind by
the API with the stream's kind; a stream that switches kind, two values at one time, control
characters; the m007 migration of a store that held samples before."""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlite_utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from sqlite_migrate import Migrations

from cairn.frames import Frame, Sample
from cairn_gateway import queries
from cairn_gateway.api import make_app
from cairn_gateway.roster import Roster
from cairn_gateway.store import KINDS, ROLLED_UP, Store, kind_code
from cairn_gateway.store import sqlite as store_module
from tests.scorecard import record

T0 = 1_764_000_000.0  # on a whole hour
HOSTILE = "\x00\x1b[31mred\x1b[0m\r\n\"}]\u202eevil\u0007"


def one(name: str, t: float, value: object, unit: str | None = None) -> Frame:
    return Frame((Sample(name, unit, t, value),))  # type: ignore[arg-type]


@pytest.fixture
def store(store_target: Callable[[str], str]) -> Iterator[Store]:
    s = Store(store_target("gw"))
    yield s
    s.close()


def stream(store: Store, name: str, key: int) -> int:
    dev = store.device(b"d" * 32, "board-1", T0)
    return store.stream(dev, name, bytes([key]) * 32)


def test_booleans_roll_up_as_the_share_of_true(store: Store) -> None:
    sid = stream(store, "board-1/door", 1)
    values = [True, False, True, True] * 30  # 2 minutes at 1 Hz
    blocks = [(k, 0, one("board-1/door", T0 + k, v)) for k, v in enumerate(values)]
    assert store.ingest(sid, blocks) == 120
    assert store.kind(sid) == "boolean"
    got = [v for _, v, _, _ in store.samples(sid, T0, T0 + 120)]
    assert got == values and all(type(v) is bool for v in got)
    minutes = store.rollup(sid, T0, T0 + 120, 60)
    assert [(r.n, r.mean, r.lo, r.hi) for r in minutes] == [(60, 0.75, 0.0, 1.0)] * 2


def test_strings_are_stored_and_not_rolled_up(store: Store) -> None:
    sid = stream(store, "board-1/mode", 2)
    modes = ["heat", "cool", "off"]
    blocks = [(k, 0, one("board-1/mode", T0 + 20 * k, modes[k % 3])) for k in range(9)]
    assert store.ingest(sid, blocks) == 9
    assert store.kind(sid) == "string"
    assert store.rollup(sid, T0, T0 + 3600, 60) == []
    buckets = queries.states(store.conn, sid, T0, T0 + 3600, 60)
    assert [(b.time, b.n, b.last) for b in buckets] == [
        (int(T0), 3, "off"), (int(T0) + 60, 3, "off"), (int(T0) + 120, 3, "off")]
    # data (SenML vd) is kept too: hex, kind data
    did = stream(store, "board-1/blob", 3)
    store.ingest(did, [(0, 0, one("board-1/blob", T0, b"\x00\xff"))])
    assert store.kind(did) == "data"
    assert [(x.value, x.kind) for x in queries.samples(store.conn, did, T0, T0 + 1)] \
        == [("00ff", "data")]


def test_a_stream_that_switches_kind_loses_nothing_and_rolls_up_its_own(store: Store) -> None:
    """An edge that does not fix kinds (an old one, a JS writer, a hostile one): every sample
    stored in its own kind, only the stream's kind rolled up, the others counted."""
    sid = stream(store, "board-1/x", 4)
    values: list[object] = [20.0, True, "open", 22.0, b"\x01", False, 24.0]
    blocks = [(k, 0, one("board-1/x", T0 + k, v)) for k, v in enumerate(values)]
    assert store.ingest(sid, blocks) == len(values)
    assert store.kind(sid) == "number" and store.other_kind(sid) == 4
    rows = queries.samples(store.conn, sid, T0, T0 + 60)
    assert [x.kind for x in rows] == ["number", "boolean", "string", "number", "data",
                                      "boolean", "number"]
    assert [x.value for x in rows] == [20.0, True, "open", 22.0, "01", False, 24.0]
    [minute] = store.rollup(sid, T0, T0 + 60, 60)
    assert (minute.n, minute.mean, minute.lo, minute.hi) == (3, 22.0, 20.0, 24.0)
    record("storage", "a stream whose samples switch kind (number, bool, string, data)",
           len(values), len(values) - len(rows), "samples lost",
           detail="other kinds stored, not rolled up, counted in other_kind")


def test_the_latest_of_two_values_at_one_time_is_one_row(store: Store) -> None:
    sid = stream(store, "board-1/t", 5)
    store.ingest(sid, [(0, 0, Frame((Sample("board-1/t", None, T0, 1.0),
                                     Sample("board-1/t", None, T0, 2.0))))])
    store.ingest(sid, [(1, 0, one("board-1/t", T0, 3.0))])
    [row] = queries.latest(store.conn)
    assert (row.value, row.kind, row.stream_kind) == (3.0, "number", "number")
    assert len(queries.samples(store.conn, sid, T0, T0 + 1)) == 3


def test_m007_migrates_an_older_store(tmp_path: Path) -> None:
    db = sqlite_utils.Database(sqlite3.connect(tmp_path / "old.db"))
    before = Migrations("cairn-gateway")  # the migrations a gateway before m007 had
    for m in ("m001_initial", "m002_samples_at_the_same_time", "m003_fleet_roster",
              "m004_stream_problems", "m005_missing_blocks", "m006_finite_rollups"):
        before()(getattr(store_module, m))
    before.apply(db)
    db.execute("INSERT INTO devices (id, record_key, name, first_seen, last_seen) "
               "VALUES (1, ?, 'b', 0, 0)", [b"d" * 32])
    for sid, name in ((1, "b/t"), (2, "b/mode"), (3, "b/empty")):
        db.execute("INSERT INTO streams (id, device_id, name, log_key) VALUES (?, 1, ?, ?)",
                   [sid, name, bytes([sid]) * 32])
    db.execute("INSERT INTO samples (stream_id, t, value, text, block, fork, k) VALUES "
               "(1, ?, 20.5, NULL, 0, 0, 0), (2, ?, NULL, 'open', 0, 0, 0), "
               "(2, ?, 1.0, NULL, 1, 0, 0)", [T0, T0, T0 + 1])
    db.conn.commit()
    db.conn.close()
    s = Store(tmp_path / "old.db")
    try:
        assert [s.kind(i) for i in (1, 2, 3)] == ["number", "string", None]
        assert [s.other_kind(i) for i in (1, 2, 3)] == [0, 1, 0]
        assert s.samples(2, T0, T0 + 2) == [(T0, "open", 0, 0), (T0 + 1, 1.0, 1, 0)]
        assert s.ingest(3, [(0, 0, one("b/empty", T0, True))]) == 1
        assert s.kind(3) == "boolean"
    finally:
        s.close()


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    store = Store(tmp_path / "gw.db")
    Roster(store.conn).enroll(b"d" * 32, "board-1", T0)
    dev = store.device(b"d" * 32, None, T0)
    temp = store.stream(dev, "board-1/temperature", b"t" * 32, "Cel")
    store.ingest(temp, [(k, 0, one("board-1/temperature", T0 + 60 * k, 20.0 + k, "Cel"))
                        for k in range(3)])
    door = store.stream(dev, "board-1/door", b"d" * 32)
    store.ingest(door, [(k, 0, one("board-1/door", T0 + 30 * k, k % 2 == 0))
                        for k in range(4)])
    mode = store.stream(dev, "board-1/mode", b"m" * 32)
    store.ingest(mode, [(0, 0, one("board-1/mode", T0, "heat")),
                        (1, 0, one("board-1/mode", T0 + 90, HOSTILE))])
    transport = httpx.ASGITransport(app=make_app(store))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        yield c
    store.close()


async def test_the_api_serves_each_value_in_its_kind(client: httpx.AsyncClient) -> None:
    latest = {x["name"]: (x["value"], x["kind"], x["stream_kind"])
              for x in (await client.get("/api/latest")).json()}
    assert latest == {"board-1/temperature": (22.0, "number", "number"),
                      "board-1/door": (False, "boolean", "boolean"),
                      "board-1/mode": (HOSTILE, "string", "string")}
    streams = (await client.get("/api/streams")).json()
    assert {s["name"]: s["kind"] for s in streams} == {
        "board-1/temperature": "number", "board-1/door": "boolean", "board-1/mode": "string"}
    states = (await client.get("/api/streams", params={"kind": "boolean,string"})).json()
    assert [s["name"] for s in states] == ["board-1/door", "board-1/mode"]
    r = await client.get("/api/streams", params={"kind": "number,colour"})
    assert r.status_code == 400 and "colour" in r.text
    door = next(s["id"] for s in states)
    got = (await client.get("/api/samples", params={"stream": door, "from": T0,
                                                     "to": T0 + 120})).json()
    assert [(x["value"], x["kind"], x["stream_kind"]) for x in got] == [
        (True, "boolean", "boolean"), (False, "boolean", "boolean"),
        (True, "boolean", "boolean"), (False, "boolean", "boolean")]
    ups = (await client.get("/api/rollups", params={"stream": door, "from": T0,
                                                     "to": T0 + 120, "step": 60})).json()
    assert [(u["n"], u["mean"], u["kind"]) for u in ups] == [(2, 0.5, "boolean")] * 2


async def test_strings_are_shown_safely(client: httpx.AsyncClient) -> None:
    """Control characters, quotes and bidi overrides come back exactly, JSON-escaped: the raw
    response holds no control byte, and no value breaks out of its field."""
    mode = next(s["id"] for s in (await client.get("/api/streams")).json()
                if s["name"] == "board-1/mode")
    for path, params in (("/api/latest", {}),
                         ("/api/samples", {"stream": mode, "from": T0, "to": T0 + 120}),
                         ("/api/rollups", {"stream": mode, "from": T0, "to": T0 + 120})):
        r = await client.get(path, params=params)
        assert r.status_code == 200
        assert not any(b < 0x20 for b in r.content), path
        assert HOSTILE in [x.get("value", x.get("last")) for x in r.json()], path
    ups = (await client.get("/api/rollups", params={"stream": mode, "from": T0,
                                                     "to": T0 + 120, "step": 60})).json()
    assert [(u["n"], u["last"], u["mean"], u["kind"]) for u in ups] == [
        (1, "heat", None, "string"), (1, HOSTILE, None, "string")]
    metrics = (await client.get("/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    latest = {s.labels["stream"]: s.value for name in ("cairn_gateway_latest",
                                                       "cairn_gateway_latest_celsius")
              for s in families[name].samples}
    assert latest == {"board-1/temperature": 22.0, "board-1/door": 0.0}  # no string
    record("api", "string values with control characters, quotes, bidi overrides", 3, 0,
           "raw control bytes served", detail="JSON-escaped; strings never in /metrics")


_VALUES = st.one_of(st.floats(-1e6, 1e6), st.booleans(), st.text(max_size=5),
                    st.binary(max_size=3))


@settings(max_examples=50, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.tuples(st.integers(0, 179), _VALUES), min_size=1, max_size=5),
                min_size=1, max_size=8))
def test_every_sample_is_kept_in_its_kind_and_only_the_streams_kind_rolls_up(
        blocks: list[list[tuple[int, object]]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        s = Store(Path(d) / "gw.db")
        try:
            sid = stream(s, "b/x", 9)
            frames = [(i, 0, Frame(tuple(Sample("b/x", None, T0 + t, v)  # type: ignore[arg-type]
                                         for t, v in b))) for i, b in enumerate(blocks)]
            assert s.ingest(sid, frames) == sum(map(len, blocks))
            rows = queries.samples(s.conn, sid, T0, T0 + 180)
            # SQLite keeps -0.0 as 0.0 (equal numbers); every other value comes back as given
            given_ = [v.hex() if isinstance(v, bytes) else v + 0.0 if isinstance(v, float) else v
                      for b in blocks for _, v in b]
            assert sorted(map(repr, (x.value for x in rows))) == sorted(map(repr, given_))
            kinds = [KINDS[kind_code(v)] for b in blocks for _, v in b]
            first = min(((t, i, k) for i, b in enumerate(blocks) for k, (t, _) in enumerate(b)))
            kind = KINDS[kind_code(blocks[first[1]][first[2]][1])]
            assert s.kind(sid) == kind
            assert s.other_kind(sid) == sum(k != kind for k in kinds)
            ups = s.rollup(sid, T0, T0 + 180, 60)
            want_n = sum(k == kind for k in kinds) if kind in ROLLED_UP else 0
            assert sum(r.n for r in ups) == want_n
        finally:
            s.close()


def test_export_writes_each_value_in_its_kind(tmp_path: Path) -> None:
    import csv
    import io

    from click.testing import CliRunner

    from cairn_gateway.cli import gateway

    assert CliRunner().invoke(gateway, ["init", str(tmp_path / "gw")]).exit_code == 0
    config = tmp_path / "gw" / "gateway.toml"
    (tmp_path / "gw" / "data").mkdir(exist_ok=True)
    s = Store(tmp_path / "gw" / "data" / "gw.db")
    try:
        sid = stream(s, "board-1/door", 6)
        s.ingest(sid, [(k, 0, one("board-1/door", T0 + k, v))
                       for k, v in enumerate([True, False])])
    finally:
        s.close()
    args = ["export", "--config", str(config), "--stream", "board-1/door"]
    jsonl = CliRunner().invoke(gateway, [*args, "--format", "jsonl"])
    assert jsonl.exit_code == 0, jsonl.output
    assert [json.loads(x)["value"] for x in jsonl.output.splitlines()] == [True, False]
    rows = list(csv.reader(io.StringIO(CliRunner().invoke(gateway, args).output)))
    assert [r[1] for r in rows[1:]] == ["true", "false"]

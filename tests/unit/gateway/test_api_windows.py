"""The API's parameters: names as the CLI gives them, times in seconds or ISO 8601 (never
milliseconds, silently), steps from Grafana's $__interval, cursors; in process (httpx over
ASGI, no sockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cairn.frames import Frame, Sample
from cairn_gateway.api import make_app
from cairn_gateway.roster import Roster
from cairn_gateway.store import Store
from cairn_gateway.windows import (
    Cursor,
    ParameterError,
    parse_cursor,
    parse_step,
    parse_time,
    pick_step,
)
from tests.scorecard import record

T0 = 1_764_000_000.0  # 2025-11-24T16:00:00Z


def test_times_in_seconds_or_iso_8601() -> None:
    assert parse_time("from", "1764000000") == T0
    assert parse_time("from", " 1764000000.5 ") == T0 + 0.5
    assert parse_time("from", "2025-11-24T16:00:00Z") == T0
    assert parse_time("from", "2025-11-24T17:00:00+01:00") == T0
    assert parse_time("from", "2025-11-24T16:00:00") == T0  # no offset: UTC
    assert parse_time("to", "2025-11-24") == T0 - 16 * 3600
    assert parse_time("from", "-86400") == -86400.0  # before 1970 is a time too


@pytest.mark.parametrize(("text", "says"), [
    ("1764000000000", "to=1764000000000 looks like milliseconds"),
    ("1.764e12", "looks like milliseconds"),
    ("-1764000000000", "looks like milliseconds"),
    ("nan", "finite"), ("inf", "finite"),
    ("yesterday", "is neither epoch seconds nor an ISO 8601 time"),
    ("1_764_000_000", "neither"), ("\u0661\u0667\u0666\u0664", "neither"),
    ("2025-13-01", "neither"), ("", "neither"), ("\x00", "neither"),
])
def test_bad_times_say_why(text: str, says: str) -> None:
    with pytest.raises(ParameterError, match=says):
        parse_time("to", text)


def test_milliseconds_say_the_seconds_to_send() -> None:
    with pytest.raises(ParameterError) as got:
        parse_time("from", "1764000000000")
    assert "(1764000000)" in str(got.value) and "${__from:date:seconds}" in str(got.value)


def test_steps_in_seconds_or_grafana_intervals() -> None:
    assert [parse_step(s) for s in ("60", "15s", "500ms", "5m", "2h", "1d", "1w", "1y")] == [
        60, 15, 0.5, 300, 7200, 86400, 604800, 365 * 86400]
    for bad in ("0", "-60", "soon", "1 h", "5M", "nan", "inf", "1e30", "101y", "", "6_0",
                "\u0666\u0660"):
        with pytest.raises(ParameterError, match="step"):
            parse_step(bad)


def test_the_step_served_is_whole_minutes_and_coarser_for_long_windows() -> None:
    assert pick_step(60, 0, 3600, 100_000) == (choice := pick_step(60, 0, 3600, 100_000))
    assert (choice.step, choice.note) == (60, None)
    assert pick_step(15, 0, 3600, 100_000).step == 60
    assert "served as 60 s" in (pick_step(15, 0, 3600, 100_000).note or "")
    assert pick_step(5400, 0, 86400, 100_000).step == 7200  # whole hours past an hour
    year = 365 * 86400
    long = pick_step(60, 0, year, 100_000)
    assert long.step == 360 and year / long.step <= 100_000
    assert "525600 buckets (at most 100000): served 360 s buckets" in (long.note or "")
    ten = pick_step(60, 0, 10 * year, 100_000)
    assert ten.step == 3180 and 10 * year / ten.step <= 100_000
    century = pick_step(60, 0, 100 * year, 100_000)
    assert century.step == 32400 and 100 * year / century.step <= 100_000


@given(step=st.floats(0.001, 100 * 365 * 86400), start=st.floats(-1e10, 1e10),
       span=st.floats(1, 2e10))
@settings(max_examples=300, derandomize=True)
def test_no_window_or_step_is_over_the_point_limit(step: float, start: float,
                                                   span: float) -> None:
    got = pick_step(step, start, start + span, 100_000)
    assert got.step >= step and got.step % 60 == 0
    assert got.step <= 3600 or got.step % 3600 == 0
    assert span / got.step <= 100_000


def test_cursors_round_trip_and_anything_else_is_refused() -> None:
    c = Cursor(T0 + 0.25, 7, 3)
    assert parse_cursor(str(c)) == c
    for bad in ("x", "1_2", "1_2_3_4", "nan_1_1", "1_-1_0", "1_1_1e3", f"1_{2 ** 63}_0",
                "1_ 2_3", "__"):
        with pytest.raises(ParameterError, match="cursor"):
            parse_cursor(bad)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    store = Store(tmp_path / "gw.db")
    roster = Roster(store.conn)
    roster.enroll(b"d" * 32, "board-1", T0)
    dev = store.device(b"d" * 32, None, T0)
    sid = store.stream(dev, "board-1/temperature", b"k" * 32, "Cel")
    store.ingest(sid, [(i, 0, Frame((Sample("board-1/temperature", "Cel", T0 + i, 20.0 + i),)))
                       for i in range(300)])
    # board-1 re-keyed: its old key removed, the new one enrolled under the same name
    roster.remove("board-1", T0 + 300)
    roster.enroll(b"e" * 32, "board-1", T0 + 300)
    new = store.stream(store.device(b"e" * 32, None, T0), "board-1/temperature", b"n" * 32,
                       "Cel")
    store.ingest(new, [(0, 0, Frame((Sample("board-1/temperature", "Cel", T0 + 400, 5.0),)))])
    roster.enroll(b"f" * 32, "42", T0)  # a name of digits
    store.stream(store.device(b"f" * 32, None, T0), "42/x", b"m" * 32)
    transport = httpx.ASGITransport(app=make_app(store))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        yield c
    store.close()


async def test_streams_and_devices_by_name_as_the_cli_names_them(
        client: httpx.AsyncClient) -> None:
    by_name = await client.get("/api/samples", params={
        "stream": "board-1/temperature", "from": T0, "to": T0 + 1000})
    assert by_name.status_code == 200, by_name.text
    assert [x["value"] for x in by_name.json()] == [5.0]  # the enrolled key's stream
    by_id = await client.get("/api/samples", params={"stream": 1, "from": T0, "to": T0 + 3})
    assert [x["value"] for x in by_id.json()] == [20.0, 21.0, 22.0]  # ids still work
    both = (await client.get("/api/streams", params={"device": "board-1"})).json()
    assert [(s["id"], s["removed"]) for s in both] == [(1, True), (2, False)]
    by_key = (await client.get("/api/streams", params={"device": (b"e" * 32).hex()})).json()
    assert [s["id"] for s in by_key] == [2]
    digits = (await client.get("/api/streams", params={"device": "42"})).json()
    assert [s["name"] for s in digits] == ["42/x"]  # a name wins over an id
    assert (await client.get("/api/streams", params={"device": "1"})).json()[0]["id"] == 1
    r = await client.get("/api/rollups", params={"stream": "board-1/humidity", "from": T0,
                                                 "to": T0 + 60})
    assert r.status_code == 404 and "no stream 'board-1/humidity'" in r.json()["detail"]


async def test_iso_times_and_milliseconds(client: httpx.AsyncClient) -> None:
    iso = await client.get("/api/samples", params={
        "stream": 1, "from": "2025-11-24T16:00:00Z", "to": "2025-11-24T16:00:03Z"})
    assert [x["time"] for x in iso.json()] == [T0, T0 + 1, T0 + 2]
    bad = 0
    for params in ({"from": T0 * 1000, "to": (T0 + 300) * 1000},
                   {"from": T0, "to": (T0 + 300) * 1000}):
        r = await client.get("/api/samples", params={"stream": 1, **params})
        bad += not (r.status_code == 422 and "looks like milliseconds" in r.json()["detail"])
    record("api", "a window in milliseconds (Grafana's ${__from})", 2, bad,
           "answered without a 422 saying milliseconds")
    assert bad == 0


async def test_a_step_like_grafanas_interval(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/rollups", params={"stream": 1, "from": T0, "to": T0 + 300,
                                                 "step": "2m"})
    assert r.status_code == 200 and "cairn-step-note" not in r.headers
    assert [(x["n"], x["step"]) for x in r.json()] == [(120, 120), (120, 120), (60, 120)]
    r = await client.get("/api/rollups", params={"stream": 1, "from": T0, "to": T0 + 300,
                                                 "step": "15s"})
    assert {x["step"] for x in r.json()} == {60}
    assert r.headers["cairn-step-note"] == "step 15 s served as 60 s (whole minutes; whole " \
                                           "hours past an hour)"


async def test_samples_page_with_a_cursor_both_ways(client: httpx.AsyncClient) -> None:
    for order, expect in (("asc", [T0 + i for i in range(300)]),
                          ("desc", [T0 + 299 - i for i in range(300)])):
        got: list[float] = []
        params: dict[str, str | float] = {"stream": "1", "from": T0, "to": T0 + 300,
                                          "limit": 70, "order": order}
        pages = 0
        while True:
            r = await client.get("/api/samples", params=params)
            assert r.status_code == 200, r.text
            got += [x["time"] for x in r.json()]
            pages += 1
            if "cairn-next-cursor" not in r.headers:
                assert "link" not in r.headers
                break
            link = r.headers["link"]
            assert link.startswith("</api/samples?") and link.endswith('>; rel="next"')
            assert f"cursor={r.headers['cairn-next-cursor']}" in link
            params = {**params, "cursor": r.headers["cairn-next-cursor"]}
        assert got == expect and pages == 5


async def test_the_long_answers_are_their_models(client: httpx.AsyncClient) -> None:
    """Samples, rollups and states are written straight to JSON: each row is its model."""
    from pydantic import BaseModel

    from cairn_gateway.schemas import Rollup, Sample, State

    models: tuple[tuple[str, type[BaseModel]], ...] = (
        ("/api/samples", Sample), ("/api/rollups", Rollup), ("/api/states", State))

    window: dict[str, str | float] = {"stream": "board-1/temperature", "from": T0,
                                      "to": T0 + 1000}
    for path, model in models:
        for stream in ("1", "board-1/temperature", "42/x"):
            r = await client.get(path, params={**window, "stream": stream})
            assert r.status_code == 200, r.text
            assert [model.model_validate(x, strict=True).model_dump() for x in r.json()] \
                == r.json(), (path, stream)


HOSTILE_CURSORS = ["1_1_1; DROP TABLE samples", "' OR 1=1 --", "1e309_0_0", "-0_0_0x1",
                   f"1_0_{2 ** 64}", "1_" + "9" * 99, "\u0661_1_1", "1_1_1\n", "%00"]
HOSTILE_ASSETS = ["..%2f..%2fetc%2fpasswd", "%2e%2e/gw.db", "swagger-ui.css.map",
                  "__init__.py", "core.py", "favicon.png%00.js", "REDOC.STANDALONE.JS"]


async def test_hostile_cursors_and_asset_names(client: httpx.AsyncClient) -> None:
    """A cursor is read strictly (never into SQL text) and the docs' assets are four names:
    nothing else of the package or the disk is served."""
    bad = 0
    for c in HOSTILE_CURSORS:
        r = await client.get("/api/samples", params={"stream": 1, "from": T0, "to": T0 + 300,
                                                     "cursor": c})
        bad += r.status_code != 422 or "cursor" not in r.text
    for name in HOSTILE_ASSETS:
        r = await client.get(f"/docs/assets/{name}")
        bad += r.status_code != 404
    r = await client.get("/api/samples", params={"stream": 1, "from": T0, "to": T0 + 300})
    bad += len(r.json()) != 300  # the store is untouched
    record("api", "hostile sample cursors and docs asset names (traversal, SQL, overflow)",
           len(HOSTILE_CURSORS) + len(HOSTILE_ASSETS), bad,
           "not refused with a 422 or 404, or the store changed")
    assert bad == 0
